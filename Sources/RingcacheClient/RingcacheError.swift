/// Why a call failed. `code` says what kind of failure it was; `message` is the server's text
/// or a description of the transport failure; `node` names the node that was asked, if any.
public struct RingcacheError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kind of failure.
    public enum Code: Sendable, Hashable {
        /// Too few replicas answered for the consistency level (`NOQUORUM`).
        case noQuorum
        /// The node is out of memory under `noeviction` (`OOM`).
        case outOfMemory
        /// The node wants a password (`NOAUTH`).
        case noAuth
        /// The password was refused (`WRONGPASS`).
        case wrongPass
        /// The key holds something this call cannot work on (`WRONGTYPE`).
        case wrongType
        /// Any other error reply (`ERR ...`): the command itself was wrong.
        case server
        /// The peer broke the protocol, or answered with something this call cannot read.
        case `protocol`
        /// Could not connect, or the connection broke before the reply came.
        case connection
        /// No reply within the request timeout.
        case timeout
        /// Every node that could serve the call has its circuit breaker open.
        case circuitOpen
        /// The client was shut down.
        case shutdown
    }

    /// What kind of failure it was.
    public let code: Code
    /// The server's error reply, or what went wrong on the way.
    public let message: String
    /// The node the call went to, when one was chosen.
    public let node: String?

    /// An error of `code`.
    public init(_ code: Code, _ message: String, node: String? = nil) {
        self.code = code
        self.message = message
        self.node = node
    }

    /// Maps an error reply to its code by the reply's first word, as Redis clients do.
    init(reply message: String, node: String?) {
        let prefix = message.prefix { $0 != " " }
        let code: Code = switch prefix {
        case "NOQUORUM": .noQuorum
        case "OOM": .outOfMemory
        case "NOAUTH": .noAuth
        case "WRONGPASS": .wrongPass
        case "WRONGTYPE": .wrongType
        default: .server
        }
        self.init(code, message, node: node)
    }

    /// Failures of the transport, which say nothing about the command: the ones a retry or
    /// another replica can fix.
    var isTransport: Bool {
        switch code {
        case .connection, .timeout, .circuitOpen: true
        default: false
        }
    }

    public var description: String {
        node.map { "\(message) (node \($0))" } ?? message
    }
}

/// A failure that also says whether the request could have reached the node: an unsent
/// request may be retried whatever the command is.
struct TransportFailure: Error {
    let error: RingcacheError
    let sent: Bool
}
