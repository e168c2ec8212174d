import CXXHash

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// xxh3 of a key: the one hash that picks shard, slot, tag and SCAN order.
@inline(__always)
func keyHash(_ key: UnsafeRawBufferPointer) -> UInt64 {
    ringcache_xxh3_64(key.baseAddress, key.count)
}

/// One shard: an open-addressing table of 8-byte slots (record pointer | 16-bit hash tag)
/// with linear probing and backward-shift deletion, plus an intrusive LRU list through the
/// records. Slots are ordered by the key's hash (home = hash × capacity >> 64), which is what
/// lets SCAN resume by hash and stay valid across resizes.
///
/// Not thread-safe: ``CacheStore`` keeps each one behind its own mutex.
struct ShardTable: ~Copyable {
    private(set) var slots: UnsafeMutablePointer<UInt64>
    private(set) var capacity: Int
    private(set) var count = 0
    private(set) var volatileCount = 0
    /// Records that are tombstones (counted in `count`, but not keys a client sees).
    private(set) var tombstoneCount = 0
    /// Bytes held: records as the allocator counts them, plus the slot array.
    private(set) var usedBytes = 0
    /// Most recently used record.
    private var head: Record?
    /// Least recently used record.
    private(set) var tail: Record?
    private var expireCursor = 0
    /// Lookups that found a live entry, and lookups that did not (INFO keyspace_hits/misses);
    /// counted here under the shard's lock rather than in shared atomics.
    var hits = 0
    var misses = 0
    let shardBits: Int

    static let minimumCapacity = 16
    static let tagShift: UInt64 = 48

    init(shardBits: Int) {
        self.shardBits = shardBits
        self.capacity = Self.minimumCapacity
        self.slots = .allocate(capacity: capacity)
        self.slots.initialize(repeating: 0, count: capacity)
        self.usedBytes = capacity * 8
    }

    deinit {
        for i in 0..<capacity {
            if let record = Record(bits: slots[i]) { record.deallocate() }
        }
        slots.deallocate()
    }

    // MARK: Hash positions

    /// The hash bits below the shard bits, which order keys within this shard.
    @inline(__always) func localHash(_ hash: UInt64) -> UInt64 { shardBits == 0 ? hash : hash << UInt64(shardBits) }

    @inline(__always) func home(ofLocal local: UInt64, capacity: Int) -> Int {
        Int(truncatingIfNeeded: local.multipliedFullWidth(by: UInt64(capacity)).high)
    }

    @inline(__always) func home(_ hash: UInt64) -> Int { home(ofLocal: localHash(hash), capacity: capacity) }

    @inline(__always) static func tag(_ hash: UInt64) -> UInt64 { (hash & 0xFFFF) << tagShift }

    // MARK: Lookup

    /// Slot index of `key`, or nil. Does not check expiry.
    @inline(__always)
    func find(_ key: UnsafeRawBufferPointer, hash: UInt64) -> Int? {
        let tag = Self.tag(hash)
        var i = home(hash)
        while true {
            let slot = slots[i]
            if slot == 0 { return nil }
            if slot & Record.highMask == tag, Record(bits: slot)!.hasKey(key) { return i }
            i += 1
            if i == capacity { i = 0 }
        }
    }

    @inline(__always) func record(at slot: Int) -> Record { Record(bits: slots[slot])! }

    // MARK: Insert and remove

    /// Adds a new record (the key must not be present) at the front of the LRU list.
    mutating func insert(_ record: Record, hash: UInt64) {
        if (count + 1) * 100 > capacity * 85 {
            resize(to: capacity + capacity / 2)
        }
        place(record.bits | Self.tag(hash), home: home(hash))
        count += 1
        if record.expiry != 0 { volatileCount += 1 }
        if record.isTombstone { tombstoneCount += 1 }
        usedBytes += record.footprint
        // Tombstones stay out of the LRU list: eviction must never forget a delete.
        if !record.isTombstone { linkFront(record) }
    }

    private mutating func place(_ slotValue: UInt64, home: Int) {
        var i = home
        while slots[i] != 0 {
            i += 1
            if i == capacity { i = 0 }
        }
        slots[i] = slotValue
    }

    /// Puts `new` where `old` was (same key), at the front of the LRU list, and frees `old`.
    mutating func replace(at slot: Int, with new: Record) {
        let old = record(at: slot)
        if !old.isTombstone { unlink(old) }
        if old.expiry != 0 { volatileCount -= 1 }
        if old.isTombstone { tombstoneCount -= 1 }
        usedBytes -= old.footprint
        old.deallocate()
        slots[slot] = (slots[slot] & Record.highMask) | new.bits
        if new.expiry != 0 { volatileCount += 1 }
        if new.isTombstone { tombstoneCount += 1 }
        usedBytes += new.footprint
        if !new.isTombstone { linkFront(new) }
    }

