import CSQLite
import CXXHash
import CacheStore
import Dispatch
import Foundation
#if canImport(Glibc)
import Glibc
#endif
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
public final class DurableTier: StoreJournal, @unchecked Sendable {
    public let path: String
    public let fsync: FsyncPolicy
    /// Past this many queued bytes, callers should stop taking writes (``isCongested``).
    public let queueLimit: Int

    // Touched by the writer thread only (and by init before it starts).
    private let database: SQLiteDatabase
    private var written: Int64 = 0
    private var upsert: SQLiteDatabase.Statement!
    private var delete: SQLiteDatabase.Statement!
    /// Committed batches not merged into `entries` yet.
    private let pendingLog: PendingLog
    /// Since when committed batches wait in the pending log (while ``unmergedBytes`` is not 0).
    private var pendingSince = ContinuousClock.now
    private var lookup: SQLiteDatabase.Statement!
    private var scanFirst: SQLiteDatabase.Statement!
    private var scanNext: SQLiteDatabase.Statement!

    private let queue = Mutex(Queue())
    /// What `meta` holds, as the last ``setMeta(_:_:)`` calls left it.
    private let metaValues: Mutex<[[UInt8]: [UInt8]]>
    private let wake = DispatchSemaphore(value: 0)
    private let queuedBytes = Atomic<Int>(0)
    /// Bytes of a batch that failed to commit and waits to be tried again: still owed to the
    /// disk, so they count toward ``isCongested`` as queued bytes do.
    private let retryBytes = Atomic<Int>(0)
    private let failure = Mutex<String?>(nil)
    /// Mirrors `failure != nil`, for the check on every write.
    private let failing = Atomic<Bool>(false)
    private let stopped = DispatchSemaphore(value: 0)

    /// The sequence number of the last change committed.
    public let committedSequence = Atomic<UInt64>(0)
    /// The sequence number of the last change queued (`Queue.sequence`, readable without the
    /// lock: the fsync-always path reads it around every write).
    private let enqueuedSequence = Atomic<UInt64>(0)
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
    /// True until every row was looked at by the start-up load.
    public let loading = Atomic<Bool>(true)
    /// Rows on disk that memory may not hold: set when the load stopped at the memory budget.
    public let diskHasMore = Atomic<Bool>(false)
    public let loadedRows = Atomic<Int>(0)

    private struct Queue {
        var log: [UInt8] = []
        var sequence: UInt64 = 0
        var reads: [(key: [UInt8], done: @Sendable (DiskEntry?) -> Void)] = []
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

    static let applicationID: Int64 = 0x5243_4348  // "RCCH"
    /// Queued bytes past which writers wait; `RINGCACHE_SQLITE_QUEUE_LIMIT` overrides it (tests).
    public static let defaultQueueLimit: Int = {
        if let text = getenv("RINGCACHE_SQLITE_QUEUE_LIMIT"), let value = Int(String(cString: text)), value > 0 { return value }
        return 64 << 20
    }()
    /// How long a batch gathers under everysec and no. A commit is one appended row, so a
    /// short gathering costs little, and what a kill -9 can lose (what arrived since the last
    /// commit) stays well inside everysec's second.
    static let gatherTime = Duration.milliseconds(100)
    /// Pending batches are merged into `entries` once they hold this many bytes, or once the
    /// oldest is ``mergeAge`` old (reads through to disk and scans merge first). A merge costs
    /// a row update per distinct key plus a decode per change, so merging often costs more:
    /// at 10 s, a million SETs over 100,000 keys (25 s) cost the writer 1.75 s of the node's
    /// core, at 60 s 0.29 s. What a crash leaves to merge at the next start is bounded by
    /// ``mergeBytes`` either way.
    static let mergeBytes = 256 << 20
    static let mergeAge = Duration.seconds(60)
    /// The largest batch buffer the writer keeps for the next batch.
    static let spareLimit = 16 << 20
    /// Rows are keyed by (ring position, key): a key is found by its hash, and a range of the
    /// ring (what rebalancing and anti-entropy hand over) is one range scan of the table.
    /// Format 5 keeps committed batches in the pending log beside the database; format 4 kept
    /// them in a `pending` table (moved into the log on upgrade), format 3 had neither.
    static let formatVersion: Int64 = 5

