import Testing

@testable import CacheStore

private func version(_ millis: Int64, _ node: UInt32 = 1) -> Version {
    Version(timestamp: HLCTimestamp(millis: millis), node: NodeID(rawValue: node))
}

private func apply(_ store: CacheStore, _ key: String, _ value: String?, _ v: Version, expiry: Int64 = 0, now: Int64 = 1_000) -> Bool {
    Array(key.utf8).withUnsafeBytes { k in
        if let value {
            return Array(value.utf8).withUnsafeBytes { store.applyVersioned(k, value: $0, expiry: expiry, version: v, now: now, tombstoneTTL: 10_000) }
        }
        return store.applyVersioned(k, value: nil, expiry: 0, version: v, now: now, tombstoneTTL: 10_000)
    }
}

private func versioned(_ store: CacheStore, _ key: String, now: Int64 = 1_000) -> (String?, Version)? {
    var result: (String?, Version)?
    Array(key.utf8).withUnsafeBytes { k in
        store.readVersioned(k, now: now) { entry in
            result = entry.map { ($0.value.map { String(decoding: $0, as: UTF8.self) }, $0.version) }
        }
    }
    return result
}

@Suite struct ReplicationTests {
    @Test func lastWriteWins() {
        let store = CacheStore()
        #expect(apply(store, "k", "a", version(10)))
        #expect(!apply(store, "k", "old", version(5)))
        #expect(!apply(store, "k", "same", version(10)))
        #expect(apply(store, "k", "b", version(10, 2)))  // same time, higher node id
        #expect(versioned(store, "k")! == ("b", version(10, 2)))
        #expect(store.get("k") == "b")
    }

    /// A delete is a tombstone: invisible to readers, but it still beats older writes, so a
    /// late repair cannot resurrect the key; it is collected after the tombstone TTL.
    @Test func tombstonesBlockOlderWritesUntilCollected() {
        let store = CacheStore()
        _ = apply(store, "k", "a", version(10))
        #expect(apply(store, "k", nil, version(20)))
        #expect(store.get("k") == nil)
        #expect(store.count == 0 && store.tombstoneCount == 1)
        #expect(store.allKeys().isEmpty)
        #expect(!apply(store, "k", "stale", version(15)))
        #expect(versioned(store, "k")! == (nil, version(20)))
        // Collected at the delete's timestamp + TTL (20 + 10,000 ms), the same on every replica.
        #expect(versioned(store, "k", now: 10_019) != nil)
        #expect(versioned(store, "k", now: 10_020) == nil)
        #expect(store.tombstoneCount == 0)
    }

    @Test func localWritesReplaceTombstones() {
        let store = CacheStore()
        _ = apply(store, "k", nil, version(20))
        store.set("k", "new", now: 1_000)
        #expect(store.get("k") == "new")
        #expect(store.tombstoneCount == 0 && store.count == 1)
    }

    @Test func expiredWritesOnlyRemoveOlderData() {
        let store = CacheStore()
        _ = apply(store, "k", "a", version(10))
        #expect(apply(store, "k", "b", version(20), expiry: 900, now: 1_000))
        #expect(versioned(store, "k") == nil)
    }

    /// On a cluster node an expired entry becomes a tombstone with its version, so an older
    /// copy from a replica that missed the expiry cannot be repaired back.
    @Test func expiredEntriesBecomeTombstonesInAClusterStore() {
        let store = CacheStore()
        store.expiredTombstoneTTL = 5_000
        _ = apply(store, "k", "old", version(10))
        #expect(apply(store, "k", "new", version(20), expiry: 2_000, now: 1_000))
        #expect(versioned(store, "k", now: 2_500)! == (nil, version(20)))
        #expect(!apply(store, "k", "old", version(10), now: 2_500))
        #expect(store.get("k", now: 2_500) == nil && store.count == 0)
        // Active expiry does the same, and collects the tombstone after the TTL.
        _ = apply(store, "j", "v", version(30), expiry: 3_000, now: 1_000)
        for _ in 0..<10 { store.expireCycle(now: 3_000) }
        #expect(versioned(store, "j", now: 3_000)! == (nil, version(30)))
        for _ in 0..<10 { store.expireCycle(now: 8_000) }
        #expect(versioned(store, "j", now: 8_000) == nil)
    }

    /// Eviction forgets data, never deletes: tombstones are not evicted.
    @Test func evictionKeepsTombstones() {
        let store = CacheStore(configuration: .init(shardCount: 1))
        _ = apply(store, "gone", nil, version(50))
        for i in 0..<50 { store.set("k\(i)", String(repeating: "x", count: 100)) }
        store.maxMemory = 1
        #expect(!store.makeRoom(now: 1_000))
        #expect(store.count == 0)
        #expect(versioned(store, "gone")! == (nil, version(50)))
    }

    @Test func applyingAdvancesTheClock() {
        let store = CacheStore()
        _ = apply(store, "k", "a", version(50_000))
        #expect(store.nextVersion(now: 1_000).timestamp > HLCTimestamp(millis: 50_000))
    }
}

private func == (a: (String?, Version), b: (String?, Version)) -> Bool { a.0 == b.0 && a.1 == b.1 }
