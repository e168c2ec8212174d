import Testing

@testable import CacheStore

private func withBytes<R>(_ text: String, _ body: (UnsafeRawBufferPointer) -> R) -> R {
    Array(text.utf8).withUnsafeBytes(body)
}

extension CacheStore {
    func set(_ key: String, _ value: String, expiry: Int64 = 0, now: Int64 = 1_000) {
        withBytes(key) { k in withBytes(value) { v in _ = set(k, v, expiry: expiry, now: now) } }
    }

    func get(_ key: String, now: Int64 = 1_000) -> String? {
        var result: String?
        withBytes(key) { k in read(k, now: now) { entry in result = entry.map { String(decoding: $0.value, as: UTF8.self) } } }
        return result
    }

    func delete(_ key: String, now: Int64 = 1_000) -> Bool {
        withBytes(key) { remove($0, now: now) }
    }

    func allKeys(now: Int64 = 1_000) -> [String] {
        var keys: [String] = []
        forEachKey(now: now) { keys.append(String(decoding: $0, as: UTF8.self)) }
        return keys.sorted()
    }
}

@Suite struct CacheStoreTests {
    @Test func setGetOverwriteDelete() {
        let store = CacheStore()
        #expect(store.get("a") == nil)
        store.set("a", "1")
        store.set("b", "")
        #expect(store.get("a") == "1")
        #expect(store.get("b") == "")
        store.set("a", String(repeating: "x", count: 1000))
        #expect(store.get("a") == String(repeating: "x", count: 1000))
        store.set("a", "2")
        #expect(store.get("a") == "2")
        #expect(store.count == 2)
        #expect(store.delete("a"))
        #expect(!store.delete("a"))
        #expect(store.get("a") == nil)
        #expect(store.count == 1)
    }

