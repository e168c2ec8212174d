import ClusterCore
import CacheStore
import NIOCore
import RESP
import Testing

@testable import ClusterProtocol

@Suite struct BusSessionTests {
    let join = BusRequest.join(RingMembership.Entry(name: "n4", host: "127.0.0.1", port: 7004, busPort: 17004))
    let get = BusRequest.get(key: ByteBuffer(string: "k"))

    @Test func theHandshakeHasAByteLimitAndADeadline() {
        var session = BusSession(limits: .init(maxUnauthenticatedBytes: 100))
        #expect(session.onRead(buffered: 100) == nil)
        let oversize = session.onRead(buffered: 101)
        guard case .close(.unauthenticatedOversize, nil, _)? = oversize else {
            Issue.record("expected a close, got \(String(describing: oversize))")
            return
        }
        #expect(session.isClosed)
        var late = BusSession()
        #expect(late.onHandshakeDeadline(after: "3 s").map { if case .close(.handshakeTimeout, _, _) = $0 { true } else { false } } == true)
        var served = BusSession(limits: .init(maxUnauthenticatedBytes: 100))
        served.onAuthenticated(peer: "n2", member: true)
        #expect(served.onRead(buffered: 10_000) == nil, "the limit is for the handshake only")
        #expect(served.onHandshakeDeadline(after: "3 s") == nil)
    }

    @Test func aJoinerMayOnlyJoinUntilTheRingHoldsIt() {
        var session = BusSession()
        session.onAuthenticated(peer: "n4", member: false)
        #expect(session.onRequest(get, isMember: false, owed: 0) == .refuse("NOPERM 'n4' is not a member: it may only join"))
        #expect(session.onRequest(.ping, isMember: false, owed: 0) == .serve(peer: "n4"))
        #expect(session.onRequest(join, isMember: false, owed: 0) == .serve(peer: "n4"))
        #expect(session.onRequest(get, isMember: true, owed: 0) == .serve(peer: "n4"), "once in the ring, a member like any other")
        #expect(session.stage == .serving(peer: "n4", member: true))
    }

    @Test func aRequestMaySpeakOnlyForTheAuthenticatedMember() {
        var session = BusSession()
        session.onAuthenticated(peer: "n2", member: true)
        for request in [BusRequest.tree(requester: "n3"), .bucket(requester: "n3", buckets: [1]), .transfer(sender: "n3", entries: []),
                        .transferDone(ring: 1, sender: "n3", coverage: nil)] {
            #expect(session.onRequest(request, isMember: true, owed: 0) == .refuse("NOPERM this connection is 'n2', not 'n3'"))
        }
        #expect(session.onRequest(join, isMember: true, owed: 0) == .refuse("NOPERM this connection is 'n2', not 'n4'"))
        #expect(session.onRequest(.tree(requester: "n2"), isMember: true, owed: 0) == .serve(peer: "n2"))
        #expect(session.onRequest(.hello(cluster: "c", node: "n2", nonce: []), isMember: true, owed: 0) == .refuse("ERR already authenticated"))
        #expect(session.isServing, "refusals keep the connection")
    }

    @Test func tooManyOwedRepliesClose() {
        var session = BusSession(limits: .init(maxPendingReplies: 3))
        session.onAuthenticated(peer: "n2", member: true)
        #expect(session.onRequest(get, isMember: true, owed: 2) == .serve(peer: "n2"))
        guard case .close(.replyQueue, nil, _) = session.onRequest(get, isMember: true, owed: 3) else {
            Issue.record("expected a close")
            return
        }
        #expect(session.onRequest(get, isMember: true, owed: 0) == .refuse("NOAUTH authenticate first"), "closed: nothing is served")
    }

    @Test func silenceClosesAfterTwoChecksAndBadBytesCloseOrRefuse() {
        var session = BusSession()
        #expect(session.onIdleCheck(timeout: "10s") == nil, "something was read since the start")
        #expect(session.onIdleCheck(timeout: "10s") == nil)
        guard case .close(.handshakeTimeout, _, _)? = session.onIdleCheck(timeout: "10s") else {
            Issue.record("silence before the handshake is a handshake that did not come")
            return
        }
        var serving = BusSession()
        serving.onAuthenticated(peer: "n2", member: true)
        _ = serving.onIdleCheck(timeout: "10s")
        _ = serving.onIdleCheck(timeout: "10s")
        _ = serving.onRead(buffered: 1)
        #expect(serving.onIdleCheck(timeout: "10s") == nil, "a read starts the count again")
        #expect(serving.onUndecodable("bad key") == .refuse("ERR bad key"), "after the handshake only the request is refused")
        guard case .close(.protocolError, "ERR x"?, _) = serving.onUnparsable("x", reply: "ERR x") else {
            Issue.record("bytes that are no bus message close")
            return
        }
        var handshaking = BusSession()
        guard case .close(.handshakeRefused, "NOAUTH bad"?, _) = handshaking.onUndecodable("bad") else {
            Issue.record("before the handshake an undecodable request closes")
            return
        }
    }
}

@Suite struct BusSessionViewTests {
    let get = BusRequest.get(key: ByteBuffer(string: "k"))

    @Test func aCoordinatorBehindThisNodesViewIsFencedAndToldItsView() {
        var session = BusSession()
        session.onAuthenticated(peer: "n2", member: true)
        let view = RingStage(epoch: 7, settled: true)
        #expect(session.onRequest(get, isMember: true, owed: 0, view: view) == .serve(peer: "n2"), "no view said yet: a tool, not a coordinator")
        #expect(session.onRequest(.stage(RingStage(epoch: 6, settled: true)), isMember: true, owed: 0, view: view) == .serve(peer: "n2"))
        #expect(session.peerView == RingStage(epoch: 6, settled: true))
        let message = "STALEVIEW coordinator 'n2' is at ring epoch 6, this replica at 7"
        #expect(session.onRequest(get, isMember: true, owed: 0, view: view, now: 1_000) == .fence(peer: "n2", message: message, pushView: true))
        let put = BusRequest.put(BusEntry(key: ByteBuffer(string: "k"), version: Version(timestamp: HLCTimestamp(rawValue: 1), node: NodeID(rawValue: 1)),
                                          expiry: 0, value: nil))
        #expect(session.onRequest(put, isMember: true, owed: 0, view: view, now: 1_050) == .fence(peer: "n2", message: message, pushView: false),
                "the member list went 50 ms ago")
        #expect(session.onRequest(put, isMember: true, owed: 0, view: view, now: 1_100) == .fence(peer: "n2", message: message, pushView: true))
        #expect(session.onRequest(.ping, isMember: true, owed: 0, view: view) == .serve(peer: "n2"), "only replica requests")
        _ = session.onRequest(.stage(RingStage(epoch: 7, settled: false)), isMember: true, owed: 0, view: view)
        #expect(session.onRequest(get, isMember: true, owed: 0, view: view) == .serve(peer: "n2"),
                "the same epoch, moving or settled: its read and write sets cover the new replicas")
    }

    @Test func theStageMessageRoundTrips() throws {
        var buffer = ByteBuffer()
        BusRequest.stage(RingStage(epoch: 42, settled: false)).encode(into: &buffer)
        var parser = RESPRequestParser()
        let frame = try #require(try BusFrame.parse(&buffer, parser: &parser))
        let decoded = try BusRequest.decode(frame, context: BusDecodingContext(limits: BusLimits(), now: 0, members: [:]))
        #expect(decoded == .stage(RingStage(epoch: 42, settled: false)))
    }
}
