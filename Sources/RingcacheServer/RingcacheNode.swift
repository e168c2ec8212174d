import CacheStore
import ClusterCore
import Logging
import NIOCore
import NIOConcurrencyHelpers
import NIOPosix
import NIOSSL
import Persistence
import ServiceLifecycle

/// A running node: the client listener and the periodic work (active expiry, idle
/// clients), as one `Service` that stops gracefully on SIGTERM or SIGINT.
public final class RingcacheNode: Service, Sendable {
    public let state: NodeState
    private let configuration: NodeConfiguration
    private let logger: Logger
    private let boundPort = NIOLockedValueBox<Int?>(nil)

    /// Opens the node's database when it has `persistence sqlite`: a damaged, foreign, locked
    /// or unreadable file stops the start with a message, untouched.
    public init(configuration: NodeConfiguration, logger: Logger) throws(ConfigurationError) {
        self.configuration = configuration
        self.logger = logger
        if configuration.isClustered && configuration.selfAddress == nil {
            throw ConfigurationError("a cluster node needs a `node <name> <host>:<port>` line of its own (choose it with --node)")
        }
        // Certificates and keys first: a bad file stops the start with its line named.
        let tls: TLSContexts?
        do {
            tls = try TLSContexts.make(configuration)
        } catch {
            let directive = String(error.message.prefix { $0 != " " })
            throw ConfigurationError("\(configuration.directiveLines[directive].map { "\($0): " } ?? "")\(error.message)")
        }
        var durable: DurableTier?
        if configuration.persistence {
            do {
                durable = try DurableTier(path: configuration.databasePath, fsync: configuration.persistenceFsync,
                                          queueLimit: configuration.persistenceQueueLimit)
            } catch {
                throw ConfigurationError("persistence: \(error.description)")
            }
        }
        self.state = NodeState(configuration: configuration, now: wallClockMillis(), durable: durable, tls: tls)
    }

    /// The port the listener bound (useful with port 0), once it is listening.
    public var port: Int? { boundPort.withLockedValue { $0 } }

