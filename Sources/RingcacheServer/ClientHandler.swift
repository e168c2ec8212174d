import CacheStore
import Logging
import NIOCore
import RESP

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Wall-clock time in Unix milliseconds, read once per read batch.
@inline(__always)
func wallClockMillis() -> Int64 {
    var spec = timespec()
    clock_gettime(CLOCK_REALTIME, &spec)
    return Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000
}

/// What a connection carries from batch to batch; passed `inout` once per batch.
struct ConnectionState {
    var parser: RESPRequestParser
    var session: Session
    var out: ByteBuffer
    /// Replies that wait for an earlier cluster command to answer, in order; empty on a
    /// standalone node, so its replies go straight to `out`.
    var waiting = CircularBuffer<PendingReply>()
    /// Replies written and no longer referenced, kept for the next cluster commands: a
    /// pipelined batch takes no allocation per request for them.
    var spareReplies: [PendingReply] = []
    static let maximumSpareReplies = 256

    /// Why ``run(_:bytes:processor:now:)`` stopped.
    enum Stop {
        /// Every complete request was answered; the rest is an incomplete request.
        case needMoreData
        /// The reply buffer is large: write it before going on.
        case outputFull
        /// A protocol error or QUIT: write the replies, then close.
        case close
        /// Too many cluster replies are outstanding: wait for some before reading on.
        case tooManyWaiting
    }

    /// Cluster replies a connection may have outstanding before its requests wait in the socket.
    static let maximumWaiting = 4096

    static let outputChunk = 1024 * 1024

    /// Parses and answers every complete request in `bytes` under `limits`. Returns the bytes
    /// consumed. Unless the batch stopped for a full reply buffer (it goes on after the write),
    /// what it did is published: the node's command count, the client's last interaction.
    static func run(
        _ state: inout ConnectionState, bytes: UnsafeRawBufferPointer, processor: CommandProcessor, now: Int64, limits: RESPLimits
    ) -> (consumed: Int, stop: Stop) {
        // CONFIG SET of a limit applies to connections already open, from their next batch.
        state.parser.limits = limits
        // The parts go in as separate variables: the parser is read while the session and
        // the reply buffer are written, which on one struct would copy the parser per request.
        let result = run(parser: &state.parser, session: &state.session, out: &state.out, waiting: &state.waiting,
                         spare: &state.spareReplies, bytes: bytes, processor: processor, now: now)
        if result.stop != .outputFull { state.finishBatch(now: now, node: processor.node) }
        return result
    }

    /// Publishes what the batch did: the node's command count (INFO), the client's last
    /// interaction and command (CLIENT LIST, `timeout`). Atomics, no lock: once per batch.
    mutating func finishBatch(now: Int64, node: NodeState) {
        if session.commandsProcessed > 0 {
            node.commandsProcessed.add(session.commandsProcessed, ordering: .relaxed)
            session.commandsProcessed = 0
        }
        session.client.lastInteraction.store(now, ordering: .relaxed)
        if let last = session.lastCommand { session.client.lastCommand.store(last.rawValue &+ 1, ordering: .relaxed) }
    }

    /// A place in the reply order for a command that answers later: a spare reply if there is one.
    private static func deferReply(_ waiting: inout CircularBuffer<PendingReply>, _ spare: inout [PendingReply]) -> PendingReply {
        let reply = spare.popLast() ?? PendingReply()
        waiting.append(reply)
        return reply
    }

