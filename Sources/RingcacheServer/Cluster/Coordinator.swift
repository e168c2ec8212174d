import CacheStore
import ClusterCore
import ClusterProtocol
import Logging
import NIOCore
import RESP

/// The coordinator on one event loop: runs quorum reads and writes for the clients of that
/// loop over its own links to the peers, so no reply crosses threads.
///
/// Decisions come from the pure ``ReadQuorum`` and ``WriteQuorum`` cores; this shell sends
/// the messages, applies local replicas directly, arms the request timeout and carries out
/// read repairs. Confined to its event loop.
final class Coordinator: @unchecked Sendable {
    let cluster: ClusterState
    let eventLoop: any EventLoop
    private(set) var links: [PeerLink?] = []
    var readRepairs = 0
    /// Requests replicas refused so far because this node's view of the ring was behind
    /// theirs (`STALEVIEW`): an operation that fails after one is tried again.
    var staleRefusals = 0
    /// Timeouts of operations in flight, oldest first. Every operation has the same request
    /// timeout, so this is also deadline order: one repeating sweep expires them, with no
    /// timer scheduled or cancelled per request.
    private var deadlines = CircularBuffer<(deadline: NIODeadline, timeout: PendingTimeout)>()
    private var sweep: RepeatedTask?

    /// A second link to each peer for forwarded read-modify-write commands (RC.EXEC), whose
    /// replies come only after their own quorum round: on the main links they would hold up
    /// every reply behind them.
    private var execLinks: [PeerLink?] = []
    /// The topology generation the links were made for, and that topology (read once per
    /// change, not once per request).
    private var linkedGeneration = -1
    private(set) var topology: Topology
    private var started = false
    let logger: Logger
    /// This node's running rebalance transfer (on the loop that runs membership rounds).
    var transfer: RebalanceTransfer?
    /// The latest epoch whose end of sending every member acknowledged.
    var announced: UInt64 = 0
    /// The epoch whose unowned keys were last removed.
    var cleanedRing: UInt64 = 0
    /// The anti-entropy round running on this loop, and its number (answers to an earlier
    /// round are dropped).
    var antiEntropy: AntiEntropyRound?
    var antiEntropyGeneration: UInt64 = 0
    /// Periods the running round has been waited for.
    var antiEntropyWaited = 0
    /// The quorum hot path's operations (`Coordinator+HotPath.swift`), in reused slots.
    var hot = HotTable()

    init(cluster: ClusterState, eventLoop: any EventLoop, logger: Logger) {
        self.cluster = cluster
        self.eventLoop = eventLoop
        self.logger = logger
        self.topology = cluster.topology
        refreshLinks()
        // Links to a member that joined are made at once, so that they are up before the
        // first request needs them. The observer holds the coordinator through a handle that
        // `stop()` empties, not weakly: a weak reference gives an object a side table, and
        // makes every retain and release of it (many per request here) take the slow path.
        let handle = self.handle
        handle.coordinator = self
        let loop = eventLoop
        cluster.onTopologyChange { _ in
            loop.execute { handle.coordinator?.refreshLinks() }
        }
    }

    /// What the topology observer reaches the coordinator through; emptied at the stop.
    /// Touched on the coordinator's event loop only.
    final class Handle: @unchecked Sendable {
        var coordinator: Coordinator?
    }

    private let handle = Handle()

    /// Makes links to members this loop has not linked to yet (members only ever join the
    /// list: one that left keeps its link, which fails once it is gone).
    func refreshLinks() {
        let generation = cluster.generation.load(ordering: .acquiring)
        guard generation != linkedGeneration else { return }
        linkedGeneration = generation
        topology = cluster.topology
        // Each peer hears how far this loop's view has got before any request made with it.
        let view = topology.plan.stage
        for link in links { link?.announce(view) }
        let members = topology.members
        guard links.count < members.count else { return }
        let cluster = self.cluster
        for index in links.count..<members.count {
            let member = members[index]
            guard index != cluster.selfIndex else {
                links.append(nil)
                execLinks.append(nil)
                continue
            }
            let link = PeerLink(member: index, name: member.name, host: member.host, port: member.busPort, eventLoop: eventLoop,
                                cluster: cluster, logger: logger) { change in
                cluster.linksUp.add(change, ordering: .relaxed)
            }
            let exec = PeerLink(member: index, name: member.name, host: member.host, port: member.busPort, eventLoop: eventLoop,
                                cluster: cluster, logger: logger) { _ in }
            link.slots = self
            link.announce(view)
            links.append(link)
            execLinks.append(exec)
            if started {
                link.connect()
                exec.connect()
            }
        }
    }