    @Test func binaryKeysAndValues() {
        let store = CacheStore()
        let key: [UInt8] = [0, 13, 10, 255, 0]
        let value = (0...255).map { UInt8($0) }
        key.withUnsafeBytes { k in value.withUnsafeBytes { v in _ = store.set(k, v, now: 1) } }
        var read: [UInt8]?
        key.withUnsafeBytes { k in store.read(k, now: 1) { read = $0.map { Array($0.value) } } }
        #expect(read == value)
        // A key that differs only in its last byte is a different key.
        [0, 13, 10, 255, 1].withUnsafeBytes { k in store.read(k, now: 1) { #expect($0 == nil) } }
    }

    /// Many keys through growth and deletion: every survivor is still found (backward-shift
    /// deletion keeps probe runs intact).
    @Test func growthAndDeletionKeepEveryKey() {
        let store = CacheStore(configuration: .init(shardCount: 4))
        for i in 0..<20_000 { store.set("key:\(i)", "v\(i)") }
        for i in stride(from: 0, to: 20_000, by: 3) { #expect(store.delete("key:\(i)")) }
        for i in 0..<20_000 {
            #expect(store.get("key:\(i)") == (i % 3 == 0 ? nil : "v\(i)"))
        }
        #expect(store.count == 20_000 - 6_667)
    }

    @Test func lazyAndActiveExpiry() {
        let store = CacheStore()
        store.set("short", "x", expiry: 1_500, now: 1_000)
        store.set("long", "y", expiry: 10_000, now: 1_000)
        store.set("none", "z", now: 1_000)
        #expect(store.get("short", now: 1_499) == "x")
        #expect(store.get("short", now: 1_500) == nil)
        for i in 0..<1_000 { store.set("v\(i)", "x", expiry: 2_000, now: 1_000) }
        #expect(store.count == 1_002)
        var deleted = 0
        for _ in 0..<100 { deleted += store.expireCycle(now: 2_000) }
        #expect(deleted == 1_000)
        #expect(store.count == 2)
        #expect(store.expiredKeys == 1_001)
    }

    @Test func updateSeesEntryAndChangesExpiry() {
        let store = CacheStore()
        store.set("k", "v", expiry: 5_000)
        withBytes("k") { key in
            store.update(key, now: 1_000) { entry in
                #expect(entry?.expiry == 5_000)
                return .setExpiry(0)
            }
            store.read(key, now: 1_000_000) { #expect($0?.expiry == 0) }
        }
    }

    @Test func versionsIncreaseAndCarryTheNode() {
        let node = NodeID(name: "n1")
        let store = CacheStore(configuration: .init(node: node))
        var versions: [Version] = []
        for _ in 0..<3 {
            store.set("k", "v", now: 1_000)
            withBytes("k") { key in store.read(key, now: 1_000) { versions.append($0!.version) } }
        }
        #expect(versions[0] < versions[1] && versions[1] < versions[2])
        #expect(versions.allSatisfy { $0.node == node })
    }

    @Test func allKeysLRUEvictsTheLeastRecentlyUsed() {
        let store = CacheStore(configuration: .init(shardCount: 1, maxMemory: 64 * 1024))
        for i in 0..<300 {
            // LRU order is kept to the second, so each step happens a second later.
            let now = Int64(i + 1) * 1_000
            #expect(store.makeRoom(now: now))
            store.set("k\(i)", String(repeating: "v", count: 200), now: now)
            _ = store.get("k0", now: now)  // keep k0 hot
        }
        #expect(store.usedMemory <= 64 * 1024 + 512)
        #expect(store.get("k0", now: 400_000) != nil)
        #expect(store.get("k1", now: 400_000) == nil)
        #expect(store.get("k299", now: 400_000) != nil)
        #expect(store.evictedKeys > 0)
    }

    @Test func volatilePoliciesEvictOnlyVolatileKeys() {
        for policy in [EvictionPolicy.volatileLRU, .volatileTTL] {
            let store = CacheStore(configuration: .init(shardCount: 2, maxMemory: 24 * 1024, evictionPolicy: policy))
            for i in 0..<100 { store.set("p\(i)", String(repeating: "x", count: 100)) }
            for i in 0..<100 { store.set("v\(i)", String(repeating: "x", count: 100), expiry: 100_000 + Int64(i)) }
            #expect(store.makeRoom(now: 1_000))
            #expect((0..<100).allSatisfy { store.get("p\($0)") != nil })
            // Only persistent keys left over the limit: nothing can be evicted.
            for i in 100..<300 { store.set("p\(i)", String(repeating: "x", count: 100)) }
            #expect(!store.makeRoom(now: 1_000))
        }
        let strict = CacheStore(configuration: .init(maxMemory: 1024, evictionPolicy: .noEviction))
        for i in 0..<100 { strict.set("k\(i)", "value") }
        #expect(!strict.makeRoom(now: 1_000))
    }

    /// SCAN returns every key present throughout, even when the table grows and shrinks
    /// between calls.
    @Test func scanSurvivesResizes() {
        let store = CacheStore(configuration: .init(shardCount: 8))
        for i in 0..<3_000 { store.set("stable:\(i)", "x") }
        var seen = Set<String>()
        var cursor: UInt64 = 0
        var calls = 0
        repeat {
            cursor = store.scan(cursor: cursor, count: 50, now: 1_000) { seen.insert(String(decoding: $0, as: UTF8.self)) }
            calls += 1
            // Churn: add and remove other keys while scanning.
            for j in 0..<40 { store.set("churn:\(calls):\(j)", "y") }
            if calls % 3 == 0 { for j in 0..<40 { _ = store.delete("churn:\(calls - 1):\(j)") } }
        } while cursor != 0 && calls < 100_000
        #expect(cursor == 0)
        #expect((0..<3_000).allSatisfy { seen.contains("stable:\($0)") })
    }

    @Test func renameMovesValueAndExpiry() {
        let store = CacheStore()
        store.set("a", "1", expiry: 9_000)
        withBytes("a") { a in
            withBytes("b") { b in
                #expect(store.rename(a, to: b, onlyIfAbsent: false, now: 1_000) == .renamed)
                #expect(store.rename(a, to: b, onlyIfAbsent: false, now: 1_000) == .noSuchKey)
                store.read(b, now: 1_000) { #expect($0?.expiry == 9_000) }
            }
        }
        store.set("c", "3")
        withBytes("b") { b in withBytes("c") { c in #expect(store.rename(b, to: c, onlyIfAbsent: true, now: 1_000) == .targetExists) } }
        #expect(store.allKeys() == ["b", "c"])
    }

    @Test func memoryAccountingReturnsToEmpty() {
        let store = CacheStore(configuration: .init(shardCount: 4))
        let empty = store.usedMemory
        for i in 0..<5_000 { store.set("k\(i)", String(repeating: "v", count: i % 300)) }
        for i in 0..<5_000 { store.set("k\(i)", String(repeating: "w", count: (i * 7) % 200)) }
        #expect(store.usedMemory > empty)
        for i in 0..<5_000 { _ = store.delete("k\(i)") }
        // Tables stay grown, records are all returned.
        store.removeAll()
        #expect(store.usedMemory == empty)
    }

    /// Reads within the second of the last move do not reorder the list; a later read does.
    @Test(arguments: [(Int64(5_500), "b"), (Int64(6_000), "a")])
    func lruOrderIsKeptToTheSecond(readAt: Int64, survivor: String) {
        let store = CacheStore(configuration: .init(shardCount: 1))
        store.set("a", "1", now: 5_000)
        store.set("b", "2", now: 5_000)
        _ = store.get("a", now: readAt)
        store.maxMemory = store.usedMemory - 1
        #expect(store.makeRoom(now: readAt))
        #expect(store.allKeys(now: readAt) == [survivor])
    }

    @Test func randomKeyAndFlush() {
        let store = CacheStore()
        #expect(store.randomKey(now: 1_000) == nil)
        store.set("only", "x")
        #expect(store.randomKey(now: 1_000) == Array("only".utf8))
        store.removeAll()
        #expect(store.count == 0)
    }
}