    /// Opens (or creates) the database at `path`. Refuses, without changing it, a file that
    /// is not a ringcache database, is damaged, unreadable, or in use by another process.
    public init(path: String, fsync: FsyncPolicy, queueLimit: Int = DurableTier.defaultQueueLimit) throws(PersistenceError) {
        self.path = path
        self.fsync = fsync
        self.queueLimit = queueLimit
        let exists = access(path, F_OK) == 0
        do {
            database = try SQLiteDatabase(path: path, create: !exists)
        } catch {
            throw PersistenceError(description: "cannot open the database \(path): \(error.message)")
        }
        do {
            try database.execute("PRAGMA locking_mode=EXCLUSIVE")
            let application = try database.integer("PRAGMA application_id")
            let objects = try database.integer("SELECT count(*) FROM sqlite_master")
            if application != Self.applicationID && !(application == 0 && objects == 0) {
                throw PersistenceError(description: "\(path) is not a ringcache database (application_id \(application), \(objects) schema objects); it was left untouched: move it away or set another `dir`")
            }
            // Takes the exclusive lock now: another process holding the file fails here.
            // A new file gets 16 KiB pages: a committed batch is one blob written as a chain of
            // pages, and each page is one WAL frame (a header and the page, written apart).
            if application == 0 { try database.execute("PRAGMA page_size=16384") }
            try database.execute("BEGIN EXCLUSIVE; COMMIT")
            try database.execute("PRAGMA journal_mode=WAL")
            let synchronous = switch fsync {
            case .always: "FULL"
            case .everysec: "NORMAL"
            case .no: "OFF"
            }
            try database.execute("PRAGMA synchronous=\(synchronous)")
            // A 64 MiB page cache and memory-mapped reads: the table's pages stay in memory
            // instead of being read again for every batch.
            try database.execute("PRAGMA cache_size=-65536; PRAGMA mmap_size=268435456")
            // Checkpoints copy each changed page into the database once, however many commits
            // changed it: a larger WAL between them (64 MiB) means fewer copies.
            let pageSize = try database.integer("PRAGMA page_size")
            try database.execute("PRAGMA wal_autocheckpoint=\(Int64(64 << 20) / max(pageSize, 512))")
            if application == 0 {
                try database.execute("""
                    CREATE TABLE entries(
                        position INTEGER NOT NULL, key BLOB NOT NULL, value BLOB, version INTEGER NOT NULL, node INTEGER NOT NULL,
                        expiry INTEGER NOT NULL, tombstone INTEGER NOT NULL, written INTEGER NOT NULL,
                        PRIMARY KEY (position, key)
                    ) WITHOUT ROWID;
                    CREATE INDEX entries_expiry ON entries(expiry) WHERE expiry != 0;
                    PRAGMA application_id=\(Self.applicationID);
                    PRAGMA user_version=\(Self.formatVersion);
                    """)
            } else {
                let format = try database.integer("PRAGMA user_version")
                guard (3...Self.formatVersion).contains(format) else {
                    throw PersistenceError(description: "\(path) has format \(format); this ringcache reads format \(Self.formatVersion); left untouched")
                }
            }
            // Opened once the database's lock is held: only its holder touches the log.
            pendingLog = try PendingLog(path: path + "-pending", keepsUnsynced: fsync != .no)
            if application != 0, try database.integer("PRAGMA user_version") < Self.formatVersion {
                try Self.upgrade(database, log: pendingLog)
            }
            // Small named values that outlive a restart (where rebalancing's walk stands).
            try database.execute("CREATE TABLE IF NOT EXISTS meta(name BLOB PRIMARY KEY, value BLOB NOT NULL)")
            do {
                let statement = try database.prepare("SELECT name, value FROM meta")
                var values: [[UInt8]: [UInt8]] = [:]
                while try statement.step() { values[Array(statement.blob(0))] = Array(statement.blob(1)) }
                metaValues = Mutex(values)
            }
            written = try database.integer("SELECT coalesce(max(written), 0) FROM entries")
            rows.store(Int(try database.integer("SELECT count(*) FROM entries")), ordering: .relaxed)
            upsert = try database.prepare(
                """
                INSERT INTO entries(key, value, version, node, expiry, tombstone, position, written) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(position, key) DO UPDATE SET value = excluded.value, version = excluded.version, node = excluded.node,
                    expiry = excluded.expiry, tombstone = excluded.tombstone, written = excluded.written
                """)
            delete = try database.prepare("DELETE FROM entries WHERE position = ? AND key = ?")
            unmergedBytes.store(pendingLog.size, ordering: .relaxed)
            lookup = try database.prepare("SELECT value, version, node, expiry, tombstone FROM entries WHERE position = ? AND key = ?")
            // The primary key's order: rows by ring position, what rebalancing walks.
            scanFirst = try database.prepare(
                "SELECT key, value, version, node, expiry, tombstone, position FROM entries ORDER BY position, key LIMIT ?")
            scanNext = try database.prepare(
                "SELECT key, value, version, node, expiry, tombstone, position FROM entries WHERE (position, key) > (?, ?) ORDER BY position, key LIMIT ?")
        } catch let error as PersistenceError {
            database.close()
            throw error
        } catch let error as SQLiteError {
            database.close()
            if error.isBusy {
                throw PersistenceError(description: "\(path) is in use by another process (\(error.message)); is another node running on it?")
            }
            if error.isCorrupt {
                throw PersistenceError(description: "\(path) is damaged or not a database (\(error.message)); it was left untouched: move it away or set another `dir`")
            }
            throw PersistenceError(description: "cannot use the database \(path): \(error.message)")
        } catch {
            database.close()
            throw PersistenceError(description: "cannot use the database \(path): \(error)")
        }
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

    /// Looks `key` up on disk, after every change queued before this call is committed.
    public func read(_ key: [UInt8], _ done: @escaping @Sendable (DiskEntry?) -> Void) {
        let wakeWriter = queue.withLock { queue in
            queue.reads.append((key, done))
            defer { queue.writerAsleep = false }
            return queue.writerAsleep
        }
        if wakeWriter { wake.signal() }
    }

    /// The next `limit` rows in ring-position order after `after` (from the start when nil),
    /// once every change queued before this call is committed; expired rows are left out,
    /// tombstones are not. An empty page ends the walk. For rebalancing: the disk holds what
    /// memory evicted.
    public func scan(after: DiskCursor?, limit: Int, _ done: @escaping @Sendable ([DiskRow]) -> Void) {
        let wakeWriter = queue.withLock { queue in
            queue.scans.append(Scan(after: after, limit: limit, done: done))
            defer { queue.writerAsleep = false }
            return queue.writerAsleep
        }
        if wakeWriter { wake.signal() }
    }

    /// The rows of one walk step; nil if the statement could not be bound (tried again later).
    private func scanRows(_ request: Scan) -> [DiskRow]? {
        let statement: SQLiteDatabase.Statement = request.after == nil ? scanFirst : scanNext
        defer { statement.reset() }
        // The cursor's key is bound without a copy: it stays alive while the statement steps.
        let afterKey = request.after?.key ?? []
        return afterKey.withUnsafeBytes { afterBytes -> [DiskRow]? in
            if let after = request.after {
                guard (try? statement.bind(1, after.position)) != nil, (try? statement.bind(2, afterBytes)) != nil,
                      (try? statement.bind(3, Int64(request.limit))) != nil else { return nil }
            } else {
                guard (try? statement.bind(1, Int64(request.limit))) != nil else { return nil }
            }
            var rows: [DiskRow] = []
            let now = Self.wallMillis()
            var last: DiskCursor?
            while (try? statement.step()) == true {
                let key = Array(statement.blob(0))
                let entry = row(statement, value: 1, version: 2, node: 3, expiry: 4, tombstone: 5)
                let cursor = DiskCursor(position: statement.int64(6), key: key)
                last = cursor
                if entry.value != nil, entry.expiry != 0, entry.expiry <= now { continue }
                rows.append(DiskRow(key: key, entry: entry, cursor: cursor))
            }
            // A page of nothing but expired rows still moves the walk on.
            if rows.isEmpty, let last { rows.append(DiskRow(key: [], entry: nil, cursor: last)) }
            return rows
        }
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
        let wakeWriter = queue.withLock { queue in
            queue.metas.append((key, value))
            defer { queue.writerAsleep = false }
            return queue.writerAsleep
        }
        if wakeWriter { wake.signal() }
    }

    private func storeMetas(_ metas: [(name: [UInt8], value: [UInt8]?)]) {
        _ = transaction {
            for (name, value) in metas {
                try name.withUnsafeBytes { name in
                    guard let value else {
                        let statement = try database.prepare("DELETE FROM meta WHERE name = ?")
                        try statement.bind(1, name)
                        _ = try statement.step()
                        return
                    }
                    try value.withUnsafeBytes { value in
                        let statement = try database.prepare("INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)")
                        try statement.bind(1, name)
                        try statement.bind(2, value)
                        _ = try statement.step()
                    }
                }
            }
        }
    }

    // MARK: Writer thread

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
        stopped.wait()
    }

