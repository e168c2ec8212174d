import ClusterCore
import Synchronization

/// Writes this node holds for replicas that were unreachable (hinted handoff, with
/// `sloppy-quorum yes`), shared by every event loop: the pure ``HintReplay`` behind a lock.
/// Stand-in writes arrive on any loop; the replay service ticks once a second.
final class HintStore: Sendable {
    private let state: Mutex<HintReplay>

    init(limits: HintReplay.Limits) {
        state = Mutex(HintReplay(limits: limits))
    }

    var pending: Int { state.withLock { $0.count } }
    var pendingBytes: Int { state.withLock { $0.bytes } }
    var delivered: Int { state.withLock { $0.delivered } }
    var dropped: Int { state.withLock { $0.dropped } }

    /// Keeps a hint; false (and counted as dropped) when the store is full.
    func add(owner: Int, key: [UInt8], value: VersionedValue, now: Int64) -> Bool {
        state.withLock { $0.add(HintReplay.Hint(owner: owner, key: key, value: value, stored: now)) }
    }

    func tick(now: Int64, reachable: (Int) -> Bool) -> [HintReplay.Batch] {
        state.withLock { $0.onTick(now: now, reachable: reachable) }
    }

    func delivered(owner: Int, _ arrived: [Bool]) {
        state.withLock { $0.onDelivered(owner: owner, delivered: arrived) }
    }
}
