import CacheStore

/// The bounds a decoder holds every received field to. Defaults are what the node uses;
/// the shells pass `proto-max-bulk-len` and the replica count in.
public struct BusLimits: Sendable, Hashable {
    /// Largest key, value or chunk (`proto-max-bulk-len`).
    public var maxBulkLength: Int
    /// Replicas per key (N): quorums are within 1...N.
    public var replicas: Int
    /// Most siblings one RC.VPUT may carry (`max-siblings`, with room for a merge).
    public var maxSiblings: Int
    /// A timestamp may run this far ahead of the receiver's clock: further would move the
    /// receiver's hybrid clock (and every later write) into the future.
    public var maxClockSkewMillis: Int64

    public init(maxBulkLength: Int = 512 * 1024 * 1024, replicas: Int = 3, maxSiblings: Int = 64, maxClockSkewMillis: Int64 = 60_000) {
        self.maxBulkLength = maxBulkLength
        self.replicas = replicas
        self.maxSiblings = maxSiblings
        self.maxClockSkewMillis = maxClockSkewMillis
    }

    /// Member names travel as u8-length strings in gossip: 255 bytes at most.
    public static let maxNameLength = 255
    /// Members one member list may name; far above any ring this code is meant for.
    public static let maxMembers = 4096
    /// Incarnations and member versions stay below this, so `+ 1` never overflows, however
    /// often a member is refuted or rejoins (2^62 is beyond any real count).
    public static let maxCounter: UInt64 = 1 << 62
    /// Absolute expiries fit a record's 48 bits of milliseconds (0: none).
    public static let maxExpiry: Int64 = (1 << 48) - 1
    /// Entries one RC.XFER step may carry.
    public static let maxTransferEntries = 65_536
    /// Largest RC.XFERPART chunk (senders use 64 KiB).
    public static let maxChunkLength = 4 * 1024 * 1024
    /// Keys one RC.SCAN step may ask for.
    public static let maxScanCount = 1_000_000
    /// Entries in one vector clock: one per node that wrote the key.
    public static let maxClockEntries = 1024
    /// Merkle tree depth the anti-entropy exchange uses.
    public static let antiEntropyBits = 8
}
