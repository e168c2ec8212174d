import ClusterCore
import ClusterProtocol
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// The gossip shell: one UDP socket on the bus port number, the SWIM core behind a lock, its
/// timers on an event loop. Decisions are the core's; this only moves datagrams and timers.
/// Datagrams are ``GossipPacket``s: a packet of another cluster, with a bad MAC, malformed,
/// from a sender that is not a member, replayed or stale is dropped and counted.
final class GossipService: @unchecked Sendable {
    private let cluster: ClusterState
    private let eventLoop: any EventLoop
    private let logger: Logger
    private let core: Mutex<SWIM.Instance>
    private let keys: GossipPacket.Keys
    /// Stamps of packets sent, and the replay check of packets received.
    private let stamps = Mutex<(sent: GossipStamper, received: GossipReplayGuard)>((GossipStamper(), GossipReplayGuard()))
    /// Where each member's gossip socket is; members join and leave.
    private let addresses: Mutex<[String: SocketAddress]>
    /// Touched on `eventLoop` only.
    private var channel: (any Channel)?
    private let stopped = Atomic<Bool>(false)

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
        self.keys = GossipPacket.Keys(cluster: cluster.clusterName, secrets: cluster.secrets)
        cluster.attachGossip(.init(
            view: { [weak self] in self?.view ?? [:] },
            absorb: { [weak self] in self?.absorb($0) }))
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
                stamps.withLock { $0.received.forget(member.name) }
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

    fileprivate func received(_ packet: [UInt8], from address: String) {
        let guardian = cluster.busGuard
        let now = wallClockMillis()
        do {
            let (sender, stamp, message) = try GossipPacket.decode(packet, cluster: cluster.clusterName, keys: keys)
            guard addresses.withLock({ $0[sender] != nil }) else {
                return guardian.refuse(.gossipUnknownSender, peer: address, "gossip from '\(sender)', not a member", logger: logger, now: now)
            }
            switch stamps.withLock({ $0.received.admit(stamp, from: sender, now: now) }) {
            case .accept: break
            case .replay: return guardian.refuse(.gossipReplay, peer: address, "a replayed gossip packet", logger: logger, now: now)
            case .stale: return guardian.refuse(.gossipStale, peer: address, "a stale gossip packet", logger: logger, now: now)
            }
            perform(core.withLock { $0.onMessage(message, from: sender, now: now) })
        } catch .badMAC {
            guardian.refuse(.gossipBadMAC, peer: address, "a gossip packet with a bad MAC (check cluster-secret)", logger: logger, now: now)
        } catch .foreignCluster {
            guardian.refuse(.gossipForeign, peer: address, "a gossip packet of another cluster", logger: logger, now: now)
        } catch {
            guardian.refuse(.gossipMalformed, peer: address, "a malformed gossip packet", logger: logger, now: now)
        }
    }

    /// Carries out the core's directives, after its lock was released.
    private func perform(_ directives: [SWIM.Directive]) {
        let me = cluster.selfName
        for directive in directives {
            switch directive {
            case .send(let message, let to):
                guard let address = addresses.withLock({ $0[to] }), let channel else { continue }
                let stamp = stamps.withLock { $0.sent.next(now: wallClockMillis()) }
                let bytes = GossipPacket.encode(message, from: me, stamp: stamp, cluster: cluster.clusterName, keys: keys)
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
        guard envelope.data.readableBytes <= GossipPacket.maxLength else { return }
        service.received(Array(envelope.data.readableBytesView), from: envelope.remoteAddress.ipAddress ?? "?")
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A datagram error (say, ICMP port unreachable) says nothing the protocol needs.
    }
}
