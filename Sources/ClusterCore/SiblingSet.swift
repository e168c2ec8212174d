import CacheStore

/// One version of a key under `reconcile vclock`, as a dotted version vector: the write's
/// own event is its `value.version` (writer node and HLC timestamp, unique per write), and
/// `clock` is the causal context it was written with — everything it had seen.
///
/// Preguiça et al., "Dotted Version Vectors: Logical Clocks for Optimistic Replication"
/// (2010); used as in Riak.
public struct Sibling: Sendable, Hashable {
    /// The context the write was made with.
    public var clock: VectorClock
    /// The bytes (nil for a delete), the version that is also the write's dot, and expiry.
    public var value: VersionedValue

    public init(clock: VectorClock, value: VersionedValue) {
        self.clock = clock
        self.value = value
    }

    /// The context plus this write's own event.
    public var fullClock: VectorClock {
        clock.merged(with: VectorClock([value.version.node: value.version.timestamp.rawValue]))
    }

    /// True if `context` has seen this write.
    public func isCovered(by context: VectorClock) -> Bool {
        let event = value.version.timestamp.rawValue
        return event > 0 && context[value.version.node] >= event
    }
}

/// The versions of one key that no later write has seen, as Dynamo and Riak keep them: a
/// write replaces the siblings its context covers, and writes that did not see each other
/// stay side by side until a write whose context covers them all resolves them.
public struct SiblingSet: Sendable, Hashable {
    public private(set) var siblings: [Sibling]

    public init(_ siblings: [Sibling] = []) {
        self.siblings = []
        for sibling in siblings { _ = add(sibling, limit: .max) }
    }

    public var isEmpty: Bool { siblings.isEmpty }

    /// The causal context a client sends back with VSET: every sibling's full clock merged.
    public var context: VectorClock {
        siblings.reduce(VectorClock()) { $0.merged(with: $1.fullClock) }
    }

    /// The version plain GET returns: the highest (HLC timestamp, node id), as under LWW.
    public var winner: VersionedValue? {
        siblings.map(\.value).reduce(nil) { VersionedValue.newest($0, $1) }
    }

    /// Adds `sibling`: ignored if it is already here or a kept sibling has seen it; else it
    /// replaces the siblings its own context covers. Past `limit` siblings only the LWW
    /// winner is kept, with the merged context so it still covers what was dropped.
    ///
    /// - Returns: whether the set changed, and whether siblings were dropped for the limit.
    @discardableResult
    public mutating func add(_ sibling: Sibling, limit: Int) -> (changed: Bool, overflowed: Bool) {
        for existing in siblings where existing.value.version == sibling.value.version || sibling.isCovered(by: existing.clock) {
            return (false, false)
        }
        siblings.removeAll { $0.isCovered(by: sibling.clock) }
        siblings.append(sibling)
        siblings.sort { $0.value.version < $1.value.version }
        guard siblings.count > limit, let winner else { return (true, false) }
        siblings = [Sibling(clock: context, value: winner)]
        return (true, true)
    }

    /// Every sibling of both sets, reduced by the same rules.
    public func merged(with other: SiblingSet, limit: Int = .max) -> SiblingSet {
        var result = self
        for sibling in other.siblings { result.add(sibling, limit: limit) }
        return result
    }
}

extension SiblingSet: Reconcilable {
    public static func reconcile(_ a: SiblingSet?, _ b: SiblingSet?) -> SiblingSet? {
        guard let a else { return b }
        guard let b else { return a }
        return a.merged(with: b)
    }
}

/// A replica's answer that a read quorum can fold: two answers reconcile into one that every
/// replica should hold.
public protocol Reconcilable: Sendable, Hashable {
    static func reconcile(_ a: Self?, _ b: Self?) -> Self?
}

extension VersionedValue: Reconcilable {
    public static func reconcile(_ a: VersionedValue?, _ b: VersionedValue?) -> VersionedValue? { newest(a, b) }
}

extension SiblingSet {
    /// Binary form for the cluster bus: per sibling, clock length (u16), clock, timestamp
    /// (u64), node (u32), expiry (i64), tombstone flag (u8), value length (u32), value; all
    /// big-endian.
    public var serialized: [UInt8] {
        var bytes: [UInt8] = []
        func put<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) } }
        for sibling in siblings {
            // A clock merged from many wide ones could outgrow the u16 length: it keeps its
            // first entries (the form is read back with at most VectorClock.maxEntries anyway),
            // which can only make a later write look concurrent, never drop a value.
            let clock = Array(sibling.clock.encoded.prefix(VectorClock.maxEntries * 12))
            put(UInt16(clock.count))
            bytes.append(contentsOf: clock)
            put(sibling.value.version.timestamp.rawValue)
            put(sibling.value.version.node.rawValue)
            put(sibling.value.expiry)
            put(UInt8(sibling.value.value == nil ? 1 : 0))
            let value = sibling.value.value ?? []
            put(UInt32(clamping: value.count))
            bytes.append(contentsOf: value)
        }
        return bytes
    }

    /// Reads ``serialized``; nil if the bytes are malformed.
    public init?(serialized bytes: some Collection<UInt8>) {
        let bytes = Array(bytes)
        var at = 0
        func take<T: FixedWidthInteger>(_: T.Type) -> T? {
            let size = MemoryLayout<T>.size
            guard at + size <= bytes.count else { return nil }
            var value: T = 0
            for i in 0..<size { value = value << 8 | T(bytes[at + i]) }
            at += size
            return value
        }
        var siblings: [Sibling] = []
        while at < bytes.count {
            guard let clockLength = take(UInt16.self), at + Int(clockLength) <= bytes.count,
                let clock = VectorClock(encoded: bytes[at..<(at + Int(clockLength))])
            else { return nil }
            at += Int(clockLength)
            guard let timestamp = take(UInt64.self), let node = take(UInt32.self), let expiry = take(Int64.self),
                let tombstone = take(UInt8.self), let length = take(UInt32.self), at + Int(length) <= bytes.count
            else { return nil }
            let value = tombstone == 1 ? nil : Array(bytes[at..<(at + Int(length))])
            at += Int(length)
            siblings.append(Sibling(clock: clock, value: VersionedValue(
                version: Version(timestamp: HLCTimestamp(rawValue: timestamp), node: NodeID(rawValue: node)), value: value, expiry: expiry)))
        }
        self.init(siblings)
    }
}

extension VectorClock {
    /// The clock as hexadecimal text: the causal context clients carry from VGET to VSET.
    public var hex: String {
        let digits = Array("0123456789abcdef".utf8)
        return String(decoding: encoded.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] }, as: UTF8.self)
    }

    /// Reads ``hex``; the empty string is the empty clock. Nil if malformed.
    public init?(hex bytes: UnsafeRawBufferPointer) {
        guard bytes.count % 2 == 0, bytes.count <= VectorClock.maxEntries * 24 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
            default: return nil
            }
        }
        var raw: [UInt8] = []
        for i in stride(from: 0, to: bytes.count, by: 2) {
            guard let high = nibble(bytes[i]), let low = nibble(bytes[i + 1]) else { return nil }
            raw.append(high << 4 | low)
        }
        self.init(encoded: raw)
    }
}
