import Synchronization

/// A node's in-memory store: binary keys and values with versions and absolute expiry,
/// split into shards by key hash so that event-loop threads rarely contend, each shard a
/// compact hash table with its own LRU list and lock.
///
/// Times are Unix milliseconds passed in by the caller; the store reads no clock.
public final class CacheStore: Sendable {
    /// What a reader sees of an entry; valid only inside the callback that receives it.
    public struct Entry {
        public let value: UnsafeRawBufferPointer
        /// Absolute expiry in Unix milliseconds, 0 for none.
        public let expiry: Int64
        public let version: Version
    }

    /// What an ``update(_:now:_:)`` callback asks the store to do with the key.
    public enum Mutation {
        case none
        case delete
        /// Store `value` (bytes that stay valid until `update` returns) with `expiry`.
        case put(UnsafeRawBufferPointer, expiry: Int64)
        /// Store bytes computed by the callback.
        case putBytes([UInt8], expiry: Int64)
        /// Keep the value, change only the expiry (0 removes it).
        case setExpiry(Int64)
    }

    public enum RenameResult: Sendable, Equatable {
        case renamed
        case noSuchKey
        case targetExists
        /// The target could not be written (no memory); the source is untouched.
        case outOfMemory
    }

    public struct Configuration: Sendable {
        /// A power of two.
        public var shardCount: Int
        /// Bytes; 0 means no limit.
        public var maxMemory: Int
        public var evictionPolicy: EvictionPolicy
        public var node: NodeID
        /// Told of every write and delete (a durable tier under the store); nil for none.
        public var journal: (any StoreJournal)?

        public init(
            shardCount: Int = 64, maxMemory: Int = 0, evictionPolicy: EvictionPolicy = .allKeysLRU, node: NodeID = NodeID(rawValue: 0),
            journal: (any StoreJournal)? = nil
        ) {
            precondition(shardCount > 0 && shardCount & (shardCount - 1) == 0, "shardCount must be a power of two")
            self.shardCount = shardCount
            self.maxMemory = maxMemory
            self.evictionPolicy = evictionPolicy
            self.node = node
            self.journal = journal
        }
    }

    private final class Shard: Sendable {
        let table: Mutex<ShardTable>
        init(shardBits: Int) { table = Mutex(ShardTable(shardBits: shardBits)) }
    }

    private let shards: [Shard]
    private let shardBits: Int
    public let node: NodeID
    private let clock = Atomic<UInt64>(0)
    private let usedBytes = Atomic<Int>(0)
    private let maxMemoryBytes: Atomic<Int>
    private let policyIndex: Atomic<Int>
    private let evictionCursor = Atomic<Int>(0)
    private let expiryTombstoneTTL = Atomic<Int64>(0)
    private let counters = Counters()
    private let journal: (any StoreJournal)?

    /// Running totals for INFO.
    final class Counters: Sendable {
        let expiredKeys = Atomic<Int>(0)
        let evictedKeys = Atomic<Int>(0)
    }

    public init(configuration: Configuration = Configuration()) {
        shardBits = configuration.shardCount.trailingZeroBitCount
        shards = (0..<configuration.shardCount).map { _ in Shard(shardBits: configuration.shardCount.trailingZeroBitCount) }
        node = configuration.node
        journal = configuration.journal
        maxMemoryBytes = Atomic(configuration.maxMemory)
        policyIndex = Atomic(EvictionPolicy.allCases.firstIndex(of: configuration.evictionPolicy)!)
        usedBytes.store(shards.count * ShardTable.minimumCapacity * 8, ordering: .relaxed)
    }

    // MARK: Settings and figures

    public var maxMemory: Int {
        get { maxMemoryBytes.load(ordering: .relaxed) }
        set { maxMemoryBytes.store(newValue, ordering: .relaxed) }
    }

    public var evictionPolicy: EvictionPolicy {
        get { EvictionPolicy.allCases[policyIndex.load(ordering: .relaxed)] }
        set { policyIndex.store(EvictionPolicy.allCases.firstIndex(of: newValue)!, ordering: .relaxed) }
    }

    /// Milliseconds an expired entry is kept as a tombstone; 0 (standalone) removes it. A
    /// cluster node keeps them, so a replica that missed the expiry cannot repair the old
    /// value back.
    public var expiredTombstoneTTL: Int64 {
        get { expiryTombstoneTTL.load(ordering: .relaxed) }
        set { expiryTombstoneTTL.store(newValue, ordering: .relaxed) }
    }

