import CacheStore
import ClusterCore
import Logging
import NIOCore
import Persistence
import RESP

/// The internal commands replicas answer on the cluster bus, RESP-framed like client
/// commands (so `redis-cli -p <bus port>` can inspect a node).
enum BusCommand {
    /// `RC.AUTH <cluster-name> <secret> <node>`: must come first on every bus connection.
    static let auth = "RC.AUTH"
    /// `RC.GET <key>` → `*0` when absent, else `[timestamp, node, expiry, value-or-null]`.
    static let get = "RC.GET"
    /// `RC.PUT <key> <timestamp> <node> <expiry> <value>` → `:1` if newer and stored, else `:0`.
    static let put = "RC.PUT"
    /// `RC.DEL <key> <timestamp> <node>` (a tombstone) → `:1` if a live value was there, else `:0`.
    static let delete = "RC.DEL"
    /// `RC.VGET <key>` → the key's siblings (serialized) or null, under vector clocks.
    static let siblingGet = "RC.VGET"
    /// `RC.VPUT <key> <siblings>` → `:1` if a live value was there before, else `:0`.
    static let siblingPut = "RC.VPUT"
    /// `RC.COUNT <down-members>` → keys for which this node is the first replica not listed down.
    static let count = "RC.COUNT"
    /// `RC.KEYS <pattern> <down-members>` → those keys that match.
    static let keys = "RC.KEYS"
    /// `RC.SCAN <cursor> <count> <pattern> <down-members>` → `[next cursor, [keys]]`, the keys
    /// this node is the first live replica of.
    static let scan = "RC.SCAN"
    /// `RC.RANDOMKEY` → a random live key of this node, or null.
    static let randomKey = "RC.RANDOMKEY"
    /// `RC.FLUSH` → `+OK` after removing every key.
    static let flush = "RC.FLUSH"
    /// `RC.EXEC <read quorum> <write quorum> <command> <key> [args…]` → the command's reply,
    /// run here as the key's first healthy replica (read-modify-write commands).
    static let exec = "RC.EXEC"
    /// `RC.HINT <owner name> <key> <timestamp> <node> <expiry> [value]`: keep this write for
    /// the member `owner` (no value: a delete) and replay it when the owner is back.
    static let hint = "RC.HINT"
    /// `RC.TREE <requester name> <bits>`: the Merkle bucket digests of the entries this node
    /// and the requester both replicate (anti-entropy).
    static let tree = "RC.TREE"
    /// `RC.BUCKET <requester name> <bits> <bucket> ...`: those entries' keys and versions,
    /// as key, timestamp, node triples.
    static let bucket = "RC.BUCKET"
    /// `RC.JOIN <name> <host> <port> <bus port>`: the sender joins the ring → every member
    /// this node knows, as RC.MEMBERS has them.
    static let join = "RC.JOIN"
    /// `RC.MEMBERS <members>`: push-pull of the whole member list (ring entries and gossip
    /// states) → this node's list after taking in the sender's.
    static let members = "RC.MEMBERS"
    /// `RC.XFER <sender> [<key> <timestamp> <node> <expiry> <has value> <value>]...`: entries
    /// this node gains after a join or leave → `:n` applied.
    static let transfer = "RC.XFER"
    /// `RC.XFERPART <sender> <key> <timestamp> <node> <expiry> <offset> <total> <chunk>`: one
    /// chunk of a big value → `:n`, the bytes held so far (the next offset to send).
    static let transferPart = "RC.XFERPART"
    /// `RC.XFERDONE <ring> <sender> <coverage>`: the sender finished sending for the change to
    /// that ring (``Topology/ringID``),
    /// counting the old owners in `coverage` (comma-separated, `*` for all) as down → `+OK`.
    static let transferDone = "RC.XFERDONE"
}

