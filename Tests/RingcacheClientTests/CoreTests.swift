import ClusterCore
import NIOCore
import RESP
import Testing

@testable import RingcacheClient

@Suite struct CircuitBreakerTests {
    let start = ContinuousClock.now

    @Test func opensAfterConsecutiveFailuresOnly() {
        var breaker = CircuitBreaker(failureThreshold: 3, openDuration: .seconds(2))
        var opened = [breaker.recordFailure(now: start), breaker.recordFailure(now: start)]
        breaker.recordSuccess()
        opened += [breaker.recordFailure(now: start), breaker.recordFailure(now: start)]
        #expect(opened == [false, false, false, false])
        let allowedBefore = breaker.allowRequest(now: start)
        let openedNow = breaker.recordFailure(now: start)
        let allowedAfter = breaker.allowRequest(now: start + .seconds(1))
        #expect(allowedBefore && openedNow && breaker.isOpen && !allowedAfter)
    }

    @Test func halfOpenLetsOneProbeThrough() {
        var breaker = CircuitBreaker(failureThreshold: 1, openDuration: .seconds(2))
        breaker.recordFailure(now: start)
        #expect(!breaker.wouldAllow(now: start + .milliseconds(1999)))
        let probe = breaker.allowRequest(now: start + .seconds(2))
        #expect(probe && breaker.isHalfOpen)
        let second = breaker.allowRequest(now: start + .seconds(2))
        #expect(!second, "only one probe at a time")
        breaker.recordSuccess()
        let after = breaker.allowRequest(now: start + .seconds(2))
        #expect(breaker.isClosed && after)
    }

    @Test func failedProbeOpensAgainForAnotherPeriod() {
        var breaker = CircuitBreaker(failureThreshold: 1, openDuration: .seconds(2))
        breaker.recordFailure(now: start)
        let probe = breaker.allowRequest(now: start + .seconds(3))
        let reopened = breaker.recordFailure(now: start + .seconds(3))
        let during = breaker.allowRequest(now: start + .seconds(4))
        let later = breaker.allowRequest(now: start + .seconds(5))
        #expect(probe && reopened && !during && later)
    }
}

@Suite struct BackoffTests {
    @Test func growsToTheCapAndJittersBelowIt() {
        let backoff = Backoff(base: .milliseconds(50), cap: .seconds(2))
        #expect(backoff.ceiling(attempt: 0) == .milliseconds(50))
        #expect(backoff.ceiling(attempt: 3) == .milliseconds(400))
        #expect(backoff.ceiling(attempt: 10) == .seconds(2))
        #expect(backoff.ceiling(attempt: 500) == .seconds(2))
        #expect(backoff.delay(attempt: 3, unit: 0.5) == .milliseconds(200))
        #expect(backoff.delay(attempt: 3, unit: 7) == .milliseconds(400))
        for attempt in 0..<20 {
            let delay = backoff.delay(attempt: attempt)
            #expect(delay >= .zero && delay <= backoff.ceiling(attempt: attempt))
        }
    }
}

