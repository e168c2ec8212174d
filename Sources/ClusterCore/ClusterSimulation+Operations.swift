import CacheStore

/// Client reads and writes: each coordinated by a random live node over the replica sets its
/// own view of the ring gives (``ReplicaPlan``), as the server's `Coordinator` runs them.
extension ClusterSimulation {
    mutating func startClientOperation() {
        let up = nodes.indices.filter { nodes[$0].life == .up }
        guard let coordinator = up.randomElement(using: &random) else { return }
        let key = Int.random(in: 0..<settings.keys, using: &random)
        let id = nextOperation
        nextOperation += 1
        if random.chance(0.5) {
            startWrite(id, key: key, at: coordinator)
        } else {
            startRead(id, key: key, at: coordinator)
        }
        schedule(.timeout(operation: id), after: Int64(settings.requestTimeout))
    }

    /// A write to the plan's write set; with sloppy quorum, replicas the coordinator cannot
    /// reach get their copy through a stand-in, as a hint (`Coordinator.write` and `hint`).
    mutating func startWrite(_ id: Int, key: Int, at coordinator: Int) {
        let plan = nodes[coordinator].plan
        let position = positions[key]
        let set = plan.writeSet(forPosition: position)
        let timestamp = nodes[coordinator].clock.tick(wallMillis: now + nodes[coordinator].skew)
        let version = Version(timestamp: timestamp, node: NodeID(rawValue: UInt32(coordinator)))
        let bytes: [UInt8]? = random.chance(0.1) ? nil : Array("v\(id)".utf8)
        let value = VersionedValue(version: version, value: bytes)
        operations[id] = Operation(
            coordinator: coordinator, incarnation: nodes[coordinator].incarnation, startedAt: now, stage: plan.stage,
            pending: .write(WriteQuorum(replicas: set.replicas, required: set.required(settings.writeQuorum)), key: key, value: value))
        trace("write #\(id) key\(key) by \(nodes[coordinator].name) at \(plan.stage) to \(set)")
        let standIns = sloppy ? plan.standIns(forPosition: position, unreachable: unreachable(from: coordinator)) : [:]
        for replica in set.replicas {
            if let standIn = standIns[replica] {
                sendHint(id, owner: replica, to: standIn, key: key, value: value, from: coordinator)
            } else if replica == coordinator {
                apply(key, value, at: coordinator)
                acknowledgeWrite(id, from: coordinator)
            } else {
                send(.write(operation: id, key: key, value: value, stage: plan.stage), from: coordinator, to: replica)
            }
        }
    }

    /// A read of the plan's read set (or, under ``Rules/asBuilt``, the read ring's replicas).
    mutating func startRead(_ id: Int, key: Int, at coordinator: Int) {
        let plan = nodes[coordinator].plan
        let position = positions[key]
        let set = settings.rules.readsAskAddedReplicas
            ? plan.readSet(forPosition: position) : ReplicaSet(replicas: plan.readRing.replicaList(forPosition: position), extra: 0)
        operations[id] = Operation(
            coordinator: coordinator, incarnation: nodes[coordinator].incarnation, startedAt: now, stage: plan.stage,
            pending: .read(ReadQuorum<VersionedValue>(replicas: Array(set.replicas), required: set.required(settings.readQuorum)), key: key))
        trace("read #\(id) key\(key) by \(nodes[coordinator].name) at \(plan.stage) from \(set)")
        for replica in set.replicas {
            if replica == coordinator {
                answerRead(id, from: coordinator, nodes[coordinator].store[key])
            } else {
                send(.read(operation: id, key: key, stage: plan.stage), from: coordinator, to: replica)
            }
        }
    }

    func isCurrent(_ operation: Operation) -> Bool {
        nodes[operation.coordinator].life == .up && nodes[operation.coordinator].incarnation == operation.incarnation
    }

