import CacheStore
import ClusterCore
import Synchronization

/// The vector clocks and siblings of keys under `reconcile vclock`.
///
/// The store's record for a key always holds the LWW winner among its siblings, so GET, TTL
/// and every local path read it as usual; this index holds the whole sibling set with the
/// clocks. Lock order: the index, then the store's shard, never the other way.
final class SiblingIndex: Sendable {
    private let sets = Mutex<[[UInt8]: SiblingSet]>([:])
    let overflows = Atomic<Int>(0)

    /// Keys that have more than one sibling now.
    var keysWithSiblings: Int { sets.withLock { $0.values.filter { $0.siblings.count > 1 }.count } }

    func removeAll() { sets.withLock { $0.removeAll() } }

    /// The key's siblings as this replica holds them; a record written without a clock (by a
    /// local command) counts as one sibling with an empty clock. Drops the entry of a key
    /// whose record is gone (expired, evicted, collected).
    func siblings(of key: [UInt8], store: CacheStore, now: Int64) -> SiblingSet? {
        sets.withLock { sets in current(key, &sets, store: store, now: now) }
    }

    private func current(_ key: [UInt8], _ sets: inout [[UInt8]: SiblingSet], store: CacheStore, now: Int64) -> SiblingSet? {
        var record: VersionedValue?
        key.withUnsafeBytes { k in
            store.readVersioned(k, now: now) { entry in
                record = entry.map { VersionedValue(version: $0.version, value: $0.value.map(Array.init), expiry: $0.expiry) }
            }
        }
        guard let record else {
            sets[key] = nil
            return nil
        }
        if let set = sets[key], set.winner?.version == record.version { return set }
        // The record moved on without the index (a local command): it descends from what was known.
        let known = sets[key]?.context ?? VectorClock()
        let set = SiblingSet([Sibling(clock: known, value: record)])
        sets[key] = set
        return set
    }

    /// Merges `incoming` into the key's siblings and stores the new winner.
    ///
    /// - Returns: whether the key had a live value before, and whether anything changed.
    @discardableResult
    func apply(_ key: [UInt8], _ incoming: SiblingSet, limit: Int, store: CacheStore, now: Int64, tombstoneTTL: Int64) -> (existed: Bool, changed: Bool) {
        sets.withLock { sets in
            let before = current(key, &sets, store: store, now: now)
            var merged = before ?? SiblingSet()
            var changed = false
            for sibling in incoming.siblings {
                let result = merged.add(sibling, limit: limit)
                changed = changed || result.changed
                if result.overflowed { overflows.add(1, ordering: .relaxed) }
            }
            let existed = before?.winner.map { !$0.isTombstone } ?? false
            guard changed, let winner = merged.winner else { return (existed, false) }
            sets[key] = merged
            key.withUnsafeBytes { k in
                if let bytes = winner.value {
                    bytes.withUnsafeBytes { v in
                        _ = store.applyVersioned(k, value: v, expiry: winner.expiry, version: winner.version, now: now,
                                                 tombstoneTTL: tombstoneTTL, force: true)
                    }
                } else {
                    store.applyVersioned(k, value: nil, expiry: 0, version: winner.version, now: now, tombstoneTTL: tombstoneTTL, force: true)
                }
            }
            return (existed, true)
        }
    }

    /// Drops entries whose records are gone (expired and collected, or evicted), `limit` keys
    /// per call from a cursor that moves on, so every entry is looked at in turn. Each key is
    /// checked and dropped under the index lock, so an entry `apply` just wrote stays.
    func sweep(store: CacheStore, now: Int64, limit: Int = 1024) {
        sets.withLock { sets in
            guard !sets.isEmpty else { return }
            let keys = Array(sets.keys)
            if sweepCursor.load(ordering: .relaxed) >= keys.count { sweepCursor.store(0, ordering: .relaxed) }
            let start = sweepCursor.load(ordering: .relaxed)
            let end = min(keys.count, start + limit)
            for key in keys[start..<end] {
                // Tombstones keep their entry: their clocks stop older siblings from coming back.
                var gone = true
                key.withUnsafeBytes { k in store.readVersioned(k, now: now) { gone = $0 == nil } }
                if gone { sets[key] = nil }
            }
            sweepCursor.store(end, ordering: .relaxed)
        }
    }

    private let sweepCursor = Atomic<Int>(0)
}
