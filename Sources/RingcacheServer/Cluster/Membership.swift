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
    /// `[sender, ring, [[name, host, port, bus port, version, left, incarnation, status], ...],
    /// [[finished member, coverage], ...]]`: the members, then the claims this node knows of
    /// members that finished sending for its ring (named by its digest; its own claims and
    /// those it heard), each with the
    /// old owners it covered (comma-separated, `*` for all). A member that missed RC.XFERDONE
    /// (it restarted, or the sender died before telling it) learns them here.
    func encodeMembers() -> RESPValue {
        let view = gossipView()
        let topology = topology
        var claims = rebalance.coverage(ring: topology.ringID)
        // Not sending for this ring (any more): there is nothing this node still owes.
        if topology.previous == nil, !claims.hasFinished(selfName) { claims.record(selfName, covering: nil) }
        let entries: [RESPValue] = topology.membership.entries.map { entry in
            let swim = view[entry.name]
            return .array([
                .bulk(entry.name), .bulk(entry.host), .bulk(String(entry.port)), .bulk(String(entry.busPort)),
                .bulk(String(entry.version)), .bulk(entry.left ? "1" : "0"),
                .bulk(String(swim?.incarnation ?? 0)), .bulk(swim.map { "\($0.status)" } ?? "-"),
            ])
        }
        let finished: [RESPValue] = claims.finished.sorted { $0.key < $1.key }.map { claim in
            .array([.bulk(claim.key), .bulk(Self.encodeCoverage(claim.value))])
        }
        return .array([.bulk(selfName), .bulk(String(topology.ringID)), .array(entries), .array(finished)])
    }

    static func encodeCoverage(_ covering: Set<String>?) -> String {
        covering.map { $0.sorted().joined(separator: ",") } ?? "*"
    }

    static func decodeCoverage(_ text: String) -> Set<String>? {
        text == "*" ? nil : Set(text.split(separator: ",").map(String.init))
    }

    /// Reads what ``encodeMembers()`` wrote; nil if it is malformed.
    static func decodeMembers(_ reply: [RESPValue])
        -> (sender: String, ring: UInt64, entries: [RingMembership.Entry], gossip: [SWIM.Member], finished: [(String, Set<String>?)])?
    {
        guard reply.count == 4, let sender = reply[0].string, let ring = reply[1].string.flatMap({ UInt64($0) }),
              case .array(let items?) = reply[2], case .array(let claims?) = reply[3] else { return nil }
        var finished: [(String, Set<String>?)] = []
        for claim in claims {
            guard case .array(let fields?) = claim, fields.count == 2, let name = fields[0].string, !name.isEmpty,
                  let coverage = fields[1].string else { return nil }
            finished.append((name, decodeCoverage(coverage)))
        }
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
        return (sender, ring, entries, gossip, finished)
    }

    /// Takes in another node's member list. A node that finds itself marked as left while it
    /// is not leaving (it was restarted after a leave) joins again.
    func absorbMembers(_ reply: [RESPValue]) -> Bool {
        guard let (_, ring, entries, gossip, finished) = Self.decodeMembers(reply) else { return false }
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
        // Claims about another ring (one this node has not heard of, or has moved past) do not count.
        if ring == topology.ringID, !finished.isEmpty {
            for (member, covering) in finished { rebalance.markFinished(member, ring: ring, covering: covering) }
            checkTransition()
        }
        return true
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
        takeOverFromTheDead()
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
