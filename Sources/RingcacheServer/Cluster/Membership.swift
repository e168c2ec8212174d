import ClusterCore
import ClusterProtocol
import Logging
import NIOCore
import RESP
import Synchronization

/// Joins, leaves and the periodic full-state push-pull over the cluster bus.
///
/// A node started with `seeds` sends `RC.JOIN` to a seed, which adds it to the ring and
/// answers with every member it knows; from then on every node, once a second, sends its whole
/// member list (ring entries and gossip states) to one random peer with `RC.MEMBERS` and takes
/// in the answer. Ring entries merge as ``RingMembership`` says; gossip states merge as SWIM
/// updates do, which repairs what lost datagrams did not carry.
extension ClusterState {
    /// This node's member list for another node: the members with their gossip states, and
    /// the claims this node knows of members that finished sending for its ring (its own and
    /// those it heard). A member that missed RC.XFERDONE (it restarted, or the sender died
    /// before telling it) learns them here.
    func memberList() -> MemberList {
        let view = gossipView()
        let topology = topology
        var claims = rebalance.coverage(ring: topology.ringID)
        // Not sending for this ring (any more): there is nothing this node still owes.
        if topology.previous == nil, !claims.hasFinished(selfName) { claims.record(selfName, covering: nil) }
        let members = topology.membership.entries.map { MemberList.Member(entry: $0, gossip: view[$0.name]) }
        return MemberList(sender: selfName, ring: topology.ringID, members: members, finished: claims.finished)
    }

    /// Takes in another node's member list. A node that finds itself marked as left while it
    /// is not leaving (it was restarted after a leave) joins again.
    ///
    /// Members this node has not heard of are taken in at the rate ``BusGuard/admitJoin(now:)``
    /// allows (the rest come again with the next push-pull), except by a node that has not
    /// joined yet, which takes its seed's whole list. Claims name members only.
    func absorbMembers(_ list: MemberList) {
        let leaving = rebalance.leaving.load(ordering: .relaxed)
        let me = selfName
        let known = topology.indexByName
        let now = wallClockMillis()
        let trustsAll = !rebalance.joined.load(ordering: .relaxed)
        let entries = list.members.map(\.entry).filter { entry in
            known[entry.name] != nil || entry.name == me || trustsAll || busGuard.admitJoin(now: now)
        }
        update { membership in
            var changed = membership.merge(entries)
            if !leaving, let at = membership.index(of: me), membership.entries[at].left {
                changed = membership.join(membership.entries[at]) || changed
            }
            return changed
        }
        gossipAbsorb(list.members.compactMap(\.gossip))
        // Claims about another ring (one this node has not heard of, or has moved past) do not count.
        let members = topology.indexByName
        if list.ring == topology.ringID, !list.finished.isEmpty {
            for (member, covering) in list.finished where members[member] != nil {
                rebalance.markFinished(member, ring: list.ring, covering: covering)
            }
            checkTransition()
        }
    }

    /// Names of the members gossip declared dead.
    var deadNames: Set<String> {
        let topology = topology
        return Set(deadMembers.map { topology.members[$0].name })
    }

    /// Every old owner of the ring before the latest change has sent what it had, and the
    /// keys of those that died before they finished were sent by the others
    /// (``TransferCoverage``): reads move to the new ring.
    func checkTransition() {
        let topology = topology
        guard let previous = topology.previous else { return }
        let waiting = rebalance.coverage(ring: topology.ringID).waiting(oldOwners: previous.owners, dead: deadNames)
        if waiting.isEmpty { finishTransition(ring: topology.ringID) }
    }
}

extension Coordinator {
    /// Once a second: join through the seeds until one answered, then push-pull with one
    /// random peer, and check whether data that moved has all arrived.
    func membershipRound(seeds: [NodeConfiguration.SeedAddress]) {
        if !cluster.rebalance.joined.load(ordering: .relaxed), !seeds.isEmpty {
            join(through: seeds)
        }
        let down = unreachable
        let peers = cluster.topology.participants.filter { $0 != cluster.selfIndex && !down.contains($0) }
        if let peer = peers.randomElement() {
            exchangeMembers(with: peer)
        }
        cluster.checkTransition()
        // A leaving node stops once its data was sent, every member heard so, and no read
        // needs the old ring any more.
        if cluster.rebalance.leaving.load(ordering: .relaxed), transfer == nil, cluster.topology.previous == nil,
           announced == cluster.topology.ringID, let left = cluster.whenLeft.withLock({ $0 }) {
            cluster.whenLeft.withLock { $0 = nil }
            left()
        }
    }

    /// Sends this node's member list to `peer` and takes in the answer.
    func exchangeMembers(with peer: Int) {
        guard let link = link(to: peer) else { return }
        link.send(.members(cluster.memberList())) { [cluster] reply in
            if case .members(let list)? = reply { cluster.absorbMembers(list) }
        }
    }

    /// Tells every member this node can reach what it knows now (after a join or leave made here).
    func broadcastMembers() {
        let down = unreachable
        for peer in cluster.topology.participants where peer != cluster.selfIndex && !down.contains(peer) {
            exchangeMembers(with: peer)
        }
    }

    private func join(through seeds: [NodeConfiguration.SeedAddress]) {
        let me = cluster.members[cluster.selfIndex]
        let request = BusRequest.join(RingMembership.Entry(name: me.name, host: me.host, port: me.port, busPort: me.busPort))
        for seed in seeds where !(seed.host == me.host && seed.busPort == me.busPort) {
            let link = PeerLink(member: -1, name: nil, host: seed.host, port: seed.busPort, eventLoop: eventLoop, cluster: cluster,
                                logger: logger) { _ in }
            link.connect()
            link.send(request) { [self] reply in
                link.stop()
                guard case .members(let list)? = reply else {
                    if case .error(let message)? = reply {
                        logger.warning("join refused", metadata: ["seed": "\(seed.host):\(seed.port)", "reply": "\(message)"])
                    }
                    return
                }
                cluster.absorbMembers(list)
                if !cluster.rebalance.joined.exchange(true, ordering: .relaxed) {
                    logger.info("joined the cluster", metadata: ["seed": "\(seed.host):\(seed.port)", "epoch": "\(cluster.topology.epoch)",
                                                                 "members": "\(cluster.topology.owners.count)"])
                    broadcastMembers()
                }
            }
        }
    }
}
