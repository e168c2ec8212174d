/// Hard limits on what a peer may make us buffer. Defaults follow redis.conf.
public struct RESPLimits: Hashable, Sendable {
    /// Largest bulk string accepted (`proto-max-bulk-len`).
    public var maxBulkLength: Int
    /// Most elements in one multibulk request (`proto-max-multibulk-len`).
    public var maxMultibulkLength: Int
    /// Longest inline request line, and longest `*`/`$` header line.
    public var maxInlineLength: Int
    /// Most unprocessed bytes buffered for one client (`client-query-buffer-limit`).
    public var maxQueryBuffer: Int

    public init(
        maxBulkLength: Int = 512 * 1024 * 1024,
        maxMultibulkLength: Int = 1024 * 1024,
        maxInlineLength: Int = 64 * 1024,
        maxQueryBuffer: Int = 1024 * 1024 * 1024
    ) {
        self.maxBulkLength = maxBulkLength
        self.maxMultibulkLength = maxMultibulkLength
        self.maxInlineLength = maxInlineLength
        self.maxQueryBuffer = maxQueryBuffer
    }

    /// Limits that apply before a client has authenticated, as in Redis.
    public static let unauthenticatedMultibulkLength = 10
    public static let unauthenticatedBulkLength = 16384
}
