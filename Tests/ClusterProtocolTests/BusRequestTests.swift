import CacheStore
import ClusterCore
import ClusterProtocol
import NIOCore
import RESP
import Testing

/// Encodes, frames and decodes one request the way the bus does.
func roundTrip(_ request: BusRequest, context: BusDecodingContext = .test) throws -> BusRequest {
    var bytes = ByteBuffer()
    request.encode(into: &bytes)
    var parser = RESPRequestParser()
    let frame = try #require(try BusFrame.parse(&bytes, parser: &parser))
    #expect(bytes.readableBytes == 0)
    return try BusRequest.decode(frame, context: context)
}

/// Decodes a request given as its arguments.
func decode(_ arguments: [String], context: BusDecodingContext = .test) throws(BusProtocolError) -> BusRequest {
    try BusRequest.decode(BusFrame(arguments: arguments.map { ByteBuffer(string: $0) }), context: context)
}

extension BusDecodingContext {
    static let now: Int64 = 1_800_000_000_000
    static var test: BusDecodingContext {
        BusDecodingContext(limits: BusLimits(maxBulkLength: 1 << 20, replicas: 3, maxSiblings: 16), now: now, members: ["n1": 0, "n2": 1, "n3": 2])
    }
}

let version = Version(timestamp: HLCTimestamp(millis: BusDecodingContext.now - 5, logical: 3), node: NodeID(rawValue: 77))

@Suite struct BusRequestTests {
    static let examples: [BusRequest] = {
        let key = ByteBuffer(string: "user:1")
        let value = ByteBuffer(bytes: [0, 1, 2, 255, 13, 10])
        let sibling = Sibling(clock: VectorClock([NodeID(rawValue: 1): 4]), value: VersionedValue(version: version, value: [1, 2], expiry: 0))
        let entry = RingMembership.Entry(name: "n4", host: "10.0.0.4", port: 7004, busPort: 17004)
        let list = MemberList(sender: "n1", ring: 42, members: [MemberList.Member(entry: entry, gossip: SWIM.Member(name: "n4", incarnation: 9, status: .suspect))],
                              finished: ["n2": nil, "n3": Set(["n1"])])
        return [
            .hello(cluster: "c", node: "n1", nonce: [UInt8](repeating: 7, count: 32)),
            .prove(proof: [UInt8](repeating: 9, count: 32)),
            .get(key: key),
            .put(BusEntry(key: key, version: version, expiry: 1_800_000_100_000, value: value)),
            .delete(key: key, version: version),
            .siblingGet(key: key),
            .siblingPut(key: key, siblings: SiblingSet([sibling])),
            .count(down: ["n2", "n3"]),
            .count(down: []),
            .keys(pattern: ByteBuffer(string: "a*"), down: ["n3"]),
            .scan(cursor: UInt64.max, count: 10, pattern: ByteBuffer(string: "*"), down: []),
            .randomKey,
            .flush,
            .ping,
            .stage(RingStage(epoch: 9, settled: false)),
            .exec(read: 2, write: 3, command: [ByteBuffer(string: "INCRBY"), key, ByteBuffer(string: "5")]),
            .hint(owner: "n2", entry: BusEntry(key: key, version: version, expiry: 0, value: nil)),
            .hint(owner: "n2", entry: BusEntry(key: key, version: version, expiry: 0, value: value)),
            .tree(requester: "n3"),
            .bucket(requester: "n3", buckets: [0, 17, 255]),
            .join(entry),
            .members(list),
            .transfer(sender: "n2", entries: [BusEntry(key: key, version: version, expiry: 5, value: value), BusEntry(key: key, version: version, expiry: 0, value: nil)]),
            .transferPart(BusChunk(sender: "n2", key: key, version: version, expiry: 0, offset: 65536, total: 200_000, bytes: value)),
            .transferDone(ring: 1234, sender: "n3", coverage: nil),
            .transferDone(ring: 1234, sender: "n3", coverage: ["n1", "n2"]),
        ]
    }()

    @Test(arguments: examples)
    func everyRequestRoundTrips(_ request: BusRequest) throws {
        #expect(try roundTrip(request) == request)
    }

    /// The hot path's one-pass encoders write each argument as a bulk string, as a RESP
    /// client would: checked against an independent encoding of the arguments.
    @Test(arguments: [(UInt64(0), UInt32(0), Int64(0), ""), (UInt64(1_800_000_000_000 << 16 | 7), UInt32.max, Int64(1_800_000_123_456), "v"),
                      (UInt64.max, UInt32(12), Int64.max, String(repeating: "x", count: 300)), (UInt64(9), UInt32(9), Int64(-5), "negative expiry")])
    func theHotPathEncodersWriteTheirArgumentsAsBulkStrings(timestamp: UInt64, node: UInt32, expiry: Int64, value: String) {
        func command(_ arguments: [String]) -> String {
            "*\(arguments.count)\r\n" + arguments.map { "$\($0.utf8.count)\r\n\($0)\r\n" }.joined()
        }
        let version = Version(timestamp: HLCTimestamp(rawValue: timestamp), node: NodeID(rawValue: node))
        let key = "key:\(value.count)"
        var out = ByteBuffer()
        Array(key.utf8).withUnsafeBytes { k in
            Array(value.utf8).withUnsafeBytes { BusRequest.encodePut(key: k, version: version, expiry: expiry, value: $0, into: &out) }
        }
        #expect(String(buffer: out) == command(["RC.PUT", key, "\(timestamp)", "\(node)", "\(expiry)", value]))
        out.clear()
        Array(key.utf8).withUnsafeBytes { BusRequest.encodeDelete(key: $0, version: version, into: &out) }
        #expect(String(buffer: out) == command(["RC.DEL", key, "\(timestamp)", "\(node)"]))
        out.clear()
        Array(key.utf8).withUnsafeBytes { BusRequest.encodeGet(key: $0, into: &out) }
        #expect(String(buffer: out) == command(["RC.GET", key]))
    }