    /// Bytes of keys, values, per-entry overhead and tables, as the allocator counts them.
    public var usedMemory: Int { usedBytes.load(ordering: .relaxed) }
    public var expiredKeys: Int { counters.expiredKeys.load(ordering: .relaxed) }
    public var evictedKeys: Int { counters.evictedKeys.load(ordering: .relaxed) }
    public var keyspaceHits: Int { shards.reduce(0) { $0 + $1.table.withLock { $0.hits } } }
    public var keyspaceMisses: Int { shards.reduce(0) { $0 + $1.table.withLock { $0.misses } } }

    /// Number of keys, counting expired keys not yet collected (as Redis's DBSIZE does).
    public var count: Int { shards.reduce(0) { $0 + $1.table.withLock { $0.count - $0.tombstoneCount } } }
    /// Deletes kept as tombstones until `tombstone-ttl` passes.
    public var tombstoneCount: Int { shards.reduce(0) { $0 + $1.table.withLock { $0.tombstoneCount } } }
    /// Keys with an expiry (tombstones, which carry one too, left out).
    public var volatileCount: Int { shards.reduce(0) { $0 + $1.table.withLock { $0.volatileCount - $0.tombstoneCount } } }

    /// A new version for a local write.
    public func nextVersion(now: Int64) -> Version {
        var last = clock.load(ordering: .relaxed)
        while true {
            let next = HybridLogicalClock.next(after: HLCTimestamp(rawValue: last), wallMillis: now)
            let (exchanged, original) = clock.compareExchange(expected: last, desired: next.rawValue, ordering: .relaxed)
            if exchanged { return Version(timestamp: next, node: node) }
            last = original
        }
    }

    // MARK: Reads and writes

    @inline(__always)
    private func shard(for hash: UInt64) -> Shard {
        shards[shardBits == 0 ? 0 : Int(truncatingIfNeeded: hash >> UInt64(64 - shardBits))]
    }

    /// Calls `body` with the live entry for `key` (nil if absent or expired) and marks it used.
    public func read(_ key: UnsafeRawBufferPointer, now: Int64, _ body: (Entry?) -> Void) {
        let hash = keyHash(key)
        shard(for: hash).table.withLock { table in
            guard let slot = table.find(key, hash: hash) else {
                table.misses += 1
                body(nil)
                return
            }
            let record = table.record(at: slot)
            if record.isExpired(at: now) {
                expire(&table, slot: slot)
                table.misses += 1
                body(nil)
                return
            }
            if record.isTombstone {
                table.misses += 1
                body(nil)
                return
            }
            table.markUsed(record, now: now)
            table.hits += 1
            body(Entry(value: record.value, expiry: record.expiry, version: record.version))
        }
    }

    /// True if `key` holds a live entry. Does not count as a use.
    public func contains(_ key: UnsafeRawBufferPointer, now: Int64) -> Bool {
        let hash = keyHash(key)
        return shard(for: hash).table.withLock { table in
            guard let slot = table.find(key, hash: hash) else { return false }
            let record = table.record(at: slot)
            if record.isExpired(at: now) {
                expire(&table, slot: slot)
                return false
            }
            return !record.isTombstone
        }
    }

    /// Reads and changes `key` atomically: `body` sees the live entry (or nil) under the
    /// shard's lock and returns what to do. Writes get a new version.
    ///
    /// - Returns: false if the write needed memory the store could not get.
    @discardableResult
    public func update(_ key: UnsafeRawBufferPointer, now: Int64, _ body: (Entry?) -> Mutation) -> Bool {
        let hash = keyHash(key)
        return shard(for: hash).table.withLock { table in
            let slot = findExpiring(&table, key, hash: hash, now: now)
            let existing = slot.map { table.record(at: $0) }.flatMap { $0.isTombstone ? nil : $0 }
            let mutation = body(existing.map { Entry(value: $0.value, expiry: $0.expiry, version: $0.version) })
            switch mutation {
            case .none:
                return true
            case .delete:
                if let slot, existing != nil {
                    remove(&table, slot: slot)
                    journal?.removed(key: key)
                }
                return true
            case .setExpiry(let expiry):
                guard let existing else { return true }
                table.setExpiry(existing, expiry)
                existing.version = nextVersion(now: now)
                journal?.stored(key: key, value: existing.value, expiry: expiry, version: existing.version)
                return true
            case .put(let value, let expiry):
                let version = nextVersion(now: now)
                guard store(&table, key: key, hash: hash, slot: slot, value: value, expiry: expiry, version: version, now: now) else { return false }
                journal?.stored(key: key, value: value, expiry: expiry, version: version)
                return true
            case .putBytes(let bytes, let expiry):
                let version = nextVersion(now: now)
                return bytes.withUnsafeBytes { value in
                    guard store(&table, key: key, hash: hash, slot: slot, value: value, expiry: expiry, version: version, now: now) else { return false }
                    journal?.stored(key: key, value: value, expiry: expiry, version: version)
                    return true
                }
            }
        }
    }

