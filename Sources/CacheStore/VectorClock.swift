/// A vector clock: one counter per node that wrote a value, for telling a newer version
/// from a concurrent one when `reconcile vclock` is on.
///
/// Lamport, "Time, Clocks, and the Ordering of Events in a Distributed System" (CACM 1978);
/// used as in DeCandia et al., "Dynamo: Amazon's Highly Available Key-value Store" (SOSP 2007).
public struct VectorClock: Hashable, Sendable, CustomStringConvertible {
    /// How two clocks relate.
    public enum Order: Hashable, Sendable {
        case equal
        /// The left clock is an ancestor of the right one.
        case before
        /// The left clock descends from the right one.
        case after
        /// Neither descends from the other: the values are siblings.
        case concurrent
    }

    /// (node, counter) pairs sorted by node, counters above zero only.
    public private(set) var entries: [(node: NodeID, counter: UInt64)]

    public init() { entries = [] }

    public init(_ counters: [NodeID: UInt64]) {
        entries = counters.filter { $0.value > 0 }.sorted { $0.key < $1.key }.map { (node: $0.key, counter: $0.value) }
    }

    public subscript(node: NodeID) -> UInt64 {
        entries.first { $0.node == node }?.counter ?? 0
    }

    /// Records one more event at `node`.
    public mutating func increment(_ node: NodeID) {
        if let index = entries.firstIndex(where: { $0.node == node }) {
            entries[index].counter += 1
        } else {
            let at = entries.firstIndex { $0.node > node } ?? entries.endIndex
            entries.insert((node: node, counter: 1), at: at)
        }
    }

    /// The least clock that descends from both: the pointwise maximum.
    public func merged(with other: VectorClock) -> VectorClock {
        var result = VectorClock()
        var i = 0
        var j = 0
        while i < entries.count || j < other.entries.count {
            if j == other.entries.count || (i < entries.count && entries[i].node < other.entries[j].node) {
                result.entries.append(entries[i])
                i += 1
            } else if i == entries.count || other.entries[j].node < entries[i].node {
                result.entries.append(other.entries[j])
                j += 1
            } else {
                result.entries.append((node: entries[i].node, counter: max(entries[i].counter, other.entries[j].counter)))
                i += 1
                j += 1
            }
        }
        return result
    }

    public func compare(to other: VectorClock) -> Order {
        var less = false
        var greater = false
        var i = 0
        var j = 0
        while i < entries.count || j < other.entries.count {
            if j == other.entries.count || (i < entries.count && entries[i].node < other.entries[j].node) {
                greater = true
                i += 1
            } else if i == entries.count || other.entries[j].node < entries[i].node {
                less = true
                j += 1
            } else {
                if entries[i].counter < other.entries[j].counter { less = true }
                if entries[i].counter > other.entries[j].counter { greater = true }
                i += 1
                j += 1
            }
        }
        switch (less, greater) {
        case (false, false): return .equal
        case (true, false): return .before
        case (false, true): return .after
        case (true, true): return .concurrent
        }
    }

    /// True if this clock has seen everything `other` has (equal or after).
    public func descends(from other: VectorClock) -> Bool {
        let order = compare(to: other)
        return order == .equal || order == .after
    }

    public static func == (a: VectorClock, b: VectorClock) -> Bool {
        a.entries.elementsEqual(b.entries) { $0.node == $1.node && $0.counter == $1.counter }
    }

    public func hash(into hasher: inout Hasher) {
        for entry in entries {
            hasher.combine(entry.node)
            hasher.combine(entry.counter)
        }
    }

    /// Entries a clock may hold when it arrives from outside (a client's causal context, a
    /// peer's sibling): one per node that wrote the key, far above any real cluster.
    public static let maxEntries = 1024

    /// Compact binary form: per entry, 4 bytes of node id then 8 bytes of counter, big-endian.
    public var encoded: [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(entries.count * 12)
        for entry in entries {
            withUnsafeBytes(of: entry.node.rawValue.bigEndian) { bytes.append(contentsOf: $0) }
            withUnsafeBytes(of: entry.counter.bigEndian) { bytes.append(contentsOf: $0) }
        }
        return bytes
    }

    /// Reads the form written by ``encoded``; nil if it is malformed.
    public init?(encoded bytes: some Collection<UInt8>) {
        guard bytes.count % 12 == 0, bytes.count <= Self.maxEntries * 12 else { return nil }
        let bytes = Array(bytes)
        var counters: [NodeID: UInt64] = [:]
        for offset in stride(from: 0, to: bytes.count, by: 12) {
            var node: UInt32 = 0
            var counter: UInt64 = 0
            for k in 0..<4 { node = node << 8 | UInt32(bytes[offset + k]) }
            for k in 4..<12 { counter = counter << 8 | UInt64(bytes[offset + k]) }
            guard counters[NodeID(rawValue: node)] == nil else { return nil }
            counters[NodeID(rawValue: node)] = counter
        }
        self.init(counters)
    }

    public var description: String {
        "[" + entries.map { "\($0.node):\($0.counter)" }.joined(separator: ",") + "]"
    }
}