    var store: CacheStore { cluster.node.store }

    /// Opens the links to every peer and starts the timeout sweep.
    func start() {
        eventLoop.execute { [self] in
            started = true
            refreshLinks()
            for link in links { link?.connect() }
            for link in execLinks { link?.connect() }
            let tick = TimeAmount.milliseconds(max(1, min(50, cluster.requestTimeout.nanoseconds / 1_000_000 / 10)))
            sweep = eventLoop.scheduleRepeatedTask(initialDelay: tick, delay: tick) { [self] _ in
                expireOverdue()
            }
        }
    }

    func stop() {
        eventLoop.execute { [self] in
            handle.coordinator = nil
            sweep?.cancel()
            for link in links + execLinks { link?.stop() }
        }
    }

    /// A timeout waiting in the sweep; `disarm()` drops the closure (and so the operation it
    /// holds) as soon as the operation is decided.
    final class PendingTimeout {
        private var expire: (() -> Void)?
        init(_ expire: @escaping () -> Void) { self.expire = expire }
        func disarm() { expire = nil }
        func fire() {
            let expire = self.expire
            self.expire = nil
            expire?()
        }
    }

    /// Calls `expire` once the request timeout has passed, unless disarmed before.
    @discardableResult
    private func armTimeout(_ expire: @escaping () -> Void) -> PendingTimeout {
        let timeout = PendingTimeout(expire)
        deadlines.append((.now() + cluster.requestTimeout, timeout))
        return timeout
    }

    private func expireOverdue() {
        let now = NIODeadline.now()
        while let first = deadlines.first, first.deadline <= now {
            deadlines.removeFirst().timeout.fire()
        }
        expireHotSlots(now: now)
        // RC.EXEC waits for a quorum round at the peer, so its link gets more time.
        for case let link? in links { link.failIfStalled(olderThan: now - cluster.requestTimeout * 2) }
        for case let link? in execLinks { link.failIfStalled(olderThan: now - cluster.requestTimeout * 4) }
        for case let link? in links + execLinks { link.keepAlive(now: now) }
    }

    /// Members this loop cannot reach right now (its link is down, or gossip declared them
    /// dead), and members that hold no data (they left, and no read goes to them any more).
    var unreachable: Set<Int> {
        refreshLinks()
        let participants = topology.participants
        var down = Set(links.compactMap { link in link.flatMap { $0.isConnected ? nil : $0.member } }).union(cluster.deadMembers)
        for member in topology.members.indices where !participants.contains(member) { down.insert(member) }
        return down
    }

    func link(to member: Int) -> PeerLink? {
        refreshLinks()
        return member < links.count ? links[member] : nil
    }

    /// The link that carries forwarded read-modify-write commands to `member`.
    func execLink(to member: Int) -> PeerLink? {
        refreshLinks()
        return member < execLinks.count ? execLinks[member] : nil
    }

    /// The replicas a read asks and the answers it needs beyond R (``ReplicaPlan/readSet(forPosition:)``):
    /// the key's preference list or, while data moves, the old replicas and the members the new
    /// ring adds, with one more answer per added member, so a read meets every acknowledged
    /// write whichever ring its writer used.
    func readReplicas(of key: [UInt8]) -> ReplicaSet {
        refreshLinks()
        return key.withUnsafeBytes { topology.plan.readSet(forPosition: HashRing.position(of: $0)) }
    }

    /// The replicas of the ring that holds the data (the old one while data moves), in order.
    func replicas(of key: [UInt8]) -> [Int] {
        refreshLinks()
        return key.withUnsafeBytes { topology.readRing.preferenceList(forKey: $0).members }
    }

