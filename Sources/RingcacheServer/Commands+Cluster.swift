import CacheStore
import ClusterCore
import NIOCore
import RESP
import Synchronization

extension CommandProcessor {
    /// `CONSISTENCY` shows this connection's levels; `CONSISTENCY READ <level> WRITE <level>`
    /// (either part alone too) sets them. Levels: ONE, QUORUM, ALL or a replica count.
    func consistency(_ args: RESPArguments, _ session: inout Session, _ out: inout ByteBuffer) {
        var read = session.readConsistency
        var write = session.writeConsistency
        var i = 1
        while i < args.count {
            guard i + 1 < args.count, let level = ConsistencyLevel(args[i + 1]) else {
                out.writeRESPError("ERR syntax error: CONSISTENCY [READ DEFAULT|ONE|QUORUM|ALL|<n>] [WRITE DEFAULT|ONE|QUORUM|ALL|<n>]")
                return
            }
            if args[i].equalsIgnoringCase("read") {
                read = level
            } else if args[i].equalsIgnoringCase("write") {
                write = level
            } else {
                out.writeRESPError("ERR syntax error: CONSISTENCY [READ DEFAULT|ONE|QUORUM|ALL|<n>] [WRITE DEFAULT|ONE|QUORUM|ALL|<n>]")
                return
            }
            i += 2
        }
        if args.count == 1 {
            let replicas = cluster?.replicas ?? 1
            out.writeRESPMapHeader(3, resp3: session.resp3)
            out.writeRESPBulk("read")
            out.writeRESPBulk("\(read) (\(read.required(of: replicas, configured: cluster?.readQuorum ?? 1)) of \(replicas))")
            out.writeRESPBulk("write")
            out.writeRESPBulk("\(write) (\(write.required(of: replicas, configured: cluster?.writeQuorum ?? 1)) of \(replicas))")
            out.writeRESPBulk("replicas")
            out.writeRESPInteger(replicas)
            return
        }
        session.readConsistency = read
        session.writeConsistency = write
        out.writeOK()
    }

    /// VGET on a standalone node: one value, no context (there is nothing to be concurrent with).
    func vget(_ args: RESPArguments, _ session: Session, _ out: inout ByteBuffer, _ now: Int64) {
        var set = SiblingSet()
        store.read(args[1], now: now) { entry in
            if let entry {
                set = SiblingSet([Sibling(clock: VectorClock(), value: VersionedValue(version: entry.version, value: Array(entry.value), expiry: entry.expiry))])
            }
        }
        ClusterRouter.writeSiblings(set, resp3: session.resp3, into: &out)
    }

    /// VSET on a standalone node: the context is checked, then the value is set.
    func vset(_ args: RESPArguments, _ out: inout ByteBuffer, _ now: Int64) {
        guard VectorClock(hex: args[2]) != nil else {
            return out.writeRESPError("ERR invalid causal context: pass the context VGET returned (at most \(VectorClock.maxEntries) entries), or an empty string")
        }
        var errors = ByteBuffer()
        guard let expiry = ClusterRouter.vsetExpiry(args, now: now, errors: &errors) else {
            out.writeBuffer(&errors)
            return
        }
        store.set(args[1], args[3], expiry: expiry, now: now)
        out.writeOK()
    }

