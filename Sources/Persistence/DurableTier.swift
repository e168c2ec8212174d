import CXXHash
import CacheStore
import Dispatch
import Foundation
import Synchronization

/// When a committed batch is synced to disk.
public enum FsyncPolicy: String, Sendable, CaseIterable {
    /// Every commit is synced (synchronous=FULL) and writes are acknowledged after it.
    case always
    /// Commits are synced at least once a second.
    case everysec
    /// The operating system decides.
    case no
}

/// Why the durable tier could not start. The database is never changed when this is thrown.
public struct PersistenceError: Error, Sendable, CustomStringConvertible {
    public let description: String
}

/// An entry as the durable tier holds it.
public struct DiskEntry: Sendable {
    /// nil for a tombstone.
    public var value: [UInt8]?
    public var expiry: Int64
    public var version: Version

    /// Puts the entry into memory as it was (a newer version there wins); the journal is not
    /// told, since the entry came from the disk.
    public func load(key: UnsafeRawBufferPointer, into store: CacheStore, now: Int64) {
        guard let value else {
            // A tombstone keeps the deadline it had: its TTL counts from the delete's version.
            _ = store.applyVersioned(key, value: nil, expiry: expiry, version: version, now: now,
                                     tombstoneTTL: expiry - version.timestamp.millis, durable: false)
            return
        }
        value.withUnsafeBytes {
            _ = store.applyVersioned(key, value: $0, expiry: expiry, version: version, now: now, tombstoneTTL: 0, durable: false)
        }
    }
}

/// Where a walk of the table in ring order stands: the last row's primary key.
public struct DiskCursor: Sendable, Equatable {
    public var position: Int64
    public var key: [UInt8]

    public init(position: Int64, key: [UInt8]) {
        self.position = position
        self.key = key
    }
}

/// A row of a walk: the key and its entry (nil for a placeholder that only moves the cursor on,
/// when a page held nothing but expired rows).
public struct DiskRow: Sendable {
    public var key: [UInt8]
    public var entry: DiskEntry?
    public var cursor: DiskCursor
}

/// The durable tier under a node's memory: an SQLite database in WAL mode that follows every
/// change of the store (it is the store's ``StoreJournal``).
///
/// Changes are queued by the event loops (a copy of the bytes, nothing else) and committed in
/// batches by one writer thread (group commit). A commit appends the batch, as encoded, to the
/// pending log beside the database (``PendingLog``): one write, however many keys it holds.
/// Every minute (or 256 MiB) the pending batches are merged into `entries` in one
/// transaction, reduced to the last change of each key and sorted by ring position, so a key
/// written many times in between costs one row update, and each B-tree page of `entries` is
/// rewritten once per merge rather than once per commit (the table is keyed by a hash, so a
/// batch of random keys touches most of its pages). The same thread answers read-throughs and
/// scans after merging what was queued before them, so a read never misses an acknowledged
/// write; and at start it merges what a crash left pending, then loads the most recently
/// written entries into memory, a chunk at a time between commits, so the node answers at once.
///
/// The parts: this file holds what the event loops touch (the queue, the figures, the
/// requests); ``WriterPolicy`` decides when the writer commits, merges, syncs and keeps house;
/// `DurableTier+Writer.swift` is the thread that does it; ``DurableSchema`` opens and
/// upgrades the database; ``ChangeLog`` encodes the changes; ``LastChanges`` reduces a run of
/// them to one per key.
public final class DurableTier: StoreJournal, @unchecked Sendable {
    public let path: String
    public let fsync: FsyncPolicy
    /// Past this many queued bytes, callers should stop taking writes (``isCongested``).
    public let queueLimit: Int
    /// The wall clock in milliseconds (expiry is wall time); tests may set another.
    let wallClock: @Sendable () -> Int64

    // Touched by the writer thread only (and by init before it starts).
    let schema: DurableSchema
    var database: SQLiteDatabase { schema.database }
    var pendingLog: PendingLog { schema.pendingLog }
    var written: Int64
    var policy: WriterPolicy
    /// The writer's clock starts here: ``WriterPolicy`` reads time as a duration since it.
    let origin = ContinuousClock.now
    /// The start-up load's statement, stepped 5,000 rows per turn of the writer loop.
    var loader: SQLiteDatabase.Statement?
    var housekeepingRounds = 0

    let queue = Mutex(Queue())
    /// What `meta` holds, as the last ``setMeta(_:_:)`` calls left it.
    private let metaValues: Mutex<[[UInt8]: [UInt8]]>
    let wake = DispatchSemaphore(value: 0)
    let queuedBytes = Atomic<Int>(0)
    /// Bytes of a batch that failed to commit and waits to be tried again: still owed to the
    /// disk, so they count toward ``isCongested`` as queued bytes do.
    let retryBytes = Atomic<Int>(0)
    private let failure = Mutex<String?>(nil)
    /// Mirrors `failure != nil`, for the check on every write.
    private let failing = Atomic<Bool>(false)
    private let lastReadFailure = Mutex<String?>(nil)
    let stoppedSignal = DispatchSemaphore(value: 0)

