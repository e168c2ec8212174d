import CacheStore
import ClusterCore
import ClusterProtocol
import Logging
import NIOCore
import Persistence
import RESP
import Synchronization

/// What INFO and `ringcache cluster status` show of data moving after joins and leaves, and
/// which members finished sending for which epoch.
final class RebalanceState: Sendable {
    let maxBytesPerSecond: Int
    /// The epoch this node's latest transfer was for; 0 before any.
    let epoch = Atomic<UInt64>(0)
    let sending = Atomic<Bool>(false)
    let keysTotal = Atomic<Int>(0)
    let keysScanned = Atomic<Int>(0)
    let keysSent = Atomic<Int>(0)
    let bytesSent = Atomic<Int>(0)
    let keysReceived = Atomic<Int>(0)
    let bytesReceived = Atomic<Int>(0)
    let transfersStarted = Atomic<Int>(0)
    let transfersFinished = Atomic<Int>(0)
    /// Batches sent again after a failure (the transfer resumes at the batch that failed).
    let retries = Atomic<Int>(0)
    let chunksSent = Atomic<Int>(0)
    let chunksReceived = Atomic<Int>(0)
    /// Values being put together from RC.XFERPART chunks: (sender, key) → version, expiry, bytes.
    private let partial = Mutex<[PartialKey: (version: Version, expiry: Int64, bytes: [UInt8], started: Int64)]>([:])
    struct PartialKey: Hashable {
        var sender: String
        var key: [UInt8]
    }

    /// Takes one chunk of a big value; returns the bytes held so far (the sender's next
    /// offset) and the whole value once the last chunk arrived. A chunk that does not follow
    /// on starts the value again only at offset 0; otherwise the sender learns where to resume.
    /// Values put together at once, at most: a sender sends one big value at a time.
    static let maxPartialValues = 64
    /// Bytes held in values being put together, at most (and a quarter of `maxmemory`).
    static let maxPartialBytes = 256 * 1024 * 1024

    /// nil when the chunk is refused: too many values or bytes in progress (the sender retries).
    func receiveChunk(sender: String, key: [UInt8], version: Version, expiry: Int64, offset: Int, total: Int,
                      chunk: UnsafeRawBufferPointer, now: Int64, memoryLimit: Int) -> (received: Int, complete: [UInt8]?)? {
        chunksReceived.add(1, ordering: .relaxed)
        return partial.withLock { partial in
            // Forget values whose sender went quiet for a minute.
            partial = partial.filter { now - $0.value.started < 60_000 }
            let id = PartialKey(sender: sender, key: key)
            if offset == 0 {
                // Room for it is checked against what is held, not what `total` claims: the
                // bytes are counted as they arrive.
                let held = partial.values.reduce(0) { $0 + $1.bytes.count }
                let limit = memoryLimit > 0 ? min(Self.maxPartialBytes, memoryLimit / 4) : Self.maxPartialBytes
                guard partial[id] != nil || partial.count < Self.maxPartialValues, held + chunk.count <= limit else { return nil }
                partial[id] = (version, expiry, [], now)
            } else if let held = partial[id] {
                let total = partial.values.reduce(0) { $0 + $1.bytes.count }
                let limit = memoryLimit > 0 ? min(Self.maxPartialBytes, memoryLimit / 4) : Self.maxPartialBytes
                guard total + chunk.count <= limit || held.bytes.count != offset else { return nil }
            }
            guard var held = partial[id], held.version == version, held.bytes.count == offset, offset + chunk.count <= total else {
                return (partial[id]?.bytes.count ?? 0, nil)
            }
            held.bytes.append(contentsOf: chunk)
            guard held.bytes.count == total else {
                partial[id] = held
                return (held.bytes.count, nil)
            }
            partial[id] = nil
            return (total, held.bytes)
        }
    }

    /// Keys removed here after a ring change gave them to others.
    let keysDropped = Atomic<Int>(0)
    /// `CLUSTER LEAVE` was called: this node hands its data out and stops.
    let leaving = Atomic<Bool>(false)
    /// A seed answered `RC.JOIN` (or the node needs none).
    let joined = Atomic<Bool>(false)
    /// Claims by ring (``Topology/ringID``), the latest last.
    private let finishedBy = Mutex<[(ring: UInt64, coverage: TransferCoverage)]>([])
    /// Takeover runs: sent again because an old owner died before it finished.
    let takeovers = Atomic<Int>(0)
    /// Transfers that went on from where this node's walk stood before it restarted.
    let resumed = Atomic<Int>(0)

