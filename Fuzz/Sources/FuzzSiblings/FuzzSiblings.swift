import CacheStore
import ClusterCore

/// A serialized sibling set (as replicas exchange them) and a causal context (as clients send
/// it to VSET): decoded, merged, encoded again.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: count)
    if let set = SiblingSet(serialized: input) {
        var merged = set
        for sibling in set.siblings { merged.add(sibling, limit: 4) }
        _ = merged.serialized
        _ = merged.context.hex
        _ = merged.winner
    }
    if let clock = VectorClock(hex: input) { _ = clock.merged(with: clock).encoded }
    return 0
}
