import NIOCore
import NIOSSL
import NIOPosix
import RESP

/// One pipelined connection to a node. Requests from any task are written in the order they
/// come and flushed once per event-loop turn; replies arrive in that order and complete them.
///
/// Consistency travels with each request: the connection remembers the level it last set on
/// the server and writes `CONSISTENCY READ x WRITE x` ahead of a request that wants another
/// (its reply is read and dropped), so one connection serves calls of every level.
///
/// A request whose reply is later than the request timeout means the node is stuck: the
/// connection is closed and everything in flight fails, since later replies would wait
/// behind it anyway.
final class Connection: Sendable {
    let channel: any Channel
    let node: String
    private let handler: NIOLoopBound<ConnectionHandler>

    private init(channel: any Channel, node: String, handler: ConnectionHandler) {
        self.channel = channel
        self.node = node
        self.handler = NIOLoopBound(handler, eventLoop: channel.eventLoop)
    }

    var isActive: Bool { channel.isActive }

    /// Sends one encoded command; the future holds its reply, or fails with a
    /// `TransportFailure`.
    func send(_ payload: ByteBuffer, consistency: String? = nil) -> EventLoopFuture<RESPValue> {
        let promise = channel.eventLoop.makePromise(of: RESPValue.self)
        if channel.eventLoop.inEventLoop {
            handler.value.enqueue(payload, consistency: consistency, promise: promise)
        } else {
            let handler = self.handler
            channel.eventLoop.execute { handler.value.enqueue(payload, consistency: consistency, promise: promise) }
        }
        return promise.futureResult
    }

    func close() {
        channel.close(promise: nil)
    }

    /// Connects to `host:port` and, given a password, authenticates before anything else.
    static func connect(
        node: String, host: String, port: Int, group: any EventLoopGroup,
        connectTimeout: Duration, requestTimeout: Duration, username: String?, password: String?,
        tls: (context: NIOSSLContext, settings: RingcacheClient.TLS)? = nil
    ) -> EventLoopFuture<Connection> {
        let timeout = TimeAmount(requestTimeout)
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(TimeAmount(connectTimeout))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(
                            try NIOSSLClientHandler(context: tls.context, serverHostname: tls.settings.hostname(for: host)))
                    }
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(RESPValueDecoder()),
                        ConnectionHandler(node: node, timeout: timeout),
                    ])
                }
            }
        return bootstrap.connect(host: host, port: port)
            .flatMapErrorThrowing { error in
                throw TransportFailure(error: RingcacheError(.connection, "cannot connect to \(host):\(port): \(error)", node: node), sent: false)
            }
            .flatMap { channel in
                channel.pipeline.handler(type: ConnectionHandler.self).map { handler in
                    Connection(channel: channel, node: node, handler: handler)
                }
            }
            .flatMap { connection -> EventLoopFuture<Connection> in
                guard let password else { return connection.channel.eventLoop.makeSucceededFuture(connection) }
                var arguments: [any RingcacheBytes] = [password]
                if let username { arguments.insert(username, at: 0) }
                return connection.send(CommandEncoder.command("AUTH", arguments)).flatMapThrowing { reply in
                    if case .error(let message) = reply {
                        connection.close()
                        throw RingcacheError(reply: String(buffer: message), node: node)
                    }
                    return connection
                }
            }
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}

/// The connection's state, confined to its event loop.
final class ConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = RESPValue
    typealias OutboundOut = ByteBuffer

    private struct Pending {
        /// nil for the reply to a CONSISTENCY the connection sent on its own.
        let promise: EventLoopPromise<RESPValue>?
        let deadline: NIODeadline
    }

    private let node: String
    private let timeout: TimeAmount
    private var context: ChannelHandlerContext?
    private var pending = CircularBuffer<Pending>(initialCapacity: 16)
    /// Requests of this event-loop turn, not yet written.
    private var outbound = ByteBuffer()
    private var flushScheduled = false
    /// The consistency this connection last set on the server.
    private var consistency = "DEFAULT"
    private var failure: RingcacheError?
    private var sweep: RepeatedTask?

    init(node: String, timeout: TimeAmount) {
        self.node = node
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let interval = max(TimeAmount.milliseconds(5), min(.nanoseconds(timeout.nanoseconds / 4), .milliseconds(250)))
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        sweep = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            handler.value.expireOverdue()
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        sweep?.cancel()
        sweep = nil
        fail(RingcacheError(.connection, "connection to \(node) closed", node: node))
        self.context = nil
    }

    func enqueue(_ payload: ByteBuffer, consistency wanted: String?, promise: EventLoopPromise<RESPValue>) {
        guard let context, failure == nil else {
            let error = failure ?? RingcacheError(.connection, "connection to \(node) closed", node: node)
            promise.fail(TransportFailure(error: error, sent: false))
            return
        }
        let deadline = NIODeadline.now() + timeout
        if let wanted, wanted != consistency {
            var command = CommandEncoder(count: 5)
            command.append("CONSISTENCY")
            command.append("READ")
            command.append(wanted)
            command.append("WRITE")
            command.append(wanted)
            outbound.writeImmutableBuffer(command.buffer)
            pending.append(Pending(promise: nil, deadline: deadline))
            consistency = wanted
        }
        outbound.writeImmutableBuffer(payload)
        pending.append(Pending(promise: promise, deadline: deadline))
        guard !flushScheduled else { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute { [self] in
            flushScheduled = false
            guard let context = self.context, outbound.readableBytes > 0 else { return }
            context.writeAndFlush(wrapOutboundOut(outbound), promise: nil)
            outbound = context.channel.allocator.buffer(capacity: 0)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let value = unwrapInboundIn(data)
        if case .push = value { return }
        guard let next = pending.popFirst() else {
            fail(RingcacheError(.protocol, "\(node) sent a reply nobody asked for", node: node))
            context.close(promise: nil)
            return
        }
        next.promise?.succeed(value)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is RESPProtocolError {
            fail(RingcacheError(.protocol, "\(node) broke the protocol: \(error)", node: node))
        } else {
            fail(RingcacheError(.connection, "connection to \(node) failed: \(error)", node: node))
        }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(RingcacheError(.connection, "connection to \(node) closed", node: node))
        context.fireChannelInactive()
    }

    /// Closes the connection if its oldest request is past its deadline.
    private func expireOverdue() {
        guard let oldest = pending.first, oldest.deadline < .now(), let context else { return }
        fail(RingcacheError(.timeout, "\(node) did not answer within \(timeout.nanoseconds / 1_000_000) ms", node: node))
        context.close(promise: nil)
    }

    /// Fails everything in flight; the connection takes no more requests.
    private func fail(_ error: RingcacheError) {
        if failure == nil { failure = error }
        outbound.clear()
        while let next = pending.popFirst() {
            next.promise?.fail(TransportFailure(error: error, sent: true))
        }
    }
}
