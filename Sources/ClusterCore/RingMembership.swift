import CXXHash

/// Who is in the ring: the members that joined and have not left, under an epoch.
///
/// Gossip says who is *reachable*; this says who *owns* data. The two are kept apart on
/// purpose (Dynamo §4.8): a member that crashes stays in the ring and is skipped, and the ring
/// changes only when a member joins or leaves, which moves data.
///
/// The list is a state-based CRDT so that any two nodes can merge what they know, in any order,
/// and end up equal: each member's entry carries a version that only its join or leave raises;
/// of two entries for one member the higher version wins (at equal versions, "left" wins). The
/// epoch is the sum of the versions, so it grows with every join or leave any node has heard of,
/// and two nodes with the same epoch and the same names have the same ring.
///
/// Entries are only ever appended, so an entry's index, which the ring's preference lists use,
/// never changes on a node; it can differ between nodes, so indices never travel between nodes
/// (names do).
public struct RingMembership: Sendable, Equatable {
    public struct Entry: Sendable, Hashable {
        public var name: String
        public var host: String
        public var port: Int
        public var busPort: Int
        /// Raised by each join and each leave of this member.
        public var version: UInt64
        public var left: Bool

        public init(name: String, host: String, port: Int, busPort: Int, version: UInt64 = 1, left: Bool = false) {
            self.name = name
            self.host = host
            self.port = port
            self.busPort = busPort
            self.version = version
            self.left = left
        }

        /// True if `self` is newer news about the member than `other`.
        func supersedes(_ other: Entry) -> Bool {
            version > other.version || (version == other.version && left && !other.left)
        }
    }

    public private(set) var entries: [Entry]

    public init(_ entries: [Entry] = []) {
        self.entries = []
        _ = merge(entries)
    }

    /// Grows with every join and leave; equal epochs with equal names mean equal rings.
    public var epoch: UInt64 { entries.reduce(0) { $0 &+ $1.version } }

    /// Names this exact member list (each member's version and whether it left): nodes with
    /// the same digest have the same ring. The epoch alone does not: a join heard here and a
    /// leave heard there raise it alike. Claims about a ring change (who finished sending)
    /// name the ring by its digest.
    public var digest: UInt64 {
        var bytes: [UInt8] = []
        for entry in entries.sorted(by: { $0.name < $1.name }) {
            bytes += entry.name.utf8
            bytes.append(0)
            withUnsafeBytes(of: entry.version.littleEndian) { bytes += $0 }
            bytes.append(entry.left ? 1 : 0)
        }
        return bytes.withUnsafeBytes { ringcache_xxh3_64($0.baseAddress, $0.count) }
    }

    public func index(of name: String) -> Int? { entries.firstIndex { $0.name == name } }

    /// Indices of the members that left: they own nothing.
    public var excluded: Set<Int> { Set(entries.indices.filter { entries[$0].left }) }

    /// Names of the members that own data.
    public var owners: [String] { entries.filter { !$0.left }.map(\.name) }

    /// Takes in what another node knows. True if anything changed here.
    @discardableResult
    public mutating func merge(_ other: [Entry]) -> Bool {
        var changed = false
        for entry in other {
            if let at = index(of: entry.name) {
                if entry.supersedes(entries[at]) {
                    entries[at] = entry
                    changed = true
                }
            } else {
                entries.append(entry)
                changed = true
            }
        }
        return changed
    }

    /// A member joins, or joins again after it left (then at the next version, so the news
    /// wins over its leave everywhere). A member already in the ring only has its address
    /// updated. True if the ring changed.
    @discardableResult
    public mutating func join(_ entry: Entry) -> Bool {
        guard let at = index(of: entry.name) else {
            var fresh = entry
            fresh.version = max(1, entry.version)
            fresh.left = false
            entries.append(fresh)
            return true
        }
        guard entries[at].left else { return false }
        entries[at] = Entry(name: entry.name, host: entry.host, port: entry.port, busPort: entry.busPort,
                            version: entries[at].version + 1, left: false)
        return true
    }

    /// A member leaves the ring. True if it was in it.
    @discardableResult
    public mutating func leave(_ name: String) -> Bool {
        guard let at = index(of: name), !entries[at].left else { return false }
        entries[at].version += 1
        entries[at].left = true
        return true
    }

    /// The ring these members make: indices are this list's.
    public func ring(vnodes: Int, replicas: Int) -> HashRing {
        HashRing(members: entries.map(\.name), vnodes: vnodes, replicas: replicas, epoch: epoch, excluded: excluded)
    }
}