    /// Sets `key` to `value` unconditionally.
    @discardableResult
    public func set(_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer, expiry: Int64 = 0, now: Int64) -> Bool {
        update(key, now: now) { _ in .put(value, expiry: expiry) }
    }

    /// Deletes `key`; true if a live entry was there.
    @discardableResult
    public func remove(_ key: UnsafeRawBufferPointer, now: Int64) -> Bool {
        var removed = false
        update(key, now: now) { entry in
            removed = entry != nil
            return entry == nil ? .none : .delete
        }
        return removed
    }

    /// Writes a value (or, with `tombstone`, a delete marker) at `slot` or as a new record.
    private func store(
        _ table: inout ShardTable, key: UnsafeRawBufferPointer, hash: UInt64, slot: Int?,
        value: UnsafeRawBufferPointer, expiry: Int64, version: Version, now: Int64, tombstone: Bool = false
    ) -> Bool {
        if let slot, !tombstone {
            let existing = table.record(at: slot)
            if !existing.isTombstone && existing.fitsInPlace(valueCount: value.count) {
                existing.storeValue(value)
                table.setExpiry(existing, expiry)
                existing.version = version
                table.markUsed(existing, now: now)
                return true
            }
        }
        guard let record = Record.allocate(key: key, valueCount: value.count) else { return false }
        record.storeValue(value)
        record.isTombstone = tombstone
        record.expiry = expiry
        record.version = version
        record.promotedAt = ShardTable.lruSecond(now)
        let before = table.usedBytes
        if let slot { table.replace(at: slot, with: record) } else { table.insert(record, hash: hash) }
        usedBytes.add(table.usedBytes - before, ordering: .relaxed)
        return true
    }

    private func remove(_ table: inout ShardTable, slot: Int) {
        let before = table.usedBytes
        table.remove(at: slot)
        usedBytes.add(table.usedBytes - before, ordering: .relaxed)
    }

    /// The key's slot, after expiring its entry if its time has come: then the slot is gone,
    /// or (on a cluster node) holds the tombstone the expiry left, which a write replaces.
    private func findExpiring(_ table: inout ShardTable, _ key: UnsafeRawBufferPointer, hash: UInt64, now: Int64) -> Int? {
        guard let slot = table.find(key, hash: hash) else { return nil }
        guard table.record(at: slot).isExpired(at: now) else { return slot }
        expire(&table, slot: slot)
        return table.find(key, hash: hash)
    }

    private func expire(_ table: inout ShardTable, slot: Int) {
        let before = table.usedBytes
        let wasTombstone = table.record(at: slot).isTombstone
        _ = table.expire(at: slot, tombstoneTTL: expiredTombstoneTTL)
        usedBytes.add(table.usedBytes - before, ordering: .relaxed)
        if !wasTombstone { counters.expiredKeys.add(1, ordering: .relaxed) }
    }

    // MARK: Replication

    /// An entry as replicas exchange it: `value` nil for a tombstone.
    public struct VersionedEntry {
        public let value: UnsafeRawBufferPointer?
        public let expiry: Int64
        public let version: Version
    }

    /// Calls `body` with the entry for `key` including tombstones (nil if absent or expired).
    public func readVersioned(_ key: UnsafeRawBufferPointer, now: Int64, _ body: (VersionedEntry?) -> Void) {
        let hash = keyHash(key)
        shard(for: hash).table.withLock { table in
            guard var slot = table.find(key, hash: hash) else {
                body(nil)
                return
            }
            if table.record(at: slot).isExpired(at: now) {
                expire(&table, slot: slot)
                // On a cluster node the expired entry stays as a tombstone with its version.
                guard let tombstone = table.find(key, hash: hash) else {
                    body(nil)
                    return
                }
                slot = tombstone
            }
            let record = table.record(at: slot)
            if !record.isTombstone { table.markUsed(record, now: now) }
            body(VersionedEntry(value: record.isTombstone ? nil : record.value, expiry: record.expiry, version: record.version))
        }
    }

