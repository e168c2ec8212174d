import CacheStore
import ClusterCore
import ClusterProtocol
import Logging
import NIOCore
import NIOSSL
import Persistence
import RESP

/// Serves one inbound bus connection: the handshake first (``BusHandshakeServer``), then
/// replica reads and writes applied to the local store, answered in order with one flush per
/// read batch. Every request is decoded once by ``BusRequest/decode(_:context:)``; what the
/// connection may do (the handshake's limits, joiners, impersonation, idleness, the replies
/// it may owe) is decided by the pure ``BusSession``, and carried out here.
final class BusHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// How long a connection may take to finish the handshake.
    static let handshakeDeadline = TimeAmount.seconds(3)

    private let cluster: ClusterState
    private let coordinator: Coordinator?
    private let logger: Logger
    private var session = BusSession(limits: .init(maxPendingReplies: BusGuard.maxPendingReplies))
    private var handshakeServer: BusHandshakeServer
    /// The member the handshake proved the connection is (for the per-peer connection count).
    private var authenticatedPeer: String?
    /// The channel is being closed: nothing more is read or written.
    private var closing = false
    /// This node's view of the ring and whether the ring holds the peer, read again only when
    /// the topology changes (not a lock and a name lookup per request).
    private var viewGeneration = -1
    private var view = RingStage(epoch: 0, settled: true)
    private var peerIsMember = false

    private func refreshView(peer: String) {
        let generation = cluster.generation.load(ordering: .acquiring)
        guard generation != viewGeneration else { return }
        viewGeneration = generation
        let topology = cluster.topology
        view = topology.plan.stage
        peerIsMember = topology.indexByName[peer] != nil
    }

    /// Held while the handler is in the pipeline; dropped in `handlerRemoved`.
    private var context: ChannelHandlerContext?
    /// Replies that come later (RC.EXEC, disk); later replies wait behind them, in order.
    private var waiting = CircularBuffer<PendingReply>()
    private var parser = RESPRequestParser()
    private var pending = ByteBuffer()
    private var out = ByteBuffer()
    private var remote = "?"
    private var admitted = false
    private var deadline: Scheduled<Void>?
    /// Checks for silence every half idle timeout: closed after a whole one with no read.
    private var idleCheck: RepeatedTask?
    /// The peer stopped reading our replies: requests wait in `pending` until it reads again.
    private var paused = false

    init(cluster: ClusterState, coordinator: Coordinator?, logger: Logger) {
        self.cluster = cluster
        self.coordinator = coordinator
        self.logger = logger
        self.handshakeServer = BusHandshakeServer(handshake: cluster.handshake, me: cluster.selfName)
        self.parser.limits = RESPLimits(maxBulkLength: cluster.busLimits.maxBulkLength)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        remote = context.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "?"
        guard cluster.busGuard.open() else {
            closing = true
            session.onClosed()
            cluster.busGuard.refuse(.connectionLimit, peer: remote, "too many bus connections; closing a new one", logger: logger, now: wallClockMillis())
            context.close(promise: nil)
            return
        }
        admitted = true
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        deadline = context.eventLoop.scheduleTask(in: Self.handshakeDeadline) {
            handler.value.handshakeExpired()
        }
        let half = TimeAmount.nanoseconds(max(1_000_000, cluster.busIdleTimeout.nanoseconds / 2))
        idleCheck = context.eventLoop.scheduleRepeatedTask(initialDelay: half, delay: half) { _ in
            handler.value.checkIdle()
        }
        context.fireChannelActive()
    }

    /// A connection that read nothing for two checks in a row (an idle timeout) is closed.
    private func checkIdle() {
        guard let context, !closing, let verdict = session.onIdleCheck(timeout: "\(cluster.busIdleTimeout)") else { return }
        _ = carry(verdict, context: context, now: wallClockMillis())
    }

    private func handshakeExpired() {
        guard let context, !closing, let verdict = session.onHandshakeDeadline(after: "\(Self.handshakeDeadline)") else { return }
        _ = carry(verdict, context: context, now: wallClockMillis())
    }

    /// Carries out a verdict of the session; the peer to serve the request for, if it is served.
    private func carry(_ verdict: BusSession.Verdict, context: ChannelHandlerContext, now: Int64) -> String? {
        switch verdict {
        case .serve(let peer):
            return peer
        case .refuse(let message):
            writeInOrder { $0.writeRESPError(message) }
        case .fence(let peer, let message, let pushView):
            cluster.busGuard.count(.staleCoordinator)
            writeInOrder { $0.writeRESPError(message) }
            // The coordinator learns this node's view at once, not at its next push-pull, and tries again.
            if pushView, let index = cluster.topology.indexByName[peer] { coordinator?.exchangeMembers(with: index) }
        case .close(let reason, let reply, let log):
            cluster.busGuard.refuse(Self.guardReason(reason), peer: remote, log, logger: logger, now: now)
            if let reply { out.writeRESPError(reply) }
            close(context: context)
        }
        return nil
    }

    static func guardReason(_ reason: BusSession.CloseReason) -> BusGuard.Reason {
        switch reason {
        case .unauthenticatedOversize: .unauthenticatedOversize
        case .handshakeTimeout: .handshakeTimeout
        case .handshakeRefused: .handshakeRefused
        case .idle: .idle
        case .protocolError: .protocolError
        case .replyQueue: .replyQueue
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        idleCheck?.cancel()
        markClosing()
        context.fireChannelInactive()
    }

    private var isServing: Bool { session.isServing }
    private var isClosing: Bool { closing }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !isClosing else { return }
        var incoming = unwrapInboundIn(data)
        pending.writeBuffer(&incoming)
        if let verdict = session.onRead(buffered: pending.readableBytes) {
            _ = carry(verdict, context: context, now: wallClockMillis())
            return
        }
        if !paused { process(context: context) }
    }

    /// Replies buffered before they are written out mid-batch, so that a batch of small
    /// requests for big values never builds one huge buffer.
    static let flushThreshold = 1024 * 1024

    /// Answers the requests buffered so far, until they run out, the connection closes, or
    /// the peer stops reading (then what is left waits for ``channelWritabilityChanged``).
    private func process(context: ChannelHandlerContext) {
        let now = wallClockMillis()
        var decoding = cluster.decodingContext(now: now)
        while !isClosing {
            if out.readableBytes > Self.flushThreshold {
                flushOut(context: context)
                guard context.channel.isWritable else {
                    paused = true
                    return
                }
            }
            let authenticated = isServing
            let step = pending.withUnsafeReadableBytes { parser.next($0, authenticated: authenticated) }
            switch step {
            case .incomplete:
                pending.discardReadBytes()
                return
            case .skip(let consumed):
                pending.moveReaderIndex(forwardBy: consumed)
            case .error(let error):
                _ = carry(session.onUnparsable(error.message, reply: "ERR \(error.message)"), context: context, now: now)
            case .request(let consumed):
                guard !parser.isInlineRequest else {
                    _ = carry(session.onUnparsable("an inline request", reply: "ERR inline requests are not bus messages"), context: context, now: now)
                    return
                }
                let frame = BusFrame(buffer: pending, parser: parser)
                pending.moveReaderIndex(forwardBy: consumed)
                if session.stage == .handshaking { decoding.members = cluster.topology.indexByName }
                do {
                    let request = try BusRequest.decode(frame, context: decoding)
                    receive(request, now: now, context: context)
                } catch {
                    refuseRequest(error, context: context, now: now)
                }
            }
        }
    }

    /// A request that did not decode: answered with its error in its place; before the
    /// handshake the connection is closed too.
    private func refuseRequest(_ error: BusProtocolError, context: ChannelHandlerContext, now: Int64) {
        let verdict = session.onUndecodable(error.message)
        // Counted after the handshake too (a peer that sends what does not decode is logged).
        if case .refuse = verdict {
            cluster.busGuard.refuse(.protocolError, peer: remote, "refused a request: \(error.message)", logger: logger, now: now)
        }
        _ = carry(verdict, context: context, now: now)
    }

    /// Writes a reply that is ready now, behind any that are still owed.
    private func writeInOrder(_ write: (inout ByteBuffer) -> Void) {
        if waiting.isEmpty {
            write(&out)
        } else {
            var buffer = ByteBuffer()
            write(&buffer)
            waiting.append(PendingReply(buffer: buffer))
        }
    }

    private func receive(_ request: BusRequest, now: Int64, context: ChannelHandlerContext) {
        switch session.stage {
        case .handshaking:
            // Under tls-cluster the name a peer claims must be one its certificate gives.
            let names = cluster.tlsCluster ? peerCertificateNames(context) : nil
            let action = handshakeServer.onRequest(request, serverNonce: BusHandshake.makeNonce()) { name in names?.contains(name) ?? true }
            if case .refuse = action, let names, case .hello(_, let claimed, _) = request, !names.contains(claimed) {
                cluster.busGuard.refuse(.certificateName, peer: remote,
                                        "peer claims to be '\(claimed)', its certificate names \(names.sorted())", logger: logger, now: now)
            }
            handshake(action, context: context, now: now)
        case .serving(let peer, _):
            refreshView(peer: peer)
            let verdict = session.onRequest(request, isMember: peerIsMember, owed: waiting.count, view: view, now: now)
            if let peer = carry(verdict, context: context, now: now) { serve(request, peer: peer, now: now, context: context) }
        case .closed:
            return
        }
    }

    private func peerCertificateNames(_ context: ChannelHandlerContext) -> Set<String> {
        guard let certificate = try? context.pipeline.syncOperations.nioSSL_peerCertificate() else { return [] }
        return TLSContexts.names(of: certificate)
    }

    /// Requests that change what this node holds (or keeps for others).
    static func writes(_ request: BusRequest) -> Bool {
        switch request {
        case .put, .delete, .siblingPut, .hint, .transfer, .transferPart, .flush, .exec: return true
        default: return false
        }
    }

    private func handshake(_ action: BusHandshakeServer.Action, context: ChannelHandlerContext, now: Int64) {
        switch action {
        case .answer(let reply):
            reply.encode(into: &out)
        case .accept(let peer):
            deadline?.cancel()
            guard cluster.busGuard.authenticated(peer) else {
                // No longer unauthenticated, and not counted for the peer: only the total remains.
                cluster.busGuard.closed(peer: nil, wasUnauthenticated: false)
                admitted = false
                cluster.busGuard.refuse(.connectionLimit, peer: "\(peer)@\(remote)", "too many bus connections from one peer", logger: logger, now: now)
                out.writeRESPError("ERR too many bus connections from \(peer)")
                return close(context: context)
            }
            authenticatedPeer = peer
            session.onAuthenticated(peer: peer, member: cluster.topology.indexByName[peer] != nil)
            out.writeRESPRaw("+OK\r\n")
        case .refuse(let message):
            _ = carry(session.onHandshakeRefused(message), context: context, now: now)
        }
    }

    /// An authenticated request: read through from disk first when the key may be there
    /// only, wait for the commit under `persistence-fsync always`, else answer now.
    private func serve(_ request: BusRequest, peer: String, now: Int64, context: ChannelHandlerContext) {
        // A replica whose disk fails acknowledges no write: the coordinator counts a failure.
        if Self.writes(request), let reason = cluster.node.durable?.failureReason {
            return writeInOrder { $0.writeRESPError(DurableTier.misconf(reason)) }
        }
        if let key = Self.singleKey(of: request),
           key.withUnsafeReadableBytes({ cluster.node.needsReadThrough($0, now: now) }) {
            return readThrough(request, key: key, peer: peer)
        }
        if let durable = cluster.node.durable, durable.fsync == .always {
            return handleDurably(request, peer: peer, durable, now: now, context: context)
        }
        if waiting.isEmpty {
            handle(request, peer: peer, now: now, context: context)
        } else {
            let queued = waiting.count
            let saved = out
            out = ByteBuffer()
            handle(request, peer: peer, now: now, context: context)
            if waiting.count == queued { waiting.append(PendingReply(buffer: out)) }
            out = saved
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushOut(context: context)
    }

    /// Stops reading a peer that does not read our replies, and reads again once it does.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        let writable = context.channel.isWritable
        _ = context.channel.setOption(.autoRead, value: writable)
        if writable, paused {
            paused = false
            process(context: context)
            flushOut(context: context)
        }
        if writable { context.read() }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A peer whose certificate is missing, from another CA or out of date never gets past TLS.
        if error is NIOSSLError || error is BoringSSLError, !session.isServing {
            cluster.busGuard.refuse(.tlsRefused, peer: remote, "TLS handshake failed: \(error)", logger: logger, now: wallClockMillis())
        }
        context.close(promise: nil)
    }

    private func flushOut(context: ChannelHandlerContext) {
        guard out.readableBytes > 0 else { return }
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
        out.clear()
        // Only a peer that stopped reading can have this much unwritten: look only then.
        guard !context.channel.isWritable else { return }
        if let buffered = try? context.channel.syncOptions?.getOption(.bufferedWritableBytes), buffered > BusGuard.maxOutputBytes {
            cluster.busGuard.refuse(.outputLimit, peer: remote, "\(buffered) bytes of replies unread; closing", logger: logger, now: wallClockMillis())
            context.close(promise: nil)
        }
    }

    private func close(context: ChannelHandlerContext) {
        deadline?.cancel()
        if !closing {
            context.writeAndFlush(wrapOutboundOut(out), promise: nil)
            out.clear()
        }
        markClosing()
        context.close(promise: nil)
    }

    /// Remembers the peer for the connection count, then stops answering.
    private func markClosing() {
        if admitted {
            cluster.busGuard.closed(peer: authenticatedPeer, wasUnauthenticated: authenticatedPeer == nil)
            admitted = false
        }
        closing = true
        session.onClosed()
    }

    /// `persistence-fsync always`: a write is acknowledged to its coordinator only once the
    /// SQLite batch holding it is committed (a failed commit answers an error).
    private func handleDurably(_ request: BusRequest, peer: String, _ durable: DurableTier, now: Int64, context: ChannelHandlerContext) {
        let before = durable.queuedSequence
        let saved = out
        out = ByteBuffer()
        handle(request, peer: peer, now: now, context: context)
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
    private func drain() {
        while let first = waiting.first, first.write(into: &out) {
            _ = waiting.removeFirst()
        }
    }

    private func flushReady() {
        guard let context, !isClosing else { return }
        drain()
        flushOut(context: context)
    }

    /// The key of a request about one key, which reads or replaces what the node holds.
    static func singleKey(of request: BusRequest) -> ByteBuffer? {
        switch request {
        case .get(let key), .delete(let key, _), .siblingGet(let key), .siblingPut(let key, _): return key
        case .put(let entry): return entry.key
        default: return nil
        }
    }

    /// Loads the key from disk first, then handles the request; its reply keeps its place.
    private func readThrough(_ request: BusRequest, key: ByteBuffer, peer: String) {
        guard let context else { return }
        let reply = PendingReply()
        waiting.append(reply)
        cluster.node.loadFromDisk(Array(key.readableBytesView), on: context.eventLoop) { [self] loaded in
            guard let context = self.context, !isClosing else { return }
            let saved = out
            out = ByteBuffer()
            if loaded {
                handle(request, peer: peer, now: wallClockMillis(), context: context)
            } else {
                out.writeRESPError(DurableTier.readError(cluster.node.durable?.readFailureReason ?? "error"))
            }
            reply.buffer = out
            out = saved
            drain()
            flushOut(context: context)
        }
    }

    /// Answers a request after the handshake: replica reads and writes, keyspace steps,
    /// membership and data moving.
    private func handle(_ request: BusRequest, peer: String, now: Int64, context: ChannelHandlerContext) {
        switch request {
        case .get, .put, .delete, .siblingGet, .siblingPut:
            handleReplica(request, now: now)
        case .count, .keys, .scan, .randomKey, .flush:
            handleKeyspace(request, now: now)
        case .exec(let read, let write, let command):
            forward(command, required: (read, write), now: now)
        case .hint, .tree, .bucket:
            handleRepair(request, peer: peer, now: now)
        case .join, .members, .transferDone:
            handleMembership(request, peer: peer)
        case .transfer, .transferPart:
            handleTransfer(request, peer: peer, now: now)
        case .ping:
            out.writeRESPRaw("+PONG\r\n")
        case .stage:
            out.writeOK()
        case .hello, .prove:
            out.writeRESPError("ERR already authenticated")
        }
    }

    private func handleReplica(_ request: BusRequest, now: Int64) {
        let store = cluster.node.store
        switch request {
        case .get(let key):
            key.withUnsafeReadableBytes { key in
                store.readVersioned(key, now: now) { entry in
                    guard let entry else { return BusReply.encodeAbsent(into: &out) }
                    BusReply.encodeEntry(version: entry.version, expiry: entry.expiry, value: entry.value, into: &out)
                }
            }
        case .put(let entry):
            // A replica honours maxmemory too: evict first, or refuse (the coordinator counts a failure).
            guard store.makeRoom(now: now) else { return out.writeRESPError(Self.outOfMemory) }
            let applied = entry.key.withUnsafeReadableBytes { key in
                (entry.value ?? ByteBuffer()).withUnsafeReadableBytes { value in
                    store.applyVersioned(key, value: value, expiry: entry.expiry, version: entry.version, now: now, tombstoneTTL: cluster.tombstoneTTL)
                }
            }
            BusReply.encodeFlag(applied, into: &out)
        case .delete(let key, let version):
            let existed = key.withUnsafeReadableBytes { key in
                let existed = store.contains(key, now: now)
                store.applyVersioned(key, value: nil, expiry: 0, version: version, now: now, tombstoneTTL: cluster.tombstoneTTL)
                return existed
            }
            BusReply.encodeFlag(existed, into: &out)
        case .siblingGet(let key):
            BusReply.siblings(cluster.siblings.siblings(of: Array(key.readableBytesView), store: store, now: now)).encode(into: &out)
        case .siblingPut(let key, let set):
            guard store.makeRoom(now: now) else { return out.writeRESPError(Self.outOfMemory) }
            let result = cluster.siblings.apply(Array(key.readableBytesView), set, limit: cluster.maxSiblings, store: store, now: now,
                                                tombstoneTTL: cluster.tombstoneTTL)
            BusReply.encodeFlag(result.existed, into: &out)
        default:
            preconditionFailure("\(request.kind) is not a replica request")
        }
    }

    static let outOfMemory = "OOM command not allowed when used memory > 'maxmemory'."

    private func handleKeyspace(_ request: BusRequest, now: Int64) {
        let store = cluster.node.store
        switch request {
        case .count(let down):
            out.writeRESPInteger(cluster.countOwnedKeys(down: cluster.memberIndices(named: down), now: now))
        case .keys(let pattern, let down):
            let keys = pattern.withUnsafeReadableBytes { cluster.ownedKeys(matching: $0, down: cluster.memberIndices(named: down), now: now) }
            BusReply.keys(keys.map { ByteBuffer(bytes: $0) }).encode(into: &out)
        case .scan(let cursor, let count, let pattern, let down):
            let (next, keys) = pattern.withUnsafeReadableBytes { pattern in
                cluster.scanOwned(cursor: cursor, count: count, pattern: GlobPattern.matchesEverything(pattern) ? nil : pattern,
                                  down: cluster.memberIndices(named: down), now: now)
            }
            BusReply.scan(next: next, keys: keys.map { ByteBuffer(bytes: $0) }).encode(into: &out)
        case .randomKey:
            BusReply.key(store.randomKey(now: now).map { ByteBuffer(bytes: $0) }).encode(into: &out)
        case .flush:
            store.removeAll()
            cluster.siblings.removeAll()
            BusReply.ok.encode(into: &out)
        default:
            preconditionFailure("\(request.kind) is not a keyspace request")
        }
    }

    /// RC.EXEC: runs a read-modify-write command here, as its key's first healthy replica.
    private func forward(_ command: [ByteBuffer], required: (read: Int, write: Int), now: Int64) {
        guard let coordinator else { return out.writeRESPError("ERR this node runs no coordinator") }
        let reply = PendingReply()
        waiting.append(reply)
        coordinator.runHere(command.map { Array($0.readableBytesView) }, required: required, now: now) { value in
            var buffer = ByteBuffer()
            BusReply.command(value).encode(into: &buffer)
            reply.buffer = buffer
            self.flushReady()
        }
    }

    private func handleRepair(_ request: BusRequest, peer: String, now: Int64) {
        switch request {
        case .hint(let owner, let entry):
            guard let index = cluster.topology.indexByName[owner], index != cluster.selfIndex else {
                return out.writeRESPError("ERR malformed RC.HINT: the owner is this node")
            }
            let value = VersionedValue(version: entry.version, value: entry.value.map { Array($0.readableBytesView) }, expiry: entry.expiry)
            if cluster.hints.add(owner: index, key: Array(entry.key.readableBytesView), value: value, now: now) {
                BusReply.flag(true).encode(into: &out)
            } else {
                out.writeRESPError("ERR hint store full")
            }
        case .tree(let requester):
            guard let index = cluster.topology.indexByName[requester] else { return out.writeRESPError("NOPERM '\(requester)' is not a member") }
            BusReply.digest(cluster.digest(sharedWith: index, now: now).buckets).encode(into: &out)
        case .bucket(let requester, let buckets):
            guard let index = cluster.topology.indexByName[requester] else { return out.writeRESPError("NOPERM '\(requester)' is not a member") }
            let entries = cluster.entries(sharedWith: index, buckets: Set(buckets), now: now)
            BusReply.versions(entries.map { BusVersionedKey(key: ByteBuffer(bytes: $0.0), version: $0.1) }).encode(into: &out)
        default:
            preconditionFailure("\(request.kind) is not a repair request")
        }
    }

    private func handleMembership(_ request: BusRequest, peer: String) {
        switch request {
        case .join(let entry):
            let now = wallClockMillis()
            guard cluster.topology.indexByName[entry.name] != nil || cluster.busGuard.admitJoin(now: now) else {
                cluster.busGuard.refuse(.joinRefused, peer: peer, "too many new members at once; refusing a join", logger: logger, now: now)
                return out.writeRESPError("ERR too many joins at once; try again later")
            }
            if cluster.update({ $0.join(entry) }) != nil {
                logger.info("member joined", metadata: ["member": "\(entry.name)", "address": "\(entry.host):\(entry.port)",
                                                        "epoch": "\(cluster.topology.epoch)"])
                coordinator?.broadcastMembers()
            }
            BusReply.members(cluster.memberList()).encode(into: &out)
        case .members(let list):
            cluster.absorbMembers(list)
            BusReply.members(cluster.memberList()).encode(into: &out)
        case .transferDone(let ring, let sender, let coverage):
            cluster.rebalance.markFinished(sender, ring: ring, covering: coverage)
            cluster.checkTransition()
            BusReply.ok.encode(into: &out)
        default:
            preconditionFailure("\(request.kind) is not a membership request")
        }
    }

    private func handleTransfer(_ request: BusRequest, peer: String, now: Int64) {
        switch request {
        case .transfer(_, let entries):
            var applied = 0
            var bytes = 0
            for entry in entries {
                let value = VersionedValue(version: entry.version, value: entry.value.map { Array($0.readableBytesView) }, expiry: entry.expiry)
                if cluster.applyLocally(Array(entry.key.readableBytesView), value, now: now) { applied += 1 }
                bytes += entry.key.readableBytes + (entry.value?.readableBytes ?? 0)
            }
            cluster.rebalance.keysReceived.add(entries.count, ordering: .relaxed)
            cluster.rebalance.bytesReceived.add(bytes, ordering: .relaxed)
            BusReply.integer(applied).encode(into: &out)
        case .transferPart(let chunk):
            let key = Array(chunk.key.readableBytesView)
            let outcome = chunk.bytes.withUnsafeReadableBytes { bytes in
                cluster.rebalance.receiveChunk(sender: chunk.sender, key: key, version: chunk.version, expiry: chunk.expiry, offset: chunk.offset,
                                               total: chunk.total, chunk: bytes, now: now, memoryLimit: cluster.node.store.maxMemory)
            }
            guard let (received, complete) = outcome else {
                cluster.busGuard.refuse(.transferRefused, peer: peer, "too many chunked values in progress", logger: logger, now: now)
                return out.writeRESPError("ERR too many chunked transfers in progress; try again later")
            }
            cluster.rebalance.bytesReceived.add(chunk.bytes.readableBytes, ordering: .relaxed)
            if let complete {
                cluster.applyLocally(key, VersionedValue(version: chunk.version, value: complete, expiry: chunk.expiry), now: now)
                cluster.rebalance.keysReceived.add(1, ordering: .relaxed)
            }
            BusReply.integer(received).encode(into: &out)
        default:
            preconditionFailure("\(request.kind) is not a transfer request")
        }
    }
}
