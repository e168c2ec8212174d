import ClusterCore
import Crypto
import Testing

@testable import RingcacheServer

@Suite struct GossipCodecTests {
    let key = SymmetricKey(data: Array("secret".utf8))
    let message = SWIM.Message.pingRequest(
        sequence: 42, target: "n3",
        updates: [SWIM.Member(name: "n2", incarnation: 7, status: .suspect), SWIM.Member(name: "n4", incarnation: 0, status: .dead)])

    @Test func roundTripsWithAndWithoutAMAC() throws {
        for key in [key, nil] {
            let packet = GossipCodec.encode(message, from: "n1", cluster: "c", key: key)
            let (sender, decoded) = try GossipCodec.decode(packet, cluster: "c", key: key)
            #expect(sender == "n1" && decoded == message)
        }
    }

    @Test func rejectsTamperedForeignAndMalformedPackets() {
        var packet = GossipCodec.encode(message, from: "n1", cluster: "c", key: key)
        packet[10] ^= 1
        #expect(throws: GossipCodec.Rejection.badMAC) { try GossipCodec.decode(packet, cluster: "c", key: key) }
        let unsigned = GossipCodec.encode(message, from: "n1", cluster: "c", key: nil)
        #expect(throws: GossipCodec.Rejection.badMAC) { try GossipCodec.decode(unsigned + [UInt8](repeating: 0, count: 32), cluster: "c", key: key) }
        let foreign = GossipCodec.encode(message, from: "n1", cluster: "other", key: nil)
        #expect(throws: GossipCodec.Rejection.foreignCluster) { try GossipCodec.decode(foreign, cluster: "c", key: nil) }
        #expect(throws: GossipCodec.Rejection.malformed) { try GossipCodec.decode(Array(unsigned.dropLast()), cluster: "c", key: nil) }
        // Seeded garbage is rejected, never a crash.
        var random = SimulationRandom(seed: 9)
        for _ in 0..<2_000 {
            var bytes = Array(unsigned.prefix(Int(random.next() % UInt64(unsigned.count + 1))))
            for _ in 0..<Int(random.next() % 4) where !bytes.isEmpty {
                bytes[Int(random.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: random.next())
            }
            _ = try? GossipCodec.decode(bytes, cluster: "c", key: nil)
        }
    }
}