    private static func run(
        parser: inout RESPRequestParser, session: inout Session, out: inout ByteBuffer, waiting: inout CircularBuffer<PendingReply>,
        spare: inout [PendingReply], bytes: UnsafeRawBufferPointer, processor: CommandProcessor, now: Int64
    ) -> (consumed: Int, stop: Stop) {
        var offset = 0
        if let barrier = session.barrier {
            // A read-through holds this connection's later requests until it has answered.
            guard barrier.isReady else { return (0, .tooManyWaiting) }
            session.barrier = nil
        }
        while true {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[offset...])
            switch parser.next(rest, authenticated: session.authenticated) {
            case .incomplete:
                return (offset, .needMoreData)
            case .skip(let consumed):
                offset += consumed
            case .error(let error):
                if waiting.isEmpty {
                    out.writeRESPError("ERR \(error.message)")
                } else {
                    var reply = ByteBuffer()
                    reply.writeRESPError("ERR \(error.message)")
                    waiting.append(PendingReply(buffer: reply))
                }
                processor.node.protocolErrors.add(1, ordering: .relaxed)
                return (offset, .close)
            case .request(let consumed):
                parser.withArguments(in: rest) { arguments in
                    // The closures are written out in each call: a closure kept in a variable
                    // got a heap-allocated context, one allocation per request.
                    if waiting.isEmpty {
                        processor.execute(arguments, session: &session, out: &out, now: now) {
                            Self.deferReply(&waiting, &spare)
                        }
                    } else {
                        // An earlier reply is still pending: this one queues behind it.
                        var reply = ByteBuffer()
                        let queued = waiting.count
                        processor.execute(arguments, session: &session, out: &reply, now: now) {
                            Self.deferReply(&waiting, &spare)
                        }
                        if waiting.count == queued { waiting.append(PendingReply(buffer: reply)) }
                    }
                }
                offset += consumed
                if session.closeAfterWrite { return (offset, .close) }
                if session.barrier != nil { return (offset, .tooManyWaiting) }
                if out.readableBytes >= outputChunk { return (offset, .outputFull) }
                if waiting.count >= maximumWaiting { return (offset, .tooManyWaiting) }
            }
        }
    }
}