    private func run(store: CacheStore) {
        var retry: (log: [UInt8], sequence: UInt64)?
        var lastHousekeeping = ContinuousClock.now
        var lastCommit = ContinuousClock.now
        var spare: [UInt8] = []
        // Under a memory limit the page cache takes a sixteenth of it (2 to 64 MiB): SQLite's
        // pages sit beside the store's memory, not in it.
        if store.maxMemory > 0 {
            let kibibytes = min(64 << 10, max(2 << 10, (store.maxMemory / 16) >> 10))
            try? database.execute("PRAGMA cache_size=-\(kibibytes)")
        }
        // Commits go on while a merge runs (it may take seconds): every gathering time, what
        // the event loops queued is appended to the log after the part being merged, and
        // synced as the policy says. Reads and scans wait for the merge.
        let commitWhileMerging = { [self] in
            guard retry == nil, ContinuousClock.now - lastCommit >= Self.gatherTime else { return }
            var log: [UInt8] = []
            let sequence = queue.withLock { queue in
                swap(&queue.log, &log)
                // Under the lock that appends count under: no append is lost from the count.
                queuedBytes.store(0, ordering: .relaxed)
                return queue.sequence
            }
            lastCommit = .now
            guard !log.isEmpty else { return }
            if !commit(log, upTo: sequence) {
                retry = (log, sequence)
                retryBytes.store(log.count, ordering: .relaxed)
            }
            if fsync == .everysec, ContinuousClock.now - lastPendingSync >= .seconds(1) { syncPendingLog() }
        }
        // What a crash left pending goes into `entries` before the load reads them; if that
        // fails, memory may lack it, and read-throughs (which look at the pending log) stay on.
        if !merge(while: commitWhileMerging) { diskHasMore.store(true, ordering: .relaxed) }
        // Scans wait for a merge that succeeded: they walk `entries` only.
        var waitingScans: [Scan] = []
        while true {
            let loadingNow = loading.load(ordering: .relaxed)
            let sleep = queue.withLock { queue -> Bool in
                let idle = queue.log.isEmpty && queue.reads.isEmpty && queue.scans.isEmpty && queue.metas.isEmpty && !queue.stopping && !loadingNow
                queue.writerAsleep = idle
                return idle
            }
            if sleep { _ = wake.wait(timeout: .now() + .milliseconds(retry == nil && !pendingLog.hasUnsyncedFailure ? 1000 : 500)) }
            // A failed sync is tried again (writing its records again first) until it succeeds;
            // writes are refused until then.
            if pendingLog.hasUnsyncedFailure { syncPendingLog() }
            // Group commit: unless writes wait for it (always), let a batch gather for a few
            // milliseconds, so that each page written to the WAL carries many rows.
            if fsync != .always, !loadingNow {
                // Checked every 5 ms: a queue that fills up (writers about to wait) or a read
                // that waits ends the gathering early.
                let full = queueLimit / 2
                while ContinuousClock.now - lastCommit < Self.gatherTime, queuedBytes.load(ordering: .relaxed) < full,
                      queue.withLock({ $0.reads.isEmpty && $0.scans.isEmpty && !$0.stopping }) {
                    Thread.sleep(forTimeInterval: 0.005)
                }
            }
            // The queue gets the spare buffer, already as large as a batch has been: the event
            // loops append without growing it (no copying, no fresh pages) in the common case.
            var log: [UInt8] = []
            swap(&log, &spare)
            var (sequence, reads, newScans, metas, stopping) = queue.withLock { queue in
                defer {
                    queue.reads = []
                    queue.scans = []
                    queue.metas = []
                    queue.writerAsleep = false
                }
                swap(&queue.log, &log)
                queuedBytes.store(0, ordering: .relaxed)
                return (queue.sequence, queue.reads, queue.scans, queue.metas, queue.stopping)
            }
            if let pending = retry {
                log = pending.log + log
                if log.count == pending.log.count { sequence = pending.sequence }
            }
            if !log.isEmpty {
                lastCommit = .now
                if commit(log, upTo: sequence) {
                    retry = nil
                    log.removeAll(keepingCapacity: true)
                } else {
                    retry = (log, sequence)
                    if !stopping { Thread.sleep(forTimeInterval: 0.2) }
                }
                retryBytes.store(retry?.log.count ?? 0, ordering: .relaxed)
            }
            // A buffer grown by a backlog is let go of rather than kept.
            spare = log.isEmpty && log.capacity <= Self.spareLimit ? log : []
            log = []
            if spare.capacity < 4096 { spare.reserveCapacity(4096) }
            if !metas.isEmpty { storeMetas(metas) }
            waitingScans += newScans
            let unmerged = unmergedBytes.load(ordering: .relaxed)
            let mergeDue = unmerged >= Self.mergeBytes || stopping || !reads.isEmpty || !waitingScans.isEmpty
                || (unmerged > 0 && ContinuousClock.now - pendingSince >= Self.mergeAge)
            let merged = !mergeDue || merge(while: commitWhileMerging)
            for read in reads { read.done(lookUp(read.key)) }
            if merged {
                waitingScans.removeAll { scan in
                    guard let rows = scanRows(scan) else { return false }
                    scan.done(rows)
                    return true
                }
            }
            if loadingNow { loadChunk(into: store) }
            if ContinuousClock.now - lastHousekeeping >= .seconds(1) {
                lastHousekeeping = .now
                housekeeping()
            }
            if stopping && queue.withLock({ $0.log.isEmpty && $0.reads.isEmpty && $0.scans.isEmpty && $0.metas.isEmpty }) && (retry == nil || stoppingGaveUp(&retry)) {
                _ = merge(while: commitWhileMerging)
                for scan in waitingScans { scan.done([]) }
                break
            }
        }
        if fsync != .no { try? database.execute("PRAGMA wal_checkpoint(TRUNCATE)") }
        // Statements first: a connection with live statements closes only when they go, and
        // holds its lock until then.
        upsert = nil
        delete = nil
        pendingLog.close()
        lookup = nil
        scanFirst = nil
        scanNext = nil
        loader = nil
        database.close()
        stopped.signal()
    }