@Suite struct TopologyTests {
    /// The ring a node reports, read back by the client, places every key where the node does.
    @Test func ownersMatchTheServersRing() throws {
        for members in [1, 3, 7] {
            let names = (1...members).map { "n\($0)" }
            let ring = HashRing(members: names, vnodes: 16, replicas: min(3, members), epoch: 4)
            let reply = RESPValue.array(ring.ranges.map { range in
                .array([.bulk(String(range.start)), .bulk(String(range.end)), .array(range.replicas.map { .bulk(names[$0]) })])
            })
            let nodes = names.enumerated().map { Topology.Node(name: $1, host: "127.0.0.1", port: 7001 + $0) }
            let topology = try Topology(nodes: nodes, epoch: 4, ranges: Topology.parseRing(reply))
            var generator = SystemRandomNumberGenerator()
            for _ in 0..<2000 {
                let key = (0..<Int.random(in: 1...24, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
                #expect(topology.owners(of: key) == ring.preferenceList(forKey: key.withUnsafeBytes { $0 }).members)
            }
            #expect(topology.owners(ofPosition: 0) == ring.preferenceList(forPosition: 0).members)
            #expect(topology.owners(ofPosition: .max) == ring.preferenceList(forPosition: .max).members)
        }
    }

    /// A ring rebuilt from CLUSTER RING SHAPE, whatever order CLUSTER NODES lists the nodes in.
    @Test func aRingBuiltFromItsShapeMatchesTheServersRing() throws {
        let names = ["n1", "n2", "n3", "n4", "n5"]
        let ring = HashRing(members: names, vnodes: 8, replicas: 3, epoch: 2)
        let shape = RESPValue.array([.integer(2), .integer(8), .integer(3), .array(names.map { .bulk($0) })])
        let listed = names.reversed().enumerated().map { Topology.Node(name: $1, host: "127.0.0.1", port: 7001 + $0) }
        let topology = try Topology(nodes: listed, shape: Topology.parseShape(shape))
        #expect(topology.nodes.map(\.name) == names)
        for i in 0..<2000 {
            let key = "key:\(i)"
            #expect(topology.owners(of: key) == ring.preferenceList(forKey: key).members)
        }
        #expect(throws: RingcacheError.self) {
            try Topology(nodes: Array(listed.prefix(2)), shape: Topology.parseShape(shape))
        }
    }

    @Test func readsClusterNodes() throws {
        let text = """
            n1 127.0.0.1:7001 127.0.0.1:17001 myself,alive 3 0.3333
            n2 127.0.0.1:7002 127.0.0.1:17002 dead 3 0.3333
            n3 [::1]:7003 [::1]:17003 suspect 3 0.3334

            """
        let (nodes, epoch) = try Topology.parseNodes(text)
        #expect(epoch == 3)
        #expect(nodes.map(\.name) == ["n1", "n2", "n3"])
        #expect(nodes.map(\.state) == ["alive", "dead", "suspect"])
        #expect(nodes[2].host == "::1" && nodes[2].port == 7003)
        #expect(throws: RingcacheError.self) { try Topology.parseNodes("garbage") }
    }

    @Test func refusesARingThatNamesUnknownNodes() {
        let reply = RESPValue.array([.array([.bulk("0"), .bulk("99"), .array([.bulk("ghost")])])])
        #expect(throws: RingcacheError.self) {
            try Topology(nodes: [Topology.Node(name: "n1", host: "h", port: 1)], epoch: 0, ranges: Topology.parseRing(reply))
        }
    }
}

@Suite struct WireTests {
    @Test func errorsMapByTheirFirstWord() {
        #expect(RingcacheError(reply: "NOQUORUM read needed 2 of 3 replicas", node: nil).code == .noQuorum)
        #expect(RingcacheError(reply: "OOM command not allowed", node: nil).code == .outOfMemory)
        #expect(RingcacheError(reply: "NOAUTH Authentication required.", node: nil).code == .noAuth)
        #expect(RingcacheError(reply: "WRONGPASS invalid username-password pair", node: nil).code == .wrongPass)
        #expect(RingcacheError(reply: "WRONGTYPE Operation against a key", node: nil).code == .wrongType)
        #expect(RingcacheError(reply: "ERR syntax error", node: "n1").code == .server)
        #expect(RingcacheError(reply: "ERR syntax error", node: "n1").description == "ERR syntax error (node n1)")
    }

    @Test func commandsAreEncodedAsBulkArrays() {
        var buffer = CommandEncoder.command("SET", ["k", [0, 13, 10] as [UInt8], 42])
        #expect(buffer.readString(length: buffer.readableBytes) == "*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n\u{0}\r\n\r\n$2\r\n42\r\n")
    }

    @Test func durationsBecomeWholeMilliseconds() {
        #expect(RingcacheClient.milliseconds(.seconds(2)) == "2000")
        #expect(RingcacheClient.milliseconds(.milliseconds(1500)) == "1500")
        #expect(RingcacheClient.milliseconds(.microseconds(10)) == "1")
    }

    @Test func repliesConvert() {
        let value = RESPValue.array([.bulk("a"), .integer(3), .bulkString(nil), .simpleString(ByteBuffer(string: "OK"))])
        #expect(RingcacheReply(value) == .array([.bulk(Array("a".utf8)), .integer(3), .null, .status("OK")]))
        #expect(RingcacheReply(.integer(7)).string == "7")
    }
}