/// The shell around one client connection: feeds bytes to the parser and the command
/// processor, writes all replies of a read batch with one flush, and applies back-pressure.
///
/// A client that does not read its replies stops being read from (its requests wait in
/// the socket) once its unwritten replies pass the channel's high-water mark, and is closed
/// past `client-output-buffer-limit`.
final class ClientHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var processor: CommandProcessor
    private let coordinator: Coordinator?
    /// Writes this connection's replies at the end of the loop's turn; nil: at once.
    private let flusher: ReplyFlusher?
    /// The flusher holds this handler for the end of the turn.
    private var flushQueued = false
    private let logger: Logger
    /// Where the connection stands: reading, paused (and why), draining, closed.
    private var flow = ConnectionFlow()
    /// Re-entrancy guard: true while a read batch is being processed; replies completed
    /// meanwhile are written when it ends.
    private var processing = false
    /// Held strongly while the handler is in the pipeline (and dropped in `handlerRemoved`):
    /// a weak reference would give the context a side table and make every retain of it slow.
    private var context: ChannelHandlerContext?
    private var state: ConnectionState?
    /// Bytes received but not yet parsed (an incomplete request, or requests held while paused).
    private var pending: ByteBuffer
    /// Re-entrancy guard: true during `context.flush()`, which can fire writability events
    /// synchronously.
    private var flushing = false

    init(node: NodeState, coordinator: Coordinator? = nil, flusher: ReplyFlusher? = nil, logger: Logger) {
        self.processor = CommandProcessor(node: node)
        self.coordinator = coordinator
        self.flusher = flusher
        self.logger = logger
        self.pending = ByteBuffer()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if let coordinator {
            // The router holds this handler until `handlerRemoved` breaks the cycle.
            let router = ClusterRouter(coordinator: coordinator) { self.replyCompleted() }
            processor = CommandProcessor(node: processor.node, cluster: coordinator.cluster, router: router)
        } else if processor.node.durable != nil {
            // Replies that wait on the SQLite tier (read-through, fsync always) complete on
            // this loop; the processor holds this handler until `handlerRemoved`.
            let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
            processor.loop = context.eventLoop
            processor.completed = { handler.value.replyCompleted() }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        processor = CommandProcessor(node: processor.node)
    }

    /// A cluster command has its reply: every reply now in order is written at the end of the
    /// loop's turn, with the others that came in it (a peer's read carries many).
    private func replyCompleted() {
        guard !processing, let context, state != nil else { return }
        guard let flusher else { return repliesReady(context: context) }
        if !flushQueued {
            flushQueued = true
            flusher.deferReplies(self)
        }
    }

    /// Writes every reply that is in order, then decides whether the connection reads again
    /// (or, draining, closes).
    private func repliesReady(context: ChannelHandlerContext) {
        drainWaiting()
        flushReplies(context: context)
        guard let state else { return }
        let held = state.session.barrier.map { !$0.isReady } ?? false
        switch flow.afterReply(waiting: state.waiting.count, maximumWaiting: ConnectionState.maximumWaiting, held: held,
                               writable: context.channel.isWritable) {
        case .closed?: close(context: context)
        case .reading?: resume(context: context)
        case .pausedForOutput?: flow.pause(.pausedForOutput)
        default: break
        }
    }

    private func drainWaiting() {
        guard state != nil else { return }
        while var first = state!.waiting.first, first.write(into: &state!.out) {
            _ = state!.waiting.removeFirst()
            // Kept for reuse only when nothing else holds it (no late answer can reach it).
            if isKnownUniquelyReferenced(&first), state!.spareReplies.count < ConnectionState.maximumSpareReplies {
                first.content = .waiting
                state!.spareReplies.append(first)
            }
        }
    }

    func channelActive(context: ChannelHandlerContext) {
        let node = processor.node
        let now = wallClockMillis()
        node.connectionsReceived.add(1, ordering: .relaxed)
        guard let client = node.clients.register(channel: context.channel, now: now, limit: node.maxClients.load(ordering: .relaxed)) else {
            node.rejectedConnections.add(1, ordering: .relaxed)
            _ = flow.close()
            var buffer = context.channel.allocator.buffer(capacity: 64)
            buffer.writeRESPError("ERR max number of clients reached")
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { _ in channel.close(promise: nil) }
            return
        }
        state = ConnectionState(
            parser: RESPRequestParser(limits: node.limits),
            session: Session(authenticated: !node.passwordRequired.load(ordering: .relaxed), client: client),
            out: context.channel.allocator.buffer(capacity: 16 * 1024)
        )
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let client = state?.session.client {
            processor.node.clients.remove(client.id)
        }
        state = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !flow.isClosing, state != nil else { return }
        var incoming = unwrapInboundIn(data)
        if pending.readableBytes == 0 && flow.isReading {
            process(&incoming, context: context)
            if incoming.readableBytes > 0 && !flow.isClosing {
                pending.clear()
                pending.writeBuffer(&incoming)
            }
        } else {
            pending.writeBuffer(&incoming)
            if flow.isReading { processPending(context: context) }
        }
        if pending.readableBytes > processor.node.maxQueryBuffer.load(ordering: .relaxed) {
            logger.warning("closing client that reached max query buffer length", metadata: ["client": "\(context.remoteAddress?.description ?? "?")"])
            close(context: context)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if let flusher {
            // Written with the other replies of this turn; anything that must write sooner
            // (a full reply buffer, a close, a pause) flushes on its own meanwhile.
            if !flushQueued, state?.out.readableBytes ?? 0 > 0 {
                if flusher.deferFlush(self) { flushQueued = true } else { flushReplies(context: context) }
            }
        } else {
            flushReplies(context: context)
        }
        context.fireChannelReadComplete()
    }

    /// The end of the loop's turn (``ReplyFlusher``): the replies of this turn go out.
    func flushDeferred() {
        flushQueued = false
        guard let context, state != nil else { return }
        if processing {
            flushReplies(context: context)
        } else {
            repliesReady(context: context)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable && flow.resumesWhenWritable() {
            if flushing {
                // Writable again in the middle of our own flush: go on after it returns, so the
                // buffer being flushed is not written a second time.
                context.eventLoop.assumeIsolated().execute {
                    guard let context = self.context, self.flow.resumesWhenWritable(), context.channel.isWritable else { return }
                    self.resume(context: context)
                }
            } else {
                resume(context: context)
            }
        }
        context.fireChannelWritabilityChanged()
    }

    /// Pauses reading until the SQLite tier's queue is below its limit again (checked every
    /// 10 ms): back-pressure instead of a queue that grows without bound.
    private func waitForDisk(context: ChannelHandlerContext) {
        flow.pause(.pausedForDisk)
        processor.node.diskPauses.add(1, ordering: .relaxed)
        context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(10)) {
            guard let context = self.context else { return }
            let congested = self.processor.node.durable?.isCongested == true
            switch self.flow.afterDiskCheck(congested: congested, writable: context.channel.isWritable) {
            case .pausedForDisk?: self.waitForDisk(context: context)
            case .reading?: self.resume(context: context)
            case .pausedForOutput?: self.flow.pause(.pausedForOutput)
            default: break
            }
        }
    }

    /// Goes on with held requests and reads after a pause.
    private func resume(context: ChannelHandlerContext) {
        flow.resume()
        processPending(context: context)
        flushReplies(context: context)
        if flow.takeHeldRead() { context.read() }
    }

    func read(context: ChannelHandlerContext) {
        if flow.readRequested() { context.read() }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("client connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            flushReplies(context: context)
            if state?.waiting.isEmpty == false {
                flow.drain()
            } else {
                close(context: context)
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func processPending(context: ChannelHandlerContext) {
        process(&pending, context: context)
        if pending.readableBytes == 0 {
            if pending.capacity > Self.keptBufferCapacity { pending = ByteBuffer() } else { pending.clear() }
        } else if pending.readerIndex > 64 * 1024 {
            pending.discardReadBytes()
        }
    }

    /// Buffers larger than this are dropped once empty rather than kept at their peak size.
    static let keptBufferCapacity = 1024 * 1024

    /// Answers every complete request in `buffer`, writing out large reply batches as it goes.
    private func process(_ buffer: inout ByteBuffer, context: ChannelHandlerContext) {
        let now = wallClockMillis()
        let processor = self.processor
        let node = processor.node
        let limits = node.limits
        processing = true
        defer {
            processing = false
            // Replies that completed during the batch are written at its end; the close or
            // resume they may allow is decided on the next turn (not re-entrantly).
            if state?.waiting.isEmpty == false || flow.phase == .draining {
                drainWaiting()
                if flusher != nil {
                    replyCompleted()
                } else {
                    context.eventLoop.assumeIsolated().execute { self.replyCompleted() }
                }
            }
        }
        while flow.isReading && state != nil {
            if let durable = node.durable, durable.isCongested {
                // The SQLite writer is behind: requests wait in the socket until it catches up.
                state!.finishBatch(now: now, node: node)
                waitForDisk(context: context)
                return
            }
            let (consumed, stop) = buffer.withUnsafeReadableBytes { bytes in
                ConnectionState.run(&state!, bytes: bytes, processor: processor, now: now, limits: limits)
            }
            buffer.moveReaderIndex(forwardBy: consumed)
            switch stop {
            case .needMoreData:
                return
            case .close:
                flushReplies(context: context)
                if state?.waiting.isEmpty == false {
                    // Earlier cluster replies are still coming: close after they are written.
                    flow.drain()
                } else {
                    close(context: context)
                }
                return
            case .outputFull:
                flushReplies(context: context)
                if state != nil && !context.channel.isWritable {
                    flow.pause(.pausedForOutput)
                    checkOutputLimit(context: context)
                }
            case .tooManyWaiting:
                flow.pause(.pausedForReplies)
            }
        }
    }

    private func flushReplies(context: ChannelHandlerContext) {
        guard state != nil, state!.out.readableBytes > 0 else { return }
        // A failed write closes the channel during flush, and channelInactive clears `state`.
        flushing = true
        context.writeAndFlush(wrapOutboundOut(state!.out), promise: nil)
        flushing = false
        // Usually the socket took every byte during flush, so this reuses the same storage;
        // after a very large reply, give the memory back instead of keeping the peak.
        if let capacity = state?.out.capacity, capacity > Self.keptBufferCapacity {
            state?.out = context.channel.allocator.buffer(capacity: 16 * 1024)
        } else {
            state?.out.clear()
        }
        if state != nil && !context.channel.isWritable { checkOutputLimit(context: context) }
    }

    private func checkOutputLimit(context: ChannelHandlerContext) {
        let limit = processor.node.outputBufferLimit.load(ordering: .relaxed)
        guard limit > 0, let options = context.channel.syncOptions,
            let buffered = try? options.getOption(.bufferedWritableBytes), buffered > limit
        else { return }
        processor.node.clientsClosedForOutput.add(1, ordering: .relaxed)
        logger.warning("closing client over client-output-buffer-limit", metadata: ["buffered": "\(buffered)"])
        close(context: context)
    }

    private func close(context: ChannelHandlerContext) {
        guard flow.close() else { return }
        context.close(promise: nil)
    }
}