    /// At shutdown a batch that cannot be committed is dropped after one more try.
    private func stoppingGaveUp(_ retry: inout (log: [UInt8], sequence: UInt64)?) -> Bool {
        if let pending = retry, commit(pending.log) != .notWritten { retry = nil }
        return true
    }

    private func finishWaiters(upTo sequence: UInt64, success: Bool) {
        let due: [@Sendable (Bool) -> Void] = queue.withLock { queue in
            if success { committedSequence.store(sequence, ordering: .releasing) }
            let due = queue.waiters.filter { $0.sequence <= sequence }.map(\.done)
            queue.waiters.removeAll { $0.sequence <= sequence }
            return due
        }
        for done in due { done(success) }
    }

    /// Commits a batch holding the changes up to `sequence` and tells their waiters how it
    /// went. True if the batch is in the log (under fsync always its sync may still have
    /// failed: its waiters are told so, and the sync is retried); false if it must be retried.
    private func commit(_ log: [UInt8], upTo sequence: UInt64) -> Bool {
        let outcome = commit(log)
        finishWaiters(upTo: sequence, success: outcome == .committed)
        return outcome != .notWritten
    }

    private enum CommitOutcome: Equatable {
        /// In the log, and synced as the policy asks.
        case committed
        /// In the log, but its sync (fsync always) failed: the sync is what is retried.
        case writtenNotSynced
        /// Not in the log: the batch is retried.
        case notWritten
    }

