import ClusterCore
import Synchronization

/// Writes this node holds for replicas that were unreachable (hinted handoff, with
/// `sloppy-quorum yes`): each names its owner, and is replayed to it once it is back. Bounded
/// in count, bytes and age; a hint whose entry has expired is dropped, not replayed.
final class HintStore: Sendable {
    struct Hint: Sendable {
        let owner: Int
        let key: [UInt8]
        let value: VersionedValue
        let stored: Int64
        var bytes: Int { key.count + (value.value?.count ?? 0) + 64 }
    }

    struct Limits: Sendable {
        var count: Int
        var bytes: Int
        /// Milliseconds.
        var age: Int64
    }

    let limits: Limits
    private let state = Mutex(State())
    let delivered = Atomic<Int>(0)
    let dropped = Atomic<Int>(0)

    private struct State {
        var hints: [Int: [Hint]] = [:]
        var count = 0
        var bytes = 0
    }

    init(limits: Limits) {
        self.limits = limits
    }

    var pending: Int { state.withLock { $0.count } }
    var pendingBytes: Int { state.withLock { $0.bytes } }

    /// Keeps a hint; false (and counted as dropped) when the store is full.
    func add(owner: Int, key: [UInt8], value: VersionedValue, now: Int64) -> Bool {
        let hint = Hint(owner: owner, key: key, value: value, stored: now)
        let kept = state.withLock { state in
            guard state.count < limits.count, state.bytes + hint.bytes <= limits.bytes else { return false }
            state.hints[owner, default: []].append(hint)
            state.count += 1
            state.bytes += hint.bytes
            return true
        }
        if !kept { dropped.add(1, ordering: .relaxed) }
        return kept
    }

    /// Owners with hints waiting.
    var owners: [Int] { state.withLock { Array($0.hints.keys) } }

    /// Takes up to `limit` hints for `owner` out of the store (``purge(now:tombstoneTTL:)``
    /// has dropped the stale ones); the caller gives back those it could not deliver.
    func take(for owner: Int, limit: Int) -> [Hint] {
        state.withLock { state in
            guard let list = state.hints[owner] else { return [] }
            let out = Array(list.prefix(limit))
            state.hints[owner] = list.count > limit ? Array(list.dropFirst(limit)) : nil
            state.count -= out.count
            state.bytes -= out.reduce(0) { $0 + $1.bytes }
            return out
        }
    }

    /// Drops the hints whose entry expired or that grew older than the age limit, for every
    /// owner, reachable or not: a member that stays away does not keep the store full.
    func purge(now: Int64, tombstoneTTL: Int64) {
        let purged: Int = state.withLock { state in
            var purged = 0
            for (owner, list) in state.hints where list.contains(where: { isStale($0, now: now, tombstoneTTL: tombstoneTTL) }) {
                var keep: [Hint] = []
                for hint in list {
                    if isStale(hint, now: now, tombstoneTTL: tombstoneTTL) {
                        purged += 1
                        state.count -= 1
                        state.bytes -= hint.bytes
                    } else {
                        keep.append(hint)
                    }
                }
                state.hints[owner] = keep.isEmpty ? nil : keep
            }
            return purged
        }
        if purged > 0 { dropped.add(purged, ordering: .relaxed) }
    }

    private func isStale(_ hint: Hint, now: Int64, tombstoneTTL: Int64) -> Bool {
        let expiry = hint.value.value == nil ? hint.value.version.timestamp.millis + tombstoneTTL : hint.value.expiry
        return (expiry != 0 && expiry <= now) || now - hint.stored > limits.age
    }

    /// Returns hints that could not be delivered.
    func giveBack(_ hints: [Hint]) {
        guard !hints.isEmpty else { return }
        state.withLock { state in
            for hint in hints {
                state.hints[hint.owner, default: []].append(hint)
                state.count += 1
                state.bytes += hint.bytes
            }
        }
    }
}
