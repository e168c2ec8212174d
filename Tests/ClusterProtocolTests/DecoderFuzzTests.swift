import CacheStore
import ClusterCore
import ClusterProtocol
import NIOCore
import RESP
import Testing

/// Seeded fuzzing of every decoder that reads bytes from a peer: random mutations of valid
/// messages, and random bytes. A decoder may refuse anything; it may never trap. A failing
/// seed is reproduced by running the same test again (the seeds are fixed).
@Suite struct DecoderFuzzTests {
    /// Mutates `bytes` a few times: flips, overwrites with interesting bytes, cuts, repeats.
    static func mutate(_ bytes: [UInt8], _ random: inout SimulationRandom) -> [UInt8] {
        var bytes = bytes
        let interesting: [[UInt8]] = [
            Array("18446744073709551615".utf8), Array("9223372036854775807".utf8), Array("-1".utf8), Array("0".utf8),
            Array("4294967296".utf8), Array("*2147483647\r\n".utf8), Array("$536870912\r\n".utf8), Array("\r\n".utf8), [0xFF, 0xFF],
        ]
        for _ in 0..<(1 + Int(random.next() % 4)) {
            guard !bytes.isEmpty else { break }
            let at = Int(random.next() % UInt64(bytes.count))
            switch random.next() % 5 {
            case 0: bytes[at] ^= UInt8(truncatingIfNeeded: 1 << (random.next() % 8))
            case 1: bytes[at] = UInt8(truncatingIfNeeded: random.next())
            case 2: bytes.replaceSubrange(at..<min(bytes.count, at + Int(random.next() % 8)), with: interesting[Int(random.next() % UInt64(interesting.count))])
            case 3: bytes.removeSubrange(at..<min(bytes.count, at + 1 + Int(random.next() % 16)))
            default: bytes.insert(contentsOf: bytes[at..<min(bytes.count, at + Int(random.next() % 16))], at: at)
            }
        }
        return bytes
    }

    /// Frames and decodes `bytes` as the bus handler does, every request in them.
    static func decodeRequests(_ bytes: [UInt8]) {
        var buffer = ByteBuffer(bytes: bytes)
        var parser = RESPRequestParser(limits: RESPLimits(maxBulkLength: 1 << 20))
        while true {
            guard let frame = try? BusFrame.parse(&buffer, parser: &parser) else { return }
            _ = try? BusRequest.decode(frame, context: .test)
        }
    }

    @Test(arguments: 0..<8)
    func mutatedRequestsNeverTrap(seed: UInt64) {
        var random = SimulationRandom(seed: seed)
        let valid = BusRequestTests.examples.map { request -> [UInt8] in
            var buffer = ByteBuffer()
            request.encode(into: &buffer)
            return Array(buffer.readableBytesView)
        }
        for _ in 0..<2_500 {
            let base = valid[Int(random.next() % UInt64(valid.count))]
            Self.decodeRequests(Self.mutate(base, &random))
        }
    }

    @Test func mutatedRepliesNeverTrap() {
        var random = SimulationRandom(seed: 77)
        let list = MemberList(sender: "n1", ring: 9, members: [MemberList.Member(entry: RingMembership.Entry(name: "n2", host: "h", port: 1, busPort: 2), gossip: nil)],
                              finished: ["n1": nil])
        let replies: [(BusReply, BusRequest.Kind)] = [
            (.ok, .flush), (.flag(true), .put), (.integer(5), .count),
            (.entry(BusValue(version: version, expiry: 9, value: ByteBuffer(string: "v"))), .get), (.entry(nil), .get),
            (.siblings(SiblingSet([Sibling(clock: VectorClock(), value: VersionedValue(version: version, value: [1], expiry: 0))])), .siblingGet),
            (.keys([ByteBuffer(string: "a")]), .keys), (.scan(next: 3, keys: [ByteBuffer(string: "b")]), .scan), (.key(nil), .randomKey),
            (.digest([UInt64](repeating: 7, count: 256)), .tree), (.versions([BusVersionedKey(key: ByteBuffer(string: "k"), version: version)]), .bucket),
            (.members(list), .members), (.challenge(node: "n2", nonce: [UInt8](repeating: 1, count: 32), proof: [UInt8](repeating: 2, count: 32)), .hello),
            (.error("ERR x"), .get),
        ]
        let parser = RESPValueParser(limits: RESPLimits(maxBulkLength: 1 << 20, maxMultibulkLength: 1 << 16))
        for (reply, kind) in replies {
            var buffer = ByteBuffer()
            reply.encode(into: &buffer)
            var copy = buffer
            let value = try? parser.parse(&copy)
            #expect(value.map { try? BusReply.decode($0, answering: kind, context: .test) } == .some(reply), "\(kind)")
            let bytes = Array(buffer.readableBytesView)
            for _ in 0..<1_500 {
                var mutated = ByteBuffer(bytes: Self.mutate(bytes, &random))
                var scanner = RESPFrameScanner(limits: parser.limits)
                let length = try? scanner.scan(mutated)
                guard let value = try? parser.parse(&mutated) else { continue }
                #expect(length != nil, "the scanner found no end where the parser found a value")
                for kind in BusRequest.Kind.allCases { _ = try? BusReply.decode(value, answering: kind, context: .test) }
            }
        }
    }

    @Test func randomBytesNeverTrap() {
        var random = SimulationRandom(seed: 3)
        let keys = GossipPacket.Keys(cluster: "c", secrets: [])
        for _ in 0..<20_000 {
            let count = Int(random.next() % 200)
            var bytes = (0..<count).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            if random.next() % 2 == 0, !bytes.isEmpty { bytes[0] = UInt8(ascii: "*") }
            Self.decodeRequests(bytes)
            _ = try? GossipPacket.decode(bytes, cluster: "c", keys: keys)
            var buffer = ByteBuffer(bytes: bytes)
            _ = try? MemberList.decode(&buffer)
        }
    }

    @Test func mutatedGossipNeverTraps() {
        var random = SimulationRandom(seed: 5)
        let keys = GossipPacket.Keys(cluster: "c", secrets: [])
        let message = SWIM.Message.ack(sequence: 3, target: "n2", updates: [SWIM.Member(name: "n3", incarnation: 4, status: .dead)])
        let packet = GossipPacket.encode(message, from: "n1", stamp: 11, cluster: "c", keys: keys)
        for _ in 0..<5_000 {
            _ = try? GossipPacket.decode(Self.mutate(packet, &random), cluster: "c", keys: keys)
        }
    }
}