    /// The operation `id` if `node` coordinates it in the life it started it in.
    func pending(_ id: Int, at node: Int) -> Operation? {
        guard let operation = operations[id], operation.coordinator == node, isCurrent(operation) else { return nil }
        return operation
    }

    mutating func receiveQuorumMessage(_ payload: Payload, from: Int, at node: Int) {
        switch payload {
        case .write(let operation, let key, let value, let stage):
            guard admits(stage, operation: operation, from: from, at: node) else { return }
            apply(key, value, at: node)
            send(.writeAck(operation: operation), from: node, to: from)
        case .writeAck(let operation):
            guard pending(operation, at: node) != nil else { return }
            acknowledgeWrite(operation, from: from)
        case .read(let operation, let key, let stage):
            guard admits(stage, operation: operation, from: from, at: node) else { return }
            send(.readReply(operation: operation, value: nodes[node].store[key]), from: node, to: from)
        case .readReply(let operation, let value):
            guard pending(operation, at: node) != nil else { return }
            answerRead(operation, from: from, value)
        case .refused(let operation, let view, let claims):
            if pending(operation, at: node) != nil { failReplica(operation, from: from) }
            adopt(node, view: view, claims: claims)
        case .repair(let key, let value):
            apply(key, value, at: node)
        default:
            preconditionFailure("\(payload) is not a quorum message")
        }
    }

    /// Fencing: whether `node` serves a request from a coordinator at `stage`; if not, it
    /// answers with its view, so the coordinator catches up.
    mutating func admits(_ stage: RingStage, operation: Int, from coordinator: Int, at node: Int) -> Bool {
        guard settings.rules.fencing, !nodes[node].plan.admits(stage) else { return true }
        report.refusals += 1
        let view = nodes[node].view
        send(.refused(operation: operation, view: view, claims: nodes[node].claims[view] ?? TransferCoverage()), from: node, to: coordinator)
        return false
    }

    mutating func expire(_ id: Int) {
        guard let operation = operations[id], isCurrent(operation) else { return }
        switch operation.pending {
        case .write(var quorum, let key, let value):
            let action = quorum.onTimeout()
            operations[id]!.pending = .write(quorum, key: key, value: value)
            if let action { finishWrite(id, action) }
        case .read(var quorum, let key):
            let actions = quorum.onTimeout()
            operations[id]!.pending = .read(quorum, key: key)
            perform(actions, operation: id)
        }
    }

    mutating func acknowledgeWrite(_ id: Int, from replica: Int) {
        guard case .write(var quorum, let key, let value) = operations[id]?.pending else { return }
        let action = quorum.onAck(from: replica)
        operations[id]!.pending = .write(quorum, key: key, value: value)
        if let action { finishWrite(id, action) }
    }

    /// A replica that refused, or that a write reached only as a hint that does not count.
    mutating func failReplica(_ id: Int, from replica: Int) {
        switch operations[id]?.pending {
        case .write(var quorum, let key, let value):
            let action = quorum.onFailure(from: replica)
            operations[id]!.pending = .write(quorum, key: key, value: value)
            if let action { finishWrite(id, action) }
        case .read(var quorum, let key):
            let actions = quorum.onFailure(from: replica)
            operations[id]!.pending = .read(quorum, key: key)
            perform(actions, operation: id)
        case nil:
            return
        }
    }

    mutating func finishWrite(_ id: Int, _ action: WriteQuorum.Action) {
        guard let operation = operations[id], case .write(let quorum, let key, let value) = operation.pending else { return }
        switch action {
        case .succeed:
            report.writesAcknowledged += 1
            writes.append(AcknowledgedWrite(key: key, version: value.version, startedAt: operation.startedAt, at: now,
                                            coordinator: operation.coordinator, stage: operation.stage, by: quorum.acknowledged,
                                            throughHints: !quorum.acknowledged.isDisjoint(with: operation.hinted)))
            trace("write #\(id) acknowledged by \(quorum.acknowledged.sorted())")
        case .fail:
            report.writesFailed += 1
            trace("write #\(id) failed")
        }
    }

