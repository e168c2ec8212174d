import CSQLite
import CacheStore
import Dispatch
import Foundation

/// The writer thread: a thin shell around ``WriterPolicy``. It reads the queue and the clock,
/// asks the policy what is due, does it (commit, sync, merge, serve reads and scans, load,
/// keep house) and tells the policy how it went.
extension DurableTier {
    /// The writer's clock, for the policy.
    func elapsed() -> Duration { ContinuousClock.now - origin }

    func run(store: CacheStore) {
        // Under a memory limit the page cache takes a sixteenth of it (2 to 64 MiB): SQLite's
        // pages sit beside the store's memory, not in it.
        if store.maxMemory > 0 {
            let kibibytes = min(64 << 10, max(2 << 10, (store.maxMemory / 16) >> 10))
            do { try database.execute("PRAGMA cache_size=-\(kibibytes)") } catch { recordReadFailure("cannot size the page cache: \(error.message)") }
        }
        var retry: (log: [UInt8], sequence: UInt64)?
        var spare: [UInt8] = []
        var scans: [Scan] = []
        // Commits go on while a merge runs (it may take seconds): every gathering time, what
        // the event loops queued is appended to the log after the part being merged, and
        // synced as the policy says. Reads and scans wait for the merge.
        let commitWhileMerging = { [self] in
            guard policy.commitDuringMerge(now: elapsed()) else { return }
            var log: [UInt8] = []
            let sequence = queue.withLock { queue in
                swap(&queue.log, &log)
                // Under the lock that appends count under: no append is lost from the count.
                queuedBytes.store(0, ordering: .relaxed)
                return queue.sequence
            }
            if !log.isEmpty {
                let outcome = commit(log, upTo: sequence)
                _ = policy.committed(outcome, unmergedBytes: pendingLog.size, now: elapsed())
                if outcome == .committed { recordSuccess() }
                if outcome == .notWritten {
                    retry = (log, sequence)
                    retryBytes.store(log.count, ordering: .relaxed)
                }
            }
            if policy.syncDuringMerge(now: elapsed()) { syncPendingLog() }
        }
        // What a crash left pending goes into `entries` before the load reads them; if that
        // fails, memory may lack it, and read-throughs (which look at the pending log) stay on.
        if !merge(while: commitWhileMerging) { diskHasMore.store(true, ordering: .relaxed) }
        while true {
            let step = queue.withLock { queue in
                let step = policy.next(snapshot(queue, scans: scans.count), now: elapsed())
                // Set under the lock the next append looks at: it wakes a writer that sleeps.
                if case .sleep = step { queue.writerAsleep = true }
                return step
            }
            let turn: WriterPolicy.Turn
            switch step {
            case .sleep(let duration):
                _ = wake.wait(timeout: .now() + .nanoseconds(Int(duration / .nanoseconds(1))))
                queue.withLock { $0.writerAsleep = false }
                continue
            case .gather(let duration):
                Thread.sleep(forTimeInterval: Double(duration / .microseconds(1)) / 1_000_000)
                continue
            case .turn(let due):
                turn = due
            }
            // A failed sync is tried again (writing its records again first) until it succeeds;
            // writes are refused until then.
            if turn.syncAgain { syncPendingLog() }
            // The queue gets the spare buffer, already as large as a batch has been: the event
            // loops append without growing it (no copying, no fresh pages) in the common case.
            var log: [UInt8] = []
            if turn.commit { swap(&log, &spare) }
            var (sequence, reads, newScans, metas, stopping) = queue.withLock { queue in
                defer {
                    queue.reads = []
                    queue.scans = []
                    queue.metas = []
                }
                if turn.commit {
                    swap(&queue.log, &log)
                    queuedBytes.store(0, ordering: .relaxed)
                }
                return (queue.sequence, queue.reads, queue.scans, queue.metas, queue.stopping)
            }
            if turn.commit {
                if let pending = retry {
                    log = pending.log + log
                    if log.count == pending.log.count { sequence = pending.sequence }
                }
                if !log.isEmpty {
                    policy.committing(now: elapsed())
                    let outcome = commit(log, upTo: sequence)
                    let keep = policy.committed(outcome, unmergedBytes: pendingLog.size, now: elapsed(), stopping: stopping)
                    if outcome == .committed { recordSuccess() }
                    if outcome == .notWritten && keep {
                        retry = (log, sequence)
                    } else {
                        retry = nil
                        log.removeAll(keepingCapacity: true)
                    }
                    retryBytes.store(retry?.log.count ?? 0, ordering: .relaxed)
                }
                // A buffer grown by a backlog is let go of rather than kept.
                spare = log.isEmpty && log.capacity <= Self.spareLimit ? log : []
                log = []
                if spare.capacity < 4096 { spare.reserveCapacity(4096) }
            }
            if !metas.isEmpty { storeMetas(metas) }
            scans += newScans
            var entriesComplete = policy.unmergedBytes == 0
            if policy.mergeDue(.init(reads: reads.count, scans: scans.count, stopping: stopping), now: elapsed()) {
                let started = elapsed()
                entriesComplete = merge(while: commitWhileMerging)
                policy.merged(entriesComplete, unmergedBytes: pendingLog.size, started: started, now: elapsed())
            }
            for read in reads { read.done(lookUp(read.key)) }
            // Scans walk `entries` only: they wait for a merge that succeeded.
            if entriesComplete {
                scans.removeAll { scan in
                    guard let rows = scanRows(scan) else { return false }
                    scan.done(rows)
                    return true
                }
            }
            if turn.loadChunk {
                loadChunk(into: store)
                if !loading.load(ordering: .relaxed) { policy.finishedLoading() }
            }
            if turn.housekeeping {
                housekeeping()
                policy.housekept(now: elapsed())
            }
            if queue.withLock({ policy.finishes(snapshot($0, scans: 0)) }) {
                _ = merge(while: commitWhileMerging)
                for scan in scans { scan.done([]) }
                break
            }
        }
        if fsync != .no {
            do { try database.execute("PRAGMA wal_checkpoint(TRUNCATE)") } catch { recordFailure("cannot checkpoint at the stop: \(error.message)") }
        }
        loader = nil
        schema.close()
        stoppedSignal.signal()
    }