    /// Stores a replicated write if it is newer than what the store holds (last write wins).
    ///
    /// - Parameters:
    ///   - value: the bytes, or nil for a delete, kept as a tombstone until `tombstoneTTL`
    ///     milliseconds after the delete's timestamp (the same moment on every replica).
    ///   - force: store it even if the store holds a higher version (vector-clock mode, where
    ///     causality and not the timestamp decides).
    ///   - durable: false for an entry that comes from the durable tier (loading, a read
    ///     through): it is not reported to the journal.
    /// - Returns: true if the write was newer (or forced) and is now stored.
    @discardableResult
    public func applyVersioned(
        _ key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer?, expiry: Int64, version: Version, now: Int64,
        tombstoneTTL: Int64, force: Bool = false, durable: Bool = true
    ) -> Bool {
        let journal = durable ? self.journal : nil
        observe(version.timestamp)
        let hash = keyHash(key)
        return shard(for: hash).table.withLock { table in
            let slot = findExpiring(&table, key, hash: hash, now: now)
            if let found = slot {
                let existing = table.record(at: found)
                if existing.version >= version && !(force && existing.version != version) {
                    return false
                }
            }
            let effectiveExpiry = value == nil ? version.timestamp.millis + tombstoneTTL : expiry
            if effectiveExpiry != 0 && effectiveExpiry <= now {
                // Already expired (or a tombstone past its time): it only removes older data.
                if let slot { remove(&table, slot: slot) }
                journal?.removed(key: key)
                return true
            }
            guard store(
                &table, key: key, hash: hash, slot: slot, value: value ?? UnsafeRawBufferPointer(start: nil, count: 0),
                expiry: effectiveExpiry, version: version, now: now, tombstone: value == nil)
            else { return false }
            journal?.stored(key: key, value: value, expiry: effectiveExpiry, version: version)
            return true
        }
    }

    /// Moves this store's clock past a timestamp seen from another node.
    public func observe(_ timestamp: HLCTimestamp) {
        var last = clock.load(ordering: .relaxed)
        while last < timestamp.rawValue {
            let (exchanged, original) = clock.compareExchange(expected: last, desired: timestamp.rawValue, ordering: .relaxed)
            if exchanged { return }
            last = original
        }
    }

    // MARK: Memory

    /// Makes room before a write, as Redis does before a command that may grow memory:
    /// evicts by the policy until usage is back under `maxmemory`.
    ///
    /// - Returns: false if usage is over the limit and nothing more may be evicted (OOM).
    public func makeRoom(now: Int64) -> Bool {
        let limit = maxMemory
        guard limit > 0, usedMemory > limit else { return true }
        let policy = evictionPolicy
        guard policy != .noEviction else { return false }
        var generator = SystemRandomNumberGenerator()
        var idleShards = 0
        while usedMemory > limit {
            let index = evictionCursor.wrappingAdd(1, ordering: .relaxed).oldValue & (shards.count - 1)
            let evicted = shards[index].table.withLock { table -> Bool in
                let victim: Record?
                switch policy {
                case .allKeysLRU: victim = table.tail
                // Bounded, like Redis's sampling: a shard whose oldest keys have no expiry is
                // passed over rather than walked end to end under its lock.
                case .volatileLRU: victim = table.leastRecentlyUsed(volatileOnly: true, limit: 4096)
                case .volatileTTL: victim = table.soonestExpiring(samples: 16, using: &generator)
                case .noEviction: victim = nil
                }
                guard let victim else { return false }
                let before = table.usedBytes
                table.remove(victim)
                usedBytes.add(table.usedBytes - before, ordering: .relaxed)
                return true
            }
            if evicted {
                counters.evictedKeys.add(1, ordering: .relaxed)
                idleShards = 0
            } else {
                idleShards += 1
                if idleShards >= shards.count { return false }
            }
        }
        return true
    }

    // MARK: Expiry

    /// One active-expiry cycle, as Redis's: per shard, sample volatile keys and delete the
    /// expired ones, and go on while more than a quarter of a sample had expired, within
    /// `budget` steps in all. Returns the number of keys deleted.
    @discardableResult
    public func expireCycle(now: Int64, budget: Int = 4096) -> Int {
        var deleted = 0
        var steps = 0
        for shard in shards {
            var more = true
            while more && steps < budget {
                let (sampled, expired) = shard.table.withLock { table in
                    let before = table.usedBytes
                    let result = table.expireStep(now: now, maxSlots: 400, tombstoneTTL: expiredTombstoneTTL)
                    usedBytes.add(table.usedBytes - before, ordering: .relaxed)
                    return result
                }
                steps += 1
                deleted += expired
                more = sampled > 0 && expired * 4 > sampled
            }
        }
        counters.expiredKeys.add(deleted, ordering: .relaxed)
        return deleted
    }