    /// The replicas a write goes to, and the acknowledgements it needs beyond W
    /// (``ReplicaPlan/writeSet(forPosition:)``): while data moves, the old replicas and the new
    /// ones, each new one adding one acknowledgement, so W of the old and W of the new
    /// replicas hold every acknowledged write.
    func writeReplicas(of key: [UInt8]) -> ReplicaSet {
        refreshLinks()
        return key.withUnsafeBytes { topology.plan.writeSet(forPosition: HashRing.position(of: $0)) }
    }

    /// Counts a key coordinated here as owned by this node or not (INFO's ring-routing figures).
    func countCoordinated<Replicas: Collection<Int>>(_ replicas: Replicas) {
        if replicas.contains(cluster.selfIndex) {
            cluster.node.keysCoordinatedAsReplica.add(1, ordering: .relaxed)
        } else {
            cluster.node.keysCoordinatedNotReplica.add(1, ordering: .relaxed)
        }
    }

    // MARK: Quorum reads

    private final class ReadOperation<Value: Reconcilable> {
        var quorum: ReadQuorum<Value>
        var timeout: PendingTimeout?
        /// ``staleRefusals`` when the operation started.
        let refusals: Int
        let completion: (Result<Value?, NoQuorum>) -> Void
        init(quorum: ReadQuorum<Value>, refusals: Int, completion: @escaping (Result<Value?, NoQuorum>) -> Void) {
            self.quorum = quorum
            self.refusals = refusals
            self.completion = completion
        }
    }

    /// Runs `body` (attempt `attempt + 1` of an operation that failed) after the pause
    /// ``StaleViewRetry`` gives, when a replica `refused` it; false (nothing scheduled) when
    /// the failure stands.
    func retryingStaleView(afterAttempt attempt: Int, refused: Bool, _ body: @escaping () -> Void) -> Bool {
        guard let pause = StaleViewRetry.pause(afterAttempt: attempt, refused: refused) else { return false }
        let body = NIOLoopBound(body, eventLoop: eventLoop)
        eventLoop.scheduleTask(in: .milliseconds(pause)) { body.value() }
        return true
    }

    /// A quorum read of any reconcilable value: asks every replica (this node directly),
    /// answers once `required` have answered, and repairs the others as their answers come.
    ///
    /// - Parameters:
    ///   - local: this node's answer.
    ///   - request: writes what to ask a peer; `decode` reads its answer (nil for a bad
    ///     answer, `.some(nil)` for "no such key").
    ///   - repair: sends the reconciled value to a replica that lacks it.
    private func quorumRead<Value: Reconcilable>(
        _ key: [UInt8], required: Int, attempt: Int = 0, local: @escaping () -> Value?, request: @escaping (inout ByteBuffer) -> Void,
        decode: @escaping (RESPValue) -> Value??, repair: @escaping (Int, Value) -> Void, completion: @escaping (Result<Value?, NoQuorum>) -> Void
    ) {
        let set = readReplicas(of: key)
        let replicas = Array(set.replicas)
        countCoordinated(replicas)
        let operation = ReadOperation(quorum: ReadQuorum<Value>(replicas: replicas, required: set.required(required)), refusals: staleRefusals,
                                      completion: completion)
        let perform: ([ReadQuorum<Value>.Action]) -> Void = { [self] actions in
            for action in actions {
                switch action {
                case .reply(let value):
                    operation.timeout?.disarm()
                    operation.completion(.success(value))
                case .fail(let error):
                    operation.timeout?.disarm()
                    let again = retryingStaleView(afterAttempt: attempt, refused: staleRefusals != operation.refusals) { [self] in
                        quorumRead(key, required: required, attempt: attempt + 1, local: local, request: request, decode: decode, repair: repair,
                                   completion: completion)
                    }
                    if again { continue }
                    cluster.node.quorumFailures.add(1, ordering: .relaxed)
                    operation.completion(.failure(error))
                case .repair(let replica, let value):
                    readRepairs += 1
                    cluster.node.readRepairs.add(1, ordering: .relaxed)
                    repair(replica, value)
                }
            }
        }
        operation.timeout = armTimeout { perform(operation.quorum.onTimeout()) }
        for replica in replicas {
            if replica == cluster.selfIndex {
                if key.withUnsafeBytes({ cluster.node.needsReadThrough($0, now: wallClockMillis()) }) {
                    // This replica's copy may be on disk only: it answers once it is loaded.
                    cluster.node.loadFromDisk(key, on: eventLoop) { loaded in
                        perform(loaded ? operation.quorum.onResponse(from: replica, local()) : operation.quorum.onFailure(from: replica))
                    }
                } else {
                    perform(operation.quorum.onResponse(from: replica, local()))
                }
            } else {
                guard let link = link(to: replica) else {
                    perform(operation.quorum.onFailure(from: replica))
                    continue
                }
                link.send(request) { reply in
                    if let reply, let value = decode(reply) {
                        perform(operation.quorum.onResponse(from: replica, value))
                    } else {
                        perform(operation.quorum.onFailure(from: replica))
                    }
                }
            }
        }
    }

