import ClusterCore
import Crypto
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// SWIM messages as UDP datagrams, with the cluster's name and, when a `cluster-secret` is
/// set, an HMAC-SHA256 over the whole packet. A packet of another cluster, with a bad MAC,
/// or malformed, is dropped and counted; nothing a packet says can crash the node.
///
/// Layout (big-endian): `RCG1`, cluster name (u8 length + bytes), sender (u8 + bytes), kind
/// (u8: 1 ping, 2 ping-request, 3 ack), sequence (u64), target (u8 + bytes, empty for ping),
/// update count (u8) and per update: name (u8 + bytes), incarnation (u64), status (u8), then
/// the 32-byte MAC when a secret is set.
enum GossipCodec {
    enum Rejection: Error, Equatable { case malformed, foreignCluster, badMAC }

    static let magic: [UInt8] = Array("RCG1".utf8)

    static func encode(_ message: SWIM.Message, from sender: String, cluster: String, key: SymmetricKey?) -> [UInt8] {
        var bytes = magic
        func string(_ text: String) {
            let utf8 = Array(text.utf8.prefix(255))
            bytes.append(UInt8(utf8.count))
            bytes.append(contentsOf: utf8)
        }
        func integer<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) } }
        string(cluster)
        string(sender)
        let (kind, sequence, target, updates): (UInt8, UInt64, String, [SWIM.Member])
        switch message {
        case .ping(let s, let u): (kind, sequence, target, updates) = (1, s, "", u)
        case .pingRequest(let s, let t, let u): (kind, sequence, target, updates) = (2, s, t, u)
        case .ack(let s, let t, let u): (kind, sequence, target, updates) = (3, s, t, u)
        }
        bytes.append(kind)
        integer(sequence)
        string(target)
        let carried = updates.prefix(255)
        bytes.append(UInt8(carried.count))
        for update in carried {
            string(update.name)
            integer(update.incarnation)
            bytes.append(update.status == .alive ? 0 : update.status == .suspect ? 1 : 2)
        }
        if let key { bytes.append(contentsOf: HMAC<SHA256>.authenticationCode(for: bytes, using: key)) }
        return bytes
    }

    static func decode(_ packet: [UInt8], cluster: String, key: SymmetricKey?) throws(Rejection) -> (sender: String, message: SWIM.Message) {
        var body = packet[...]
        if let key {
            guard packet.count > 32 else { throw .malformed }
            body = packet[..<(packet.count - 32)]
            guard HMAC<SHA256>.isValidAuthenticationCode(Array(packet[(packet.count - 32)...]), authenticating: Array(body), using: key) else {
                throw .badMAC
            }
        }
        var at = body.startIndex
        func take(_ count: Int) throws(Rejection) -> ArraySlice<UInt8> {
            guard count >= 0, body.endIndex - at >= count else { throw .malformed }
            defer { at += count }
            return body[at..<(at + count)]
        }
        func string() throws(Rejection) -> String {
            let length = Int(try take(1).first!)
            return String(decoding: try take(length), as: UTF8.self)
        }
        func integer() throws(Rejection) -> UInt64 {
            try take(8).reduce(0) { $0 << 8 | UInt64($1) }
        }
        guard Array(try take(4)) == magic else { throw .malformed }
        guard try string() == cluster else { throw .foreignCluster }
        let sender = try string()
        let kind = try take(1).first!
        let sequence = try integer()
        let target = try string()
        let count = Int(try take(1).first!)
        var updates: [SWIM.Member] = []
        for _ in 0..<count {
            let name = try string()
            let incarnation = try integer()
            let status: SWIM.Status
            switch try take(1).first! {
            case 0: status = .alive
            case 1: status = .suspect
            case 2: status = .dead
            default: throw .malformed
            }
            updates.append(SWIM.Member(name: name, incarnation: incarnation, status: status))
        }
        guard at == body.endIndex, !sender.isEmpty else { throw .malformed }
        switch kind {
        case 1: return (sender, .ping(sequence: sequence, updates: updates))
        case 2: return (sender, .pingRequest(sequence: sequence, target: target, updates: updates))
        case 3: return (sender, .ack(sequence: sequence, target: target, updates: updates))
        default: throw .malformed
        }
    }
}

/// The gossip shell: one UDP socket on the bus port number, the SWIM core behind a lock, its
/// timers on an event loop. Decisions are the core's; this only moves datagrams and timers.
final class GossipService: @unchecked Sendable {
    private let cluster: ClusterState
    private let eventLoop: any EventLoop
    private let logger: Logger
    private let core: Mutex<SWIM.Instance>
    private let key: SymmetricKey?
    /// Where each member's gossip socket is; members join and leave.
    private let addresses: Mutex<[String: SocketAddress]>
    /// Touched on `eventLoop` only.
    private var channel: (any Channel)?
    private let stopped = Atomic<Bool>(false)
    let droppedForMAC = Atomic<Int>(0)
    let droppedMalformed = Atomic<Int>(0)
    let droppedForeign = Atomic<Int>(0)

