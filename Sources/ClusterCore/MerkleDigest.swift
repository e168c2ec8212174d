import CXXHash

/// A two-level Merkle tree over (key, version) pairs, for anti-entropy between two replicas.
///
/// The leaves are `2^bits` buckets by the top bits of the key's ring position; a bucket's
/// digest combines the hashes of its (key, version, tombstone) entries in an order-free way
/// (a sum), so two replicas that hold the same versions of the same keys have equal buckets
/// however they store them, and the root is a hash of the buckets. Replicas compare roots,
/// then buckets, then exchange only the entries of buckets that differ.
public struct MerkleDigest: Sendable, Equatable {
    public let bits: Int
    public private(set) var buckets: [UInt64]

    public init(bits: Int = 8) {
        precondition((0...16).contains(bits), "bits must be in 0...16")
        self.bits = bits
        buckets = [UInt64](repeating: 0, count: 1 << bits)
    }

    /// The bucket of a ring position.
    public func bucket(ofPosition position: UInt64) -> Int {
        bits == 0 ? 0 : Int(position >> UInt64(64 - bits))
    }

    /// Adds one entry.
    public mutating func add(key: UnsafeRawBufferPointer, position: UInt64, version: UInt64, node: UInt32, tombstone: Bool) {
        add(leaf: Self.leaf(key: key, version: version, node: node, tombstone: tombstone), position: position)
    }

    /// Adds one entry by its ``leaf(key:version:node:tombstone:)`` hash (computed once for
    /// every digest the entry goes into).
    public mutating func add(leaf: UInt64, position: UInt64) {
        buckets[bucket(ofPosition: position)] &+= leaf
    }

    /// The hash of one (key, version) pair.
    public static func leaf(key: UnsafeRawBufferPointer, version: UInt64, node: UInt32, tombstone: Bool) -> UInt64 {
        var tail = (version, node, UInt32(tombstone ? 1 : 0))
        let keyHash = ringcache_xxh3_64(key.baseAddress, key.count)
        let versionHash = withUnsafeBytes(of: &tail) { ringcache_xxh3_64($0.baseAddress, $0.count) }
        var pair = (keyHash, versionHash)
        return withUnsafeBytes(of: &pair) { ringcache_xxh3_64($0.baseAddress, $0.count) }
    }

    /// The root: one hash of every bucket.
    public var root: UInt64 { Self.root(of: buckets) }

    /// The root of bucket digests (received from a peer, say).
    public static func root(of buckets: [UInt64]) -> UInt64 {
        buckets.withUnsafeBytes { ringcache_xxh3_64($0.baseAddress, $0.count) }
    }

    /// Buckets whose digests differ from `other`'s.
    public func differingBuckets(from other: [UInt64]) -> [Int] {
        guard other.count == buckets.count else { return Array(buckets.indices) }
        return buckets.indices.filter { buckets[$0] != other[$0] }
    }
}
