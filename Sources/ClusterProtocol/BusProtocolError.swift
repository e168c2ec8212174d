/// Why a message from a peer was refused: the one error shape of the cluster protocol.
///
/// Every decoder in this module throws it instead of trapping, whatever the bytes say; the
/// shells answer it with `-ERR <message>` (or drop a datagram) and count it by `code`.
public struct BusProtocolError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate enum Base: String, Hashable, Sendable {
            case malformed, unknownCommand, outOfRange, unknownMember, notAllowed, tooLarge, unexpectedReply
        }
        fileprivate let base: Base
        /// A field is missing, has the wrong shape, or does not parse.
        public static let malformed = Code(base: .malformed)
        /// The command name is not one the bus knows.
        public static let unknownCommand = Code(base: .unknownCommand)
        /// A number is outside what the field may hold.
        public static let outOfRange = Code(base: .outOfRange)
        /// A member name that must be known is not.
        public static let unknownMember = Code(base: .unknownMember)
        /// The message is not allowed here (RC.EXEC of an administrative command).
        public static let notAllowed = Code(base: .notAllowed)
        /// A count or a size beyond the bus's limits.
        public static let tooLarge = Code(base: .tooLarge)
        /// A reply that does not answer the request it follows.
        public static let unexpectedReply = Code(base: .unexpectedReply)
        public var description: String { base.rawValue }
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}
