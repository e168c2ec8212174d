/// Joins, leaves and the data that moves after them, as `Membership.swift`, `ClusterState`
/// and `Rebalance.swift` run them: each node learns a change on its own (ring before it
/// kept while data moves), every old owner sends what others gain and says when it is done,
/// and a node moves to the new ring once no live old owner is left waiting
/// (``TransferCoverage``).
extension ClusterSimulation {
    /// True when every live node knows the latest membership and has settled it: only then
    /// does the next join or leave happen.
    var isSettledEverywhere: Bool {
        nodes.indices.allSatisfy { nodes[$0].life != .up || (nodes[$0].view == changes.count - 1 && nodes[$0].previous == nil) }
    }

    mutating func postpone(_ event: Event) {
        if now < end { schedule(event, after: Int64(settings.roundPeriod)) }
    }

    mutating func addChange(_ membership: RingMembership) -> Int {
        changes.append(Change(membership: membership, ring: membership.ring(vnodes: 1, replicas: settings.replicas)))
        return changes.count - 1
    }

    /// The next waiting node joins through a random live member (which hears of it at once).
    mutating func join() {
        guard isSettledEverywhere else { return postpone(.join) }
        guard let joiner = nodes.indices.first(where: { nodes[$0].life == .waiting }) else { return }
        let seeds = nodes.indices.filter { nodes[$0].life == .up }
        var membership = changes[changes.count - 1].membership
        membership.join(RingMembership.Entry(name: nodes[joiner].name, host: "sim", port: 0, busPort: 0))
        let change = addChange(membership)
        report.joins += 1
        nodes[joiner].life = .up
        // It knew the ring without itself: that is where the data is.
        nodes[joiner].view = change - 1
        trace("join \(nodes[joiner].name): change \(change)")
        learn(joiner, change: change)
        if let seed = seeds.randomElement(using: &random) { learn(seed, change: change) }
        spread(change)
        schedule(.round(node: joiner), after: Int64(settings.roundPeriod))
    }

    /// A random member leaves, if enough are left to hold N replicas with one to spare.
    mutating func leave() {
        guard isSettledEverywhere else { return postpone(.leave) }
        let ring = changes[changes.count - 1].ring
        let candidates = nodes.indices.filter { nodes[$0].life == .up && !ring.excluded.contains($0) && !nodes[$0].leaving }
        guard ring.owners.count > settings.replicas + 1, let leaver = candidates.randomElement(using: &random) else { return }
        var membership = changes[changes.count - 1].membership
        membership.leave(nodes[leaver].name)
        let change = addChange(membership)
        report.leaves += 1
        nodes[leaver].leaving = true
        trace("leave \(nodes[leaver].name): change \(change)")
        learn(leaver, change: change)
        spread(change)
    }

    /// Every other node hears of `change` after its own delay.
    mutating func spread(_ change: Int) {
        for node in nodes.indices where nodes[node].life != .waiting && nodes[node].view < change {
            schedule(.learn(node: node, change: change), after: Int64.random(in: 1...Int64(settings.learnDelay), using: &random))
        }
    }

    mutating func refreshPlan(_ node: Int) {
        nodes[node].plan = ReplicaPlan(ring: changes[nodes[node].view].ring, previous: nodes[node].previous.map { changes[$0].ring })
    }

    /// `ClusterState.update`: a node hears of a newer membership; the ring it had stays the
    /// one reads use (unless an older one still is) until the data has moved.
    mutating func learn(_ node: Int, change: Int) {
        guard nodes[node].life == .up, change > nodes[node].view else { return }
        nodes[node].previous = nodes[node].previous ?? nodes[node].view
        nodes[node].view = change
        refreshPlan(node)
        trace("\(nodes[node].name) learns change \(change)")
        startTransfer(node)
        checkTransition(node)
    }

    /// What a member list from a peer carries: its membership, and its claims for it.
    mutating func adopt(_ node: Int, view: Int, claims: TransferCoverage) {
        learn(node, change: view)
        guard nodes[node].life == .up, nodes[node].view == view else { return }
        for (member, covering) in claims.finished {
            nodes[node].claims[view, default: TransferCoverage()].record(member, covering: covering)
        }
        checkTransition(node)
    }

