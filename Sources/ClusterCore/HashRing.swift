import CacheStore
import CXXHash

/// Consistent hashing: where each key lives.
///
/// The ring of 64-bit positions (`xxh3_64(key)`) is cut into `vnodes × 512` equal
/// partitions (65,536 at the default `vnodes 128`). Each partition's preference list is the N
/// members with the highest score `xxh3_64(xxh3_64(member) ‖ partition)`: rendezvous hashing
/// per partition. Every node computes the same ring from the same member set, in any order;
/// a member that joins takes over about 1/(n+1) of the partitions and nothing else moves;
/// a member that leaves hands out only its own. Unlike tokens at random positions, whose arcs
/// vary in length (±9% per member at 128 tokens, ±23% worst of 50), equal partitions keep
/// every member within a few percent of its share.
///
/// Thaler and Ravishankar, "Using Name-Based Mappings to Increase Hit Rates" (1998), for
/// rendezvous hashing; DeCandia et al., "Dynamo" (SOSP 2007), for equal-sized partitions.
public struct HashRing: Sendable {
    /// The member names, in the order given; preference lists hold indices into it.
    public let members: [String]
    public let vnodes: Int
    /// The membership epoch this ring was built from.
    public let epoch: UInt64
    /// Replicas per key (N), clamped to the member count.
    public let replicas: Int
    /// log2 of the partition count.
    public let partitionBits: Int
    /// For partition p, `replicas` member indices from `preferences[p * replicas]`, best first.
    private let preferences: [Int32]

    /// Members that own nothing: they left the ring (or have not joined it). Their indices
    /// stay valid, so indices into `members` never change as members come and go.
    public let excluded: Set<Int>

    /// - Parameter excluded: indices of `members` that get no partitions.
    public init(members: [String], vnodes: Int = 128, replicas: Int = 3, epoch: UInt64 = 0, excluded: Set<Int> = []) {
        precondition(vnodes > 0, "vnodes must be positive")
        self.members = members
        self.vnodes = vnodes
        self.epoch = epoch
        self.excluded = excluded
        let owners = members.indices.filter { !excluded.contains($0) }
        let n = min(max(1, replicas), max(1, owners.count))
        self.replicas = n
        let bits = min(24, max(8, (vnodes * 512 - 1).bitWidth - (vnodes * 512 - 1).leadingZeroBitCount))
        self.partitionBits = bits
        let partitions = 1 << bits
        let seeds = members.map { Self.hash($0) }
        var preferences = [Int32](repeating: 0, count: owners.isEmpty ? 0 : partitions * n)
        if !owners.isEmpty {
            var best = [(score: UInt64, member: Int32)](repeating: (0, 0), count: n)
            for partition in 0..<partitions {
                var filled = 0
                for (member, seed) in seeds.enumerated() where !excluded.contains(member) {
                    let score = Self.score(seed: seed, partition: partition)
                    // Keep the n highest scores, ties broken by member index, sorted best first.
                    var at = filled
                    while at > 0 && (best[at - 1].score < score || (best[at - 1].score == score && best[at - 1].member > Int32(member))) {
                        at -= 1
                    }
                    guard at < n else { continue }
                    var i = min(filled, n - 1)
                    while i > at {
                        best[i] = best[i - 1]
                        i -= 1
                    }
                    best[at] = (score, Int32(member))
                    filled = min(filled + 1, n)
                }
                for i in 0..<n { preferences[partition * n + i] = best[i].member }
            }
        }
        self.preferences = preferences
    }

    public var partitionCount: Int { 1 << partitionBits }

    /// xxh3_64 of a string's UTF-8 bytes.
    public static func hash(_ text: String) -> UInt64 {
        var text = text
        return text.withUTF8 { ringcache_xxh3_64($0.baseAddress, $0.count) }
    }

    @inline(__always)
    static func score(seed: UInt64, partition: Int) -> UInt64 {
        var input = (seed, UInt64(partition))
        return withUnsafeBytes(of: &input) { ringcache_xxh3_64($0.baseAddress, $0.count) }
    }

    /// xxh3_64 of raw key bytes: the key's position on the ring.
    @inline(__always)
    public static func position(of key: UnsafeRawBufferPointer) -> UInt64 {
        ringcache_xxh3_64(key.baseAddress, key.count)
    }

    @inline(__always)
    public func partition(ofPosition position: UInt64) -> Int {
        Int(truncatingIfNeeded: position >> UInt64(64 - partitionBits))
    }

    /// The key's preference list: `replicas` distinct member indices, primary first.
    public func preferenceList(forPosition position: UInt64) -> PreferenceList {
        guard !preferences.isEmpty else { return PreferenceList(members: []) }
        let start = partition(ofPosition: position) * replicas
        return PreferenceList(members: preferences[start..<(start + replicas)].map(Int.init))
    }

    public func preferenceList(forKey key: UnsafeRawBufferPointer) -> PreferenceList {
        preferenceList(forPosition: Self.position(of: key))
    }

