/// What the durable tier's writer thread does next: a pure function of what is queued, what
/// the last commits, syncs and merges left, and the time. The writer thread (the shell in
/// `DurableTier+Writer.swift`) reads its queue and the clock, asks, does what it is told, and
/// reports how it went. Nothing here reads a clock or touches a file: the tests drive it with
/// a manual clock.
///
/// Time is a `Duration` since any fixed origin the caller chooses.
public struct WriterPolicy: Sendable {
    public struct Settings: Sendable {
        public var fsync: FsyncPolicy
        /// Queued bytes past which writers wait; a batch half as large is committed at once.
        public var queueLimit: Int
        /// How long a batch gathers under everysec and no. A commit is one appended record,
        /// so a short gathering costs little, and what a kill -9 can lose (what arrived since
        /// the last commit) stays well inside everysec's second.
        public var gatherTime: Duration = .milliseconds(100)
        /// How often a gathering batch is looked at (a full queue or a read ends it early).
        public var gatherPoll: Duration = .milliseconds(5)
        /// Pending batches are merged into `entries` once they hold this many bytes, or once
        /// the oldest is ``mergeAge`` old (reads and scans merge first). A merge costs a row
        /// update per distinct key plus a decode per change, so merging often costs more: at
        /// 10 s, a million SETs over 100,000 keys (25 s) cost the writer 1.75 s of the node's
        /// core, at 60 s 0.29 s. What a crash leaves to merge at the next start is bounded by
        /// ``mergeBytes`` either way.
        public var mergeBytes: Int = 256 << 20
        public var mergeAge: Duration = .seconds(60)
        /// Syncs (everysec), expired-row purges and the figures: this often.
        public var housekeepingInterval: Duration = .seconds(1)
        /// A batch that failed to commit, or a merge that failed, is tried again after this.
        public var retryInterval: Duration = .milliseconds(200)
        /// A failed sync of the pending log is tried again after this.
        public var syncRetryInterval: Duration = .milliseconds(500)

        public init(fsync: FsyncPolicy, queueLimit: Int) {
            self.fsync = fsync
            self.queueLimit = queueLimit
        }
    }

    /// What waits for the writer, as the shell saw it under its queue's lock.
    public struct Queue: Equatable, Sendable {
        /// Bytes of changes queued (not counting a failed batch the shell holds).
        public var bytes = 0
        /// Read-throughs waiting.
        public var reads = 0
        /// Scans waiting (they are served after a merge that succeeded).
        public var scans = 0
        /// Named values waiting to be stored.
        public var metas = 0
        public var stopping = false

        public init(bytes: Int = 0, reads: Int = 0, scans: Int = 0, metas: Int = 0, stopping: Bool = false) {
            self.bytes = bytes
            self.reads = reads
            self.scans = scans
            self.metas = metas
            self.stopping = stopping
        }
    }

    public enum Step: Equatable, Sendable {
        /// Nothing is due: sleep until woken (a change or a request arrives) or this long.
        case sleep(Duration)
        /// A batch is gathering: look again after this long.
        case gather(Duration)
        /// Work is due: do what the turn names, then ask ``mergeDue(_:now:)``.
        case turn(Turn)
    }

    public struct Turn: Equatable, Sendable {
        /// Take the queued changes (after the failed batch, if one waits) and commit them.
        public var commit = false
        /// Write again, and sync, what a failed sync of the pending log left unsynced.
        public var syncAgain = false
        /// Load the next chunk of rows into memory (start-up).
        public var loadChunk = false
        /// Sync (everysec), purge expired rows, refresh the figures.
        public var housekeeping = false

        public init(commit: Bool = false, syncAgain: Bool = false, loadChunk: Bool = false, housekeeping: Bool = false) {
            self.commit = commit
            self.syncAgain = syncAgain
            self.loadChunk = loadChunk
            self.housekeeping = housekeeping
        }
    }

    /// How a commit went.
    public enum CommitOutcome: Equatable, Sendable {
        /// In the log, and synced as the policy asks.
        case committed
        /// In the log, but its sync (fsync always) failed: the sync is what is retried.
        case writtenNotSynced
        /// Not in the log: the batch is retried.
        case notWritten
    }

    public let settings: Settings
    /// True until the start-up load has looked at every row it will.
    public private(set) var loading = true
    /// A batch that failed to commit waits to be tried again (the shell holds it).
    public private(set) var retrying = false
    /// A sync of the pending log failed and has not been made good: writes are refused.
    public private(set) var unsynced = false
    /// Bytes of committed batches not merged into `entries` yet.
    public private(set) var unmergedBytes: Int
    private var retryAt: Duration = .zero
    private var syncRetryAt: Duration = .zero
    private var mergeRetryAt: Duration?
    private var failedCommitsWhileStopping = 0
    private var lastCommit: Duration
    private var lastHousekeeping: Duration
    private var lastSync: Duration
    /// Since when committed batches wait unmerged (while ``unmergedBytes`` is not 0).
    private var pendingSince: Duration

    /// `unmergedBytes`: what the pending log holds at start (a crash's leftovers).
    public init(settings: Settings, now: Duration, unmergedBytes: Int) {
        self.settings = settings
        self.unmergedBytes = unmergedBytes
        lastCommit = now
        lastHousekeeping = now
        lastSync = now
        pendingSince = now
    }

    // MARK: Deciding