    /// Removes and frees the record at `slot`, shifting later entries of its probe run back.
    mutating func remove(at slot: Int) {
        let record = self.record(at: slot)
        if !record.isTombstone { unlink(record) }
        count -= 1
        if record.expiry != 0 { volatileCount -= 1 }
        if record.isTombstone { tombstoneCount -= 1 }
        usedBytes -= record.footprint
        record.deallocate()
        var hole = slot
        var j = slot + 1 == capacity ? 0 : slot + 1
        while slots[j] != 0 {
            let home = self.home(keyHash(Record(bits: slots[j])!.key))
            // The entry may move back to the hole if the hole lies between its home and j.
            if distance(from: home, to: j) >= distance(from: hole, to: j) {
                slots[hole] = slots[j]
                hole = j
            }
            j = j + 1 == capacity ? 0 : j + 1
        }
        slots[hole] = 0
    }

    @inline(__always) private func distance(from a: Int, to b: Int) -> Int {
        b >= a ? b - a : b + capacity - a
    }

    /// Changes an entry's expiry, keeping the volatile count right.
    mutating func setExpiry(_ record: Record, _ expiry: Int64) {
        if record.expiry != 0 { volatileCount -= 1 }
        record.expiry = expiry
        if expiry != 0 { volatileCount += 1 }
    }


    private mutating func resize(to newCapacity: Int) {
        let oldSlots = slots
        let oldCapacity = capacity
        slots = .allocate(capacity: newCapacity)
        slots.initialize(repeating: 0, count: newCapacity)
        capacity = newCapacity
        for i in 0..<oldCapacity where oldSlots[i] != 0 {
            let hash = keyHash(Record(bits: oldSlots[i])!.key)
            place(oldSlots[i], home: home(hash))
        }
        oldSlots.deallocate()
        usedBytes += (newCapacity - oldCapacity) * 8
    }

    mutating func removeAllRecords() {
        // Walk the slots, not the LRU list: tombstones are only in the table.
        for i in 0..<capacity {
            if let record = Record(bits: slots[i]) { record.deallocate() }
        }
        head = nil
        tail = nil
        slots.update(repeating: 0, count: capacity)
        usedBytes = capacity * 8
        count = 0
        volatileCount = 0
        tombstoneCount = 0
    }

    /// Frees everything and shrinks back to the minimum size.
    mutating func reset() {
        removeAllRecords()
        slots.deallocate()
        capacity = Self.minimumCapacity
        slots = .allocate(capacity: capacity)
        slots.initialize(repeating: 0, count: capacity)
        usedBytes = capacity * 8
        expireCursor = 0
    }

    // MARK: LRU list

    /// Marks `record` used at `now` (Unix milliseconds).
    ///
    /// A record moves to the front at most once per second: LRU order is kept to the
    /// second, as Redis's LRU clock keeps it, and a hot record costs no list surgery (which
    /// touches two neighbouring records, usually cache misses) on every read.
    @inline(__always)
    mutating func markUsed(_ record: Record, now: Int64) {
        let second = Self.lruSecond(now)
        guard record.promotedAt != second else { return }
        record.promotedAt = second
        guard head != record else { return }
        unlink(record)
        linkFront(record)
    }

    @inline(__always)
    static func lruSecond(_ now: Int64) -> UInt16 { UInt16(truncatingIfNeeded: now / 1000) }

    private mutating func linkFront(_ record: Record) {
        record.previous = nil
        record.next = head
        if let head { head.previous = record }
        head = record
        if tail == nil { tail = record }
    }

    private mutating func unlink(_ record: Record) {
        let previous = record.previous
        let next = record.next
        if let previous { previous.next = next } else { head = next }
        if let next { next.previous = previous } else { tail = previous }
        record.previous = nil
        record.next = nil
    }

    // MARK: Eviction and expiry

    /// Slot of the least recently used record that matches `volatileOnly`, scanning at most
    /// `limit` records from the tail.
    func leastRecentlyUsed(volatileOnly: Bool, limit: Int) -> Record? {
        var candidate = tail
        var seen = 0
        while let record = candidate, seen < limit {
            if !volatileOnly || record.expiry != 0 { return record }
            candidate = record.previous
            seen += 1
        }
        return nil
    }

    /// Among up to `samples` volatile records found from random slots, the one that expires first.
    func soonestExpiring(samples: Int, using generator: inout some RandomNumberGenerator) -> Record? {
        guard volatileCount > 0 else { return nil }
        var best: Record?
        var found = 0
        var probes = 0
        while found < samples && probes < samples * 64 {
            let slot = slots[Int.random(in: 0..<capacity, using: &generator)]
            probes += 1
            guard let record = Record(bits: slot), record.expiry != 0, !record.isTombstone else { continue }
            found += 1
            if best == nil || record.expiry < best!.expiry { best = record }
        }
        return best ?? leastRecentlyUsed(volatileOnly: true, limit: 4096)
    }

    /// Removes `record` (which must be in this table).
    mutating func remove(_ record: Record) {
        let slot = find(record.key, hash: keyHash(record.key))!
        remove(at: slot)
    }

