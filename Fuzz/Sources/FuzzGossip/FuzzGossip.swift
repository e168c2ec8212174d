import ClusterProtocol

/// A gossip datagram. The MAC check would stop nearly every input before the fields are read,
/// so the input is signed first (as a member with the key would), then decoded; the raw input
/// is decoded too.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: data, count: count))
    let keys = GossipPacket.Keys(cluster: "c", secrets: [])
    _ = try? GossipPacket.decode(input, cluster: "c", keys: keys)
    _ = try? GossipPacket.decode(GossipPacket.sign(input, keys: keys), cluster: "c", keys: keys)
    var replay = GossipReplayGuard()
    if input.count >= 8 {
        let stamp = input[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        _ = replay.admit(stamp, from: "n1", now: 1_800_000_000_000)
        _ = replay.admit(stamp &- 3, from: "n1", now: 1_800_000_000_000)
    }
    return 0
}
