import Logging
import NIOCore
import NIOPosix
import RESP

/// One persistent, pipelined bus connection from an event loop to a peer.
///
/// Requests are written as they come and flushed once per event-loop turn; replies arrive
/// in order and complete the callbacks in order. The link counts as up only once the peer
/// accepted our RC.AUTH; requests made before that wait, and go out after the handshake.
/// A lost connection fails its outstanding requests at once and is re-established with
/// exponential backoff (100 ms doubling to 5 s); while it is down, requests fail fast. A
/// peer that stops answering (its oldest request is far past the request timeout) or lets
/// too many requests pile up is disconnected the same way, so a hung peer cannot make the
/// link's queues grow without bound.
///
/// Confined to its event loop: every method runs there.
final class PeerLink: @unchecked Sendable {
    enum State { case idle, connecting, authenticating, connected, waiting }

    static let maximumOutstanding = 65_536

    let member: Int
    let host: String
    let port: Int
    let eventLoop: any EventLoop
    private let authRequest: RESPValue
    private let logger: Logger
    private(set) var state = State.idle
    private var channel: (any Channel)?
    private var callbacks = CircularBuffer<(sent: NIODeadline, callback: (RESPValue?) -> Void)>()
    /// Requests made while the connection is being set up; sent once the peer accepted us.
    private var queued: [(ByteBuffer, (RESPValue?) -> Void)] = []
    private var flushScheduled = false
    /// Requests of this event-loop turn, not yet written.
    private var outbound = ByteBuffer()
    private var backoff = TimeAmount.milliseconds(100)
    private var stopped = false
    /// Told when the link comes up (+1) or goes down (-1).
    private let linkChanged: @Sendable (Int) -> Void

    init(member: Int, host: String, port: Int, eventLoop: any EventLoop, authRequest: RESPValue, logger: Logger,
         linkChanged: @escaping @Sendable (Int) -> Void) {
        self.member = member
        self.host = host
        self.port = port
        self.eventLoop = eventLoop
        self.authRequest = authRequest
        self.logger = logger
        self.linkChanged = linkChanged
    }

    var isConnected: Bool { state == .connected }

    /// Sends a request; `callback` gets the reply, or nil if the link failed.
    func send(_ request: RESPValue, _ callback: @escaping (RESPValue?) -> Void) {
        send({ request.encode(into: &$0) }, callback)
    }

    /// Sends a request that `encode` writes straight into the outbound buffer.
    func send(_ encode: (inout ByteBuffer) -> Void, _ callback: @escaping (RESPValue?) -> Void) {
        eventLoop.preconditionInEventLoop()
        if state == .waiting { return callback(nil) }
        if state == .connected, channel != nil {
            // The common case: append to this turn's outbound batch, written with one flush.
            guard admit(callback) else { return }
            encode(&outbound)
            scheduleFlush()
            return
        }
        var buffer = ByteBuffer()
        encode(&buffer)
        switch state {
        case .connected:
            write(buffer, callback)
        case .connecting, .authenticating:
            queued.append((buffer, callback))
        case .idle:
            connect()
            queued.append((buffer, callback))
        case .waiting:
            callback(nil)
        }
    }

    private func write(_ buffer: ByteBuffer, _ callback: @escaping (RESPValue?) -> Void) {
        guard admit(callback) else { return }
        var buffer = buffer
        outbound.writeBuffer(&buffer)
        scheduleFlush()
    }

    /// Queues `callback` for the next reply, unless too many are outstanding (then the link
    /// is reset and the callback fails).
    private func admit(_ callback: @escaping (RESPValue?) -> Void) -> Bool {
        guard let channel else {
            callback(nil)
            return false
        }
        guard callbacks.count < Self.maximumOutstanding else {
            logger.warning("cluster bus peer has too many requests outstanding; reconnecting", metadata: ["peer": "\(host):\(port)"])
            callback(nil)
            channel.close(promise: nil)
            return false
        }
        callbacks.append((.now(), callback))
        return true
    }