    func clusterCommand(_ args: RESPArguments, _ session: Session, _ out: inout ByteBuffer) {
        let configuration = node.currentConfiguration
        let topology = cluster?.topology
        let members = topology?.members ?? [
            NodeConfiguration.NodeAddress(
                name: configuration.nodeName, host: configuration.bind, port: configuration.port, busPort: configuration.port + 10000)
        ]
        let ring = topology?.ring ?? HashRing(members: members.map(\.name), vnodes: configuration.vnodes, replicas: 1, epoch: 1)
        let sub = args[1]
        if sub.equalsIgnoringCase("info") {
            let lines = [
                "cluster_enabled:\(cluster == nil ? 0 : 1)",
                "cluster_state:\(cluster?.stateDescription ?? "ok")",
                "cluster_links_up:\(cluster?.linksUp.load(ordering: .relaxed) ?? 0)/\(cluster?.linksWanted ?? 0)",
                "cluster_name:\(configuration.clusterName)",
                "cluster_known_nodes:\(members.count)",
                "cluster_size:\(ring.owners.count)",
                "cluster_my_name:\(configuration.nodeName)",
                "ring_epoch:\(ring.epoch)",
                "ring_partitions:\(ring.partitionCount)",
                "replicas:\(ring.replicas)",
                "read_quorum:\(cluster?.readQuorum ?? 1)",
                "write_quorum:\(cluster?.writeQuorum ?? 1)",
                "reconcile:\(configuration.reconcile.rawValue)",
            ]
            out.writeRESPVerbatim(lines.joined(separator: "\r\n") + "\r\n", resp3: session.resp3)
        } else if sub.equalsIgnoringCase("nodes") {
            // Members that left are not listed: clients route only to those in the ring.
            // Fields: name, client address, bus address, flags and state, epoch, share, incarnation.
            let view = cluster?.gossipView() ?? [:]
            let shares = ring.primaryShares
            let lines = members.enumerated().filter { !ring.excluded.contains($0.offset) }.map { index, member in
                let me = member.name == configuration.nodeName ? "myself," : ""
                let state = member.name == configuration.nodeName ? "alive" : (cluster?.status(of: member.name).description ?? "alive")
                let incarnation = view[member.name]?.incarnation ?? 0
                return "\(member.name) \(member.host):\(member.port) \(member.host):\(member.busPort) \(me)\(state) \(ring.epoch) "
                    + String(Double(Int(shares[index] * 10_000)) / 10_000) + " \(incarnation)"
            }
            out.writeRESPVerbatim(lines.joined(separator: "\n") + "\n", resp3: session.resp3)
        } else if sub.equalsIgnoringCase("ring"), args.count == 3, args[2].equalsIgnoringCase("shape") {
            // What the ring is built from, so that a client can build the same ring itself:
            // [epoch, vnodes, replicas, [member names in ring order]].
            out.writeRESPArrayHeader(4)
            out.writeRESPInteger(Int(ring.epoch))
            out.writeRESPInteger(ring.vnodes)
            out.writeRESPInteger(ring.replicas)
            let owners = ring.owners
            out.writeRESPArrayHeader(owners.count)
            for member in owners { out.writeRESPBulk(member) }
        } else if sub.equalsIgnoringCase("ring") {
            // Runs of partitions with the same replicas: [first position, last position, [replica names]].
            let ranges = ring.ranges
            out.writeRESPArrayHeader(ranges.count)
            for range in ranges {
                out.writeRESPArrayHeader(3)
                out.writeRESPBulk(String(range.start))
                out.writeRESPBulk(String(range.end))
                out.writeRESPArrayHeader(range.replicas.count)
                for replica in range.replicas { out.writeRESPBulk(members[replica].name) }
            }
        } else if sub.equalsIgnoringCase("keynodes"), args.count == 3 {
            // The members that replicate a key, primary first (reads use the old ring's while
            // data moves after a join or leave; this shows the ring's).
            let replicas = ring.preferenceList(forKey: args[2]).members
            out.writeRESPArrayHeader(replicas.count)
            for replica in replicas { out.writeRESPBulk(members[replica].name) }
        } else if sub.equalsIgnoringCase("leave"), args.count == 2 {
            // Leaves the ring: the ring changes at once (a new epoch), this node sends what
            // others gain, and it stops once every member knows it finished.
            guard let cluster else { return out.writeRESPError("ERR this node is not in a cluster") }
            guard cluster.topology.owners.count > 1 else { return out.writeRESPError("ERR the last member of the ring cannot leave it") }
            if !cluster.rebalance.leaving.exchange(true, ordering: .relaxed), cluster.update({ $0.leave(cluster.selfName) }) != nil {
                router?.coordinator.broadcastMembers()
            }
            out.writeOK()
        } else if sub.equalsIgnoringCase("forget"), args.count == 3 {
            // Takes another member out of the ring for good (one that died and will not come
            // back): the ring changes as if it had left, and the others send its share to the
            // members that gain it. A live member forgotten by mistake joins again.
            guard let cluster else { return out.writeRESPError("ERR this node is not in a cluster") }
            let name = String(decoding: UnsafeRawBufferPointer(args[2]), as: UTF8.self)
            guard name != cluster.selfName else { return out.writeRESPError("ERR can't forget myself: use CLUSTER LEAVE") }
            guard let index = cluster.topology.indexByName[name], cluster.topology.isOwner(index) else {
                return out.writeRESPError("ERR unknown node '\(Self.printable(args[2], limit: 128))'")
            }
            guard cluster.topology.owners.count > 1 else { return out.writeRESPError("ERR the last member of the ring cannot be forgotten") }
            if cluster.update({ $0.leave(name) }) != nil { router?.coordinator.broadcastMembers() }
            out.writeOK()
        } else {
            out.writeRESPError("ERR unknown subcommand '\(Self.printable(sub, limit: 128))'. Try CLUSTER INFO, NODES, RING, KEYNODES, LEAVE or FORGET.")
        }
    }
}