    /// `checkTransition`/`finishTransition`: once no live old owner is waiting, reads and
    /// writes move to the new ring, and the node drops the keys it no longer replicates.
    mutating func checkTransition(_ node: Int) {
        guard nodes[node].life == .up, let previous = nodes[node].previous else { return }
        let claims = nodes[node].claims[nodes[node].view] ?? TransferCoverage()
        guard claims.waiting(oldOwners: changes[previous].ring.owners, dead: deadNames).isEmpty else { return }
        nodes[node].previous = nil
        refreshPlan(node)
        trace("\(nodes[node].name) settles change \(nodes[node].view)")
        let ring = nodes[node].plan.ring
        for key in nodes[node].store.keys.sorted() where !ring.replicates(node, position: positions[key]) {
            nodes[node].store[key] = nil
        }
    }

    mutating func membershipRound(_ node: Int) {
        checkTransition(node)
        takeOverFromTheDead(node)
        sendOutstanding(node)
        announce(node)
        replayHints(node)
        if nodes[node].leaving, nodes[node].previous == nil, nodes[node].transfer == nil, nodes[node].announcing.isEmpty {
            // `whenLeft`: its data was sent, every member heard so, no read needs the old ring.
            nodes[node].life = .gone
            nodes[node].store = [:]
            nodes[node].hints = [:]
            trace("\(nodes[node].name) has left")
        }
        if settledChanges < changes.count - 1, isSettledEverywhere {
            settledChanges = changes.count - 1
            report.ringChangesSettled += 1
        }
    }

    // MARK: Transfers

    /// `startRebalance`: a node that learned a change sends the keys it holds that others
    /// gain, unless it did for this change already.
    mutating func startTransfer(_ node: Int) {
        guard nodes[node].life == .up, let previous = nodes[node].previous else { return }
        let change = nodes[node].view
        if let run = nodes[node].transfer, run.change == change { return }
        if nodes[node].claims[change]?.hasFinished(nodes[node].name) == true { return }
        let down = unreachable(from: node)
        let covering = settings.rules.everyOldReplicaSends ? nil : names(down, owning: previous)
        begin(node, change: change, entries: transferEntries(node, down: down, sentBefore: nil), covering: covering)
    }

    /// `takeOverFromTheDead` (as built): an old owner died before it finished and this
    /// node's finished run did not count it as down, so it sends again what it would have
    /// with the dead counted as down, skipping what it sent already.
    mutating func takeOverFromTheDead(_ node: Int) {
        guard !settings.rules.everyOldReplicaSends, nodes[node].transfer == nil, let previous = nodes[node].previous else { return }
        let change = nodes[node].view
        let coverage = nodes[node].claims[change] ?? TransferCoverage()
        let owed = coverage.owedBy(nodes[node].name, oldOwners: changes[previous].ring.owners, dead: deadNames)
        guard !owed.isEmpty, case .some(.some(let covered)) = coverage.coverage(of: nodes[node].name) else { return }
        report.takeovers += 1
        trace("\(nodes[node].name) takes over from \(owed.sorted())")
        let down = unreachable(from: node).union(indices(covered.union(owed)))
        begin(node, change: change, entries: transferEntries(node, down: down, sentBefore: indices(covered)),
              covering: names(down, owning: previous))
    }

    /// What `node` sends: each key it holds, to each member it gives the key to.
    func transferEntries(_ node: Int, down: Set<Int>, sentBefore: Set<Int>?) -> [TransferEntry] {
        guard let previous = nodes[node].previous else { return [] }
        let old = changes[previous].ring
        let plan = nodes[node].plan
        var entries: [TransferEntry] = []
        for key in nodes[node].store.keys.sorted() {
            let position = positions[key]
            let targets: [Int]
            if settings.rules.everyOldReplicaSends {
                targets = Array(plan.transferTargets(forPosition: position, holder: node))
            } else {
                if let sentBefore, old.sender(forPosition: position, unreachable: sentBefore) == node { continue }
                targets = plan.ring.gained(forPosition: position, from: old, sender: node, unreachable: down)
            }
            for target in targets where settings.rules.transfersWaitForDownGainers || !isDeclaredDead(target) {
                entries.append(TransferEntry(target: target, key: key, value: nodes[node].store[key]!))
            }
        }
        return entries
    }

