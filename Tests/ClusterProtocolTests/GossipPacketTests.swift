import ClusterCore
import ClusterProtocol
import Testing

@Suite struct GossipPacketTests {
    let keys = GossipPacket.Keys(cluster: "c", secrets: ["a-secret-of-sixteen"])
    let message = SWIM.Message.pingRequest(
        sequence: 42, target: "n3",
        updates: [SWIM.Member(name: "n2", incarnation: 7, status: .suspect), SWIM.Member(name: "n4", incarnation: 0, status: .dead)])

    @Test func roundTripsUnderASecretAndWithout() throws {
        for keys in [keys, GossipPacket.Keys(cluster: "c", secrets: [])] {
            let packet = GossipPacket.encode(message, from: "n1", stamp: 99, cluster: "c", keys: keys)
            let (sender, stamp, decoded) = try GossipPacket.decode(packet, cluster: "c", keys: keys)
            #expect(sender == "n1" && stamp == 99 && decoded == message)
        }
    }

    @Test func anOldSecretStillVerifiesWhileRotating() throws {
        let old = GossipPacket.Keys(cluster: "c", secrets: ["the-old-secret-16+"])
        let rotating = GossipPacket.Keys(cluster: "c", secrets: ["the-new-secret-16+", "the-old-secret-16+"])
        let packet = GossipPacket.encode(message, from: "n1", stamp: 1, cluster: "c", keys: old)
        #expect(try GossipPacket.decode(packet, cluster: "c", keys: rotating).sender == "n1")
        let fresh = GossipPacket.encode(message, from: "n1", stamp: 1, cluster: "c", keys: rotating)
        #expect(throws: GossipPacket.Rejection.badMAC) { try GossipPacket.decode(fresh, cluster: "c", keys: old) }
    }

    @Test func rejectsTamperedForeignAndMalformedPackets() {
        var packet = GossipPacket.encode(message, from: "n1", stamp: 5, cluster: "c", keys: keys)
        packet[10] ^= 1
        #expect(throws: GossipPacket.Rejection.badMAC) { try GossipPacket.decode(packet, cluster: "c", keys: keys) }
        let other = GossipPacket.encode(message, from: "n1", stamp: 5, cluster: "c", keys: GossipPacket.Keys(cluster: "c", secrets: []))
        #expect(throws: GossipPacket.Rejection.badMAC) { try GossipPacket.decode(other, cluster: "c", keys: keys) }
        let foreign = GossipPacket.encode(message, from: "n1", stamp: 5, cluster: "other", keys: keys)
        #expect(throws: GossipPacket.Rejection.foreignCluster) { try GossipPacket.decode(foreign, cluster: "c", keys: keys) }
        #expect(throws: GossipPacket.Rejection.self) { try GossipPacket.decode(Array(packet.dropLast()), cluster: "c", keys: keys) }
        #expect(throws: GossipPacket.Rejection.malformed) { try GossipPacket.decode([1, 2, 3], cluster: "c", keys: keys) }
    }

    @Test func anIncarnationNearItsMaximumIsRefused() {
        // A signed update about the receiver with incarnation 2^64-1 once made it overflow.
        let update = SWIM.Message.ping(sequence: 1, updates: [SWIM.Member(name: "n2", incarnation: .max, status: .suspect)])
        let packet = GossipPacket.encode(update, from: "n1", stamp: 5, cluster: "c", keys: keys)
        #expect(throws: GossipPacket.Rejection.malformed) { try GossipPacket.decode(packet, cluster: "c", keys: keys) }
    }

    @Test func replaysAndStalePacketsAreDropped() {
        var guardian = GossipReplayGuard()
        var stamper = GossipStamper()
        let now: Int64 = 1_800_000_000_000
        let a = stamper.next(now: now)
        let b = stamper.next(now: now)
        let c = stamper.next(now: now)
        #expect(b > a && c > b)
        #expect(guardian.admit(a, from: "n1", now: now) == .accept)
        #expect(guardian.admit(c, from: "n1", now: now) == .accept)
        #expect(guardian.admit(b, from: "n1", now: now) == .accept, "late but in the window")
        #expect(guardian.admit(b, from: "n1", now: now) == .replay)
        #expect(guardian.admit(c, from: "n1", now: now) == .replay)
        #expect(guardian.admit(a, from: "n2", now: now) == .accept, "each sender has its own window")
        let old = UInt64(now - 61_000) << 16
        #expect(guardian.admit(old, from: "n3", now: now) == .stale)
        let ahead = UInt64(now + 61_000) << 16
        #expect(guardian.admit(ahead, from: "n3", now: now) == .stale)
        #expect(guardian.admit(c + 1000, from: "n1", now: now) == .accept)
        #expect(guardian.admit(c, from: "n1", now: now) == .stale, "behind the window")
    }
}