    init(cluster: ClusterState, settings: SWIM.Settings, eventLoop: any EventLoop, logger: Logger) throws {
        self.cluster = cluster
        self.eventLoop = eventLoop
        self.logger = logger
        let me = cluster.selfName
        var instance = SWIM.Instance(name: me, settings: settings)
        var addresses: [String: SocketAddress] = [:]
        let topology = cluster.topology
        for index in topology.owners where index != cluster.selfIndex {
            let member = topology.members[index]
            _ = instance.add(member.name, announce: false)
            addresses[member.name] = try SocketAddress.makeAddressResolvingHost(member.host, port: member.busPort)
        }
        self.core = Mutex(instance)
        self.addresses = Mutex(addresses)
        self.key = cluster.secret.map { SymmetricKey(data: Array($0.utf8)) }
        cluster.attachGossip(.init(
            view: { [weak self] in self?.view ?? [:] },
            absorb: { [weak self] in self?.absorb($0) },
            drops: { [weak self] in
                (self?.droppedForMAC.load(ordering: .relaxed) ?? 0, self?.droppedForeign.load(ordering: .relaxed) ?? 0,
                 self?.droppedMalformed.load(ordering: .relaxed) ?? 0)
            }))
        cluster.onTopologyChange { [weak self] topology in
            guard let self else { return }
            self.eventLoop.execute { self.sync(topology) }
        }
    }

    /// Probes the members that joined and forgets those that left.
    private func sync(_ topology: Topology) {
        for (index, member) in topology.members.enumerated() where index != cluster.selfIndex {
            if topology.isOwner(index) {
                guard addresses.withLock({ $0[member.name] == nil }),
                      let address = try? SocketAddress.makeAddressResolvingHost(member.host, port: member.busPort) else { continue }
                addresses.withLock { $0[member.name] = address }
                perform(core.withLock { $0.add(member.name, announce: false) })
            } else if addresses.withLock({ $0.removeValue(forKey: member.name) }) != nil {
                core.withLock { $0.remove(member.name) }
                cluster.setStatus(.alive, of: member.name)
            }
        }
    }

    /// Another member's view, from the push-pull over the bus.
    func absorb(_ view: [SWIM.Member]) {
        eventLoop.execute { [self] in perform(core.withLock { $0.absorb(view, now: wallClockMillis()) }) }
    }

    func start(host: String, port: Int) async throws {
        let channel = try await bind(host: host, port: port).get()
        eventLoop.execute { [self] in
            self.channel = channel
            watch(channel, host: host, port: port)
        }
        eventLoop.execute { [self] in
            var random = SystemRandomNumberGenerator()
            perform(core.withLock { $0.onTimer(.probe, now: wallClockMillis(), random: &random) })
        }
    }

    private func bind(host: String, port: Int) -> EventLoopFuture<any Channel> {
        let service = self
        return DatagramBootstrap(group: eventLoop)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(GossipHandler(service: service))
                }
            }
            .bind(host: host, port: port)
    }

    /// NIO closes a datagram socket on some send errors (a network that is unreachable while
    /// a link is down): then gossip would stop for good, so the socket is opened again.
    private func watch(_ channel: any Channel, host: String, port: Int) {
        channel.closeFuture.whenComplete { [self] _ in
            guard !stopped.load(ordering: .relaxed) else { return }
            logger.warning("gossip socket closed; opening it again", metadata: ["address": "\(host):\(port)"])
            reopen(host: host, port: port)
        }
    }

    private func reopen(host: String, port: Int) {
        eventLoop.scheduleTask(in: .milliseconds(200)) { [self] in
            guard !stopped.load(ordering: .relaxed) else { return }
            bind(host: host, port: port).whenComplete { [self] result in
                switch result {
                case .success(let channel):
                    self.channel = channel
                    watch(channel, host: host, port: port)
                case .failure:
                    reopen(host: host, port: port)
                }
            }
        }
    }

    func stop() {
        stopped.store(true, ordering: .relaxed)
        eventLoop.execute { [self] in channel?.close(promise: nil) }
    }

    /// Each member's state as gossip sees it (self included, as alive).
    var view: [String: SWIM.Member] {
        core.withLock { instance in
            var view = instance.members
            view[instance.name] = SWIM.Member(name: instance.name, incarnation: instance.incarnation, status: .alive)
            return view
        }
    }

    fileprivate func received(_ packet: [UInt8]) {
        do {
            let (sender, message) = try GossipCodec.decode(packet, cluster: cluster.clusterName, key: key)
            guard addresses.withLock({ $0[sender] != nil }) else { return }
            perform(core.withLock { $0.onMessage(message, from: sender, now: wallClockMillis()) })
        } catch .badMAC {
            droppedForMAC.add(1, ordering: .relaxed)
        } catch .foreignCluster {
            droppedForeign.add(1, ordering: .relaxed)
        } catch {
            droppedMalformed.add(1, ordering: .relaxed)
        }
    }

    /// Carries out the core's directives, after its lock was released.
    private func perform(_ directives: [SWIM.Directive]) {
        let me = cluster.selfName
        for directive in directives {
            switch directive {
            case .send(let message, let to):
                guard let address = addresses.withLock({ $0[to] }), let channel else { continue }
                let bytes = GossipCodec.encode(message, from: me, cluster: cluster.clusterName, key: key)
                let envelope = AddressedEnvelope(remoteAddress: address, data: channel.allocator.buffer(bytes: bytes))
                channel.writeAndFlush(envelope, promise: nil)
            case .timer(let timer, let at):
                let delay = TimeAmount.milliseconds(max(0, at - wallClockMillis()))
                eventLoop.scheduleTask(in: delay) { [self] in
                    var random = SystemRandomNumberGenerator()
                    perform(core.withLock { $0.onTimer(timer, now: wallClockMillis(), random: &random) })
                }
            case .changed(let member):
                cluster.setStatus(member.status, of: member.name)
                logger.info("member \(member.status)", metadata: ["member": "\(member.name)", "incarnation": "\(member.incarnation)"])
            }
        }
    }
}

private final class GossipHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let service: GossipService

    init(service: GossipService) { self.service = service }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard envelope.data.readableBytes <= 65_507 else { return }
        service.received(Array(envelope.data.readableBytesView))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A datagram error (say, ICMP port unreachable) says nothing the protocol needs.
    }
}