    /// One step of active expiry: examines up to `maxSlots` slots from a moving cursor and
    /// deletes the expired entries. Returns (volatile entries seen, expired and deleted).
    /// Turns the live record at `slot` into a tombstone with the same version, kept until
    /// `until`; false if no memory could be had (the caller removes it then).
    mutating func convertToTombstone(at slot: Int, until: Int64) -> Bool {
        let old = record(at: slot)
        guard let tombstone = Record.allocate(key: old.key, valueCount: 0) else { return false }
        tombstone.isTombstone = true
        tombstone.version = old.version
        tombstone.expiry = until
        replace(at: slot, with: tombstone)
        return true
    }

    /// Expires the record at `slot`: removed, or with `tombstoneTTL` (a cluster node) kept as
    /// a tombstone for that long, so a replica that missed the expiry cannot repair the old
    /// value back. Returns true if the slot was emptied (a later entry may have moved in).
    mutating func expire(at slot: Int, tombstoneTTL: Int64) -> Bool {
        let record = self.record(at: slot)
        if tombstoneTTL > 0 && !record.isTombstone && convertToTombstone(at: slot, until: record.expiry + tombstoneTTL) {
            return false
        }
        remove(at: slot)
        return true
    }

    mutating func expireStep(now: Int64, maxSlots: Int, tombstoneTTL: Int64 = 0) -> (sampled: Int, expired: Int) {
        guard volatileCount > 0 else { return (0, 0) }
        var sampled = 0
        var expired = 0
        var visited = 0
        if expireCursor >= capacity { expireCursor = 0 }
        while visited < maxSlots && sampled < 20 {
            if let record = Record(bits: slots[expireCursor]), record.expiry != 0 {
                sampled += 1
                if record.expiry <= now {
                    expired += 1
                    visited += 1
                    // When the slot was emptied a later entry may have shifted in: look again.
                    if expire(at: expireCursor, tombstoneTTL: tombstoneTTL) { continue }
                }
            }
            visited += 1
            expireCursor += 1
            if expireCursor == capacity { expireCursor = 0 }
        }
        return (sampled, expired)
    }

    // MARK: Iteration

    /// Calls `body` for every live key.
    func forEachKey(now: Int64, _ body: (UnsafeRawBufferPointer) -> Void) {
        for i in 0..<capacity {
            if let record = Record(bits: slots[i]), !record.isExpired(at: now), !record.isTombstone { body(record.key) }
        }
    }

    /// Calls `body` for every unexpired record, tombstones included, without marking it used.
    func forEachVersion(now: Int64, _ body: (UnsafeRawBufferPointer, Version, Bool) -> Void) {
        for i in 0..<capacity {
            if let record = Record(bits: slots[i]), !record.isExpired(at: now) { body(record.key, record.version, record.isTombstone) }
        }
    }

    /// A live record picked at random, or nil after a bounded number of tries.
    func randomRecord(now: Int64, using generator: inout some RandomNumberGenerator) -> Record? {
        guard count > tombstoneCount else { return nil }
        for _ in 0..<64 {
            var i = Int.random(in: 0..<capacity, using: &generator)
            for _ in 0..<capacity {
                if let record = Record(bits: slots[i]) {
                    if !record.isExpired(at: now) && !record.isTombstone { return record }
                    break
                }
                i = i + 1 == capacity ? 0 : i + 1
            }
        }
        return nil
    }

    /// One SCAN step in this shard: the keys whose local hash is at least `start`, slot by
    /// slot, until about `count` keys were found. Returns the local hash at which the next
    /// step starts, or nil when the shard is done.
    func scan(fromLocal start: UInt64, count wanted: Int, now: Int64, _ body: (UnsafeRawBufferPointer) -> Void) -> UInt64? {
        let first = home(ofLocal: start, capacity: capacity)
        var stop = first
        var found = 0
        // Slots [first, stop) are covered; keys whose home lies there but sit further on are
        // picked up by following the probe run past `stop`.
        while stop < capacity && (found < wanted || stop == first) {
            if slots[stop] != 0 { found += 1 }
            stop += 1
        }
        let end: UInt64? = stop == capacity ? nil : boundary(ofSlot: stop)
        func emit(_ slot: Int) {
            guard let record = Record(bits: slots[slot]), !record.isExpired(at: now), !record.isTombstone else { return }
            let local = localHash(keyHash(record.key))
            if local >= start && (end == nil || local < end!) { body(record.key) }
        }
        for i in first..<stop { emit(i) }
        var i = stop == capacity ? 0 : stop
        var steps = 0
        while slots[i] != 0 && steps < capacity {
            emit(i)
            i = i + 1 == capacity ? 0 : i + 1
            steps += 1
        }
        return end
    }

    /// The smallest local hash whose home slot is `slot` or later.
    private func boundary(ofSlot slot: Int) -> UInt64 {
        // ceil(slot * 2^64 / capacity)
        let (quotient, remainder) = UInt64(capacity).dividingFullWidth((high: UInt64(slot), low: 0))
        return remainder == 0 ? quotient : quotient + 1
    }
}

// The table's raw pointers are only touched under the owning shard's mutex.
extension ShardTable: @unchecked Sendable {}