    public func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: configuration.threads)
        let state = self.state
        let logger = self.logger
        if let durable = state.durable {
            durable.start(loadingInto: state.store)
            logger.info("persistence: sqlite", metadata: ["path": "\(durable.path)", "fsync": "\(durable.fsync.rawValue)", "rows": "\(durable.rows.load(ordering: .relaxed))"])
        }
        // In a cluster: the ring from the member list, and a coordinator with its own peer
        // links on every event loop.
        let cluster = configuration.isClustered
            ? ClusterState(node: state, configuration: configuration, membership: RingMembership(configuration.nodes.map {
                RingMembership.Entry(name: $0.name, host: $0.host, port: $0.port, busPort: $0.busPort)
            }))
            : nil
        var coordinators: [ObjectIdentifier: Coordinator] = [:]
        if let cluster {
            for loop in group.makeIterator() {
                coordinators[ObjectIdentifier(loop)] = Coordinator(cluster: cluster, eventLoop: loop, logger: logger)
            }
        }
        let coordinatorByLoop = coordinators
        // One reply flusher per event loop, made on its loop by the first connection there.
        var flusherBoxes: [ObjectIdentifier: NIOLoopBoundBox<ReplyFlusher?>] = [:]
        for loop in group.makeIterator() {
            flusherBoxes[ObjectIdentifier(loop)] = NIOLoopBoundBox.makeEmptyBox(valueType: ReplyFlusher.self, eventLoop: loop)
        }
        let flusherByLoop = flusherBoxes
        let tlsState = state.tls
        func clientBootstrap(tls: Bool) -> ServerBootstrap {
            ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 511)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelOption(.allowRemoteHalfClosure, value: true)
                .childChannelOption(.writeBufferWaterMark, value: .init(low: 32 * 1024, high: 256 * 1024))
                .childChannelOption(.maxMessagesPerRead, value: 4)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let box = flusherByLoop[ObjectIdentifier(channel.eventLoop)]
                        if let box, box.value == nil { box.value = ReplyFlusher(loop: channel.eventLoop) }
                        // The contexts of this moment: CONFIG SET changes those of later connections.
                        if tls, let contexts = tlsState.contexts {
                            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: contexts.clients))
                        }
                        try channel.pipeline.syncOperations.addHandler(
                            ClientHandler(node: state, coordinator: coordinatorByLoop[ObjectIdentifier(channel.eventLoop)],
                                          flusher: box?.value, logger: logger))
                    }
                }
        }
        // Plain TCP on `port` unless `port 0`; TLS on `tls-port`, and in a cluster file with
        // `port 0` on the node line's port.
        var endpoints: [(port: Int, tls: Bool)] = []
        if configuration.clientPortIsTLS {
            endpoints.append((configuration.port, true))
        } else if !configuration.plainPortOff {
            endpoints.append((configuration.port, false))
        }
        if configuration.tlsPort != 0 { endpoints.append((configuration.tlsPort, true)) }
        var listeners: [any Channel] = []
        for endpoint in endpoints {
            do {
                listeners.append(try await clientBootstrap(tls: endpoint.tls).bind(host: configuration.bind, port: endpoint.port).get())
            } catch {
                for listener in listeners { listener.close(promise: nil) }
                try? await group.shutdownGracefully()
                if let durable = state.durable { await durable.stopped() }
                throw ConfigurationError("could not listen\(endpoint.tls ? " for TLS" : "") on \(configuration.bind):\(endpoint.port): \(error)")
            }
        }
        let listener = listeners[0]
        let allListeners = listeners
        let closeListeners: @Sendable () -> Void = { for listener in allListeners { listener.close(promise: nil) } }
        let port = listener.localAddress?.port ?? configuration.port
        boundPort.withLockedValue { $0 = port }
        var busListener: (any Channel)?
        // The background jobs, each a Service of the node's own group (started below).
        var jobs: [PeriodicJob] = []
        var gossip: GossipService?
        if let cluster, let me = configuration.selfAddress {
            do {
                busListener = try await ServerBootstrap(group: group)
                    .serverChannelOption(.backlog, value: 128)
                    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                    .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                    .childChannelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            if let context = tlsState.contexts?.busServer {
                                try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                            }
                            try channel.pipeline.syncOperations.addHandler(BusHandler(cluster: cluster, coordinator: coordinatorByLoop[ObjectIdentifier(channel.eventLoop)], logger: logger))
                        }
                    }
                    .bind(host: configuration.bind, port: me.busPort).get()
            } catch {
                closeListeners()
                try? await group.shutdownGracefully()
                throw ConfigurationError("could not listen for the cluster bus on \(configuration.bind):\(me.busPort): \(error)")
            }
            for coordinator in coordinators.values { coordinator.start() }
            if let replayer = coordinators.values.first {
                // Joins, leaves and push-pull; data moves after each ring change.
                cluster.rebalance.joined.store(configuration.seeds.isEmpty, ordering: .relaxed)
                let seeds = configuration.seeds
                jobs.append(PeriodicJob("membership", on: replayer.eventLoop, every: .seconds(1), after: .milliseconds(100)) {
                    replayer.membershipRound(seeds: seeds)
                })
                cluster.onTopologyChange { topology in
                    replayer.eventLoop.execute {
                        if topology.previous != nil { replayer.startRebalance() } else { replayer.dropUnowned() }
                    }
                }
                cluster.whenLeft.withLock {
                    $0 = {
                        logger.info("left the cluster: every member knows this node's data was sent; stopping")
                        closeListeners()
                    }
                }
                // Hinted handoff: hints kept for others go to their owners once they are back.
                jobs.append(PeriodicJob("hint replay", on: replayer.eventLoop, every: .seconds(1)) { replayer.replayHints() })
                if configuration.antiEntropyInterval > 0 {
                    jobs.append(PeriodicJob("anti-entropy", on: replayer.eventLoop, every: .milliseconds(configuration.antiEntropyInterval)) {
                        replayer.antiEntropyRound()
                    })
                }
            }
            var settings = SWIM.Settings()
            settings.protocolPeriod = Int64(configuration.gossipInterval)
            settings.pingTimeout = Int64(configuration.gossipPingTimeout)
            settings.indirectProbes = configuration.gossipIndirectProbes
            settings.suspicionMultiplier = Double(configuration.gossipSuspicionMultiplier)
            do {
                let service = try GossipService(cluster: cluster, settings: settings, eventLoop: group.next(), logger: logger)
                try await service.start(host: configuration.bind, port: me.busPort)
                gossip = service
            } catch {
                closeListeners()
                busListener?.close(promise: nil)
                try? await group.shutdownGracefully()
                throw ConfigurationError("could not start gossip on udp \(configuration.bind):\(me.busPort): \(error)")
            }
            logger.info(
                "cluster bus listening",
                metadata: ["address": "\(configuration.bind):\(me.busPort)", "members": "\(cluster.members.count)",
                           "replicas": "\(cluster.replicas)", "R": "\(cluster.readQuorum)", "W": "\(cluster.writeQuorum)"])
        }
        logger.info(
            "ringcache \(ringcacheVersion) node '\(configuration.nodeName)' ready to accept connections",
            metadata: ["address": "\(configuration.bind):\(port)", "threads": "\(configuration.threads)",
                       "tls": "\(endpoints.filter(\.tls).map { String($0.port) }.joined(separator: ","))"]
        )

        // Active expiry every tick; idle clients (and under vector clocks the sibling index)
        // once a second.
        let hz = max(1, configuration.hz)
        let ticks = NIOLockedValueBox(0)
        jobs.append(PeriodicJob("expiry", on: group.next(), every: .milliseconds(1000 / hz)) {
            let now = wallClockMillis()
            state.store.expireCycle(now: now)
            let count = ticks.withLockedValue { value -> Int in
                value += 1
                return value
            }
            if count % hz == 0 {
                state.clients.closeIdle(timeout: state.timeoutSeconds.load(ordering: .relaxed), now: now)
                if let cluster, cluster.usesVectorClocks { cluster.siblings.sweep(store: state.store, now: now) }
            }
        })
        let background = ServiceGroup(configuration: .init(services: jobs.map { .init(service: $0) }, logger: logger))
        async let backgroundEnded: Void = background.run()

        await withGracefulShutdownHandler {
            try? await listener.closeFuture.get()
        } onGracefulShutdown: {
            logger.info("shutting down: no longer accepting connections")
            closeListeners()
        }
        await background.triggerGracefulShutdown()
        try? await backgroundEnded
        try? await busListener?.close()
        gossip?.stop()
        for coordinator in coordinators.values { coordinator.stop() }
        // All at once: a TLS connection's close waits a moment for the peer's close_notify.
        let closing = state.clients.all.compactMap { $0.channel?.close() }
        for future in closing { try? await future.get() }
        try await group.shutdownGracefully()
        if let durable = state.durable {
            await durable.stopped()
            logger.info("persistence: queue committed and database closed")
        }
        logger.info("ringcache node '\(configuration.nodeName)' stopped")
    }
}