    public func preferenceList(forKey key: String) -> PreferenceList {
        Array(key.utf8).withUnsafeBytes { preferenceList(forKey: $0) }
    }

    /// Calls `body` with the replicas of the key at `position`, without allocating.
    @inline(__always)
    public func withPreferenceList<R>(forPosition position: UInt64, _ body: (UnsafeBufferPointer<Int32>) throws -> R) rethrows -> R {
        let start = preferences.isEmpty ? 0 : partition(ofPosition: position) * replicas
        return try preferences.withUnsafeBufferPointer { all in
            try body(UnsafeBufferPointer(rebasing: all[start..<(preferences.isEmpty ? 0 : start + replicas)]))
        }
    }

    /// Whether `member` is one of the replicas of the key at `position` (without allocating).
    public func replicates(_ member: Int, position: UInt64) -> Bool {
        withPreferenceList(forPosition: position) { $0.contains(Int32(member)) }
    }

    /// Every member ranked for the key at `position`, best first: the preference list, then
    /// the members a sloppy quorum falls back to, in the same (rendezvous) order.
    public func ranking(forPosition position: UInt64) -> [Int] {
        let partition = partition(ofPosition: position)
        let scored = members.enumerated().filter { !excluded.contains($0.offset) }.map { (member: $0.offset, score: Self.score(seed: Self.hash($0.element), partition: partition)) }
        return scored.sorted { $0.score != $1.score ? $0.score > $1.score : $0.member < $1.member }.map(\.member)
    }

    /// Sloppy quorum: for each replica of the key at `position` that is in `unreachable`, the
    /// next member of the key's ranking past the preference list that is reachable, each used
    /// once (a replica left out when none is left).
    public func standIns(forPosition position: UInt64, unreachable: Set<Int>) -> [Int: Int] {
        let replicas = preferenceList(forPosition: position).members
        let missing = replicas.filter { unreachable.contains($0) }
        guard !missing.isEmpty else { return [:] }
        var fallbacks = ranking(forPosition: position).dropFirst(replicas.count).filter { !unreachable.contains($0) }.makeIterator()
        var standIns: [Int: Int] = [:]
        for owner in missing {
            guard let standIn = fallbacks.next() else { break }
            standIns[owner] = standIn
        }
        return standIns
    }

    /// Rebalancing: the member that sends the key at `position` to those that gain it when
    /// this is the ring before a change: its first replica that is not `unreachable`.
    public func sender(forPosition position: UInt64, unreachable: Set<Int>) -> Int? {
        preferenceList(forPosition: position).members.first { !unreachable.contains($0) }
    }

    /// Rebalancing: the members that gain the key at `position` going from `old` to this ring
    /// (replicas here that were not replicas there), when `sender` is the member that sends it:
    /// the first replica in `old` that is not `unreachable`. Empty for every other member, so
    /// each key moves once, from one holder, and only keys that change owner move. Both rings
    /// index the same member list (members are only appended).
    public func gained(forPosition position: UInt64, from old: HashRing, sender: Int, unreachable: Set<Int>) -> [Int] {
        guard old.sender(forPosition: position, unreachable: unreachable) == sender else { return [] }
        let before = old.preferenceList(forPosition: position).members
        return preferenceList(forPosition: position).members.filter { !before.contains($0) }
    }

    /// First position of a partition.
    public func start(ofPartition partition: Int) -> UInt64 {
        UInt64(partition) << UInt64(64 - partitionBits)
    }

    /// Contiguous runs of partitions with the same preference list: (first position, last
    /// position, replicas), for CLUSTER RING and the smart client.
    public var ranges: [(start: UInt64, end: UInt64, replicas: [Int])] {
        guard !preferences.isEmpty else { return [] }
        var result: [(start: UInt64, end: UInt64, replicas: [Int])] = []
        var runStart = 0
        for partition in 1...partitionCount {
            let same = partition < partitionCount
                && preferences[partition * replicas..<(partition + 1) * replicas] == preferences[runStart * replicas..<(runStart + 1) * replicas]
            if !same {
                let end = partition == partitionCount ? UInt64.max : start(ofPartition: partition) - 1
                result.append((start(ofPartition: runStart), end, preferences[runStart * replicas..<(runStart + 1) * replicas].map(Int.init)))
                runStart = partition
            }
        }
        return result
    }

    /// The names of the members that own partitions, in `members` order.
    public var owners: [String] { members.indices.filter { !excluded.contains($0) }.map { members[$0] } }

    /// The fraction of partitions each member is primary for.
    public var primaryShares: [Double] {
        var counts = [Int](repeating: 0, count: members.count)
        guard !preferences.isEmpty else { return counts.map(Double.init) }
        for partition in 0..<partitionCount { counts[Int(preferences[partition * replicas])] += 1 }
        return counts.map { Double($0) / Double(partitionCount) }
    }
}

/// The replicas of one key, primary first.
public struct PreferenceList: Sendable, Hashable {
    public let members: [Int]
    public var primary: Int? { members.first }
    public func contains(_ member: Int) -> Bool { members.contains(member) }
}