    mutating func answerRead(_ id: Int, from replica: Int, _ value: VersionedValue?) {
        guard case .read(var quorum, let key) = operations[id]?.pending else { return }
        let actions = quorum.onResponse(from: replica, value)
        operations[id]!.pending = .read(quorum, key: key)
        perform(actions, operation: id)
    }

    mutating func perform(_ actions: [ReadQuorum<VersionedValue>.Action], operation id: Int) {
        guard let operation = operations[id], case .read(let quorum, let key) = operation.pending else { return }
        for action in actions {
            switch action {
            case .reply:
                report.readsAnswered += 1
                reads.append(AnsweredRead(key: key, startedAt: operation.startedAt, endedAt: now, result: quorum.newest,
                                          coordinator: operation.coordinator, stage: operation.stage, asked: quorum.replicas))
                trace("read #\(id) answered \(quorum.newest.map(\.description) ?? "nothing") from \(quorum.answers.keys.sorted())")
            case .fail:
                report.readsFailed += 1
                trace("read #\(id) failed")
            case .repair(let replica, let value):
                report.repairs += 1
                if replica == operation.coordinator {
                    apply(key, value, at: replica)
                } else {
                    send(.repair(key: key, value: value), from: operation.coordinator, to: replica)
                }
            }
        }
    }

    // MARK: Hinted handoff

    /// Gives the write to `standIn` to keep for `owner`. As the server does it, the stand-in's
    /// acknowledgement counts for the owner; under ``Rules/proposed`` the owner counts as
    /// failed at once and the hint only carries the write to it later.
    mutating func sendHint(_ id: Int, owner: Int, to standIn: Int, key: Int, value: VersionedValue, from coordinator: Int) {
        trace("write #\(id): \(nodes[standIn].name) stands in for \(nodes[owner].name)")
        if !settings.rules.hintsCountTowardQuorum { failReplica(id, from: owner) }
        if standIn == coordinator {
            keepHint(Hint(owner: owner, key: key, value: value), at: standIn)
            if settings.rules.hintsCountTowardQuorum {
                operations[id]?.hinted.insert(owner)
                acknowledgeWrite(id, from: owner)
            }
        } else {
            send(.hint(operation: id, owner: owner, key: key, value: value), from: coordinator, to: standIn)
        }
    }

    mutating func keepHint(_ hint: Hint, at node: Int) {
        nodes[node].hints[nextID] = hint
        nextID += 1
        report.hintsKept += 1
    }

    mutating func receiveHintMessage(_ payload: Payload, from: Int, at node: Int) {
        switch payload {
        case .hint(let operation, let owner, let key, let value):
            keepHint(Hint(owner: owner, key: key, value: value), at: node)
            send(.hintAck(operation: operation, owner: owner), from: node, to: from)
        case .hintAck(let operation, let owner):
            guard settings.rules.hintsCountTowardQuorum, pending(operation, at: node) != nil else { return }
            operations[operation]?.hinted.insert(owner)
            acknowledgeWrite(operation, from: owner)
        case .replay(let hint, let key, let value):
            apply(key, value, at: node)
            send(.replayAck(hint: hint), from: node, to: from)
        case .replayAck(let hint):
            if nodes[node].hints.removeValue(forKey: hint) != nil { report.hintsReplayed += 1 }
        default:
            preconditionFailure("\(payload) is not a hint message")
        }
    }

    /// Sends each hint to its owner if `node` can reach it (`Coordinator.replayHints`); a
    /// hint goes once its owner acknowledged it.
    mutating func replayHints(_ node: Int) {
        guard !nodes[node].hints.isEmpty else { return }
        let down = unreachable(from: node)
        for id in nodes[node].hints.keys.sorted() {
            let hint = nodes[node].hints[id]!
            guard !down.contains(hint.owner) else { continue }
            send(.replay(hint: id, key: hint.key, value: hint.value), from: node, to: hint.owner)
        }
    }
}