    /// Reads `key` under last-write-wins: the newest version (tombstones included; callers
    /// read them as absent).
    func read(_ key: [UInt8], required: Int, now: Int64, attempt: Int = 0, completion: @escaping (Result<VersionedValue?, NoQuorum>) -> Void) {
        quorumRead(
            key, required: required, attempt: attempt,
            local: { [store] in
                var local: VersionedValue?
                key.withUnsafeBytes { k in
                    store.readVersioned(k, now: now) { entry in
                        local = entry.map { VersionedValue(version: $0.version, value: $0.value.map(Array.init), expiry: $0.expiry) }
                    }
                }
                return local
            },
            request: { out in key.withUnsafeBytes { BusRequest.encodeGet(key: $0, into: &out) } },
            decode: { [store, cluster] reply in
                let decoded: BusValue?
                do {
                    // The read's own `now`: a reply is at most a request timeout younger.
                    decoded = try BusReply.decodeEntry(reply, limits: cluster.busLimits, now: now)
                } catch {
                    cluster.busGuard.count(.peerReplyError)
                    return nil
                }
                // Versions seen from peers move this node's clock on, so its next write orders after them.
                if let version = decoded?.version { store.observe(version.timestamp) }
                return .some(decoded.map { VersionedValue(version: $0.version, value: $0.value.map { Array($0.readableBytesView) }, expiry: $0.expiry) })
            },
            repair: { [self] replica, value in replicate(key, value, to: replica, now: wallClockMillis()) { _ in } },
            completion: completion)
    }

    /// Reads `key`'s siblings under vector clocks, merging what the replicas hold.
    func readSiblings(_ key: [UInt8], required: Int, now: Int64, completion: @escaping (Result<SiblingSet?, NoQuorum>) -> Void) {
        quorumRead(
            key, required: required,
            local: { [cluster] in cluster.siblings.siblings(of: key, store: cluster.node.store, now: now) },
            request: { out in key.withUnsafeBytes { BusRequest.encodeSiblingGet(key: $0, into: &out) } },
            decode: { [cluster] reply in
                guard case .siblings(let set)? = try? BusReply.decode(reply, answering: .siblingGet, context: cluster.decodingContext(now: wallClockMillis())) else {
                    cluster.busGuard.count(.peerReplyError)
                    return nil
                }
                return .some(set)
            },
            repair: { [self] replica, set in replicateSiblings(key, set, to: replica, now: wallClockMillis()) { _ in } },
            completion: completion)
    }

    /// The value a plain command sees: the newest version under LWW, the siblings' LWW winner
    /// under vector clocks.
    func readWinner(_ key: [UInt8], required: Int, now: Int64, completion: @escaping (Result<VersionedValue?, NoQuorum>) -> Void) {
        guard cluster.usesVectorClocks else { return read(key, required: required, now: now, completion: completion) }
        readSiblings(key, required: required, now: now) { result in completion(result.map { $0?.winner }) }
    }