    /// The sequence number of the last change committed.
    public let committedSequence = Atomic<UInt64>(0)
    /// The sequence number of the last change queued (`Queue.sequence`, readable without the
    /// lock: the fsync-always path reads it around every write).
    let enqueuedSequence = Atomic<UInt64>(0)
    public let rows = Atomic<Int>(0)
    public let diskBytes = Atomic<Int>(0)
    public let commits = Atomic<Int>(0)
    public let merges = Atomic<Int>(0)
    public let lastMergeMicros = Atomic<Int>(0)
    /// Bytes of committed batches not merged into `entries` yet (written by the writer thread).
    public let unmergedBytes = Atomic<Int>(0)
    public let lastCommitMillis = Atomic<Int64>(0)
    public let lastCommitMicros = Atomic<Int>(0)
    public let readThroughs = Atomic<Int>(0)
    public let purgedRows = Atomic<Int>(0)
    public let writeErrors = Atomic<Int>(0)
    /// Reads of the database that failed (a read-through, a scan, the load, housekeeping).
    public let readErrors = Atomic<Int>(0)
    /// True until every row was looked at by the start-up load.
    public let loading = Atomic<Bool>(true)
    /// Rows on disk that memory may not hold: set when the load stopped at the memory budget.
    public let diskHasMore = Atomic<Bool>(false)
    public let loadedRows = Atomic<Int>(0)

    struct Queue {
        var log: [UInt8] = []
        var sequence: UInt64 = 0
        var reads: [(key: [UInt8], done: @Sendable (Result<DiskEntry?, PersistenceError>) -> Void)] = []
        var scans: [Scan] = []
        var waiters: [(sequence: UInt64, done: @Sendable (Bool) -> Void)] = []
        var stopping = false
        /// Named values to store (nil: to remove), in order.
        var metas: [(name: [UInt8], value: [UInt8]?)] = []
        var writerAsleep = false
    }

    /// A request for the next rows in table order (rebalancing).
    struct Scan {
        var after: DiskCursor?
        var limit: Int
        var done: @Sendable ([DiskRow]) -> Void
    }

    /// Queued bytes past which writers wait, unless the node's `persistence-queue-limit` says.
    public static let defaultQueueLimit = 64 << 20
    /// The largest batch buffer the writer keeps for the next batch.
    static let spareLimit = 16 << 20

    /// Opens (or creates) the database at `path`. Refuses, without changing it, a file that
    /// is not a ringcache database, is damaged, unreadable, or in use by another process.
    public init(path: String, fsync: FsyncPolicy, queueLimit: Int = DurableTier.defaultQueueLimit,
                wallClock: @escaping @Sendable () -> Int64 = DurableTier.wallMillis) throws(PersistenceError) {
        self.path = path
        self.fsync = fsync
        self.queueLimit = queueLimit
        self.wallClock = wallClock
        schema = try DurableSchema.open(path: path, fsync: fsync)
        metaValues = Mutex(schema.metas)
        written = schema.lastWritten
        rows.store(Int(schema.rowCount), ordering: .relaxed)
        unmergedBytes.store(schema.pendingLog.size, ordering: .relaxed)
        policy = WriterPolicy(settings: .init(fsync: fsync, queueLimit: queueLimit), now: .zero, unmergedBytes: schema.pendingLog.size)
        updateDiskBytes()
    }

    // MARK: Journal (event loops)

    public func stored(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer?, expiry: Int64, version: Version) {
        append { ChangeLog.appendStored(key: key, value: value, expiry: expiry, version: version, to: &$0) }
    }

    public func removed(key: UnsafeRawBufferPointer) {
        append { ChangeLog.appendRemoved(key: key, to: &$0) }
    }

    public func removedAll() {
        append { ChangeLog.appendRemovedAll(to: &$0) }
    }

    private func append(_ encode: (inout [UInt8]) -> Void) {
        let wakeWriter = queue.withLock { queue in
            let before = queue.log.count
            encode(&queue.log)
            queue.sequence += 1
            enqueuedSequence.store(queue.sequence, ordering: .relaxed)
            queuedBytes.add(queue.log.count - before, ordering: .relaxed)
            defer { queue.writerAsleep = false }
            return queue.writerAsleep
        }
        if wakeWriter { wake.signal() }
    }

    /// The sequence number of the last change queued.
    public var queuedSequence: UInt64 { enqueuedSequence.load(ordering: .relaxed) }
    public var queueDepth: Int { queuedBytes.load(ordering: .relaxed) }
    /// Writes should wait: the writer is behind by more than ``queueLimit`` bytes.
    public var isCongested: Bool { queuedBytes.load(ordering: .relaxed) + retryBytes.load(ordering: .relaxed) > queueLimit }
    /// Why commits fail (a full disk, an I/O error), or nil while they succeed.
    public var failureReason: String? { failing.load(ordering: .relaxed) ? failure.withLock { $0 } : nil }
    /// Why the last read of the database that failed did (nil if none has).
    public var readFailureReason: String? { lastReadFailure.withLock { $0 } }
    public var isLoading: Bool { loading.load(ordering: .relaxed) }
    public var hasMoreOnDisk: Bool { diskHasMore.load(ordering: .relaxed) }