    init(maxBytesPerSecond: Int) {
        self.maxBytesPerSecond = maxBytesPerSecond
    }

    /// `member` finished sending for the change to `ring`, having counted `covering` as down
    /// throughout (nil: it covers everyone).
    func markFinished(_ member: String, ring: UInt64, covering: Set<String>?) {
        finishedBy.withLock { finished in
            if let at = finished.firstIndex(where: { $0.ring == ring }) {
                finished[at].coverage.record(member, covering: covering)
                return
            }
            var coverage = TransferCoverage()
            coverage.record(member, covering: covering)
            finished.append((ring, coverage))
            // Claims about rings long past are of no use.
            if finished.count > 16 { finished.removeFirst() }
        }
    }

    func coverage(ring: UInt64) -> TransferCoverage {
        finishedBy.withLock { $0.first { $0.ring == ring }?.coverage ?? TransferCoverage() }
    }

    func finished(ring: UInt64) -> Set<String> {
        Set(coverage(ring: ring).finished.keys)
    }

    /// Percent of this node's keys scanned in its latest transfer (100 when none runs).
    var progress: Int {
        guard sending.load(ordering: .relaxed) else { return 100 }
        let total = keysTotal.load(ordering: .relaxed)
        guard total > 0 else { return 0 }
        return min(99, keysScanned.load(ordering: .relaxed) * 100 / total)
    }
}

/// Where a rebalance walk stands: in memory (the store's scan cursor; 0 at the start and at
/// the end) or, with persistence under last-write-wins, in the SQLite table.
enum ScanCursor: Sendable, Equatable {
    case memory(UInt64)
    case disk(DiskCursor)
}

/// This node's running transfer: the pure ``RebalanceRun`` that decides, and what the shell
/// holds for it between events (the step's entries, the big value being sent in chunks).
/// Confined to the coordinator's event loop.
final class RebalanceTransfer: @unchecked Sendable {
    let epoch: UInt64
    /// The ring it sends for (``Topology/ringID``).
    let ringID: UInt64
    var run: RebalanceRun<ScanCursor>
    /// The step's entries, as the scan found them.
    var outgoing: [Outgoing] = []
    /// The big value being sent in chunks and how much of it the receiver acknowledged: a
    /// step sent again after a failure goes on from there.
    var chunked: (value: ChunkedValue, offset: Int)?
    /// Big values of the current step already sent whole: a step sent again skips them.
    var chunkedDone: Set<ChunkedValue> = []
    struct ChunkedValue: Hashable {
        var target: Int
        var key: [UInt8]
        var version: Version
    }

    /// One entry to send: a key's versioned value for one member that gains it.
    struct Outgoing {
        var target: Int
        var key: [UInt8]
        var version: Version
        var expiry: Int64
        var value: [UInt8]?
        /// Under vector clocks: the key's siblings, sent whole with RC.VPUT.
        var siblings: SiblingSet? = nil
        var siblingBytes = 0
        var size: Int { key.count + (value?.count ?? 0) + siblingBytes + 32 }
        var isBig: Bool { (value?.count ?? 0) > Coordinator.rebalanceChunkBytes }
    }

    init(topology: Topology, run: RebalanceRun<ScanCursor>) {
        self.epoch = topology.epoch
        self.ringID = topology.ringID
        self.run = run
    }
}

extension Coordinator {
    static let rebalanceBatchBytes = 256 * 1024
    /// Values larger than this move in chunks of this size.
    static let rebalanceChunkBytes = 64 * 1024

    /// Starts sending for the current topology's ring change, unless a transfer for it runs
    /// or is done; a transfer for an older epoch stops (what it sent is not wasted: its keys
    /// are sent again only if the new change gives them to someone else).
    func startRebalance() {
        let topology = cluster.topology
        guard let old = topology.previous else { return }
        let state = cluster.rebalance
        if let transfer, transfer.ringID == topology.ringID { return }
        if state.finished(ring: topology.ringID).contains(cluster.selfName) { return }
        transfer?.run.cancel()
        // This node restarted while sending for this ring: its walk goes on from where it
        // stood (and covers nobody: what came before was sent with down sets nobody knows now).
        let resumed = savedCursor(for: topology.ringID)
        if resumed != nil {
            state.resumed.add(1, ordering: .relaxed)
            logger.info("rebalance: going on from where the walk stood before a restart", metadata: ["epoch": "\(topology.epoch)"])
        }
        begin(RebalanceTransfer(topology: topology, run: RebalanceRun(
            old: old, new: topology.ring, sender: cluster.selfIndex, settings: settings(), resumeAfter: resumed.map { .disk($0) })))
        logger.info("rebalance: sending the keys other members gain", metadata: ["epoch": "\(topology.epoch)", "keys": "\(store.count)"])
    }