    // MARK: Quorum writes

    private final class WriteOperation {
        var quorum: WriteQuorum
        var timeout: PendingTimeout?
        var existed = false
        /// ``staleRefusals`` when the operation started.
        let refusals: Int
        /// What it takes to try the operation again (``StaleViewRetry``).
        let key: [UInt8]
        let required: Int
        let attempt: Int
        let replicate: (Int, @escaping (Bool?) -> Void) -> Void
        let completion: (Result<Bool, NoQuorum>) -> Void
        init(quorum: WriteQuorum, refusals: Int, key: [UInt8], required: Int, attempt: Int,
             replicate: @escaping (Int, @escaping (Bool?) -> Void) -> Void, completion: @escaping (Result<Bool, NoQuorum>) -> Void) {
            self.quorum = quorum
            self.refusals = refusals
            self.key = key
            self.required = required
            self.attempt = attempt
            self.replicate = replicate
            self.completion = completion
        }
    }

    /// A quorum write: `replicate` applies the write at one replica and reports whether a live
    /// value was there before, or nil if the replica could not be reached.
    private func quorumWrite(_ key: [UInt8], required: Int, attempt: Int = 0, replicate: @escaping (Int, @escaping (Bool?) -> Void) -> Void,
                             completion: @escaping (Result<Bool, NoQuorum>) -> Void) {
        let set = writeReplicas(of: key)
        let replicas = Array(set.replicas)
        countCoordinated(replicas)
        let operation = WriteOperation(quorum: WriteQuorum(replicas: set.replicas, required: set.required(required)), refusals: staleRefusals,
                                       key: key, required: required, attempt: attempt, replicate: replicate, completion: completion)
        operation.timeout = armTimeout { [self] in finish(operation, operation.quorum.onTimeout()) }
        for replica in replicas {
            replicate(replica) { [self] answer in
                switch answer {
                case .some(let existed):
                    operation.existed = operation.existed || existed
                    finish(operation, operation.quorum.onAck(from: replica))
                case .none:
                    finish(operation, operation.quorum.onFailure(from: replica))
                }
            }
        }
    }

    private func finish(_ operation: WriteOperation, _ action: WriteQuorum.Action?) {
        guard let action else { return }
        operation.timeout?.disarm()
        switch action {
        case .succeed: operation.completion(.success(operation.existed))
        case .fail(let error):
            let again = retryingStaleView(afterAttempt: operation.attempt, refused: staleRefusals != operation.refusals) { [self] in
                quorumWrite(operation.key, required: operation.required, attempt: operation.attempt + 1, replicate: operation.replicate,
                            completion: operation.completion)
            }
            if again { return }
            cluster.node.quorumFailures.add(1, ordering: .relaxed)
            operation.completion(.failure(error))
        }
    }

    /// Writes a version of `key` (a tombstone when `value.value` is nil) to all its replicas
    /// under last-write-wins; succeeds at `required` acknowledgements. The result says whether
    /// any replica that answered held a live value before (for DEL's count).
    func write(_ key: [UInt8], _ value: VersionedValue, required: Int, now: Int64, attempt: Int = 0,
               completion: @escaping (Result<Bool, NoQuorum>) -> Void) {
        quorumWrite(key, required: required, attempt: attempt, replicate: { [self] replica, done in
            // Asked per replica: a write tried again sees the links as they are then.
            if cluster.sloppyQuorum, let standIn = standIns(for: key)[replica] {
                hint(key, value, owner: replica, to: standIn, now: now, done: done)
            } else {
                replicate(key, value, to: replica, now: now, done: done)
            }
        }, completion: completion)
    }

    // MARK: Hinted handoff

    /// For each replica of `key` this loop cannot reach, the member that keeps the write as a
    /// hint for it (the ring decides: ``HashRing/standIns(forPosition:unreachable:)``).
    private func standIns(for key: [UInt8]) -> [Int: Int] {
        let down = unreachable.subtracting([cluster.selfIndex])
        guard !down.isEmpty else { return [:] }
        return key.withUnsafeBytes { topology.plan.standIns(forPosition: HashRing.position(of: $0), unreachable: down) }
    }