/// Serves one inbound bus connection: authenticates the peer, then applies replica reads
/// and writes to the local store and answers in order, one flush per read batch.
final class BusHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let cluster: ClusterState
    private let coordinator: Coordinator?
    private let logger: Logger
    /// Held while the handler is in the pipeline; dropped in `handlerRemoved`.
    private var context: ChannelHandlerContext?
    /// Replies of RC.EXEC come later; later replies wait behind them, in order.
    private var waiting = CircularBuffer<PendingReply>()
    private var parser = RESPRequestParser()
    private var pending = ByteBuffer()
    private var out = ByteBuffer()
    private var authenticated = false
    private var closing = false

    init(cluster: ClusterState, coordinator: Coordinator?, logger: Logger) {
        self.cluster = cluster
        self.coordinator = coordinator
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Writes the replies that are now in order.
    private func drain() {
        while let first = waiting.first, var buffer = first.buffer {
            out.writeBuffer(&buffer)
            _ = waiting.removeFirst()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        var incoming = unwrapInboundIn(data)
        pending.writeBuffer(&incoming)
        let now = wallClockMillis()
        while !closing {
            let step = pending.withUnsafeReadableBytes { parser.next($0) }
            switch step {
            case .incomplete:
                pending.discardReadBytes()
                return
            case .skip(let consumed):
                pending.moveReaderIndex(forwardBy: consumed)
            case .error(let error):
                out.writeRESPError("ERR \(error.message)")
                close(context: context)
            case .request(let consumed):
                pending.withUnsafeReadableBytes { bytes in
                    parser.withArguments(in: bytes) { arguments in
                        if authenticated, arguments.count >= 2, Self.touchesOneKey(arguments[0]),
                           cluster.node.needsReadThrough(arguments[1], now: now) {
                            readThrough(arguments)
                        } else if let durable = cluster.node.durable, durable.fsync == .always {
                            handleDurably(arguments, durable, now: now, context: context)
                        } else if waiting.isEmpty {
                            handle(arguments, now: now, context: context)
                        } else {
                            let queued = waiting.count
                            let saved = out
                            out = ByteBuffer()
                            handle(arguments, now: now, context: context)
                            if waiting.count == queued { waiting.append(PendingReply(buffer: out)) }
                            out = saved
                        }
                    }
                }
                pending.moveReaderIndex(forwardBy: consumed)
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if out.readableBytes > 0 {
            context.writeAndFlush(wrapOutboundOut(out), promise: nil)
            out.clear()
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func close(context: ChannelHandlerContext) {
        closing = true
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
        out.clear()
        context.close(promise: nil)
    }

    /// `persistence-fsync always`: a write is acknowledged to its coordinator only once the
    /// SQLite batch holding it is committed (a failed commit answers an error).
    private func handleDurably(_ args: RESPArguments, _ durable: DurableTier, now: Int64, context: ChannelHandlerContext) {
        let before = durable.queuedSequence
        let saved = out
        out = ByteBuffer()
        handle(args, now: now, context: context)
        let reply = out
        out = saved
        let sequence = durable.queuedSequence
        guard sequence > before else {
            if waiting.isEmpty { out.writeImmutableBuffer(reply) } else { waiting.append(PendingReply(buffer: reply)) }
            return
        }
        let pending = PendingReply()
        waiting.append(pending)
        let state = NIOLoopBound((handler: self, pending: pending), eventLoop: context.eventLoop)
        durable.reply(reply, afterCommitOf: sequence, on: context.eventLoop) { reply in
            state.value.pending.buffer = reply
            state.value.handler.flushReady()
        }
    }

    /// Writes the replies that are now in order.
    private func flushReady() {
        guard let context else { return }
        drain()
        if out.readableBytes > 0 {
            context.writeAndFlush(wrapOutboundOut(out), promise: nil)
            out.clear()
        }
    }

    /// Bus commands about one key (its name second), which read or replace what the node holds.
    static func touchesOneKey(_ name: UnsafeRawBufferPointer) -> Bool {
        let text = name.asString
        return text == BusCommand.get || text == BusCommand.put || text == BusCommand.delete || text == BusCommand.siblingGet
            || text == BusCommand.siblingPut
    }

    /// Loads the key from disk first, then handles the request; its reply keeps its place.
    private func readThrough(_ args: RESPArguments) {
        guard let context else { return }
        let reply = PendingReply()
        waiting.append(reply)
        let request = (0..<args.count).map { Array(args[$0]) }
        cluster.node.loadFromDisk(request[1], on: context.eventLoop) { [self] in
            guard let context = self.context else { return }
            let saved = out
            out = ByteBuffer()
            RESPArguments.withArguments(request) { handle($0, now: wallClockMillis(), context: context) }
            reply.buffer = out
            out = saved
            drain()
            if out.readableBytes > 0 {
                context.writeAndFlush(wrapOutboundOut(out), promise: nil)
                out.clear()
            }
        }
    }

    private func handle(_ args: RESPArguments, now: Int64, context: ChannelHandlerContext) {
        let name = args[0]
        guard authenticated else {
            if name.asString == BusCommand.auth, args.count == 4, cluster.authenticate(clusterName: args[1], secret: args[2]) {
                authenticated = true
                out.writeOK()
            } else {
                logger.warning("refused a cluster bus connection that failed RC.AUTH", metadata: ["peer": "\(context.remoteAddress?.description ?? "?")"])
                out.writeRESPError("NOAUTH cluster bus authentication failed")
                close(context: context)
            }
            return
        }
        let store = cluster.node.store
        switch name.asString {
        case BusCommand.get where args.count == 2:
            store.readVersioned(args[1], now: now) { entry in
                guard let entry else {
                    out.writeRESPArrayHeader(0)
                    return
                }
                out.writeRESPArrayHeader(4)
                out.writeRESPInteger(Int(entry.version.timestamp.rawValue))
                out.writeRESPInteger(Int(entry.version.node.rawValue))
                out.writeRESPInteger(Int(entry.expiry))
                if let value = entry.value { out.writeRESPBulk(value) } else { out.writeRESPNull(resp3: false) }
            }
        case BusCommand.put where args.count == 6:
            guard let version = Self.version(args[2], args[3]), let expiry = args[4].asInteger else {
                out.writeRESPError("ERR malformed RC.PUT")
                return
            }
            // A replica honours maxmemory too: evict first, or refuse (the coordinator counts a failure).
            guard store.makeRoom(now: now) else {
                out.writeRESPError("OOM command not allowed when used memory > 'maxmemory'.")
                return
            }
            let applied = store.applyVersioned(args[1], value: args[5], expiry: Int64(expiry), version: version, now: now,
                                               tombstoneTTL: cluster.tombstoneTTL)
            out.writeRESPInteger(applied ? 1 : 0)
        case BusCommand.delete where args.count == 4:
            guard let version = Self.version(args[2], args[3]) else {
                out.writeRESPError("ERR malformed RC.DEL")
                return
            }
            let existed = store.contains(args[1], now: now)
            store.applyVersioned(args[1], value: nil, expiry: 0, version: version, now: now, tombstoneTTL: cluster.tombstoneTTL)
            out.writeRESPInteger(existed ? 1 : 0)
        case BusCommand.siblingGet where args.count == 2:
            if let set = cluster.siblings.siblings(of: Array(args[1]), store: store, now: now) {
                set.serialized.withUnsafeBytes { out.writeRESPBulk($0) }
            } else {
                out.writeRESPNull(resp3: false)
            }
        case BusCommand.siblingPut where args.count == 3:
            guard let set = SiblingSet(serialized: args[2]) else {
                out.writeRESPError("ERR malformed RC.VPUT")
                return
            }
            guard store.makeRoom(now: now) else {
                out.writeRESPError("OOM command not allowed when used memory > 'maxmemory'.")
                return
            }
            let result = cluster.siblings.apply(Array(args[1]), set, limit: cluster.maxSiblings, store: store, now: now,
                                                tombstoneTTL: cluster.tombstoneTTL)
            out.writeRESPInteger(result.existed ? 1 : 0)
        case BusCommand.count where args.count == 2:
            out.writeRESPInteger(cluster.countOwnedKeys(down: cluster.memberIndices(from: args[1]), now: now))
        case BusCommand.keys where args.count == 3:
            let keys = cluster.ownedKeys(matching: args[1], down: cluster.memberIndices(from: args[2]), now: now)
            out.writeRESPArrayHeader(keys.count)
            for key in keys { key.withUnsafeBytes { out.writeRESPBulk($0) } }
        case BusCommand.scan where args.count == 5:
            guard let cursor = UInt64(args[1].asString), let count = args[2].asInteger, count >= 1 else {
                out.writeRESPError("ERR malformed RC.SCAN")
                return
            }
            let pattern: UnsafeRawBufferPointer? = GlobPattern.matchesEverything(args[3]) ? nil : args[3]
            let (next, keys) = cluster.scanOwned(cursor: cursor, count: count, pattern: pattern, down: cluster.memberIndices(from: args[4]), now: now)
            out.writeRESPArrayHeader(2)
            out.writeRESPBulk(String(next))
            out.writeRESPArrayHeader(keys.count)
            for key in keys { key.withUnsafeBytes { out.writeRESPBulk($0) } }
        case BusCommand.randomKey:
            if let key = store.randomKey(now: now) { key.withUnsafeBytes { out.writeRESPBulk($0) } } else { out.writeRESPNull(resp3: false) }
        case BusCommand.flush:
            store.removeAll()
            cluster.siblings.removeAll()
            out.writeOK()
        case BusCommand.exec where args.count >= 5:
            guard let coordinator, let read = args[1].asInteger, let write = args[2].asInteger, read >= 1, write >= 1 else {
                out.writeRESPError("ERR malformed RC.EXEC")
                return
            }
            let reply = PendingReply()
            waiting.append(reply)
            let command = (3..<args.count).map { Array(args[$0]) }
            coordinator.runHere(command, required: (read, write), now: now) { value in
                var buffer = ByteBuffer()
                value.encode(into: &buffer)
                reply.buffer = buffer
                guard let context = self.context else { return }
                self.drain()
                if self.out.readableBytes > 0 {
                    context.writeAndFlush(self.wrapOutboundOut(self.out), promise: nil)
                    self.out.clear()
                }
            }
        case BusCommand.hint where args.count == 6 || args.count == 7:
            guard let owner = cluster.topology.indexByName[args[1].asString], owner != cluster.selfIndex,
                  let version = Self.version(args[3], args[4]), let expiry = args[5].asInteger
            else {
                out.writeRESPError("ERR malformed RC.HINT")
                return
            }
            let value = VersionedValue(version: version, value: args.count == 7 ? Array(args[6]) : nil, expiry: Int64(expiry))
            if cluster.hints.add(owner: owner, key: Array(args[2]), value: value, now: now) {
                out.writeRESPInteger(1)
            } else {
                out.writeRESPError("ERR hint store full")
            }
        case BusCommand.tree where args.count == 3:
            guard let peer = cluster.topology.indexByName[args[1].asString], args[2].asInteger == ClusterState.antiEntropyBits else {
                out.writeRESPError("ERR malformed RC.TREE")
                return
            }
            let digest = cluster.digest(sharedWith: peer, now: now)
            out.writeRESPArrayHeader(digest.buckets.count)
            for bucket in digest.buckets { out.writeRESPBulk(String(bucket)) }
        case BusCommand.bucket where args.count >= 4:
            guard let peer = cluster.topology.indexByName[args[1].asString], args[2].asInteger == ClusterState.antiEntropyBits else {
                out.writeRESPError("ERR malformed RC.BUCKET")
                return
            }
            let buckets = Set((3..<args.count).compactMap { args[$0].asInteger })
            let entries = cluster.entries(sharedWith: peer, buckets: buckets, now: now)
            out.writeRESPArrayHeader(entries.count * 3)
            for (key, version, _) in entries {
                key.withUnsafeBytes { out.writeRESPBulk($0) }
                out.writeRESPBulk(String(version.timestamp.rawValue))
                out.writeRESPBulk(String(version.node.rawValue))
            }
        case BusCommand.join where args.count == 5:
            guard let port = args[3].asInteger, (1...65535).contains(port), let bus = args[4].asInteger, (1...65535).contains(bus),
                  !args[1].isEmpty, args[1].count <= 255 else {
                out.writeRESPError("ERR malformed RC.JOIN")
                return
            }
            let entry = RingMembership.Entry(name: args[1].asString, host: args[2].asString, port: port, busPort: bus)
            if entry.name == cluster.selfName {
                out.writeRESPError("ERR a member named \(entry.name) is this node")
                return
            }
            if cluster.update({ $0.join(entry) }) != nil {
                logger.info("member joined", metadata: ["member": "\(entry.name)", "address": "\(entry.host):\(entry.port)",
                                                        "epoch": "\(cluster.topology.epoch)"])
                coordinator?.broadcastMembers()
            }
            cluster.encodeMembers().encode(into: &out)
        case BusCommand.members where args.count == 2:
            var request = ByteBuffer(bytes: args[1])
            guard case .array(let items?)? = try? RESPValueParser().parse(&request) else {
                out.writeRESPError("ERR malformed RC.MEMBERS")
                return
            }
            _ = cluster.absorbMembers(items)
            cluster.encodeMembers().encode(into: &out)
        case BusCommand.transfer where args.count >= 2 && (args.count - 2) % 6 == 0:
            var applied = 0
            var bytes = 0
            var at = 2
            while at < args.count {
                guard let version = Self.version(args[at + 1], args[at + 2]), let expiry = args[at + 3].asInteger else {
                    out.writeRESPError("ERR malformed RC.XFER")
                    return
                }
                let hasValue = args[at + 4].elementsEqual("1".utf8)
                let value = VersionedValue(version: version, value: hasValue ? Array(args[at + 5]) : nil, expiry: Int64(expiry))
                if cluster.applyLocally(Array(args[at]), value, now: now) { applied += 1 }
                bytes += args[at].count + args[at + 5].count
                at += 6
            }
            cluster.rebalance.keysReceived.add((args.count - 2) / 6, ordering: .relaxed)
            cluster.rebalance.bytesReceived.add(bytes, ordering: .relaxed)
            out.writeRESPInteger(applied)
        case BusCommand.transferPart where args.count == 9:
            guard let version = Self.version(args[3], args[4]), let expiry = args[5].asInteger, let offset = args[6].asInteger,
                  let total = args[7].asInteger, offset >= 0, total > 0 else {
                out.writeRESPError("ERR malformed RC.XFERPART")
                return
            }
            let key = Array(args[2])
            let (received, complete) = cluster.rebalance.receiveChunk(
                sender: args[1].asString, key: key, version: version, expiry: Int64(expiry), offset: offset, total: total, chunk: args[8], now: now)
            cluster.rebalance.bytesReceived.add(args[8].count, ordering: .relaxed)
            if let complete {
                cluster.applyLocally(key, VersionedValue(version: version, value: complete, expiry: Int64(expiry)), now: now)
                cluster.rebalance.keysReceived.add(1, ordering: .relaxed)
            }
            out.writeRESPInteger(received)
        case BusCommand.transferDone where args.count == 4:
            guard let ring = UInt64(args[1].asString) else {
                out.writeRESPError("ERR malformed RC.XFERDONE")
                return
            }
            cluster.rebalance.markFinished(args[2].asString, ring: ring, covering: ClusterState.decodeCoverage(args[3].asString))
            cluster.checkTransition()
            out.writeOK()
        case "PING":
            out.writeRESPRaw("+PONG\r\n")
        default:
            out.writeRESPError("ERR unknown cluster bus command '\(CommandProcessor.printable(name, limit: 64))'")
        }
    }

    static func version(_ timestamp: UnsafeRawBufferPointer, _ node: UnsafeRawBufferPointer) -> Version? {
        guard let raw = timestamp.asInteger, raw >= 0, let id = node.asInteger, id >= 0, id <= Int(UInt32.max) else { return nil }
        return Version(timestamp: HLCTimestamp(rawValue: UInt64(raw)), node: NodeID(rawValue: UInt32(id)))
    }
}