    /// The next step, given what is queued.
    public func next(_ queue: Queue, now: Duration) -> Step {
        let commit = retrying ? (queue.stopping || now >= retryAt) : queue.bytes > 0
        let syncAgain = unsynced && now >= syncRetryAt
        let housekeeping = now - lastHousekeeping >= settings.housekeepingInterval
        let mergeAged = unmergedBytes > 0 && now - pendingSince >= settings.mergeAge && mergeAllowed(now: now)
        let scansServable = queue.scans > 0 && mergeAllowed(now: now)
        let requests = queue.reads > 0 || scansServable || queue.metas > 0 || queue.stopping || loading
        guard commit || syncAgain || housekeeping || mergeAged || requests else {
            return .sleep(max(.zero, nextDeadline(queue, now: now) - now))
        }
        // Group commit: unless writes wait for it (always), a batch gathers for a while, so
        // that one append carries many changes; a queue half full, or a read or scan that
        // waits, ends the gathering.
        if commit, !retrying, settings.fsync != .always, !loading, queue.reads == 0, queue.scans == 0, !queue.stopping,
           queue.bytes < settings.queueLimit / 2, now - lastCommit < settings.gatherTime {
            return .gather(min(settings.gatherPoll, lastCommit + settings.gatherTime - now))
        }
        return .turn(Turn(commit: commit, syncAgain: syncAgain, loadChunk: loading, housekeeping: housekeeping))
    }

    /// Whether to merge the pending batches now (asked after the turn's commit): they have
    /// grown large or old, or reads, scans or the stop wait for them. After a failed merge,
    /// not again for ``Settings/retryInterval`` (reads look at the pending log meanwhile),
    /// except at the stop.
    public func mergeDue(_ queue: Queue, now: Duration) -> Bool {
        guard unmergedBytes > 0 else { return false }
        guard queue.stopping || mergeAllowed(now: now) else { return false }
        return unmergedBytes >= settings.mergeBytes || queue.stopping || queue.reads > 0 || queue.scans > 0
            || now - pendingSince >= settings.mergeAge
    }

    /// While a merge runs (it may take seconds): whether to commit what was queued meanwhile.
    /// Marks the commit as started when it says yes.
    public mutating func commitDuringMerge(now: Duration) -> Bool {
        guard !retrying, now - lastCommit >= settings.gatherTime else { return false }
        lastCommit = now
        return true
    }

    /// While a merge runs under everysec: whether the pending log is due a sync.
    public func syncDuringMerge(now: Duration) -> Bool {
        settings.fsync == .everysec && now - lastSync >= settings.housekeepingInterval
    }

    /// Whether the writer may stop: a stop was asked and nothing else waits (a failed batch
    /// is dropped after two tries at the stop: see ``committed(_:unmergedBytes:now:stopping:)``).
    public func finishes(_ queue: Queue) -> Bool {
        queue.stopping && !retrying && queue.bytes == 0 && queue.reads == 0 && queue.metas == 0
    }

    private func mergeAllowed(now: Duration) -> Bool {
        mergeRetryAt.map { now >= $0 } ?? true
    }

    private func nextDeadline(_ queue: Queue, now: Duration) -> Duration {
        var deadline = lastHousekeeping + settings.housekeepingInterval
        // Waiting scans are served after the next merge that succeeds.
        if queue.scans > 0, let mergeRetryAt { deadline = min(deadline, mergeRetryAt) }
        if retrying { deadline = min(deadline, retryAt) }
        if unsynced { deadline = min(deadline, syncRetryAt) }
        if unmergedBytes > 0 { deadline = min(deadline, max(pendingSince + settings.mergeAge, mergeRetryAt ?? .zero)) }
        return deadline
    }

    // MARK: Reports

    /// A commit began at `now` (the turn's, not one during a merge).
    public mutating func committing(now: Duration) {
        lastCommit = now
    }

    /// How the commit that began at `now` went, and what the pending log holds after it.
    /// Returns false when the failed batch is to be dropped (the second failure at the stop:
    /// its writers were told MISCONF and nothing more can be done).
    public mutating func committed(_ outcome: CommitOutcome, unmergedBytes: Int, now: Duration, stopping: Bool = false) -> Bool {
        if self.unmergedBytes == 0 && unmergedBytes > 0 { pendingSince = now }
        self.unmergedBytes = unmergedBytes
        switch outcome {
        case .committed:
            retrying = false
            if settings.fsync == .always {
                unsynced = false
                lastSync = now
            }
        case .writtenNotSynced:
            retrying = false
            syncFailed(now: now)
        case .notWritten:
            if stopping {
                failedCommitsWhileStopping += 1
                if failedCommitsWhileStopping >= 2 {
                    retrying = false
                    return false
                }
            }
            retrying = true
            retryAt = now + settings.retryInterval
        }
        return true
    }

    /// A sync of the pending log succeeded at `now`.
    public mutating func synced(now: Duration) {
        unsynced = false
        lastSync = now
    }

    /// A sync of the pending log failed at `now`: tried again after a while; writes are
    /// refused until it succeeds.
    public mutating func syncFailed(now: Duration) {
        unsynced = true
        lastSync = now
        syncRetryAt = now + settings.syncRetryInterval
    }

    /// How the merge that began at `started` went, and what the pending log holds after it.
    public mutating func merged(_ succeeded: Bool, unmergedBytes: Int, started: Duration, now: Duration) {
        guard succeeded else {
            mergeRetryAt = now + settings.retryInterval
            return
        }
        mergeRetryAt = nil
        self.unmergedBytes = unmergedBytes
        // What was committed while the merge ran waits from the merge's start.
        if unmergedBytes > 0 { pendingSince = started }
    }

    public mutating func housekept(now: Duration) {
        lastHousekeeping = now
    }

    public mutating func finishedLoading() {
        loading = false
    }
}