    /// Gives `value` to `standIn` to keep for `owner`; `done(false)` once it has (the stand-in's
    /// acknowledgement counts for the owner), nil if it could not.
    private func hint(_ key: [UInt8], _ value: VersionedValue, owner: Int, to standIn: Int, now: Int64, done: @escaping (Bool?) -> Void) {
        if standIn == cluster.selfIndex {
            done(cluster.hints.add(owner: owner, key: key, value: value, now: now) ? false : nil)
            return
        }
        let entry = BusEntry(key: ByteBuffer(bytes: key), version: value.version, expiry: value.expiry, value: value.value.map { ByteBuffer(bytes: $0) })
        guard let link = link(to: standIn) else { return done(nil) }
        link.send(.hint(owner: cluster.members[owner].name, entry: entry)) { reply in
            if case .flag? = reply { done(false) } else { done(nil) }
        }
    }

    /// One period of hinted handoff: ``HintReplay`` drops the stale hints and hands out a
    /// batch for each owner that is reachable again; what the owner does not acknowledge waits
    /// for the next period.
    func replayHints() {
        let now = wallClockMillis()
        let down = unreachable
        let me = cluster.selfIndex
        let hints = cluster.hints
        for batch in hints.tick(now: now, reachable: { !down.contains($0) && $0 != me }) {
            let owner = batch.owner
            let fanIn = FanIn<Bool>(count: batch.hints.count) { arrived in
                hints.delivered(owner: owner, arrived.map { $0 == true })
            }
            for (index, hint) in batch.hints.enumerated() {
                replicate(hint.key, hint.value, to: owner, now: now) { fanIn.answer(index, $0 != nil) }
            }
        }
    }

    /// Writes siblings of `key` (usually one new sibling) to all its replicas under vector clocks.
    func writeSiblings(_ key: [UInt8], _ set: SiblingSet, required: Int, now: Int64, completion: @escaping (Result<Bool, NoQuorum>) -> Void) {
        quorumWrite(key, required: required, replicate: { [self] replica, done in replicateSiblings(key, set, to: replica, now: now, done: done) },
                    completion: completion)
    }

    /// Writes `value` (nil: delete) as a plain command does. Under vector clocks the write
    /// first reads the key's context, so it supersedes every sibling it has seen.
    func writeValue(_ key: [UInt8], _ value: [UInt8]?, expiry: Int64, required: (read: Int, write: Int), now: Int64,
                    completion: @escaping (Result<Bool, NoQuorum>) -> Void) {
        guard cluster.usesVectorClocks else {
            let versioned = VersionedValue(version: store.nextVersion(now: now), value: value, expiry: expiry)
            return write(key, versioned, required: required.write, now: now, completion: completion)
        }
        readSiblings(key, required: required.read, now: now) { [self] result in
            switch result {
            case .failure(let error): completion(.failure(error))
            case .success(let current):
                writeSibling(key, value, expiry: expiry, context: current?.context ?? VectorClock(), required: required.write, completion: completion)
            }
        }
    }

    /// Writes a new sibling that descends from `context` (VSET, and writes after a read).
    func writeSibling(_ key: [UInt8], _ value: [UInt8]?, expiry: Int64, context: VectorClock, required: Int,
                      completion: @escaping (Result<Bool, NoQuorum>) -> Void) {
        let now = wallClockMillis()
        // The new version is the write's own event (its dot); the context is what it supersedes.
        let sibling = Sibling(clock: context, value: VersionedValue(version: store.nextVersion(now: now), value: value, expiry: expiry))
        writeSiblings(key, SiblingSet([sibling]), required: required, now: now, completion: completion)
    }

    /// This replica's acknowledgement of a write: at once, or under `persistence-fsync always`
    /// once the SQLite batch holding it is committed (a failed commit counts as no answer).
    private func acknowledgeLocalWrite(since before: UInt64?, _ existed: Bool, done: @escaping (Bool?) -> Void) {
        guard let durable = cluster.node.durable, durable.fsync == .always, let before, durable.queuedSequence > before else {
            return done(existed)
        }
        let next = NIOLoopBound(done, eventLoop: eventLoop)
        let loop = eventLoop
        durable.whenCommitted(durable.queuedSequence) { committed in
            loop.execute { next.value(committed ? existed : nil) }
        }
    }

