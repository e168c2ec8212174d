import CXXHash

/// A hybrid logical clock timestamp: wall-clock milliseconds in the high 48 bits and a
/// logical counter in the low 16, so it orders like time but never runs backwards.
///
/// Kulkarni et al., "Logical Physical Clocks and Consistent Snapshots in Globally
/// Distributed Databases" (OPODIS 2014).
public struct HLCTimestamp: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64

    public init(rawValue: UInt64) { self.rawValue = rawValue }

    public init(millis: Int64, logical: UInt16 = 0) {
        self.rawValue = UInt64(max(0, millis)) << 16 | UInt64(logical)
    }

    public var millis: Int64 { Int64(rawValue >> 16) }
    public var logical: UInt16 { UInt16(truncatingIfNeeded: rawValue) }

    public static func < (a: HLCTimestamp, b: HLCTimestamp) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "\(millis).\(logical)" }
}

/// The clock that stamps this node's writes. A pure value: the caller passes wall time in.
public struct HybridLogicalClock: Sendable {
    public private(set) var last: HLCTimestamp

    public init(last: HLCTimestamp = HLCTimestamp(rawValue: 0)) { self.last = last }

    /// A timestamp for a local event: the wall clock if it moved ahead, else last + 1.
    public mutating func tick(wallMillis: Int64) -> HLCTimestamp {
        last = Self.next(after: last, wallMillis: wallMillis)
        return last
    }

    /// Folds in a timestamp seen from another node, so our next stamp orders after it.
    @discardableResult
    public mutating func observe(_ remote: HLCTimestamp, wallMillis: Int64) -> HLCTimestamp {
        last = Self.next(after: max(last, remote), wallMillis: wallMillis)
        return last
    }

    @inlinable
    public static func next(after last: HLCTimestamp, wallMillis: Int64) -> HLCTimestamp {
        let wall = HLCTimestamp(millis: wallMillis)
        return wall > last ? wall : HLCTimestamp(rawValue: last.rawValue &+ 1)
    }
}

/// Who wrote an entry and when: the HLC timestamp, then the writer's node id to break ties.
/// Under last-write-wins the greater version is the one every replica keeps.
public struct Version: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var timestamp: HLCTimestamp
    public var node: NodeID

    public init(timestamp: HLCTimestamp, node: NodeID) {
        self.timestamp = timestamp
        self.node = node
    }

    public static let zero = Version(timestamp: HLCTimestamp(rawValue: 0), node: NodeID(rawValue: 0))

    public static func < (a: Version, b: Version) -> Bool {
        (a.timestamp, a.node.rawValue) < (b.timestamp, b.node.rawValue)
    }

    public var description: String { "\(timestamp)@\(node)" }
}

/// A node's identity in versions and vector clocks: 32 bits of xxh3 of the node's name,
/// so every node derives the same id from the same name.
public struct NodeID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32

    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public init(name: String) {
        var name = name
        let hash = name.withUTF8 { ringcache_xxh3_64($0.baseAddress, $0.count) }
        self.rawValue = UInt32(truncatingIfNeeded: hash >> 32)
    }

    public static func < (a: NodeID, b: NodeID) -> Bool { a.rawValue < b.rawValue }
    public var description: String { String(rawValue, radix: 16) }
}