    private func snapshot(_ queue: Queue, scans: Int) -> WriterPolicy.Queue {
        WriterPolicy.Queue(bytes: queue.log.count, reads: queue.reads.count, scans: scans + queue.scans.count,
                           metas: queue.metas.count, stopping: queue.stopping)
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
    /// went (only a batch committed as the policy asks acknowledges them).
    private func commit(_ log: [UInt8], upTo sequence: UInt64) -> WriterPolicy.CommitOutcome {
        let outcome = commit(log)
        finishWaiters(upTo: sequence, success: outcome == .committed)
        return outcome
    }

    /// Commits one batch of changes: appended, as encoded, to the pending log (and synced
    /// there under fsync always).
    private func commit(_ log: [UInt8]) -> WriterPolicy.CommitOutcome {
        let started = ContinuousClock.now
        if let failed = log.withUnsafeBytes({ pendingLog.append($0) }) {
            recordFailure(failed)
            return .notWritten
        }
        unmergedBytes.store(pendingLog.size, ordering: .relaxed)
        if fsync == .always, let failed = pendingLog.sync() {
            recordFailure("cannot sync the pending log: \(failed)")
            return .writtenNotSynced
        }
        commits.add(1, ordering: .relaxed)
        lastCommitMillis.store(wallClock(), ordering: .relaxed)
        lastCommitMicros.store(Self.micros(since: started), ordering: .relaxed)
        return .committed
    }

    /// Merges every pending batch into `entries` in one transaction, makes it durable, then
    /// removes the merged batches from the log. `meanwhile` is called every few thousand
    /// changes (to commit what arrives during the merge). False (the batches still pending)
    /// on an error.
    func merge(while meanwhile: () -> Void = {}) -> Bool {
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
        if fsync != .no, let failed = SystemCall.sync(path: path + "-wal") {
            recordFailure("cannot sync the WAL after a merge: \(failed)")
            return false
        }
        if let failed = pendingLog.removeMerged(upTo: mergedEnd, sync: fsync != .no) {
            recordFailure("cannot empty the pending log after a merge: \(failed)")
            return false
        }
        unmergedBytes.store(pendingLog.size, ordering: .relaxed)
        merges.add(1, ordering: .relaxed)
        lastMergeMicros.store(Self.micros(since: started), ordering: .relaxed)
        return true
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
            var message = Self.describe(error)
            // SQLite rolls some failures back itself; a rollback that fails otherwise leaves
            // the connection inside the transaction, which the next BEGIN reports.
            if database.inTransaction {
                do { try database.execute("ROLLBACK") } catch { message += "; the rollback failed too: \(error.message)" }
            }
            recordFailure(message)
            return false
        }
    }