    /// Commits one batch of changes: appended, as encoded, to the pending log (and synced
    /// there under fsync always).
    private func commit(_ log: [UInt8]) -> CommitOutcome {
        let started = ContinuousClock.now
        if let failed = log.withUnsafeBytes({ pendingLog.append($0) }) {
            recordFailure(failed)
            return .notWritten
        }
        if unmergedBytes.exchange(pendingLog.size, ordering: .relaxed) == 0 { pendingSince = started }
        if fsync == .always, let failed = pendingLog.sync() {
            recordFailure("cannot sync the pending log: \(failed)")
            return .writtenNotSynced
        }
        recordSuccess()
        commits.add(1, ordering: .relaxed)
        lastCommitMillis.store(Int64(Date().timeIntervalSince1970 * 1000), ordering: .relaxed)
        lastCommitMicros.store(Self.micros(since: started), ordering: .relaxed)
        return .committed
    }

    /// Merges every pending batch into `entries` in one transaction, makes it durable, then
    /// removes the merged batches from the log. `meanwhile` is called every few thousand
    /// changes (to commit what arrives during the merge). False (the batches still pending)
    /// on an error.
    private func merge(while meanwhile: () -> Void = {}) -> Bool {
        guard pendingLog.size > 0 else { return true }
        let started = ContinuousClock.now
        var mergedEnd = 0
        let merged = transaction {
            try pendingLog.withBatches { bytes, batches in
                mergedEnd = bytes.count
                try apply(bytes, batches, meanwhile: meanwhile)
            }
        }
        guard merged else { return false }
        // The log goes only once the merge is on disk (synchronous=NORMAL does not sync
        // commits); without fsync a power loss may cost anything, a kill -9 nothing.
        if fsync != .no, let failed = syncLog() {
            recordFailure("cannot sync the WAL after a merge: \(failed)")
            return false
        }
        if let failed = pendingLog.removeMerged(upTo: mergedEnd, sync: fsync != .no) {
            recordFailure("cannot empty the pending log after a merge: \(failed)")
            return false
        }
        unmergedBytes.store(pendingLog.size, ordering: .relaxed)
        if pendingLog.size > 0 { pendingSince = started }
        merges.add(1, ordering: .relaxed)
        lastMergeMicros.store(Self.micros(since: started), ordering: .relaxed)
        return true
    }

