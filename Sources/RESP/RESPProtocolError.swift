/// A request or reply that breaks the RESP grammar or one of the configured limits.
///
/// `message` is the text Redis sends for the same fault, without the `-ERR ` prefix, so
/// clients that match on Redis's wording keep working.
public struct RESPProtocolError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable {
        fileprivate enum Base: Hashable, Sendable {
            case invalidMultibulkLength
            case invalidBulkLength
            case unauthenticatedMultibulkLength
            case unauthenticatedBulkLength
            case tooBigMultibulkCount
            case tooBigBulkCount
            case tooBigInlineRequest
            case unexpectedByte
            case unbalancedQuotes
            case queryBufferLimit
            case invalidReply
            case nestingTooDeep
        }
        fileprivate let base: Base

        public static let invalidMultibulkLength = Code(base: .invalidMultibulkLength)
        public static let invalidBulkLength = Code(base: .invalidBulkLength)
        public static let unauthenticatedMultibulkLength = Code(base: .unauthenticatedMultibulkLength)
        public static let unauthenticatedBulkLength = Code(base: .unauthenticatedBulkLength)
        public static let tooBigMultibulkCount = Code(base: .tooBigMultibulkCount)
        public static let tooBigBulkCount = Code(base: .tooBigBulkCount)
        public static let tooBigInlineRequest = Code(base: .tooBigInlineRequest)
        public static let unexpectedByte = Code(base: .unexpectedByte)
        public static let unbalancedQuotes = Code(base: .unbalancedQuotes)
        public static let queryBufferLimit = Code(base: .queryBufferLimit)
        public static let invalidReply = Code(base: .invalidReply)
        public static let nestingTooDeep = Code(base: .nestingTooDeep)
    }

    public let code: Code
    /// Redis's wording, e.g. `Protocol error: invalid bulk length`.
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    static let invalidMultibulkLength = RESPProtocolError(.invalidMultibulkLength, "Protocol error: invalid multibulk length")
    static let invalidBulkLength = RESPProtocolError(.invalidBulkLength, "Protocol error: invalid bulk length")
    static let unauthenticatedMultibulkLength = RESPProtocolError(
        .unauthenticatedMultibulkLength, "Protocol error: unauthenticated multibulk length")
    static let unauthenticatedBulkLength = RESPProtocolError(
        .unauthenticatedBulkLength, "Protocol error: unauthenticated bulk length")
    static let tooBigMultibulkCount = RESPProtocolError(.tooBigMultibulkCount, "Protocol error: too big mbulk count string")
    static let tooBigBulkCount = RESPProtocolError(.tooBigBulkCount, "Protocol error: too big bulk count string")
    static let tooBigInlineRequest = RESPProtocolError(.tooBigInlineRequest, "Protocol error: too big inline request")
    static let unbalancedQuotes = RESPProtocolError(.unbalancedQuotes, "Protocol error: unbalanced quotes in request")

    static func expectedDollar(got byte: UInt8) -> RESPProtocolError {
        RESPProtocolError(.unexpectedByte, "Protocol error: expected '$', got '\(Character(Unicode.Scalar(byte)))'")
    }
}
