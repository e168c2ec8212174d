import Foundation
import Testing

@testable import RingcacheClient

#if canImport(Glibc)
import Glibc
#endif

struct Point: Codable, Equatable {
    var x: Int
    var label: String
}

/// The client against real 3-node clusters on loopback.
@Suite(.serialized, .timeLimit(.minutes(3))) struct ClusterClientTests {
    /// Keys whose first replica is `node`, by the client's view of the ring.
    func keys(ownedFirstBy node: String, in client: RingcacheClient, count: Int, prefix: String = "k") -> [String] {
        let topology = client.topology
        let index = topology.nodes.firstIndex { $0.name == node }!
        var found: [String] = []
        var i = 0
        while found.count < count {
            let key = "\(prefix)\(i)"
            if topology.owners(of: key).first == index { found.append(key) }
            i += 1
        }
        return found
    }

    @Test func ringAwareCallsLandOnTheKeysReplicas() async throws {
        let cluster = try TestCluster(settings: "replicas 2\nread-quorum 1\nwrite-quorum 1")
        defer { cluster.stopAll() }
        try await cluster.startAll()
        let client = try await RingcacheClient.connect([cluster.seeds[0]])
        #expect(client.topology.nodes.map(\.name) == cluster.names)

        let notReplica = try await cluster.total("keys_coordinated_not_replica")
        let asReplica = try await cluster.total("keys_coordinated_as_replica")
        let forwarded = try await cluster.total("read_modify_writes_forwarded")
        let keys = (0..<150).map { "key:\($0)" }
        for key in keys { try await client.set(key, "value of \(key)") }
        for key in keys { #expect(try await client.getString(key) == "value of \(key)") }
        for i in 0..<60 { _ = try await client.incr("counter:\(i % 12)") }
        let values = try await client.mget(keys)
        #expect(values.map { $0.map { String(decoding: $0, as: UTF8.self) } } == keys.map { "value of \($0)" })
        #expect(try await client.exists(keys + ["missing"]) == keys.count)
        #expect(try await client.delete(Array(keys.prefix(30))) == 30)
        #expect(try await client.cluster_counter_total(cluster) == 60)

        let asReplicaAfter = try await cluster.total("keys_coordinated_as_replica")
        #expect(try await cluster.total("keys_coordinated_not_replica") == notReplica, "a ring-aware call went to a node that is not a replica")
        #expect(try await cluster.total("read_modify_writes_forwarded") == forwarded, "an INCR went to a node that is not the key's first replica")
        #expect(asReplicaAfter - asReplica >= 3 * keys.count)

        // The same reads through one node: about a third of the keys are not its own.
        var configuration = RingcacheClient.Configuration()
        configuration.routing = .firstSeed
        let pinned = try await RingcacheClient.connect([cluster.seeds[0]], configuration: configuration)
        for key in keys { _ = try await pinned.get(key) }
        let extraHops = try await cluster.total("keys_coordinated_not_replica") - notReplica
        #expect(extraHops > keys.count / 6 && extraHops < keys.count * 2 / 3)
        await pinned.close()
        await client.close()
    }

    @Test func everyCallWorksAgainstACluster() async throws {
        let cluster = try TestCluster(settings: "replicas 3\nread-quorum 2\nwrite-quorum 2")
        defer { cluster.stopAll() }
        try await cluster.startAll()
        let client = try await RingcacheClient.connect(cluster.seeds.reversed())

        #expect(try await client.set("a", [0, 1, 2, 255] as [UInt8], ttl: .seconds(100)))
        #expect(try await client.get("a") == [0, 1, 2, 255])
        if case .expires(let left) = try await client.ttl("a") {
            #expect(left > .seconds(98) && left <= .seconds(100))
        } else {
            Issue.record("a has no TTL")
        }
        #expect(try await client.set("a", "x", condition: .ifAbsent) == false)
        #expect(try await client.set("b", "x", condition: .ifPresent) == false)
        #expect(try await client.set("b", "y", condition: .ifAbsent))
        #expect(try await client.ttl("b") == .persistent)
        #expect(try await client.ttl("nothing") == .noSuchKey)
        #expect(try await client.expire("b", ttl: .seconds(50)))
        #expect(try await client.expire("nothing", ttl: .seconds(50)) == false)

        try await client.set("point", encoding: Point(x: 3, label: "here"))
        #expect(try await client.get("point", as: Point.self) == Point(x: 3, label: "here"))

        #expect(try await client.incr("n", by: 10) == 10)
        #expect(try await client.decr("n") == 9)
        #expect(try await client.decr("n", by: 4, consistency: .all) == 5)
        await #expect {
            try await client.incr("a")
        } throws: { ($0 as? RingcacheError)?.code == .server }

        try await client.mset([(key: "m1", value: "1"), (key: "m2", value: "2"), (key: "m3", value: "3")])
        #expect(try await client.mget(["m3", "none", "m1", "m2"]).map { $0.map { String(decoding: $0, as: UTF8.self) } } == ["3", nil, "1", "2"])
        #expect(try await client.getString("m2", consistency: .one) == "2")
        #expect(try await client.getString("m2", consistency: .replicas(3)) == "2")

        let siblings = try await client.vget("v")
        #expect(siblings.values.isEmpty)
        try await client.vset("v", "first", context: siblings.context)
        let read = try await client.vget("v", consistency: .all)
        #expect(read.values == [Array("first".utf8)])
        try await client.vset("v", "second", context: read.context)
        #expect(try await client.getString("v") == "second")

        #expect(try await client.send(["PING"]) == .status("PONG"))
        #expect(try await client.send(["GET", "m1"], routingKey: "m1", idempotent: true) == .bulk(Array("1".utf8)))
        await #expect {
            try await client.send(["NOSUCHCOMMAND"])
        } throws: { ($0 as? RingcacheError)?.code == .server }
        await client.close()
        await #expect {
            try await client.get("a")
        } throws: { ($0 as? RingcacheError)?.code == .shutdown }
    }

    @Test func aKilledNodeOpensItsBreakerAndItsRestartClosesIt() async throws {
        let cluster = try TestCluster(settings: "replicas 3\nread-quorum 2\nwrite-quorum 2")
        defer { cluster.stopAll() }
        try await cluster.startAll()
        var configuration = RingcacheClient.Configuration()
        configuration.preferredNode = "n2"
        configuration.breakerFailureThreshold = 2
        configuration.breakerOpenDuration = .milliseconds(300)
        configuration.requestTimeout = .milliseconds(800)
        let client = try await RingcacheClient.connect([cluster.seeds[0]], configuration: configuration)
        let keys = keys(ownedFirstBy: "n2", in: client, count: 40)
        for key in keys { try await client.set(key, "v") }
        #expect(client.breaker(of: "n2")?.isClosed == true)

        cluster.signal("n2", SIGKILL)
        // Reads of n2's keys keep working (retried on the next replica) and open n2's breaker.
        for key in keys {
            #expect(try await client.getString(key) == "v")
        }
        #expect(client.breaker(of: "n2").map { !$0.isClosed } == true, "n2's breaker did not open")

        // With the breaker open, n2's keys cost no failed attempt: straight to the next replica.
        let started = ContinuousClock.now
        for key in keys { #expect(try await client.getString(key) == "v") }
        #expect(ContinuousClock.now - started < .seconds(5))

        try await cluster.start("n2")
        let before = try await cluster.info("n2", "cluster")["keys_coordinated_as_replica"] ?? 0
        try await cluster.waitUntil("n2's breaker closes", timeout: .seconds(20)) {
            for key in keys.prefix(5) { _ = try? await client.get(key) }
            return client.breaker(of: "n2")?.isClosed == true
        }
        for key in keys { #expect(try await client.getString(key) == "v") }
        let after = try await cluster.info("n2", "cluster")["keys_coordinated_as_replica"] ?? 0
        #expect(after - before >= keys.count, "n2's keys did not go back to n2")
        await client.close()
    }

    @Test func aTimedOutIncrIsNotRetriedButAnUnsentOneIs() async throws {
        let cluster = try TestCluster(settings: "replicas 3\nread-quorum 2\nwrite-quorum 2")
        defer { cluster.stopAll() }
        try await cluster.startAll()
        var configuration = RingcacheClient.Configuration()
        configuration.requestTimeout = .milliseconds(400)
        configuration.retries = 3
        let client = try await RingcacheClient.connect([cluster.seeds[1]], configuration: configuration)
        let key = keys(ownedFirstBy: "n1", in: client, count: 1)[0]
        #expect(try await client.incr(key) == 1)

        // n1 stops answering: the INCR was sent, so it times out and is not tried elsewhere.
        cluster.signal("n1", SIGSTOP)
        await #expect {
            try await client.incr(key)
        } throws: { ($0 as? RingcacheError)?.code == .timeout }
        // A GET is idempotent: the client tries the next replica.
        #expect(try await client.getString(key) != nil)
        cluster.signal("n1", SIGCONT)
        try await Task.sleep(for: .seconds(1))
        let afterStop = try await client.get(key, consistency: .all).map { Int(String(decoding: $0, as: UTF8.self))! }
        #expect(afterStop == 1 || afterStop == 2, "the timed-out INCR was applied more than once")

        // n1 is gone: the INCR cannot reach it, so it goes, once, to the next replica.
        cluster.signal("n1", SIGKILL)
        #expect(try await client.incr(key) == afterStop! + 1)
        await #expect {
            try await client.get(key, consistency: .all)
        } throws: { ($0 as? RingcacheError)?.code == .noQuorum }
        await client.close()
    }

    @Test func aWrongPasswordIsReportedAsSuch() async throws {
        let cluster = try TestCluster(nodes: 1, settings: "replicas 1\nread-quorum 1\nwrite-quorum 1\nrequirepass sesame")
        defer { cluster.stopAll() }
        cluster.password = "sesame"
        try await cluster.start("n1")
        await #expect {
            try await RingcacheClient.connect(cluster.seeds)
        } throws: { ($0 as? RingcacheError)?.code == .noAuth }
        var configuration = RingcacheClient.Configuration()
        configuration.password = "wrong"
        await #expect {
            try await RingcacheClient.connect(cluster.seeds, configuration: configuration)
        } throws: { ($0 as? RingcacheError)?.code == .wrongPass }
        configuration.password = "sesame"
        let client = try await RingcacheClient.connect(cluster.seeds, configuration: configuration)
        try await client.set("k", "v")
        #expect(try await client.getString("k") == "v")
        await client.close()
    }
}

extension RingcacheClient {
    /// The sum of the twelve counters the routing test increments.
    fileprivate func cluster_counter_total(_ cluster: TestCluster) async throws -> Int {
        try await mget((0..<12).map { "counter:\($0)" }).reduce(0) { $0 + ($1.flatMap { Int(String(decoding: $0, as: UTF8.self)) } ?? 0) }
    }
}