    // MARK: Keyspace

    /// Calls `body` with every live key, one shard at a time. `body` must not use the store.
    /// Calls `body` with every unexpired entry's key, version and whether it is a tombstone
    /// (what anti-entropy compares); reads do not count as uses.
    public func forEachVersion(now: Int64, _ body: (UnsafeRawBufferPointer, Version, Bool) -> Void) {
        for shard in shards {
            shard.table.withLock { $0.forEachVersion(now: now, body) }
        }
    }

    public func forEachKey(now: Int64, _ body: (UnsafeRawBufferPointer) -> Void) {
        for shard in shards {
            shard.table.withLock { $0.forEachKey(now: now, body) }
        }
    }

    /// One SCAN call: keys in hash order from `cursor`. Returns the next cursor (0 when the
    /// iteration is complete). A key present for the whole iteration is returned at least once.
    public func scan(cursor: UInt64, count: Int, now: Int64, _ body: (UnsafeRawBufferPointer) -> Void) -> UInt64 {
        var index = shardBits == 0 ? 0 : Int(truncatingIfNeeded: cursor >> UInt64(64 - shardBits))
        var local = shardBits == 0 ? cursor : cursor << UInt64(shardBits)
        var found = 0
        while index < shards.count {
            let next = shards[index].table.withLock { table in
                table.scan(fromLocal: local, count: max(1, count - found), now: now) { key in
                    found += 1
                    body(key)
                }
            }
            if let next {
                // Back from the shard's local hash space to the global cursor, rounding up.
                if shardBits == 0 { return next }
                let step = UInt64(1) << UInt64(shardBits)
                let offset = next / step + (next % step == 0 ? 0 : 1)
                return UInt64(index) << UInt64(64 - shardBits) + offset
            }
            index += 1
            local = 0
            if found >= count { break }
        }
        if index >= shards.count { return 0 }
        return UInt64(index) << UInt64(64 - shardBits)
    }

    /// A random live key, or nil if there is none.
    public func randomKey(now: Int64) -> [UInt8]? {
        var generator = SystemRandomNumberGenerator()
        let start = Int.random(in: 0..<shards.count, using: &generator)
        for offset in 0..<shards.count {
            let key = shards[(start + offset) & (shards.count - 1)].table.withLock { table in
                table.randomRecord(now: now, using: &generator).map { Array($0.key) }
            }
            if let key { return key }
        }
        return nil
    }

    /// Removes every key.
    ///
    /// Atomic with respect to writes, as a restart sees it: the flush is journaled while every
    /// shard is locked, and each shard is emptied before its lock is released, so a write is
    /// either journaled before the flush and emptied with it, or after it and kept in both.
    public func removeAll() {
        removeAll(lockingFrom: 0)
    }

    private func removeAll(lockingFrom index: Int) {
        guard index < shards.count else {
            journal?.removedAll()
            return
        }
        shards[index].table.withLock { table in
            removeAll(lockingFrom: index + 1)
            let before = table.usedBytes
            table.reset()
            usedBytes.add(table.usedBytes - before, ordering: .relaxed)
        }
    }

    /// Moves the value, expiry and version of `source` to `target` (RENAME, RENAMENX).
    public func rename(_ source: UnsafeRawBufferPointer, to target: UnsafeRawBufferPointer, onlyIfAbsent: Bool, now: Int64) -> RenameResult {
        var moved: (value: [UInt8], expiry: Int64)?
        // Copy under the source lock, then write and delete; the two shards are never held
        // together, so no lock order is needed. Single-node callers see the same result as
        // Redis except for a reader racing between the two steps.
        read(source, now: now) { entry in
            if let entry { moved = (Array(entry.value), entry.expiry) }
        }
        guard let moved else { return .noSuchKey }
        if source.elementsEqual(target) { return onlyIfAbsent ? .targetExists : .renamed }
        var exists = false
        let stored = update(target, now: now) { entry in
            if onlyIfAbsent && entry != nil {
                exists = true
                return .none
            }
            return .putBytes(moved.value, expiry: moved.expiry)
        }
        if exists { return .targetExists }
        guard stored else { return .outOfMemory }
        remove(source, now: now)
        return .renamed
    }
}