    static let cursorMeta = "rebalance-cursor"

    /// With persistence (last-write-wins, which walks the SQLite table): where the walk for
    /// `ring` stood when this node stopped, if it stopped while sending for it.
    private func savedCursor(for ring: UInt64) -> DiskCursor? {
        guard let durable = cluster.node.durable, !cluster.usesVectorClocks, let bytes = durable.meta(Self.cursorMeta), bytes.count >= 16 else {
            return nil
        }
        let (saved, position) = bytes.withUnsafeBytes {
            (UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)), Int64(littleEndian: $0.loadUnaligned(fromByteOffset: 8, as: Int64.self)))
        }
        return saved == ring ? DiskCursor(position: position, key: Array(bytes[16...])) : nil
    }

    /// Remembers (on disk) where the walk for `ring` stands, or that it ended (nil).
    private func saveCursor(_ cursor: DiskCursor?, ring: UInt64) {
        guard let durable = cluster.node.durable else { return }
        guard let cursor else { return durable.setMeta(Self.cursorMeta, nil) }
        var bytes: [UInt8] = []
        withUnsafeBytes(of: ring.littleEndian) { bytes += $0 }
        withUnsafeBytes(of: cursor.position.littleEndian) { bytes += $0 }
        bytes += cursor.key
        durable.setMeta(Self.cursorMeta, bytes)
    }

    private func begin(_ transfer: RebalanceTransfer) {
        let state = cluster.rebalance
        self.transfer = transfer
        state.epoch.store(transfer.epoch, ordering: .relaxed)
        state.sending.store(true, ordering: .relaxed)
        state.keysTotal.store(cluster.node.durable.map { max($0.rows.load(ordering: .relaxed), store.count) } ?? store.count, ordering: .relaxed)
        state.keysScanned.store(0, ordering: .relaxed)
        state.transfersStarted.add(1, ordering: .relaxed)
        nextStep(transfer)
    }

    private func settings() -> RebalanceRun<ScanCursor>.Settings {
        RebalanceRun.Settings(maxBytesPerSecond: cluster.rebalance.maxBytesPerSecond, batchBytes: Self.rebalanceBatchBytes)
    }

    /// Feeds one event to the run and carries out what it decides.
    private func drive(_ transfer: RebalanceTransfer, _ event: (inout RebalanceRun<ScanCursor>) -> [RebalanceRun<ScanCursor>.Action]) {
        let actions = event(&transfer.run)
        for action in actions { perform(action, transfer) }
    }

    private func nextStep(_ transfer: RebalanceTransfer) {
        drive(transfer) { $0.onStep() }
    }

    private func perform(_ action: RebalanceRun<ScanCursor>.Action, _ transfer: RebalanceTransfer) {
        let state = cluster.rebalance
        switch action {
        case .scan(let after, let limit):
            scan(transfer, after: after, limit: limit)
        case .send(let targets):
            sendBatches(transfer, to: targets)
        case .sendBigValues:
            let step = transfer.run.step
            sendChunked(transfer.outgoing.filter(\.isBig), transfer: transfer) { [self] ok in
                drive(transfer) { $0.onBigValues(step: step, ok: ok) }
            }
        case .saveCursor(let cursor):
            if case .disk(let cursor) = cursor { saveCursor(cursor, ring: transfer.ringID) }
        case .next(let pause):
            state.keysScanned.store(transfer.run.scanned, ordering: .relaxed)
            transfer.chunkedDone = []
            eventLoop.scheduleTask(in: .microseconds(pause)) { self.nextStep(transfer) }
        case .retry(let pause):
            // Resume at this step once the member is back (or gossip says it is dead).
            state.retries.add(1, ordering: .relaxed)
            eventLoop.scheduleTask(in: .milliseconds(pause)) { self.nextStep(transfer) }
        case .finish:
            state.keysScanned.store(transfer.run.scanned, ordering: .relaxed)
            finishRebalance(transfer)
        }
    }

    /// Reads the step's keys (from memory, or with persistence from the SQLite table in ring
    /// order, which also holds what memory evicted) and plans what goes to whom.
    private func scan(_ transfer: RebalanceTransfer, after cursor: ScanCursor?, limit: Int) {
        let step = transfer.run.step
        if let durable = cluster.node.durable, !cluster.usesVectorClocks {
            let loop = eventLoop
            let after: DiskCursor? = if case .disk(let cursor)? = cursor { cursor } else { nil }
            durable.scan(after: after, limit: limit) { [self] rows in
                loop.execute {
                    guard transfer.run.step == step, !transfer.run.isCancelled else { return }
                    var outgoing: [RebalanceTransfer.Outgoing] = []
                    for row in rows {
                        guard let entry = row.entry else { continue }
                        let targets = row.key.withUnsafeBytes { transfer.run.targets(forPosition: HashRing.position(of: $0)) }
                        for target in targets {
                            outgoing.append(.init(target: target, key: row.key, version: entry.version, expiry: entry.expiry, value: entry.value))
                        }
                    }
                    self.plan(transfer, outgoing, scanned: rows.count, next: rows.last.map { .disk($0.cursor) }, last: rows.isEmpty)
                }
            }
            return
        }
        let now = wallClockMillis()
        var keys: [[UInt8]] = []
        let start: UInt64 = if case .memory(let cursor)? = cursor { cursor } else { 0 }
        let next = store.scan(cursor: start, count: limit, now: now) { keys.append(Array($0)) }
        var outgoing: [RebalanceTransfer.Outgoing] = []
        for key in keys {
            let targets = key.withUnsafeBytes { transfer.run.targets(forPosition: HashRing.position(of: $0)) }
            guard !targets.isEmpty else { continue }
            if cluster.usesVectorClocks {
                guard let set = cluster.siblings.siblings(of: key, store: store, now: now) else { continue }
                let bytes = set.serialized.count
                for target in targets {
                    outgoing.append(.init(target: target, key: key, version: Version(timestamp: HLCTimestamp(rawValue: 0), node: NodeID(rawValue: 0)),
                                          expiry: 0, value: nil, siblings: set, siblingBytes: bytes))
                }
                continue
            }
            key.withUnsafeBytes { k in
                store.readVersioned(k, now: now) { found in
                    guard let found else { return }
                    let value = found.value.map(Array.init)
                    for target in targets {
                        outgoing.append(.init(target: target, key: key, version: found.version, expiry: found.expiry, value: value))
                    }
                }
            }
        }
        plan(transfer, outgoing, scanned: keys.count, next: .memory(next), last: next == 0)
    }

    private func plan(_ transfer: RebalanceTransfer, _ outgoing: [RebalanceTransfer.Outgoing], scanned: Int, next: ScanCursor?, last: Bool) {
        transfer.outgoing = outgoing
        let targets = Set(outgoing.lazy.filter { !$0.isBig }.map(\.target))
        let bytes = outgoing.reduce(0) { $0 + $1.size }
        let big = outgoing.contains(where: \.isBig)
        drive(transfer) { $0.onPlanned(scanned: scanned, bytes: bytes, targets: targets, bigValues: big, next: next, last: last) }
    }

    /// Sends the step's small entries: one RC.XFER per member (under vector clocks, one
    /// RC.VPUT per key, pipelined); the run hears whether each member's batch arrived whole.
    private func sendBatches(_ transfer: RebalanceTransfer, to targets: [Int]) {
        let state = cluster.rebalance
        let step = transfer.run.step
        var batches: [Int: [RebalanceTransfer.Outgoing]] = [:]
        for entry in transfer.outgoing where !entry.isBig { batches[entry.target, default: []].append(entry) }
        for target in targets {
            let entries = batches[target] ?? []
            let arrived = { [self] (ok: Bool) in
                if ok {
                    state.keysSent.add(entries.count, ordering: .relaxed)
                    state.bytesSent.add(entries.reduce(0) { $0 + $1.size }, ordering: .relaxed)
                }
                drive(transfer) { $0.onBatch(step: step, target: target, ok: ok) }
            }
            guard let link = link(to: target) else {
                arrived(false)
                continue
            }
            if cluster.usesVectorClocks {
                let keys = FanIn<Bool>(count: entries.count) { answers in arrived(answers.allSatisfy { $0 == true }) }
                for (key, entry) in entries.enumerated() {
                    link.send(.siblingPut(key: ByteBuffer(bytes: entry.key), siblings: entry.siblings ?? SiblingSet())) { reply in
                        if case .flag? = reply { keys.answer(key, true) } else { keys.answer(key, false) }
                    }
                }
                continue
            }
            let wire = entries.map { entry in
                BusEntry(key: ByteBuffer(bytes: entry.key), version: entry.version, expiry: entry.expiry, value: entry.value.map { ByteBuffer(bytes: $0) })
            }
            link.send(.transfer(sender: cluster.selfName, entries: wire)) { reply in
                if case .integer? = reply { arrived(true) } else { arrived(false) }
            }
        }
    }

    /// Sends big values one after the other, each in chunks of ``rebalanceChunkBytes`` that
    /// the receiver puts together (RC.XFERPART), as ``ChunkedSend`` says; `done(false)` at the
    /// first failure. A value whose chunks a failure interrupted goes on from the last one
    /// acknowledged.
    private func sendChunked(_ entries: [RebalanceTransfer.Outgoing], transfer: RebalanceTransfer, _ done: @escaping (Bool) -> Void) {
        guard let entry = entries.first, let value = entry.value else { return done(true) }
        let id = RebalanceTransfer.ChunkedValue(target: entry.target, key: entry.key, version: entry.version)
        if transfer.chunkedDone.contains(id) { return sendChunked(Array(entries.dropFirst()), transfer: transfer, done) }
        let resumed = transfer.chunked.flatMap { $0.value == id ? $0.offset : nil } ?? 0
        sendChunks(of: entry, ChunkedSend(total: value.count, chunkBytes: Self.rebalanceChunkBytes, resumeAt: resumed), transfer: transfer) { [self] ok in
            guard ok else { return done(false) }
            transfer.chunkedDone.insert(id)
            cluster.rebalance.keysSent.add(1, ordering: .relaxed)
            sendChunked(Array(entries.dropFirst()), transfer: transfer, done)
        }
    }

    private func sendChunks(of entry: RebalanceTransfer.Outgoing, _ progress: ChunkedSend, transfer: RebalanceTransfer, _ done: @escaping (Bool) -> Void) {
        let id = RebalanceTransfer.ChunkedValue(target: entry.target, key: entry.key, version: entry.version)
        guard case .send(let offset, let end) = progress.current else {
            transfer.chunked = nil
            return done(true)
        }
        guard !transfer.run.isCancelled, let value = entry.value, let link = link(to: entry.target) else { return done(false) }
        let request = BusRequest.transferPart(BusChunk(
            sender: cluster.selfName, key: ByteBuffer(bytes: entry.key), version: entry.version, expiry: entry.expiry, offset: offset,
            total: value.count, bytes: ByteBuffer(bytes: value[offset..<end])))
        let state = cluster.rebalance
        link.send(request) { [self] reply in
            var progress = progress
            let received: Int? = if case .integer(let received)? = reply { received } else { nil }
            switch progress.onReply(received: received) {
            case .fail:
                // No progress: the next try starts the value over.
                if received != nil { transfer.chunked = nil }
                done(false)
            case .done:
                state.bytesSent.add(end - offset, ordering: .relaxed)
                state.chunksSent.add(1, ordering: .relaxed)
                transfer.chunked = nil
                done(true)
            case .send:
                if received == end {
                    state.bytesSent.add(end - offset, ordering: .relaxed)
                    state.chunksSent.add(1, ordering: .relaxed)
                }
                transfer.chunked = (id, progress.offset)
                sendChunks(of: entry, progress, transfer: transfer, done)
            }
        }
    }

    /// Every old replica sends what it holds, so a finished run covers every old owner (nil).
    private func finishRebalance(_ transfer: RebalanceTransfer) {
        let state = cluster.rebalance
        state.sending.store(false, ordering: .relaxed)
        state.transfersFinished.add(1, ordering: .relaxed)
        state.markFinished(cluster.selfName, ring: transfer.ringID, covering: nil)
        saveCursor(nil, ring: transfer.ringID)
        if self.transfer === transfer { self.transfer = nil }
        logger.info("rebalance: sent", metadata: ["epoch": "\(transfer.epoch)", "keys sent": "\(state.keysSent.load(ordering: .relaxed))"])
        announceFinished(ring: transfer.ringID, covering: nil, attempt: 0)
        cluster.checkTransition()
    }

    /// Once data stopped moving: removes the keys this node no longer replicates (a member
    /// joined and took them), a chunk per event-loop turn (under vector clocks the sibling
    /// index lets go of them in its sweep); then, ``dropGrace`` later, sweeps memory once more
    /// for writes that coordinators which had not yet heard the transition end still sent here.
    func dropUnowned() {
        let topology = cluster.topology
        guard topology.previous == nil, cleanedRing != topology.ringID else { return }
        cleanedRing = topology.ringID
        dropUnowned(from: 0, epoch: topology.epoch, ring: topology.ring, last: false)
    }

    /// How long after the first sweep the second one runs: members learn that a transition
    /// ended within a push-pull period or two.
    static let dropGrace = TimeAmount.seconds(3)

    private func dropUnowned(from cursor: UInt64, epoch: UInt64, ring: HashRing, last: Bool) {
        guard cluster.topology.epoch == epoch, cluster.topology.previous == nil else { return }
        let now = wallClockMillis()
        var keys: [[UInt8]] = []
        let me = cluster.selfIndex
        let next = store.scan(cursor: cursor, count: 1024, now: now) { key in
            if !ring.replicates(me, position: HashRing.position(of: key)) { keys.append(Array(key)) }
        }
        for key in keys { key.withUnsafeBytes { _ = store.remove($0, now: now) } }
        cluster.rebalance.keysDropped.add(keys.count, ordering: .relaxed)
        if next != 0 {
            eventLoop.execute { [self] in dropUnowned(from: next, epoch: epoch, ring: ring, last: last) }
        } else if !last {
            // The disk follows memory from here on (late writes and their removals are journaled).
            if cluster.node.durable != nil { dropUnownedOnDisk(after: nil, epoch: epoch, ring: ring) }
            eventLoop.scheduleTask(in: Self.dropGrace) { [self] in dropUnowned(from: 0, epoch: epoch, ring: ring, last: true) }
        }
    }

    /// With persistence, the rows memory does not hold (it evicted them) go the same way: a
    /// delete is queued for each row of a key this node no longer replicates.
    private func dropUnownedOnDisk(after cursor: DiskCursor?, epoch: UInt64, ring: HashRing) {
        guard let durable = cluster.node.durable, cluster.topology.epoch == epoch, cluster.topology.previous == nil else { return }
        let me = cluster.selfIndex
        let loop = eventLoop
        durable.scan(after: cursor, limit: 1024) { [self] rows in
            loop.execute {
                guard let last = rows.last, self.cluster.topology.epoch == epoch else { return }
                var dropped = 0
                for row in rows where row.entry != nil {
                    guard !row.key.withUnsafeBytes({ ring.replicates(me, position: HashRing.position(of: $0)) }) else { continue }
                    row.key.withUnsafeBytes { durable.removed(key: $0) }
                    dropped += 1
                }
                self.cluster.rebalance.keysDropped.add(dropped, ordering: .relaxed)
                self.dropUnownedOnDisk(after: last.cursor, epoch: epoch, ring: ring)
            }
        }
    }

    /// Tells every member that this node finished sending for `epoch`, until each acknowledged
    /// (a leaving node stops only once they all know).
    private func announceFinished(ring: UInt64, covering: Set<String>?, attempt: Int) {
        let down = unreachable
        let peers = cluster.topology.participants.filter { $0 != cluster.selfIndex && !down.contains($0) }
        let request = BusRequest.transferDone(ring: ring, sender: cluster.selfName, coverage: covering)
        let fanIn = FanIn<Bool>(count: peers.count) { [self] acknowledged in
            if acknowledged.contains(where: { $0 != true }) && attempt < 30 {
                eventLoop.scheduleTask(in: .seconds(1)) { self.announceFinished(ring: ring, covering: covering, attempt: attempt + 1) }
            } else {
                announced = ring
            }
        }
        for (index, peer) in peers.enumerated() {
            guard let link = link(to: peer) else {
                fanIn.answer(index, false)
                continue
            }
            link.send(request) { reply in
                if case .ok? = reply { fanIn.answer(index, true) } else { fanIn.answer(index, false) }
            }
        }
    }
}
