import CacheStore

/// One version of a key under `reconcile vclock`: its vector clock and the value it carries.
public struct Sibling: Sendable, Hashable {
    public var clock: VectorClock
    /// The bytes (nil for a delete), the HLC version (for the deterministic GET choice) and expiry.
    public var value: VersionedValue

    public init(clock: VectorClock, value: VersionedValue) {
        self.clock = clock
        self.value = value
    }
}

/// The versions of one key that no other version descends from, as Dynamo and Riak keep
/// them: a write that descends from a sibling replaces it, concurrent writes stay side by
/// side until a write whose context names them all resolves them.
public struct SiblingSet: Sendable, Hashable {
    public private(set) var siblings: [Sibling]

    public init(_ siblings: [Sibling] = []) {
        self.siblings = []
        for sibling in siblings { _ = add(sibling, limit: .max) }
    }

    public var isEmpty: Bool { siblings.isEmpty }

    /// The causal context a client sends back with VSET: the merge of every sibling's clock.
    public var context: VectorClock {
        siblings.reduce(VectorClock()) { $0.merged(with: $1.clock) }
    }

    /// The version plain GET returns: the highest (HLC timestamp, node id), as under LWW.
    public var winner: VersionedValue? {
        siblings.map(\.value).reduce(nil) { VersionedValue.newest($0, $1) }
    }

    /// Adds `sibling` by the vector-clock rules. Past `limit` siblings only the LWW winner is
    /// kept, under the merged clock so it still supersedes what was dropped.
    ///
    /// - Returns: true if the set changed; `overflowed` tells whether siblings were dropped.
    @discardableResult
    public mutating func add(_ sibling: Sibling, limit: Int) -> (changed: Bool, overflowed: Bool) {
        for existing in siblings where existing.clock.descends(from: sibling.clock) {
            // Already known (equal) or an ancestor of something kept.
            if existing.clock != sibling.clock || existing.value.version >= sibling.value.version { return (false, false) }
        }
        siblings.removeAll { sibling.clock.descends(from: $0.clock) }
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

    /// A new sibling for a write made with `context` by `node`: its clock descends from the
    /// context, so it replaces every sibling the context covers.
    public static func clock(for context: VectorClock, writtenBy node: NodeID) -> VectorClock {
        var clock = context
        clock.increment(node)
        return clock
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
            let clock = sibling.clock.encoded
            put(UInt16(clock.count))
            bytes.append(contentsOf: clock)
            put(sibling.value.version.timestamp.rawValue)
            put(sibling.value.version.node.rawValue)
            put(sibling.value.expiry)
            put(UInt8(sibling.value.value == nil ? 1 : 0))
            let value = sibling.value.value ?? []
            put(UInt32(value.count))
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
        guard bytes.count % 2 == 0 else { return nil }
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