    /// Moves what a format 4 file's `pending` table holds into the log (synced), then drops
    /// the table. A crash in between moves it again next time, which replays the same
    /// batches twice in a row: the same rows.
    private static func upgrade(_ database: SQLiteDatabase, log: PendingLog) throws {
        if try database.integer("SELECT count(*) FROM sqlite_master WHERE name = 'pending'") > 0 {
            let statement = try database.prepare("SELECT id, length(changes) FROM pending ORDER BY id")
            var bytes: [UInt8] = []
            while try statement.step() {
                try database.appendBlob(table: "pending", column: "changes", rowid: statement.int64(0), count: Int(statement.int64(1)), to: &bytes)
            }
            if !bytes.isEmpty, let failed = bytes.withUnsafeBytes({ log.append($0) }) ?? log.sync() {
                throw PersistenceError(description: "cannot move the pending batches of \(log.path): \(failed)")
            }
        }
        try database.execute("BEGIN IMMEDIATE; DROP TABLE IF EXISTS pending; PRAGMA user_version=\(formatVersion); COMMIT")
    }

    private func recordFailure(_ message: String) {
        writeErrors.add(1, ordering: .relaxed)
        failure.withLock { $0 = message }
        failing.store(true, ordering: .relaxed)
    }

    /// A write succeeded: the failure state, if any, ends, unless a sync of the pending log
    /// failed and has not been made good (a later write proves nothing about lost pages).
    private func recordSuccess() {
        guard failing.load(ordering: .relaxed), !pendingLog.hasUnsyncedFailure else { return }
        failure.withLock { $0 = nil }
        failing.store(false, ordering: .relaxed)
    }

    /// Runs `body` in an immediate transaction; on an error rolls it back, records the
    /// failure (writes answer MISCONF while it lasts) and returns false; a success ends it.
    private func transaction(_ body: () throws -> Void) -> Bool {
        do {
            try database.execute("BEGIN IMMEDIATE")
            try body()
            try database.execute("COMMIT")
            recordSuccess()
            return true
        } catch {
            try? database.execute("ROLLBACK")
            recordFailure((error as? SQLiteError)?.message ?? (error as? PersistenceError)?.description ?? "\(error)")
            return false
        }
    }

    private static func micros(since start: ContinuousClock.Instant) -> Int {
        let took = ContinuousClock.now - start
        return Int(took.components.seconds * 1_000_000 + took.components.attoseconds / 1_000_000_000_000)
    }

    /// Calls `body` with each change encoded in `batch` of `bytes`, in order, and nil for a
    /// FLUSHALL; a malformed batch (only a bug could write one: batches are checksummed)
    /// throws, so the merge fails loudly rather than applying part of it.
    private static func decode(_ bytes: UnsafeRawBufferPointer, _ batch: Range<Int>, _ body: (Change?) throws(SQLiteError) -> Void) throws(SQLiteError) {
        try ChangeLog.decode(bytes, batch, malformed: { SQLiteError(code: SQLITE_CORRUPT, message: "pending log: \($0)") }) { (change) throws(SQLiteError) in
            try body(change.kind == .removedAll ? nil : change)
        }
    }

