import Crypto
import NIOCore

/// Mutual authentication of a bus connection, with the secret never on the wire.
///
/// The connecting node (the client) sends `RC.HELLO cluster name nonceC`; the accepting node
/// (the server) answers with its name, a fresh `nonceS` and its proof; the client checks it
/// and sends `RC.PROVE proofC`. Each proof is HMAC-SHA256, under the cluster secret, of the
/// role, the cluster name, both node names and both nonces, so neither side's proof can be
/// replayed on another connection (the other side's nonce is new) or reflected (the role
/// differs). With several secrets (`cluster-secret new old`, while rotating) a node proves
/// with the first and accepts any.
public struct BusHandshake: Sendable {
    public static let nonceLength = 32
    public static let proofLength = 32
    /// Bytes a peer may send before the handshake is done: a hello and a proof fit in far less.
    public static let maxUnauthenticatedBytes = 4096

    public enum Role: String, Sendable { case client, server }

    /// The keys, the first one proving.
    private let secrets: [[UInt8]]
    private var keys: [SymmetricKey] { secrets.map { SymmetricKey(data: $0) } }
    public let cluster: String

    /// - Parameter secrets: the cluster secrets, newest first; none on a loopback-only
    ///   cluster (the cluster name keys the proofs then: no protection, the same code path).
    public init(cluster: String, secrets: [String]) {
        self.cluster = cluster
        let material = secrets.isEmpty ? [cluster] : secrets
        self.secrets = material.map { Array($0.utf8) }
    }

    public static func makeNonce() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<nonceLength).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }

    /// The proof `role` gives on a connection from `client` to `server`.
    public func proof(_ role: Role, client: String, server: String, clientNonce: [UInt8], serverNonce: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: Self.transcript(role, cluster, client, server, clientNonce, serverNonce), using: keys[0]))
    }

    /// True if `proof` is what `role` would give knowing one of this node's secrets.
    public func verify(_ proof: [UInt8], _ role: Role, client: String, server: String, clientNonce: [UInt8], serverNonce: [UInt8]) -> Bool {
        let transcript = Self.transcript(role, cluster, client, server, clientNonce, serverNonce)
        return keys.contains { HMAC<SHA256>.isValidAuthenticationCode(proof, authenticating: transcript, using: $0) }
    }

    /// Length-prefixed fields, so no two different transcripts share bytes.
    static func transcript(_ role: Role, _ cluster: String, _ client: String, _ server: String, _ clientNonce: [UInt8], _ serverNonce: [UInt8]) -> [UInt8] {
        var bytes = Array("ringcache-bus-v2".utf8)
        for field in [Array(role.rawValue.utf8), Array(cluster.utf8), Array(client.utf8), Array(server.utf8), clientNonce, serverNonce] {
            withUnsafeBytes(of: UInt32(truncatingIfNeeded: field.count).bigEndian) { bytes.append(contentsOf: $0) }
            bytes.append(contentsOf: field)
        }
        return bytes
    }
}

/// The accepting side of the handshake, as a state machine: messages in, what to answer out.
public struct BusHandshakeServer: Sendable {
    public enum State: Sendable {
        case awaitingHello
        case awaitingProof(client: String, clientNonce: [UInt8], serverNonce: [UInt8])
        case authenticated(peer: String)
        case refused
    }

    public enum Action: Sendable, Equatable {
        /// Answer the hello with this challenge.
        case answer(BusReply)
        /// The peer proved itself: answer `+OK`; it may now send anything.
        case accept(peer: String)
        /// Answer this error and close the connection.
        case refuse(String)
    }

    public private(set) var state = State.awaitingHello
    let handshake: BusHandshake
    let me: String

    public init(handshake: BusHandshake, me: String) {
        self.handshake = handshake
        self.me = me
    }

    public var peer: String? {
        if case .authenticated(let peer) = state { return peer }
        return nil
    }

    /// A request before the handshake finished. `acceptsName` says whether a node of that
    /// name may connect (a member, or any name on a node that admits joiners).
    public mutating func onRequest(_ request: BusRequest, serverNonce: [UInt8], acceptsName: (String) -> Bool) -> Action {
        switch (state, request) {
        case (.awaitingHello, .hello(let cluster, let client, let clientNonce)):
            guard cluster == handshake.cluster else { return refuse("NOAUTH wrong cluster name") }
            guard client != me, acceptsName(client) else { return refuse("NOAUTH unknown node '\(client)'") }
            state = .awaitingProof(client: client, clientNonce: clientNonce, serverNonce: serverNonce)
            let proof = handshake.proof(.server, client: client, server: me, clientNonce: clientNonce, serverNonce: serverNonce)
            return .answer(.challenge(node: me, nonce: serverNonce, proof: proof))
        case (.awaitingProof(let client, let clientNonce, let serverNonce), .prove(let proof)):
            guard handshake.verify(proof, .client, client: client, server: me, clientNonce: clientNonce, serverNonce: serverNonce) else {
                return refuse("NOAUTH cluster bus authentication failed")
            }
            state = .authenticated(peer: client)
            return .accept(peer: client)
        case (.authenticated, _):
            preconditionFailure("handshake request after authentication in state \(state)")
        default:
            return refuse("NOAUTH cluster bus authentication required")
        }
    }

    private mutating func refuse(_ message: String) -> Action {
        state = .refused
        return .refuse(message)
    }
}

/// The connecting side of the handshake.
public struct BusHandshakeClient: Sendable {
    let handshake: BusHandshake
    let me: String
    let nonce: [UInt8]
    /// The node the link means to reach; nil when any will do (a seed, known by address).
    let expected: String?

    public init(handshake: BusHandshake, me: String, expecting peer: String?, nonce: [UInt8] = BusHandshake.makeNonce()) {
        self.handshake = handshake
        self.me = me
        self.expected = peer
        self.nonce = nonce
    }

    public var hello: BusRequest { .hello(cluster: handshake.cluster, node: me, nonce: nonce) }

    /// Checks the server's challenge; the proof to send, or why the server is refused.
    ///
    /// - Parameter certificateNames: under mutual TLS, the names the server's certificate
    ///   gives: the member it claims to be must be one of them.
    public func onChallenge(_ reply: BusReply, certificateNames: Set<String>? = nil) -> Result<(peer: String, prove: BusRequest), BusProtocolError> {
        switch reply {
        case .challenge(let server, let serverNonce, let proof):
            if let expected, expected != server {
                return .failure(BusProtocolError(.unknownMember, "expected node '\(expected)', the peer is '\(server)'"))
            }
            if let certificateNames, !certificateNames.contains(server) {
                return .failure(BusProtocolError(
                    .notAllowed, "the peer claims to be '\(server)', its certificate names \(certificateNames.sorted().joined(separator: ", "))"))
            }
            guard handshake.verify(proof, .server, client: me, server: server, clientNonce: nonce, serverNonce: serverNonce) else {
                return .failure(BusProtocolError(.notAllowed, "the peer's proof does not match the cluster secret"))
            }
            let mine = handshake.proof(.client, client: me, server: server, clientNonce: nonce, serverNonce: serverNonce)
            return .success((server, .prove(proof: mine)))
        case .error(let message):
            return .failure(BusProtocolError(.notAllowed, message))
        default:
            return .failure(BusProtocolError(.unexpectedReply, "unexpected answer to RC.HELLO"))
        }
    }
}