    /// Read-throughs are needed: memory may lack rows the disk holds.
    public var mayHoldMore: Bool { loading.load(ordering: .relaxed) || diskHasMore.load(ordering: .relaxed) }

    /// Calls `done(true)` once every change up to `sequence` is committed (at once if it is),
    /// or `done(false)` if the commit holding it failed. Called on the writer thread.
    public func whenCommitted(_ sequence: UInt64, _ done: @escaping @Sendable (Bool) -> Void) {
        let now: Bool? = queue.withLock { queue in
            if committedSequence.load(ordering: .acquiring) >= sequence { return true }
            queue.waiters.append((sequence, done))
            return nil
        }
        if let now { done(now) }
    }

    /// Looks `key` up on disk, after every change queued before this call is committed:
    /// the entry, nil when the disk holds none (or only an expired one), or why the read
    /// failed.
    public func read(_ key: [UInt8], _ done: @escaping @Sendable (Result<DiskEntry?, PersistenceError>) -> Void) {
        request { $0.reads.append((key, done)) }
    }

    /// The next `limit` rows in ring-position order after `after` (from the start when nil),
    /// once every change queued before this call is committed; expired rows are left out,
    /// tombstones are not. An empty page ends the walk (a failed read is retried, never taken
    /// for the end). For rebalancing: the disk holds what memory evicted.
    public func scan(after: DiskCursor?, limit: Int, _ done: @escaping @Sendable ([DiskRow]) -> Void) {
        request { $0.scans.append(Scan(after: after, limit: limit, done: done)) }
    }

    /// A named value stored beside the entries, as the last ``setMeta(_:_:)`` left it.
    public func meta(_ name: String) -> [UInt8]? {
        metaValues.withLock { $0[Array(name.utf8)] }
    }

    /// Stores (nil: removes) a named value that outlives a restart; written by the writer
    /// thread with the next batch (best effort: a failure leaves the previous value).
    public func setMeta(_ name: String, _ value: [UInt8]?) {
        let key = Array(name.utf8)
        metaValues.withLock { $0[key] = value }
        request { $0.metas.append((key, value)) }
    }

    private func request(_ add: (inout Queue) -> Void) {
        let wakeWriter = queue.withLock { queue in
            add(&queue)
            defer { queue.writerAsleep = false }
            return queue.writerAsleep
        }
        if wakeWriter { wake.signal() }
    }

    // MARK: Starting and stopping

    /// Starts the writer thread; it loads the store first (up to the store's `maxMemory`).
    public func start(loadingInto store: CacheStore) {
        let thread = Thread { [self] in run(store: store) }
        thread.name = "ringcache-sqlite"
        thread.start()
    }

    /// Commits what is queued and stops the writer, without blocking the caller's thread.
    public func stopped() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let thread = Thread { [self] in
                stop()
                continuation.resume()
            }
            thread.start()
        }
    }

    /// Commits what is queued and stops the writer; returns once it has.
    public func stop() {
        queue.withLock { $0.stopping = true }
        wake.signal()
        stoppedSignal.wait()
    }

    // MARK: Failures

    func recordFailure(_ message: String) {
        writeErrors.add(1, ordering: .relaxed)
        failure.withLock { $0 = message }
        failing.store(true, ordering: .relaxed)
    }

    /// A write succeeded: the failure state, if any, ends, unless a batch that failed to
    /// commit still waits for its retry, or a sync of the pending log failed and has not been
    /// made good (a later write proves nothing about lost pages). Writer thread only.
    func recordSuccess() {
        guard failing.load(ordering: .relaxed), !policy.retrying, !pendingLog.hasUnsyncedFailure else { return }
        failure.withLock { $0 = nil }
        failing.store(false, ordering: .relaxed)
    }

    /// A read of the database failed: counted, and its reason kept for INFO.
    func recordReadFailure(_ message: String) {
        readErrors.add(1, ordering: .relaxed)
        lastReadFailure.withLock { $0 = message }
    }

    /// An error's text as an operator reads it.
    static func describe(_ error: any Error) -> String {
        (error as? SQLiteError)?.message ?? (error as? PersistenceError)?.description ?? "\(error)"
    }

    /// The key's position on the ring (xxh3, as the ring hashes keys), as SQLite's signed integer.
    static func position(of key: UnsafeRawBufferPointer) -> Int64 {
        Int64(bitPattern: ringcache_xxh3_64(key.baseAddress, key.count))
    }

    @Sendable public static func wallMillis() -> Int64 {
        Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
    }
}