    /// Applies siblings at one replica; `done` as for ``replicate(_:_:to:now:done:)``.
    private func replicateSiblings(_ key: [UInt8], _ set: SiblingSet, to replica: Int, now: Int64, done: @escaping (Bool?) -> Void) {
        if replica == cluster.selfIndex {
            guard cluster.node.durable?.failureReason == nil else { return done(nil) }
            let before = cluster.node.durable?.queuedSequence
            let result = cluster.siblings.apply(key, set, limit: cluster.maxSiblings, store: store, now: now, tombstoneTTL: cluster.tombstoneTTL)
            acknowledgeLocalWrite(since: before, result.existed, done: done)
            return
        }
        guard let link = link(to: replica) else { return done(nil) }
        link.send(.siblingPut(key: ByteBuffer(bytes: key), siblings: set)) { reply in
            if case .flag(let existed)? = reply { done(existed) } else { done(nil) }
        }
    }

    /// Applies `value` at one replica. `done` gets whether a live value was there before
    /// (writes of a value report false), or nil if the replica could not be reached.
    func replicate(_ key: [UInt8], _ value: VersionedValue, to replica: Int, now: Int64, done: @escaping (Bool?) -> Void) {
        if replica == cluster.selfIndex {
            // A disk that fails makes this replica's answer a failure: it could not keep the write.
            guard cluster.node.durable?.failureReason == nil else { return done(nil) }
            let existed = value.value == nil && key.withUnsafeBytes { store.contains($0, now: now) }
            let before = cluster.node.durable?.queuedSequence
            cluster.applyLocally(key, value, now: now)
            acknowledgeLocalWrite(since: before, existed, done: done)
            return
        }
        let encode: (inout ByteBuffer) -> Void = { buffer in
            key.withUnsafeBytes { key in
                if let bytes = value.value {
                    bytes.withUnsafeBytes { BusRequest.encodePut(key: key, version: value.version, expiry: value.expiry, value: $0, into: &buffer) }
                } else {
                    BusRequest.encodeDelete(key: key, version: value.version, into: &buffer)
                }
            }
        }
        guard let link = link(to: replica) else { return done(nil) }
        link.send(encode) { [cluster] reply in
            guard let reply, let flag = try? BusReply.decodeFlag(reply, value.value == nil ? .delete : .put) else {
                if reply != nil { cluster.busGuard.count(.peerReplyError) }
                return done(nil)
            }
            done(value.value == nil && flag)
        }
    }

    // MARK: Fan-out

    /// Sends `request` to every other member and runs `local` here; `completion` gets each
    /// member's reply (nil where it failed or timed out), indexed by member.
    func fanOut(_ request: BusRequest, local: () -> BusReply, completion: @escaping ([BusReply?]) -> Void) {
        refreshLinks()
        let topology = topology
        let targets = links.compactMap { link in link.flatMap { topology.participants.contains($0.member) ? $0 : nil } }
        let selfIndex = cluster.selfIndex
        let answer = local()
        var timeout: PendingTimeout?
        let fanIn = FanIn<BusReply?>(count: targets.count) { answers in
            timeout?.disarm()
            var replies = [BusReply?](repeating: nil, count: topology.members.count)
            for (index, link) in targets.enumerated() { replies[link.member] = answers[index] ?? nil }
            replies[selfIndex] = answer
            completion(replies)
        }
        guard !fanIn.isFinished else { return }
        timeout = armTimeout { fanIn.finish() }
        for (index, link) in targets.enumerated() {
            link.send(request) { fanIn.answer(index, $0) }
        }
    }

}

extension Array where Element == UInt8 {
    init(buffer: ByteBuffer) { self = buffer.getBytes(at: buffer.readerIndex, length: buffer.readableBytes) ?? [] }
}
