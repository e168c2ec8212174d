import CacheStore
import NIOCore
import Persistence
import RESP

extension NodeState {
    /// Whether `key` must be looked up on disk before it is read or written: memory may lack
    /// rows the disk holds (loading, a partial load, evictions) and holds nothing for it.
    func needsReadThrough(_ key: UnsafeRawBufferPointer, now: Int64) -> Bool {
        guard let durable, durable.mayHoldMore || store.evictedKeys > 0 else { return false }
        return !store.contains(key, now: now)
    }

    /// Looks `key` up on disk, puts what it finds into memory (a newer entry there wins), then
    /// calls `then` on `loop`: with true, or with false if the disk could not be read (memory
    /// may lack the key: the caller answers with an error rather than a miss).
    func loadFromDisk(_ key: [UInt8], on loop: any EventLoop, then: @escaping (Bool) -> Void) {
        guard let durable else { return then(true) }
        let next = NIOLoopBound(then, eventLoop: loop)
        let store = self.store
        durable.read(key) { result in
            loop.execute {
                switch result {
                case .success(let entry):
                    if let entry { Self.load(key, entry, into: store) }
                    next.value(true)
                case .failure:
                    next.value(false)
                }
            }
        }
    }

    static func load(_ key: [UInt8], _ entry: DiskEntry, into store: CacheStore) {
        key.withUnsafeBytes { entry.load(key: $0, into: store, now: wallClockMillis()) }
    }
}

extension DurableTier {
    /// The error a write gets while the disk fails (Redis's MISCONF, which clients know).
    static func misconf(_ reason: String) -> String {
        "MISCONF the SQLite tier cannot write (\(reason)); writes are refused until it can"
    }

    /// The error a command gets when a key it needs could not be read from disk.
    static func readError(_ reason: String) -> String {
        "IOERR the SQLite tier could not read a key this command needs (\(reason)); nothing was changed"
    }

    /// Calls `deliver` on `loop` with `reply` once the change `sequence` is committed, or with
    /// a MISCONF error if the commit holding it failed (the change stays queued for a retry).
    func reply(_ reply: ByteBuffer, afterCommitOf sequence: UInt64, on loop: any EventLoop,
               _ deliver: @escaping @Sendable (ByteBuffer) -> Void) {
        whenCommitted(sequence) { [self] committed in
            loop.execute {
                guard !committed else { return deliver(reply) }
                var error = ByteBuffer()
                error.writeRESPError(
                    "MISCONF the write was applied in memory but could not be committed to SQLite (\(self.failureReason ?? "error")); it is retried")
                deliver(error)
            }
        }
    }
}

extension CommandProcessor {
    /// The keys a command names, by its key positions.
    static func keys(of command: CommandTable.Entry, _ args: RESPArguments) -> [[UInt8]] {
        let spec = command.spec
        guard spec.firstKey > 0, spec.firstKey < args.count else { return [] }
        let last = spec.lastKey < 0 ? args.count + spec.lastKey : min(spec.lastKey, args.count - 1)
        guard last >= spec.firstKey else { return [] }
        return stride(from: spec.firstKey, through: last, by: max(1, spec.keyStep)).map { Array(args[$0]) }
    }

    /// What a read-through carries from the event loop to the writer thread and back.
    private struct Deferred {
        let processor: CommandProcessor
        let reply: PendingReply
        var session: Session
        let request: [[UInt8]]
        let command: CommandTable.Entry
        let completed: @Sendable () -> Void
    }

    /// When memory may lack rows the disk holds: a command whose keys are not all in memory
    /// first reads them through from SQLite (off the event loop), then runs; the connection's
    /// later requests wait for it. Returns false when the command can run now.
    func readThrough(
        _ command: CommandTable.Entry, _ args: RESPArguments, _ durable: DurableTier, _ session: inout Session, now: Int64,
        deferReply: () -> PendingReply
    ) -> Bool {
        guard let loop, let completed else { return false }
        let missing = Self.keys(of: command, args).filter { key in key.withUnsafeBytes { !store.contains($0, now: now) } }
        guard !missing.isEmpty else { return false }
        let reply = deferReply()
        session.barrier = reply
        var later = session
        later.barrier = nil
        let deferred = NIOLoopBoundBox(
            Deferred(processor: self, reply: reply, session: later, request: (0..<args.count).map { Array(args[$0]) }, command: command,
                     completed: completed),
            eventLoop: loop)
        // Each key's answer: nil once it is in memory (or absent on disk), else why it could not be read.
        let fanIn = NIOLoopBound(FanIn<String?>(count: missing.count) { failures in
            Self.finishReadThrough(deferred, failure: failures.lazy.compactMap { $0 ?? nil }.first, durable: durable, loop: loop)
        }, eventLoop: loop)
        for (index, key) in missing.enumerated() {
            durable.read(key) { result in
                loop.execute {
                    switch result {
                    case .success(let entry):
                        if let entry { NodeState.load(key, entry, into: deferred.value.processor.store) }
                        fanIn.value.answer(index, nil)
                    case .failure(let error):
                        fanIn.value.answer(index, error.description)
                    }
                }
            }
        }
        return true
    }

    /// Runs the command whose keys are now in memory and completes its reply (after the
    /// commit, under `persistence-fsync always`).
    private static func finishReadThrough(_ deferred: NIOLoopBoundBox<Deferred>, failure: String?, durable: DurableTier, loop: any EventLoop) {
        let now = wallClockMillis()
        let command = deferred.value.command
        let processor = deferred.value.processor
        var out = ByteBuffer()
        let before = durable.queuedSequence
        RESPArguments.withArguments(deferred.value.request) { args in
            if let failure {
                out.writeRESPError(DurableTier.readError(failure))
            } else if command.flags.contains(.denyOOM) && !processor.store.makeRoom(now: now) {
                out.writeRESPError("OOM command not allowed when used memory > 'maxmemory'.")
            } else {
                processor.dispatch(command, args, &deferred.value.session, &out, now)
            }
        }
        let sequence = durable.queuedSequence
        guard durable.fsync == .always, sequence > before else {
            deferred.value.reply.buffer = out
            deferred.value.completed()
            return
        }
        durable.reply(out, afterCommitOf: sequence, on: loop) { reply in
            deferred.value.reply.buffer = reply
            deferred.value.completed()
        }
    }


    /// `persistence-fsync always`: the write runs now and its reply is held until the batch
    /// holding it is committed (or turns into an error if that commit failed).
    func acknowledgeWhenDurable(
        _ command: CommandTable.Entry, _ args: RESPArguments, _ durable: DurableTier, _ session: inout Session, out: inout ByteBuffer,
        now: Int64, deferReply: () -> PendingReply
    ) {
        let before = durable.queuedSequence
        let start = out.writerIndex
        dispatch(command, args, &session, &out, now)
        let sequence = durable.queuedSequence
        guard sequence > before, let loop, let completed else { return }
        let written = out.getSlice(at: start, length: out.writerIndex - start) ?? ByteBuffer()
        out.moveWriterIndex(to: start)
        let pending = NIOLoopBound(deferReply(), eventLoop: loop)
        durable.reply(written, afterCommitOf: sequence, on: loop) { reply in
            pending.value.buffer = reply
            completed()
        }
    }
}
