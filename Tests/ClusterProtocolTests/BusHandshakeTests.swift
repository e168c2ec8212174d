import ClusterProtocol
import Testing

@Suite struct BusHandshakeTests {
    let cluster = BusHandshake(cluster: "prod", secrets: ["new-secret", "old-secret"])

    /// Runs a handshake from `client` to `server`; the server's last action.
    func run(_ client: BusHandshakeClient, _ server: inout BusHandshakeServer) -> BusHandshakeServer.Action {
        guard case .answer(let challenge) = server.onRequest(client.hello, serverNonce: BusHandshake.makeNonce(), acceptsName: { _ in true }) else {
            return .refuse("no challenge")
        }
        guard case .success(let (_, prove)) = client.onChallenge(challenge) else { return .refuse("client refused the server") }
        return server.onRequest(prove, serverNonce: [], acceptsName: { _ in true })
    }

    @Test func bothSidesProveTheSecret() {
        var server = BusHandshakeServer(handshake: cluster, me: "n1")
        let client = BusHandshakeClient(handshake: cluster, me: "n2", expecting: "n1")
        #expect(run(client, &server) == .accept(peer: "n2"))
        #expect(server.peer == "n2")
    }

    /// The three passes of docs/security.md: at every step, every pair of nodes connects.
    @Test func everyPairConnectsAtEveryStepOfARotation() {
        let old = ["old-secret"], pass1 = ["old-secret", "new-secret"], pass2 = ["new-secret", "old-secret"], done = ["new-secret"]
        for (a, b) in [(old, pass1), (pass1, pass2), (pass2, done), (pass1, pass1), (pass2, pass2)] {
            for (client, server) in [(a, b), (b, a)] {
                var accepting = BusHandshakeServer(handshake: BusHandshake(cluster: "prod", secrets: server), me: "n1")
                let connecting = BusHandshakeClient(handshake: BusHandshake(cluster: "prod", secrets: client), me: "n2", expecting: "n1")
                #expect(run(connecting, &accepting) == .accept(peer: "n2"), "\(client) → \(server)")
            }
        }
        // Skipping a pass breaks links: that is why there are three.
        var server = BusHandshakeServer(handshake: BusHandshake(cluster: "prod", secrets: pass2), me: "n1")
        #expect(run(BusHandshakeClient(handshake: BusHandshake(cluster: "prod", secrets: old), me: "n2", expecting: "n1"), &server) != .accept(peer: "n2"))
    }

    /// Under tls-cluster, the server must be a member its certificate names.
    @Test func theServersNameMustBeOneItsCertificateGives() {
        var server = BusHandshakeServer(handshake: cluster, me: "n1")
        let client = BusHandshakeClient(handshake: cluster, me: "n2", expecting: nil)
        guard case .answer(let challenge) = server.onRequest(client.hello, serverNonce: BusHandshake.makeNonce(), acceptsName: { _ in true }) else {
            Issue.record("no challenge")
            return
        }
        guard case .success = client.onChallenge(challenge, certificateNames: ["n1", "localhost"]) else {
            Issue.record("a certificate naming n1 was refused")
            return
        }
        guard case .failure(let error) = client.onChallenge(challenge, certificateNames: ["n3", "localhost"]) else {
            Issue.record("a certificate naming n3 was accepted for n1")
            return
        }
        #expect(error.message.contains("claims to be 'n1'"))
        // And the server refuses a client whose name its certificate does not give.
        var strict = BusHandshakeServer(handshake: cluster, me: "n1")
        guard case .refuse = strict.onRequest(client.hello, serverNonce: BusHandshake.makeNonce(), acceptsName: { ["n3"].contains($0) }) else {
            Issue.record("a client claiming a name outside its certificate was answered")
            return
        }
    }

    @Test func aWrongSecretOrClusterIsRefused() {
        var server = BusHandshakeServer(handshake: cluster, me: "n1")
        let stranger = BusHandshakeClient(handshake: BusHandshake(cluster: "prod", secrets: ["guess"]), me: "n2", expecting: "n1")
        guard case .answer(let challenge) = server.onRequest(stranger.hello, serverNonce: BusHandshake.makeNonce(), acceptsName: { _ in true }) else {
            Issue.record("no challenge")
            return
        }
        // The stranger cannot check the server's proof, and its own proof is refused.
        guard case .failure = stranger.onChallenge(challenge) else {
            Issue.record("a stranger accepted the server's proof")
            return
        }
        let forged = BusRequest.prove(proof: [UInt8](repeating: 0, count: 32))
        guard case .refuse = server.onRequest(forged, serverNonce: [], acceptsName: { _ in true }) else {
            Issue.record("a forged proof was accepted")
            return
        }
        var other = BusHandshakeServer(handshake: cluster, me: "n1")
        let wrongCluster = BusHandshakeClient(handshake: BusHandshake(cluster: "test", secrets: ["new-secret"]), me: "n2", expecting: nil)
        guard case .refuse = other.onRequest(wrongCluster.hello, serverNonce: BusHandshake.makeNonce(), acceptsName: { _ in true }) else {
            Issue.record("another cluster's hello was answered")
            return
        }
    }

    @Test func aProofCapturedOnOneConnectionIsUselessOnAnother() {
        var first = BusHandshakeServer(handshake: cluster, me: "n1")
        let client = BusHandshakeClient(handshake: cluster, me: "n2", expecting: "n1", nonce: [UInt8](repeating: 5, count: 32))
        guard case .answer(let challenge) = first.onRequest(client.hello, serverNonce: BusHandshake.makeNonce(), acceptsName: { _ in true }),
              case .success(let (_, prove)) = client.onChallenge(challenge) else {
            Issue.record("handshake failed")
            return
        }
        // An eavesdropper replays the same hello and proof on a new connection: the server's
        // nonce is new, so the old proof does not match it.
        var second = BusHandshakeServer(handshake: cluster, me: "n1")
        _ = second.onRequest(client.hello, serverNonce: BusHandshake.makeNonce(), acceptsName: { _ in true })
        guard case .refuse = second.onRequest(prove, serverNonce: [], acceptsName: { _ in true }) else {
            Issue.record("a replayed proof was accepted")
            return
        }
    }

    @Test func aServerThatIsNotTheExpectedMemberIsRefused() {
        var server = BusHandshakeServer(handshake: cluster, me: "n3")
        let client = BusHandshakeClient(handshake: cluster, me: "n2", expecting: "n1")
        guard case .answer(let challenge) = server.onRequest(client.hello, serverNonce: BusHandshake.makeNonce(), acceptsName: { _ in true }),
              case .failure = client.onChallenge(challenge) else {
            Issue.record("the client accepted the wrong node")
            return
        }
    }

    @Test func unknownNamesAndSelfAreRefused() {
        var server = BusHandshakeServer(handshake: cluster, me: "n1")
        let client = BusHandshakeClient(handshake: cluster, me: "n9", expecting: nil)
        guard case .refuse = server.onRequest(client.hello, serverNonce: BusHandshake.makeNonce(), acceptsName: { $0 != "n9" }) else {
            Issue.record("an unacceptable name was answered")
            return
        }
        var again = BusHandshakeServer(handshake: cluster, me: "n1")
        let me = BusHandshakeClient(handshake: cluster, me: "n1", expecting: nil)
        guard case .refuse = again.onRequest(me.hello, serverNonce: BusHandshake.makeNonce(), acceptsName: { _ in true }) else {
            Issue.record("a node claiming the server's own name was answered")
            return
        }
    }
}