    /// Writes this turn's requests as one buffer with one flush, once the event loop has run
    /// everything that was ready.
    private func scheduleFlush() {
        guard !flushScheduled else { return }
        flushScheduled = true
        eventLoop.execute { [self] in
            flushScheduled = false
            guard let channel, outbound.readableBytes > 0 else { return }
            channel.writeAndFlush(outbound, promise: nil)
            // Reuses the storage when the socket took it all, as the client handler does.
            outbound.clear()
        }
    }

    func connect() {
        guard state == .idle, !stopped else { return }
        state = .connecting
        let link = self
        ClientBootstrap(group: eventLoop)
            .connectTimeout(.seconds(1))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(PeerLinkHandler(link: link))
                }
            }
            .connect(host: host, port: port)
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    link.connected(channel)
                case .failure:
                    link.retryLater()
                }
            }
    }

    private func connected(_ channel: any Channel) {
        guard !stopped else {
            channel.close(promise: nil)
            return
        }
        self.channel = channel
        state = .authenticating
        var handshake = channel.allocator.buffer(capacity: 64)
        authRequest.encode(into: &handshake)
        write(handshake) { [self] reply in
            guard case .simpleString = reply else {
                logger.error("cluster bus peer refused our RC.AUTH (check cluster-name and cluster-secret)",
                             metadata: ["peer": "\(host):\(port)", "reply": "\(String(describing: reply))"])
                self.channel?.close(promise: nil)
                return
            }
            state = .connected
            backoff = .milliseconds(100)
            linkChanged(1)
            logger.info("cluster bus link up", metadata: ["peer": "\(host):\(port)"])
            let waiting = queued
            queued = []
            for (request, callback) in waiting { write(request, callback) }
        }
    }

    fileprivate func received(_ reply: RESPValue) {
        guard let entry = callbacks.popFirst() else { return }
        entry.callback(reply)
    }

    fileprivate func closed() {
        channel = nil
        outbound.clear()
        if state == .connected { linkChanged(-1) }
        let failed = callbacks
        callbacks.removeAll()
        for entry in failed { entry.callback(nil) }
        retryLater()
    }

    /// Disconnects if the oldest outstanding request was sent before `deadline`.
    func failIfStalled(olderThan deadline: NIODeadline) {
        guard let oldest = callbacks.first, oldest.sent < deadline, let channel else { return }
        logger.warning("cluster bus peer stopped answering; reconnecting", metadata: ["peer": "\(host):\(port)"])
        channel.close(promise: nil)
    }

    private func retryLater() {
        channel = nil
        let waiting = queued
        queued = []
        for (_, callback) in waiting { callback(nil) }
        guard !stopped else { return }
        state = .waiting
        let delay = backoff
        backoff = min(backoff * 2, .seconds(5))
        eventLoop.scheduleTask(in: delay) { [self] in
            if state == .waiting {
                state = .idle
                connect()
            }
        }
    }

    func stop() {
        stopped = true
        channel?.close(promise: nil)
    }
}

/// Reads the peer's replies and hands them to the link in order.
///
/// Replies are parsed straight from the received buffer and handed on at once, and only an
/// incomplete tail is copied: the receive buffer is not kept past `channelRead`, so the
/// event loop can reuse it instead of allocating a new one for every read.
private final class PeerLinkHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let link: PeerLink
    private let parser = RESPValueParser()
    private var tail = ByteBuffer()

    init(link: PeerLink) { self.link = link }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        do {
            if tail.readableBytes == 0 {
                try deliver(&incoming)
                if incoming.readableBytes > 0 { tail.writeBuffer(&incoming) }
            } else {
                tail.writeBuffer(&incoming)
                try deliver(&tail)
                if tail.readableBytes == 0 { tail.clear() } else { tail.discardReadBytes() }
            }
        } catch {
            context.close(promise: nil)
        }
    }

    private func deliver(_ buffer: inout ByteBuffer) throws {
        while let reply = try parser.parse(&buffer) {
            link.received(reply)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        link.closed()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