    @Test func everyKindHasAnExample() {
        #expect(Set(Self.examples.map(\.kind)) == Set(BusRequest.Kind.allCases))
    }

    @Test func numbersThatOnceCrashedNodesAreRefused() {
        // RC.PUT with a timestamp of 2^63-1 once poisoned the clock.
        #expect(throws: BusProtocolError.self) { try decode(["RC.PUT", "k", "9223372036854775807", "1", "0", "v"]) }
        #expect(throws: BusProtocolError.self) { try decode(["RC.PUT", "k", "18446744073709551615", "1", "0", "v"]) }
        #expect(throws: BusProtocolError.self) { try decode(["RC.PUT", "k", "-1", "1", "0", "v"]) }
        #expect(throws: BusProtocolError.self) { try decode(["RC.PUT", "k", "5", "4294967296", "0", "v"]) }
        #expect(throws: BusProtocolError.self) { try decode(["RC.PUT", "k", "5", "1", "-5", "v"]) }
        // RC.EXEC with a quorum of Int.max, or of an administrative command.
        #expect(throws: BusProtocolError.self) { try decode(["RC.EXEC", "9223372036854775807", "1", "INCR", "k"]) }
        #expect(throws: BusProtocolError.self) { try decode(["RC.EXEC", "1", "4", "INCR", "k"]) }
        #expect(throws: BusProtocolError.self) { try decode(["RC.EXEC", "1", "1", "CONFIG", "GET", "requirepass"]) }
        #expect(throws: BusProtocolError.self) { try decode(["RC.EXEC", "1", "1", "flushall", "x"]) }
        // RC.XFERPART with a total of Int.max.
        #expect(throws: BusProtocolError.self) {
            try decode(["RC.XFERPART", "n2", "k", "5", "1", "0", "0", "9223372036854775807", "abc"])
        }
        #expect(throws: BusProtocolError.self) { try decode(["RC.XFERPART", "n2", "k", "5", "1", "0", "10", "11", "abc"]) }
        // Names that must be members.
        #expect(throws: BusProtocolError.self) { try decode(["RC.HINT", "stranger", "k", "5", "1", "0"]) }
        #expect(throws: BusProtocolError.self) { try decode(["RC.TREE", "stranger", "8"]) }
        #expect(throws: BusProtocolError.self) { try decode(["RC.BUCKET", "n2", "8", "256"]) }
        #expect(throws: BusProtocolError.self) { try decode(["RC.SCAN", "0", "0", "*", ""]) }
        #expect(throws: BusProtocolError.self) { try decode(["RC.NOPE"]) }
        #expect(throws: BusProtocolError.self) { try decode(["RC.GET"]) }
    }

    @Test func memberVersionsAndIncarnationsNearTheirMaximumAreRefused() throws {
        let list = "*4\r\n$2\r\nn1\r\n$1\r\n1\r\n*1\r\n*8\r\n$2\r\nn9\r\n$1\r\nh\r\n$1\r\n1\r\n$1\r\n2\r\n$20\r\n18446744073709551615\r\n$1\r\n0\r\n$1\r\n0\r\n$5\r\nalive\r\n*0\r\n"
        #expect(throws: BusProtocolError.self) { try decode(["RC.MEMBERS", list]) }
        let fine = list.replacingOccurrences(of: "$20\r\n18446744073709551615", with: "$1\r\n3")
        guard case .members(let decoded) = try decode(["RC.MEMBERS", fine]) else { Issue.record("not members"); return }
        #expect(decoded.members.first?.entry.version == 3)
    }

    @Test func causalContextsAndSiblingCountsAreBounded() throws {
        let many = SiblingSet((0..<40).map { i in
            Sibling(clock: VectorClock([NodeID(rawValue: UInt32(i + 1)): 1]), value: VersionedValue(version: Version(timestamp: version.timestamp, node: NodeID(rawValue: UInt32(i + 100))), value: [UInt8(i)], expiry: 0))
        })
        #expect(many.siblings.count == 40)
        #expect(throws: BusProtocolError.self) { try roundTrip(.siblingPut(key: ByteBuffer(string: "k"), siblings: many)) }
        var counters: [NodeID: UInt64] = [:]
        for i in 0..<2000 { counters[NodeID(rawValue: UInt32(i))] = 1 }
        // A clock wider than VectorClock.maxEntries travels cut to that width...
        let wide = SiblingSet([Sibling(clock: VectorClock(counters), value: VersionedValue(version: version, value: [1], expiry: 0))])
        guard case .siblingPut(_, let received) = try roundTrip(.siblingPut(key: ByteBuffer(string: "k"), siblings: wide)) else {
            Issue.record("not a VPUT")
            return
        }
        #expect(received.siblings.first?.clock.entries.count == VectorClock.maxEntries)
        // ...and one that claims more on the wire is refused.
        var bytes: [UInt8] = []
        func put<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.bigEndian) { bytes += $0 } }
        put(UInt16(2000 * 12))
        for node in 0..<2000 {
            put(UInt32(node))
            put(UInt64(1))
        }
        put(version.timestamp.rawValue)
        put(version.node.rawValue)
        put(Int64(0))
        put(UInt8(0))
        put(UInt32(1))
        bytes.append(7)
        #expect(throws: BusProtocolError.self) {
            try BusRequest.decode(BusFrame(arguments: [ByteBuffer(string: "RC.VPUT"), ByteBuffer(string: "k"), ByteBuffer(bytes: bytes)]), context: .test)
        }
    }
}
