import ClusterCore
import ClusterProtocol
import Logging
import NIOCore
import NIOSSL
import NIOPosix
import RESP

/// One persistent, pipelined bus connection from an event loop to a peer.
///
/// Requests are written as they come and flushed once per event-loop turn; replies arrive
/// in order and complete the callbacks in order. The link counts as up only once both sides
/// proved they know the cluster secret (``BusHandshakeClient``); requests made before that
/// wait, and go out after the handshake.
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
    /// The member this link must reach; nil for a seed known only by its address.
    let name: String?
    let host: String
    let port: Int
    let eventLoop: any EventLoop
    fileprivate let cluster: ClusterState
    private let logger: Logger
    /// When the last request was written: an idle link sends PING now and then, so the
    /// peer's idle timeout does not close it.
    private var lastSent = NIODeadline.now()
    /// Well inside the peers' idle timeout (the same `cluster-bus-idle-timeout` everywhere).
    var keepAliveInterval: TimeAmount { min(.seconds(10), .nanoseconds(cluster.busIdleTimeout.nanoseconds / 3)) }
    private(set) var state = State.idle
    private var channel: (any Channel)?
    /// What each request written waits for, in order: a closure, or (the quorum hot path) a
    /// slot of the coordinator's, which costs no allocation.
    private var callbacks = CircularBuffer<Waiter>()
    /// Where slot waiters' answers go; nil for links that carry no quorum operations.
    unowned(unsafe) var slots: Coordinator?
    /// Requests made while the connection is being set up; sent once the peer accepted us.
    private var queued: [(ByteBuffer, (RESPValue?) -> Void)] = []
    private var flushScheduled = false
    /// Requests of this event-loop turn, not yet written.
    private var outbound = ByteBuffer()
    private var backoff = TimeAmount.milliseconds(100)
    private var stopped = false
    /// Told when the link comes up (+1) or goes down (-1).
    private let linkChanged: @Sendable (Int) -> Void
    /// How far the coordinator's view of the ring has got: the peer hears it first thing on
    /// every connection and again at each change, so it can fence requests made with a view
    /// behind its own (``BusSession``).
    private var view: RingStage?
    /// The view when the oldest request waiting for the connection was made: the peer hears
    /// it first, and later views in their place among those requests.
    private var queuedSince: RingStage?

    /// Tells the peer (now, or in order once connected) how far the view has got.
    func announce(_ view: RingStage) {
        guard view != self.view else { return }
        self.view = view
        switch state {
        case .connected:
            send(.stage(view)) { _ in }
        case .connecting where !queued.isEmpty, .authenticating where !queued.isEmpty:
            var buffer = ByteBuffer()
            BusRequest.stage(view).encode(into: &buffer)
            queued.append((buffer, { _ in }))
        default:
            break
        }
    }

    init(member: Int, name: String?, host: String, port: Int, eventLoop: any EventLoop, cluster: ClusterState, logger: Logger,
         linkChanged: @escaping @Sendable (Int) -> Void) {
        self.member = member
        self.name = name
        self.host = host
        self.port = port
        self.eventLoop = eventLoop
        self.cluster = cluster
        self.logger = logger
        self.linkChanged = linkChanged
    }

    var isConnected: Bool { state == .connected }

    /// A request's waiter: its callback, or the coordinator slot its answer goes to.
    struct Waiter {
        var sent: NIODeadline
        var callback: ((RESPValue?) -> Void)?
        var slot = SlotAddress()
        var expects = DirectReply.Kind.flag
    }

    /// The answer `expects` for `slot`'s operation from the replica at `slot.position`.
    struct SlotAddress {
        var index: Int32 = -1
        var generation: UInt32 = 0
        var position: UInt8 = 0
    }

    /// The kind of answer the oldest outstanding request waits for, when it waits in a slot:
    /// its reply is read straight from the bytes.
    var directKind: DirectReply.Kind? {
        guard let first = callbacks.first, first.callback == nil else { return nil }
        return first.expects
    }

    /// Sends a request of the quorum hot path that `encode` writes into this turn's batch; its
    /// answer goes to `slot`. False (nothing sent) when the link is not up.
    func sendDirect(to slot: SlotAddress, expecting kind: DirectReply.Kind, _ encode: (inout ByteBuffer) -> Void) -> Bool {
        guard state == .connected, let channel, slots != nil else { return false }
        guard callbacks.count < Self.maximumOutstanding else {
            logger.warning("cluster bus peer has too many requests outstanding; reconnecting", metadata: ["peer": "\(host):\(port)"])
            channel.close(promise: nil)
            return false
        }
        // The time of this turn's first request (set again at each flush): no clock read per
        // request; the stall check allows twice the request timeout anyway.
        if !flushScheduled { lastSent = .now() }
        callbacks.append(Waiter(sent: lastSent, callback: nil, slot: slot, expects: kind))
        encode(&outbound)
        scheduleFlush()
        return true
    }
    /// Sends a request; `callback` gets the reply decoded for it, or nil if the link failed
    /// or the reply does not answer the request (counted in INFO as a bad reply).
    func send(_ request: BusRequest, _ callback: @escaping (BusReply?) -> Void) {
        let kind = request.kind
        let cluster = cluster
        send({ request.encode(into: &$0) }) { value in
            guard let value else { return callback(nil) }
            do {
                callback(try BusReply.decode(value, answering: kind, context: cluster.decodingContext(now: wallClockMillis())))
            } catch {
                cluster.busGuard.count(.peerReplyError)
                callback(nil)
            }
        }
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
            if queued.isEmpty { queuedSince = view }
            queued.append((buffer, callback))
        case .idle:
            connect()
            if queued.isEmpty { queuedSince = view }
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
        lastSent = .now()
        callbacks.append(Waiter(sent: lastSent, callback: callback))
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
                    // Under tls-cluster: the peer's certificate must chain to the CA; the name
                    // it gives is checked against the member's in the handshake.
                    if let context = link.cluster.node.tls.contexts?.busClient {
                        try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: context, serverHostname: nil))
                    }
                    try channel.pipeline.syncOperations.addHandler(PeerLinkHandler(link: link, maxBulkLength: link.cluster.busLimits.maxBulkLength))
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
        let client = BusHandshakeClient(handshake: cluster.handshake, me: cluster.selfName, expecting: name)
        let context = { [cluster] in cluster.decodingContext(now: wallClockMillis()) }
        var hello = channel.allocator.buffer(capacity: 128)
        client.hello.encode(into: &hello)
        write(hello) { [self] reply in
            let challenge = reply.flatMap { try? BusReply.decode($0, answering: .hello, context: context()) } ?? .error("no answer")
            let names = cluster.tlsCluster ? peerCertificateNames() : nil
            switch client.onChallenge(challenge, certificateNames: names) {
            case .failure(let error):
                logger.error("cluster bus handshake failed (check cluster-name and cluster-secret)",
                             metadata: ["peer": "\(host):\(port)", "reason": "\(error.message)"])
                self.channel?.close(promise: nil)
            case .success(let (_, prove)):
                var buffer = ByteBuffer()
                prove.encode(into: &buffer)
                write(buffer) { [self] reply in
                    guard case .simpleString? = reply else {
                        logger.error("cluster bus peer refused our proof (check cluster-secret)", metadata: ["peer": "\(host):\(port)"])
                        self.channel?.close(promise: nil)
                        return
                    }
                    linkUp()
                }
            }
        }
    }

    private func peerCertificateNames() -> Set<String> {
        guard let certificate = try? channel?.pipeline.syncOperations.nioSSL_peerCertificate() else { return [] }
        return TLSContexts.names(of: certificate)
    }

    private func linkUp() {
        state = .connected
        backoff = .milliseconds(100)
        linkChanged(1)
        logger.info("cluster bus link up", metadata: ["peer": "\(host):\(port)"])
        if let first = queued.isEmpty ? view : queuedSince ?? view {
            var buffer = ByteBuffer()
            BusRequest.stage(first).encode(into: &buffer)
            write(buffer) { _ in }
        }
        queuedSince = nil
        let waiting = queued
        queued = []
        for (request, callback) in waiting { write(request, callback) }
    }

    /// Sends PING on a link that has been quiet for a while.
    func keepAlive(now: NIODeadline) {
        guard state == .connected, callbacks.isEmpty, now - lastSent > keepAliveInterval else { return }
        send(.ping) { _ in }
    }

    fileprivate func received(_ reply: RESPValue) {
        guard let entry = callbacks.popFirst() else { return }
        if case .error(let message) = reply, DirectReply.isStaleView(message) { slots?.staleRefusals += 1 }
        if let callback = entry.callback {
            callback(reply)
        } else {
            // A slot waiter whose answer came in a shape the direct reader was not asked for.
            slots?.slotAnswered(entry.slot, from: member, .malformed)
        }
    }

    /// The oldest request's answer, read straight from its bytes (``directKind``).
    fileprivate func receivedDirect(_ reply: DirectReply) {
        guard let entry = callbacks.popFirst() else { return }
        if case .staleView = reply { slots?.staleRefusals += 1 }
        slots?.slotAnswered(entry.slot, from: member, reply)
    }

    fileprivate func closed() {
        channel = nil
        outbound.clear()
        if state == .connected { linkChanged(-1) }
        let failed = callbacks
        callbacks.removeAll()
        for entry in failed {
            if let callback = entry.callback { callback(nil) } else { slots?.slotFailed(entry.slot, from: member) }
        }
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
/// A reply that arrived whole is parsed at once; the end of one that did not is found by a
/// ``RESPFrameScanner`` that remembers how far it got, so a big reply arriving in many reads
/// is scanned once, and parsed once it is whole. Replies are
/// taken straight from the received buffer, and only an incomplete tail is copied: the
/// receive buffer is not kept past `channelRead`, so the event loop can reuse it.
private final class PeerLinkHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let link: PeerLink
    private let parser: RESPValueParser
    private var scanner: RESPFrameScanner
    private var tail = ByteBuffer()
    private let busLimits: BusLimits

    init(link: PeerLink, maxBulkLength: Int) {
        self.link = link
        self.busLimits = link.cluster.busLimits
        // Replies may list every key a peer holds: no element limit beyond memory.
        let limits = RESPLimits(maxBulkLength: maxBulkLength, maxMultibulkLength: Int(Int32.max))
        self.parser = RESPValueParser(limits: limits)
        self.scanner = RESPFrameScanner(limits: limits)
    }

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

    /// Hands on every whole reply in `buffer`. A reply that is whole is parsed once; one
    /// that is not is scanned (once, as its bytes come) until it is, then parsed.
    private func deliver(_ buffer: inout ByteBuffer) throws {
        var now: Int64?
        while buffer.readableBytes > 0 {
            if let kind = link.directKind {
                // The quorum hot path: the frame's end, then its few fields, no value tree.
                guard let length = try scanner.scan(buffer), var frame = buffer.readSlice(length: length) else { return }
                let time = now ?? wallClockMillis()
                now = time
                link.receivedDirect(DirectReply.read(kind, frame: &frame, limits: busLimits, now: time))
                continue
            }
            if scanner.isIdle, let reply = try parser.parse(&buffer) {
                link.received(reply)
                continue
            }
            guard let length = try scanner.scan(buffer) else { return }
            guard var frame = buffer.readSlice(length: length), let reply = try parser.parse(&frame) else {
                throw RESPProtocolError(.invalidReply, "Protocol error: a reply the scanner and the parser disagree on")
            }
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
