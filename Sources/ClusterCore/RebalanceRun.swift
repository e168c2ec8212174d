/// One run of sending a node's keys to the members that gain them after a ring change, from
/// the ring `old` to the ring `new`: what to scan next, which keys go to whom, when a step is
/// done, retried or paced, and where the walk stands.
/// A pure state machine (clock-free: delays are returned, not slept), driven by the shell:
///
///     onStep()                    → .scan(after:limit:)
///     targets(forPosition:)       (for each scanned key)
///     onPlanned(…)                → .send(targets) / .sendBigValues / the step's end
///     onBatch(step:target:ok:)    → once every target answered: the same
///     onBigValues(step:ok:)       → the step's end
///
/// A step ends in `.saveCursor` and `.next(afterMicroseconds:)` (paced to `maxBytesPerSecond`),
/// in `.finish` after the last one, or in `.retry(afterMilliseconds:)` when any target failed:
/// the walk moves on only once a step was acknowledged whole, so a retried step sends the same
/// keys again.
///
/// Who sends a key: every old replica sends its copy to every member that gains it
/// (``ReplicaPlan/transferTargets(forPosition:holder:)``). One sender is not enough: with
/// W < N its copy can lack a write the other old replicas acknowledged, and then no new
/// replica would get it (the simulator finds such histories). So a finished run covers every
/// old owner (``TransferCoverage``): an old owner that dies before it finished leaves nothing
/// that another old replica did not send. A gainer that is down is waited for (its batches
/// are retried until it is back, or until the ring forgets it): leaving it out would leave the
/// new ring with fewer copies of what it gained.
public struct RebalanceRun<Cursor: Sendable & Equatable>: Sendable {
    public enum Action: Sendable, Equatable {
        /// Read the next keys, after `after` (nil: from the start), at most `limit`.
        case scan(after: Cursor?, limit: Int)
        /// Send the step's small entries, one batch to each of `targets`.
        case send(targets: [Int])
        /// Send the step's big values, in chunks, one after the other.
        case sendBigValues
        /// Remember where the walk stands (a first run's place survives a restart).
        case saveCursor(Cursor)
        /// Start the next step after this pause.
        case next(afterMicroseconds: Int64)
        /// Send the same step again after this pause.
        case retry(afterMilliseconds: Int64)
        /// The run is over: this node sent every key it holds to the members that gain it.
        case finish
    }

    public struct Settings: Sendable, Hashable {
        /// Paces the steps (0: unpaced).
        public var maxBytesPerSecond: Int
        /// A step aims at about this many bytes: the scan grows or shrinks to it.
        public var batchBytes: Int
        public var retryMilliseconds: Int64
        public var initialScan: Int
        public var minScan: Int
        public var maxScan: Int

        public init(maxBytesPerSecond: Int, batchBytes: Int = 256 * 1024, retryMilliseconds: Int64 = 1000,
                    initialScan: Int = 256, minScan: Int = 8, maxScan: Int = 1024) {
            self.maxBytesPerSecond = maxBytesPerSecond
            self.batchBytes = batchBytes
            self.retryMilliseconds = retryMilliseconds
            self.initialScan = initialScan
            self.minScan = minScan
            self.maxScan = maxScan
        }
    }

    public let old: HashRing
    public let new: HashRing
    public let plan: ReplicaPlan
    /// This node, in both rings' member list.
    public let sender: Int
    public let settings: Settings
    /// Where the walk stands: the next scan starts after it.
    public private(set) var cursor: Cursor?
    /// Keys per scan, adapted to the size of the values.
    public private(set) var scanCount: Int
    /// The step under way (answers for another are ignored).
    public private(set) var step = 0
    public private(set) var isCancelled = false
    public private(set) var isFinished = false
    /// Keys scanned in finished steps, and steps sent again.
    public private(set) var scanned = 0
    public private(set) var retries = 0

    private var planned: Planned?
    private struct Planned: Sendable {
        var scanned: Int
        var bytes: Int
        var next: Cursor?
        var last: Bool
        var waiting: Set<Int>
        var failed: Bool
        var bigValues: Bool
    }

    /// `resumeAfter`: where the walk stood when this node stopped while sending for this ring.
    public init(old: HashRing, new: HashRing, sender: Int, settings: Settings, resumeAfter cursor: Cursor? = nil) {
        self.old = old
        self.new = new
        self.plan = ReplicaPlan(ring: new, previous: old)
        self.sender = sender
        self.settings = settings
        self.scanCount = settings.initialScan
        self.cursor = cursor
    }

    /// Stops the run (a newer ring change superseded it): every later event does nothing.
    public mutating func cancel() { isCancelled = true }

