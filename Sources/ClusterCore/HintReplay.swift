/// Hinted handoff's decisions: the writes a node keeps for replicas that were unreachable
/// (each names its owner), which of them to drop, and when to replay which to whom. A pure
/// state machine: the shell adds hints as stand-in writes arrive, calls ``onTick(now:reachable:)``
/// once a period, sends the batches it returns and reports each batch's outcome with
/// ``onDelivered(owner:delivered:)``.
///
/// Bounded in count, bytes and age; a hint whose entry expired (or whose tombstone outlived
/// `tombstoneTTL`) is dropped, not replayed. At most one batch per owner is in flight, so a
/// slow owner is not sent the same hints twice; what it does not acknowledge is kept for the
/// next tick.
public struct HintReplay: Sendable {
    public struct Hint: Sendable, Hashable {
        public let owner: Int
        public let key: [UInt8]
        public let value: VersionedValue
        /// When it was kept, in milliseconds.
        public let stored: Int64

        public init(owner: Int, key: [UInt8], value: VersionedValue, stored: Int64) {
            self.owner = owner
            self.key = key
            self.value = value
            self.stored = stored
        }

        /// What it holds, for the byte limit (key, value and bookkeeping).
        public var bytes: Int { key.count + (value.value?.count ?? 0) + 64 }
    }

    public struct Limits: Sendable, Hashable {
        public var count: Int
        public var bytes: Int
        /// Milliseconds.
        public var age: Int64
        /// Hints sent to one owner in one batch.
        public var batch: Int
        /// How long a deleted key's tombstone lives (a hint for a delete lives no longer).
        public var tombstoneTTL: Int64

        public init(count: Int, bytes: Int, age: Int64, batch: Int = 1000, tombstoneTTL: Int64) {
            self.count = count
            self.bytes = bytes
            self.age = age
            self.batch = batch
            self.tombstoneTTL = tombstoneTTL
        }
    }

    /// A batch to replay: send each hint's value to `owner`, then report which arrived.
    public struct Batch: Sendable, Hashable {
        public let owner: Int
        public let hints: [Hint]
    }

    public let limits: Limits
    private var waiting: [Int: [Hint]] = [:]
    /// Owners with a batch out, and that batch (given back in full when the owner fails).
    private var inFlight: [Int: [Hint]] = [:]
    public private(set) var count = 0
    public private(set) var bytes = 0
    /// Hints acknowledged by their owner.
    public private(set) var delivered = 0
    /// Hints refused (the store was full) or dropped (expired, too old).
    public private(set) var dropped = 0

    public init(limits: Limits) {
        self.limits = limits
    }

    /// Keeps a hint; false (counted as dropped) when the store is full: then the stand-in's
    /// write did not happen and must not count as the owner's acknowledgement.
    public mutating func add(_ hint: Hint) -> Bool {
        guard count < limits.count, bytes + hint.bytes <= limits.bytes else {
            dropped += 1
            return false
        }
        waiting[hint.owner, default: []].append(hint)
        count += 1
        bytes += hint.bytes
        return true
    }

    /// Owners with hints kept (waiting or in flight).
    public var owners: Set<Int> { Set(waiting.keys).union(inFlight.keys) }

    /// Hints kept for `owner`, waiting or in flight.
    public func pending(for owner: Int) -> Int { (waiting[owner]?.count ?? 0) + (inFlight[owner]?.count ?? 0) }

    /// One period: drops what went stale for every owner (reachable or not: a member that
    /// stays away does not keep the store full), then takes one batch for each reachable owner
    /// that has no batch out.
    public mutating func onTick(now: Int64, reachable: (Int) -> Bool) -> [Batch] {
        purge(now: now)
        var batches: [Batch] = []
        for owner in waiting.keys.sorted() where inFlight[owner] == nil && reachable(owner) {
            guard let list = waiting[owner] else { continue }
            let batch = Array(list.prefix(limits.batch))
            waiting[owner] = list.count > batch.count ? Array(list.dropFirst(batch.count)) : nil
            inFlight[owner] = batch
            batches.append(Batch(owner: owner, hints: batch))
        }
        return batches
    }

    /// The outcome of `owner`'s batch, hint by hint (true: the owner applied it). What did not
    /// arrive waits for the next tick; a report for no batch out is ignored.
    public mutating func onDelivered(owner: Int, delivered arrived: [Bool]) {
        guard let batch = inFlight.removeValue(forKey: owner) else { return }
        var kept: [Hint] = []
        for (index, hint) in batch.enumerated() {
            if index < arrived.count, arrived[index] {
                delivered += 1
                count -= 1
                bytes -= hint.bytes
            } else {
                kept.append(hint)
            }
        }
        guard !kept.isEmpty else { return }
        waiting[owner] = kept + (waiting[owner] ?? [])
    }

    /// Whether a hint has outlived its entry or the age limit.
    public func isStale(_ hint: Hint, now: Int64) -> Bool {
        let expiry = hint.value.value == nil ? hint.value.version.timestamp.millis &+ limits.tombstoneTTL : hint.value.expiry
        return (expiry != 0 && expiry <= now) || now &- hint.stored > limits.age
    }

    private mutating func purge(now: Int64) {
        for (owner, list) in waiting where list.contains(where: { isStale($0, now: now) }) {
            var keep: [Hint] = []
            for hint in list {
                if isStale(hint, now: now) {
                    dropped += 1
                    count -= 1
                    bytes -= hint.bytes
                } else {
                    keep.append(hint)
                }
            }
            waiting[owner] = keep.isEmpty ? nil : keep
        }
    }
}