    private func storeMetas(_ metas: [(name: [UInt8], value: [UInt8]?)]) {
        _ = transaction {
            for (name, value) in metas {
                try name.withUnsafeBytes { name in
                    guard let value else {
                        defer { schema.metaDelete.reset() }
                        try schema.metaDelete.bind(1, name)
                        _ = try schema.metaDelete.step()
                        return
                    }
                    try value.withUnsafeBytes { value in
                        defer { schema.metaStore.reset() }
                        try schema.metaStore.bind(1, name)
                        try schema.metaStore.bind(2, value)
                        _ = try schema.metaStore.step()
                    }
                }
            }
        }
    }

    /// Calls `body` with each change encoded in `batch` of `bytes`, in order, and nil for a
    /// FLUSHALL; a malformed batch (only a bug could write one: batches are checksummed)
    /// throws, so the merge fails loudly rather than applying part of it.
    static func decode(_ bytes: UnsafeRawBufferPointer, _ batch: Range<Int>, _ body: (Change?) throws(SQLiteError) -> Void) throws(SQLiteError) {
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
        let upsert = schema.upsert
        let delete = schema.delete
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

    // MARK: Syncs and housekeeping

    /// Syncs the pending log and tells the policy how it went.
    func syncPendingLog() {
        if let failed = pendingLog.sync() {
            recordFailure("cannot sync the pending log: \(failed)")
            policy.syncFailed(now: elapsed())
        } else {
            recordSuccess()
            policy.synced(now: elapsed())
        }
    }

    /// Once a second: sync (everysec), purge expired rows, refresh the figures.
    private func housekeeping() {
        if fsync == .everysec {
            // Commits land in the pending log, merges in the WAL: both are synced.
            syncPendingLog()
            if let failed = SystemCall.sync(path: path + "-wal") { recordFailure("cannot sync the WAL: \(failed)") }
        }
        let now = wallClock()
        do {
            try database.execute(
                "DELETE FROM entries WHERE (position, key) IN (SELECT position, key FROM entries WHERE expiry != 0 AND expiry < \(now) LIMIT 10000)")
            let changes = Int(sqlite3_changes(database.handle))
            if changes > 0 { purgedRows.add(changes, ordering: .relaxed) }
        } catch {
            // Expired rows are never served; purging them waits for the next round.
            recordReadFailure("cannot purge expired rows: \(error.message)")
        }
        // Counting walks the whole table: every tenth second is often enough for INFO.
        housekeepingRounds += 1
        if housekeepingRounds % 10 == 1 {
            do { rows.store(Int(try database.integer("SELECT count(*) FROM entries")), ordering: .relaxed) } catch {
                recordReadFailure("cannot count the rows: \(error.message)")
            }
        }
        updateDiskBytes()
    }

    func updateDiskBytes() {
        diskBytes.store(SystemCall.size(path) + SystemCall.size(path + "-wal") + SystemCall.size(path + "-pending"), ordering: .relaxed)
    }

    static func micros(since start: ContinuousClock.Instant) -> Int {
        let took = ContinuousClock.now - start
        return Int(took.components.seconds * 1_000_000 + took.components.attoseconds / 1_000_000_000_000)
    }
}