    mutating func begin(_ node: Int, change: Int, entries: [TransferEntry], covering: Set<String>?) {
        var outstanding: [Int: TransferEntry] = [:]
        for entry in entries {
            outstanding[nextID] = entry
            nextID += 1
        }
        let run = Transfer(id: nextID, change: change, outstanding: outstanding, covering: covering)
        nextID += 1
        nodes[node].transfer = run
        trace("\(nodes[node].name) sends \(entries.map { "key\($0.key)→\(nodes[$0.target].name)" }) for change \(change)")
        sendOutstanding(node)
        if outstanding.isEmpty { finishTransfer(node) }
    }

    /// Sends the entries of the node's transfer that were not acknowledged yet (at its start,
    /// and again each round: the cursor moves on only once a batch is acknowledged).
    mutating func sendOutstanding(_ node: Int) {
        guard let run = nodes[node].transfer else { return }
        for id in run.outstanding.keys.sorted() {
            let entry = run.outstanding[id]!
            send(.transfer(run: run.id, entry: id, key: entry.key, value: entry.value), from: node, to: entry.target)
        }
    }

    /// `finishRebalance`: the node records its claim and tells every member until each
    /// acknowledged (`announceFinished`).
    mutating func finishTransfer(_ node: Int) {
        guard let run = nodes[node].transfer else { return }
        nodes[node].transfer = nil
        report.transfersFinished += 1
        nodes[node].claims[run.change, default: TransferCoverage()].record(nodes[node].name, covering: run.covering)
        let others = nodes.indices.filter { $0 != node && (nodes[$0].life == .up || nodes[$0].life == .down) }
        nodes[node].announcing[run.change] = (run.covering, Set(others))
        trace("\(nodes[node].name) finished sending for change \(run.change)")
        announce(node)
        checkTransition(node)
    }

    mutating func announce(_ node: Int) {
        for change in nodes[node].announcing.keys.sorted() {
            let (covering, peers) = nodes[node].announcing[change]!
            for peer in peers.sorted() where nodes[peer].life != .gone {
                send(.finished(change: change, member: node, covering: covering), from: node, to: peer)
            }
            if peers.allSatisfy({ nodes[$0].life == .gone }) { nodes[node].announcing[change] = nil }
        }
    }

    mutating func receiveTransferMessage(_ payload: Payload, from: Int, at node: Int) {
        switch payload {
        case .transfer(let run, let entry, let key, let value):
            apply(key, value, at: node)
            send(.transferAck(run: run, entry: entry), from: node, to: from)
        case .transferAck(let run, let entry):
            guard nodes[node].transfer?.id == run, nodes[node].transfer?.outstanding.removeValue(forKey: entry) != nil else { return }
            report.keysMoved += 1
            if nodes[node].transfer?.outstanding.isEmpty == true { finishTransfer(node) }
        case .finished(let change, let member, let covering):
            nodes[node].claims[change, default: TransferCoverage()].record(nodes[member].name, covering: covering)
            send(.finishedAck(change: change), from: node, to: from)
            checkTransition(node)
        case .finishedAck(let change):
            nodes[node].announcing[change]?.to.remove(from)
            if nodes[node].announcing[change]?.to.isEmpty == true { nodes[node].announcing[change] = nil }
        default:
            preconditionFailure("\(payload) is not a transfer message")
        }
    }

    /// Names of `members` that owned data in the ring of `change`.
    func names(_ members: Set<Int>, owning change: Int) -> Set<String> {
        Set(members.map { nodes[$0].name }).intersection(changes[change].ring.owners)
    }

    func indices(_ names: Set<String>) -> Set<Int> {
        Set(nodes.indices.filter { names.contains(nodes[$0].name) })
    }
}
