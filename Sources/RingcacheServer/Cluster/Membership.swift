import ClusterCore
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
    /// `[sender, finished epoch, [[name, host, port, bus port, version, left, incarnation,
    /// status], ...]]`. The finished epoch is the latest epoch for which the sender has sent
    /// all it had to send (its epoch when no data moves), 0 while it is sending: a member that
    /// missed RC.XFERDONE (it restarted) learns it here.
    func encodeMembers() -> RESPValue {
        let view = gossipView()
        let topology = topology
        let finished = topology.previous == nil || rebalance.finished(epoch: topology.epoch).contains(selfName) ? topology.epoch : 0
        let entries: [RESPValue] = topology.membership.entries.map { entry in
            let swim = view[entry.name]
            return .array([
                .bulk(entry.name), .bulk(entry.host), .bulk(String(entry.port)), .bulk(String(entry.busPort)),
                .bulk(String(entry.version)), .bulk(entry.left ? "1" : "0"),
                .bulk(String(swim?.incarnation ?? 0)), .bulk(swim.map { "\($0.status)" } ?? "-"),
            ])
        }
        return .array([.bulk(selfName), .bulk(String(finished)), .array(entries)])
    }

    /// Reads what ``encodeMembers()`` wrote; nil if it is malformed.
    static func decodeMembers(_ reply: [RESPValue]) -> (sender: String, finished: UInt64, entries: [RingMembership.Entry], gossip: [SWIM.Member])? {
        guard reply.count == 3, let sender = reply[0].string, let finished = reply[1].string.flatMap({ UInt64($0) }),
              case .array(let items?) = reply[2] else { return nil }
        var entries: [RingMembership.Entry] = []
        var gossip: [SWIM.Member] = []
        for item in items {
            guard case .array(let fields?) = item, fields.count == 8 else { return nil }
            let text = fields.map { $0.string ?? "" }
            guard !text[0].isEmpty, let port = Int(text[2]), let bus = Int(text[3]), let version = UInt64(text[4]),
                  let incarnation = UInt64(text[6]) else { return nil }
            entries.append(RingMembership.Entry(name: text[0], host: text[1], port: port, busPort: bus, version: version, left: text[5] == "1"))
            let status: SWIM.Status? = switch text[7] {
            case "alive": .alive
            case "suspect": .suspect
            case "dead": .dead
            default: nil
            }
            if let status { gossip.append(SWIM.Member(name: text[0], incarnation: incarnation, status: status)) }
        }
        return (sender, finished, entries, gossip)
    }

    /// Takes in another node's member list. A node that finds itself marked as left while it
    /// is not leaving (it was restarted after a leave) joins again.
    func absorbMembers(_ reply: [RESPValue]) -> Bool {
        guard let (sender, finished, entries, gossip) = Self.decodeMembers(reply) else { return false }
        let leaving = rebalance.leaving.load(ordering: .relaxed)
        let me = selfName
        update { membership in
            var changed = membership.merge(entries)
            if !leaving, let at = membership.index(of: me), membership.entries[at].left {
                changed = membership.join(membership.entries[at]) || changed
            }
            return changed
        }
        gossipAbsorb(gossip)
        if finished != 0, finished == topology.epoch {
            rebalance.markFinished(sender, epoch: finished)
            checkTransition()
        }
        return true
    }

    /// Every old owner of the ring before the latest change has sent what it had (or is
    /// dead): reads move to the new ring.
    func checkTransition() {
        let topology = topology
        guard let previous = topology.previous else { return }
        let dead = deadMembers
        let finished = rebalance.finished(epoch: topology.epoch)
        let waiting = previous.members.indices.filter {
            !previous.excluded.contains($0) && !dead.contains($0) && !finished.contains(previous.members[$0])
        }
        if waiting.isEmpty { finishTransition(epoch: topology.epoch) }
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
           announced == cluster.topology.epoch, let left = cluster.whenLeft.withLock({ $0 }) {
            cluster.whenLeft.withLock { $0 = nil }
            left()
        }
    }

    /// Sends this node's member list to `peer` and takes in the answer.
    func exchangeMembers(with peer: Int) {
        guard let link = link(to: peer) else { return }
        var members = ByteBuffer()
        cluster.encodeMembers().encode(into: &members)
        link.send(.array([.bulk(BusCommand.members), .bulkString(members)])) { [cluster] reply in
            if case .array(let items?)? = reply { _ = cluster.absorbMembers(items) }
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
        let request = RESPValue.array([.bulk(BusCommand.join), .bulk(me.name), .bulk(me.host), .bulk(String(me.port)), .bulk(String(me.busPort))])
        for seed in seeds where !(seed.host == me.host && seed.busPort == me.busPort) {
            let link = PeerLink(member: -1, host: seed.host, port: seed.busPort, eventLoop: eventLoop,
                                authRequest: cluster.authRequest, logger: logger) { _ in }
            link.connect()
            link.send(request) { [self] reply in
                link.stop()
                guard case .array(let items?)? = reply, cluster.absorbMembers(items) else {
                    if case .error(let message)? = reply {
                        logger.warning("join refused", metadata: ["seed": "\(seed.host):\(seed.port)", "reply": "\(String(buffer: message))"])
                    }
                    return
                }
                if !cluster.rebalance.joined.exchange(true, ordering: .relaxed) {
                    logger.info("joined the cluster", metadata: ["seed": "\(seed.host):\(seed.port)", "epoch": "\(cluster.topology.epoch)",
                                                                 "members": "\(cluster.topology.owners.count)"])
                    broadcastMembers()
                }
            }
        }
    }
}