    /// Writes the changes encoded in `bytes` (inside the caller's transaction): each run of
    /// changes between two FLUSHALLs is reduced to the last change of each key (as it is
    /// decoded, in a table by ring position), then sorted by ring position, so the B-tree is
    /// walked in order and each page is touched once.
    private func apply(_ bytes: UnsafeRawBufferPointer, _ batches: [Range<Int>], meanwhile: () -> Void) throws(SQLiteError) {
        var steps = 0
        func view(_ range: Range<Int>) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: bytes[range]) }
        var latest = LastChanges(bytes: bytes)
        func flush() throws(SQLiteError) {
            // Distinct keys: the order among keys at one position (a hash collision) is free.
            latest.changes.sort { $0.position < $1.position }
            for change in latest.changes {
                steps &+= 1
                if steps & 1023 == 0 { meanwhile() }
                let key = view(change.key)
                if change.value == nil && !change.tombstone {
                    try delete.bind(1, change.position)
                    try delete.bind(2, key)
                    _ = try delete.step()
                    continue
                }
                written += 1
                try upsert.bind(1, key)
                try upsert.bind(2, change.value.map(view))
                try upsert.bind(3, Int64(bitPattern: change.timestamp))
                try upsert.bind(4, Int64(change.node))
                try upsert.bind(5, change.expiry)
                try upsert.bind(6, change.tombstone ? 1 : 0)
                try upsert.bind(7, change.position)
                try upsert.bind(8, written)
                _ = try upsert.step()
            }
            latest.removeAll()
        }
        for batch in batches {
            try Self.decode(bytes, batch) { (change) throws(SQLiteError) in
                if let change {
                    latest.add(change)
                    steps &+= 1
                    if steps & 8191 == 0 { meanwhile() }
                } else {
                    latest.removeAll()
                    try database.execute("DELETE FROM entries")
                }
            }
        }
        try flush()
    }

    /// The last change of each key in a run of changes: an open-addressing table keyed by the
    /// key's ring position (a hash already, so its low bits pick the slot). A slot holds the
    /// position's high half and the index into `changes`, so a probe reads one slot, not the
    /// change, until the halves match. A later change of a key takes its earlier one's place.
    private struct LastChanges {
        let bytes: UnsafeRawBufferPointer
        var changes: [Change] = []
        /// `high 32 bits of the position << 32 | index into changes + 1`; 0 is an empty slot.
        private var slots: [UInt64]
        private var mask: Int

        init(bytes: UnsafeRawBufferPointer) {
            self.bytes = bytes
            slots = [UInt64](repeating: 0, count: 1 << 16)
            mask = slots.count - 1
        }

        private static func tag(_ position: Int64) -> UInt64 { UInt64(bitPattern: position) & 0xFFFF_FFFF_0000_0000 }

        mutating func add(_ change: Change) {
            let tag = Self.tag(change.position)
            var slot = Int(truncatingIfNeeded: change.position) & mask
            while slots[slot] != 0 {
                let entry = slots[slot]
                if entry & 0xFFFF_FFFF_0000_0000 == tag {
                    let index = Int(truncatingIfNeeded: entry & 0xFFFF_FFFF) - 1
                    let held = changes[index]
                    if held.position == change.position, held.key.count == change.key.count,
                       memcmp(bytes.baseAddress! + held.key.lowerBound, bytes.baseAddress! + change.key.lowerBound, held.key.count) == 0 {
                        changes[index] = change
                        return
                    }
                }
                slot = (slot + 1) & mask
            }
            changes.append(change)
            slots[slot] = tag | UInt64(changes.count)
            if changes.count * 2 > slots.count { grow() }
        }

        /// Twice the slots, every change placed again (keys are distinct: no comparing).
        private mutating func grow() {
            slots = [UInt64](repeating: 0, count: slots.count * 2)
            mask = slots.count - 1
            for (index, change) in changes.enumerated() {
                var slot = Int(truncatingIfNeeded: change.position) & mask
                while slots[slot] != 0 { slot = (slot + 1) & mask }
                slots[slot] = Self.tag(change.position) | UInt64(index + 1)
            }
        }

        mutating func removeAll() {
            changes.removeAll(keepingCapacity: true)
            for index in slots.indices { slots[index] = 0 }
        }
    }

    /// The last pending change of `key`: .some(nil) when it was deleted, nil when no pending
    /// batch names it. Only needed while merges fail (a full disk): reads see pending changes.
    private func pendingEntry(for key: [UInt8]) -> DiskEntry?? {
        guard pendingLog.size > 0 else { return nil }
        return try? pendingLog.withBatches { bytes, batches -> DiskEntry?? in
            var found: DiskEntry??
            for batch in batches {
                try? Self.decode(bytes, batch) { change in
                    guard let change else { return found = .some(nil) }
                    guard UnsafeRawBufferPointer(rebasing: bytes[change.key]).elementsEqual(key) else { return }
                    if change.value == nil && !change.tombstone { return found = .some(nil) }
                    found = .some(DiskEntry(value: change.value.map { Array(bytes[$0]) }, expiry: change.expiry,
                                            version: Version(timestamp: HLCTimestamp(rawValue: change.timestamp), node: NodeID(rawValue: change.node))))
                }
            }
            return found
        } ?? nil
    }

    private func lookUp(_ key: [UInt8]) -> DiskEntry? {
        readThroughs.add(1, ordering: .relaxed)
        defer { lookup.reset() }
        let found: DiskEntry? = pendingEntry(for: key) ?? key.withUnsafeBytes { bytes in
            guard (try? lookup.bind(1, Self.position(of: bytes))) != nil, (try? lookup.bind(2, bytes)) != nil,
                  (try? lookup.step()) == true else { return nil }
            return row(lookup, value: 0, version: 1, node: 2, expiry: 3, tombstone: 4)
        }
        guard let found, found.expiry == 0 || found.expiry > Self.wallMillis() else { return nil }
        return found
    }

    private func row(_ statement: SQLiteDatabase.Statement, value: Int32, version: Int32, node: Int32, expiry: Int32, tombstone: Int32) -> DiskEntry {
        DiskEntry(
            value: statement.int64(tombstone) != 0 ? nil : Array(statement.blob(value)),
            expiry: statement.int64(expiry),
            version: Version(timestamp: HLCTimestamp(rawValue: UInt64(bitPattern: statement.int64(version))),
                             node: NodeID(rawValue: UInt32(truncatingIfNeeded: statement.int64(node)))))
    }

    private var housekeepingRounds = 0

    /// The start-up load's statement, stepped 5,000 rows per turn of the writer loop.
    private var loader: SQLiteDatabase.Statement?

    /// Loads the next 5,000 rows into `store`: all of them in table order when memory has no
    /// limit, else newest first (one sort of the table) until memory reaches 95% of the limit.
    /// Ends the load when the rows run out or the budget is reached.
    private func loadChunk(into store: CacheStore) {
        let budget = store.maxMemory
        if loader == nil {
            let order = budget > 0 ? " ORDER BY written DESC" : ""
            loader = try? database.prepare("SELECT key, value, version, node, expiry, tombstone FROM entries" + order)
        }
        guard let statement = loader else {
            finishLoading(complete: false)
            return
        }
        let now = Self.wallMillis()
        for _ in 0..<5000 {
            guard (try? statement.step()) == true else {
                finishLoading(complete: true)
                return
            }
            let entry = row(statement, value: 1, version: 2, node: 3, expiry: 4, tombstone: 5)
            if entry.expiry != 0 && entry.expiry <= now { continue }
            entry.load(key: statement.blob(0), into: store, now: now)
            loadedRows.add(1, ordering: .relaxed)
            if budget > 0 && store.usedMemory >= budget / 100 * 95 {
                finishLoading(complete: false)
                return
            }
        }
    }

    private func finishLoading(complete: Bool) {
        loader = nil
        if !complete { diskHasMore.store(true, ordering: .relaxed) }
        loading.store(false, ordering: .relaxed)
    }

    /// Once a second: sync (everysec), purge expired rows, refresh the figures.
    private func housekeeping() {
        if fsync == .everysec {
            // Commits land in the pending log, merges in the WAL: both are synced.
            syncPendingLog()
            _ = syncLog()
        }
        let now = Self.wallMillis()
        if (try? database.execute(
            "DELETE FROM entries WHERE (position, key) IN (SELECT position, key FROM entries WHERE expiry != 0 AND expiry < \(now) LIMIT 10000)")) != nil {
            let changes = Int(sqlite3_changes(database.handle))
            if changes > 0 { purgedRows.add(changes, ordering: .relaxed) }
        }
        // Counting walks the whole table: every tenth second is often enough for INFO.
        housekeepingRounds += 1
        if housekeepingRounds % 10 == 1, let count = try? database.integer("SELECT count(*) FROM entries") {
            rows.store(Int(count), ordering: .relaxed)
        }
        updateDiskBytes()
    }

    /// When the pending log was last synced (everysec: housekeeping, or a long merge).
    private var lastPendingSync = ContinuousClock.now

    private func syncPendingLog() {
        lastPendingSync = .now
        if let failed = pendingLog.sync() {
            recordFailure("cannot sync the pending log: \(failed)")
        } else {
            recordSuccess()
        }
    }

    /// Syncs the WAL (where merges land; synchronous=NORMAL does not sync it at commits); the
    /// error's text on failure.
    private func syncLog() -> String? {
        let descriptor = Glibc.open(path + "-wal", O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return errno == ENOENT ? nil : String(cString: strerror(errno)) }
        defer { _ = Glibc.close(descriptor) }
        return Glibc.fsync(descriptor) == 0 ? nil : String(cString: strerror(errno))
    }

    private func updateDiskBytes() {
        var total = 0
        for file in [path, path + "-wal", path + "-pending"] {
            var info = stat()
            if stat(file, &info) == 0 { total += Int(info.st_size) }
        }
        diskBytes.store(total, ordering: .relaxed)
    }

    /// The key's position on the ring (xxh3, as the ring hashes keys), as SQLite's signed integer.
    static func position(of key: UnsafeRawBufferPointer) -> Int64 {
        Int64(bitPattern: ringcache_xxh3_64(key.baseAddress, key.count))
    }

    static func wallMillis() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return Int64(time.tv_sec) * 1000 + Int64(time.tv_nsec) / 1_000_000
    }
}