    /// Begins a step: the first, the next, or the same again after a failure.
    public mutating func onStep() -> [Action] {
        guard !isCancelled, !isFinished else { return [] }
        step += 1
        planned = nil
        return [.scan(after: cursor, limit: scanCount)]
    }

    /// The members the key at `position` goes to: those the new ring adds to its replicas,
    /// when this node is an old replica of it (down or not: see the type's summary).
    public func targets(forPosition position: UInt64) -> [Int] {
        Array(plan.transferTargets(forPosition: position, holder: sender))
    }

    /// What the step's scan gave: `scanned` keys read, `bytes` to send in all, batches for
    /// `targets`, whether some values are big (sent in chunks after the batches), where the
    /// next scan starts and whether this was the last of the keys.
    public mutating func onPlanned(scanned: Int, bytes: Int, targets: Set<Int>, bigValues: Bool, next: Cursor?, last: Bool) -> [Action] {
        guard !isCancelled, !isFinished, planned == nil else { return [] }
        // Keep a step near one batch: fewer keys per scan when values are big, more when small.
        if bytes > 2 * settings.batchBytes {
            scanCount = max(settings.minScan, scanCount / 2)
        } else if bytes < settings.batchBytes / 4 {
            scanCount = min(settings.maxScan, scanCount * 2)
        }
        planned = Planned(scanned: scanned, bytes: bytes, next: next, last: last, waiting: targets, failed: false, bigValues: bigValues)
        if !targets.isEmpty { return [.send(targets: targets.sorted())] }
        return afterBatches()
    }

    /// Whether `target` took its whole batch of step `step`.
    public mutating func onBatch(step: Int, target: Int, ok: Bool) -> [Action] {
        guard !isCancelled, step == self.step, var planned, planned.waiting.remove(target) != nil else { return [] }
        if !ok { planned.failed = true }
        self.planned = planned
        guard planned.waiting.isEmpty else { return [] }
        return afterBatches()
    }

    /// Whether every big value of step `step` arrived whole.
    public mutating func onBigValues(step: Int, ok: Bool) -> [Action] {
        guard !isCancelled, step == self.step, let planned, planned.waiting.isEmpty, planned.bigValues else { return [] }
        return ok ? endStep() : retry()
    }

    private mutating func afterBatches() -> [Action] {
        guard let planned else { return [] }
        if planned.failed { return retry() }
        if planned.bigValues { return [.sendBigValues] }
        return endStep()
    }

    private mutating func retry() -> [Action] {
        planned = nil
        retries += 1
        return [.retry(afterMilliseconds: settings.retryMilliseconds)]
    }

    private mutating func endStep() -> [Action] {
        guard let planned else { return [] }
        self.planned = nil
        scanned += planned.scanned
        if planned.last {
            isFinished = true
            return [.finish]
        }
        var actions: [Action] = []
        cursor = planned.next
        // The walk's place survives a restart.
        if let next = planned.next { actions.append(.saveCursor(next)) }
        // The pace: as long as the bytes just sent take at the configured rate.
        let pause = settings.maxBytesPerSecond > 0
            ? Int64(planned.bytes).multipliedReportingOverflow(by: 1_000_000).partialValue / Int64(settings.maxBytesPerSecond) : 0
        actions.append(.next(afterMicroseconds: max(0, pause)))
        return actions
    }
}

/// Sending one big value in chunks during a rebalance, resumable: where the next chunk starts,
/// given what the receiver says it holds. The receiver answers each chunk with the bytes it
/// holds of the value; an answer that is not where the chunk ended means it holds another
/// prefix (it lost the value, or an earlier try got further).
public struct ChunkedSend: Sendable, Equatable {
    public enum Next: Sendable, Equatable {
        /// Send the bytes from `offset` to `end`.
        case send(offset: Int, end: Int)
        /// The receiver holds the whole value.
        case done
        /// No progress: the step fails (the next try starts the value over).
        case fail
    }

    public let total: Int
    public let chunkBytes: Int
    /// Where the chunk in flight starts.
    public private(set) var offset: Int

    public init(total: Int, chunkBytes: Int, resumeAt offset: Int = 0) {
        self.total = max(0, total)
        self.chunkBytes = max(1, chunkBytes)
        self.offset = min(max(0, offset), self.total)
    }

    /// The chunk to send now.
    public var current: Next { offset >= total ? .done : .send(offset: offset, end: min(total, offset + chunkBytes)) }

    /// The receiver's answer to the chunk in flight: the bytes it holds (nil: no answer).
    public mutating func onReply(received: Int?) -> Next {
        guard case .send(let start, let end) = current, let received else { return .fail }
        if received == end {
            offset = end
            return current
        }
        // Another prefix: go on from it, unless that is no progress.
        guard received >= 0, received < total, received != start else { return .fail }
        offset = received
        return current
    }
}
