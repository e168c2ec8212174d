import ClusterCore
import NIOCore
import NIOSSL
import NIOPosix
import RESP
import Synchronization

/// How many replicas a call waits for, overriding the cluster's configured quorum.
public enum Consistency: Sendable, Hashable {
    /// The cluster's `read-quorum` / `write-quorum`.
    case `default`
    case one
    case quorum
    case all
    /// This many replicas (at most the replica count).
    case replicas(Int)

    var wire: String {
        switch self {
        case .default: "DEFAULT"
        case .one: "ONE"
        case .quorum: "QUORUM"
        case .all: "ALL"
        case .replicas(let n): String(max(1, n))
        }
    }
}

/// A cluster-aware, pipelined, fault-tolerant client for a ringcache cluster.
///
/// ```swift
/// let cache = try await RingcacheClient.connect(["127.0.0.1:7001"])
/// try await cache.set("greeting", "hello", ttl: .seconds(60))
/// let greeting = try await cache.getString("greeting")
/// ```
///
/// The client reads the ring from a seed and sends each key straight to the first healthy
/// replica of its preference list. Each node gets a small pool of pipelined connections and a
/// circuit breaker; idempotent calls are retried on another replica when a node fails.
/// Every call takes a ``Consistency``. Safe to share between tasks; call ``close()`` when done.
public final class RingcacheClient: Sendable {
    /// Where requests go.
    public enum Routing: Sendable, Hashable {
        /// Each key to a healthy replica of its own (no extra hop through a coordinator).
        case ringAware
        /// Everything to the first seed that answers, which coordinates (what a plain Redis
        /// client does; the baseline ring-aware routing is measured against).
        case firstSeed
    }

    /// How the client connects, times out, retries and routes; every field has a default.
    public struct Configuration: Sendable {
        /// For `AUTH`, when the nodes have `requirepass`.
        public var username: String?
        /// `AUTH [username] password` on every new connection.
        public var password: String?
        /// Pipelined connections per node.
        public var connectionsPerNode = 2
        /// How long a connect may take.
        public var connectTimeout: Duration = .seconds(1)
        /// A request without a reply by then fails with `.timeout`, and its connection is closed.
        public var requestTimeout: Duration = .seconds(2)
        /// Extra attempts for idempotent calls (and for any call that was never sent).
        public var retries = 2
        /// Waits between attempts of one call.
        public var retryBackoff = Backoff(base: .milliseconds(20), cap: .milliseconds(500))
        /// Waits between failed connects to one node.
        public var reconnectBackoff = Backoff(base: .milliseconds(50), cap: .seconds(2))
        /// Consecutive transport failures that open a node's breaker, and how long it stays open
        /// before one probe may go through.
        public var breakerFailureThreshold = 3
        /// How long an open breaker keeps requests away from its node.
        public var breakerOpenDuration: Duration = .seconds(2)
        /// How often the ring and the members' states are read again (also at once when a
        /// breaker opens).
        public var topologyRefreshInterval: Duration = .seconds(2)
        /// Ring-aware, or everything through the first seed.
        public var routing = Routing.ringAware
        /// The node to favour among a key's replicas (reads and plain writes go to it whenever it
        /// holds the key, so its batches stay large); a random node when nil, so that many
        /// clients spread out. Read-modify-write calls always go to the key's first replica,
        /// which is where the cluster runs them.
        public var preferredNode: String?
        /// The consistency of calls that do not name one.
        public var consistency = Consistency.default
        /// The event loops to run on; the shared NIO singleton when nil.
        public var eventLoopGroup: (any EventLoopGroup)?
        /// TLS to every node; plain TCP when nil.
        public var tls: TLS?
        /// Made from `tls` once, by `connect`.
        var tlsContext: NIOSSLContext?

        public init() {}
    }

    /// The settings the client was connected with.
    public let configuration: Configuration
    private let group: any EventLoopGroup
    private let seeds: [Topology.Node]
    private let state: Mutex<State>
    private let refresher: Mutex<Task<Void, Never>?> = Mutex(nil)

    private struct State {
        var topology: Topology
        var pools: [NodePool]
        /// Index of the favoured node in `topology.nodes`.
        var home: Int32?
        var closed = false
        var refreshRequested = false
    }

    private init(seeds: [Topology.Node], topology: Topology, configuration: Configuration, group: any EventLoopGroup) {
        self.seeds = seeds
        self.configuration = configuration
        self.group = group
        let pools = topology.nodes.map { NodePool(node: $0, settings: configuration, group: group) }
        let home = configuration.preferredNode.flatMap { name in topology.nodes.firstIndex { $0.name == name } }
            ?? Int.random(in: 0..<topology.nodes.count)
        state = Mutex(State(topology: topology, pools: pools, home: Int32(home)))
    }

    /// Connects to a cluster through its seeds (`host:port` each): reads the ring from the first
    /// one that answers, then keeps it current in the background.
    public static func connect(_ seeds: [String], configuration: Configuration = Configuration()) async throws -> RingcacheClient {
        var configuration = configuration
        configuration.tlsContext = try configuration.tls?.makeContext()
        let nodes = try seeds.map { seed throws(RingcacheError) in
            guard let (host, port) = Topology.splitAddress(Substring(seed)) else {
                throw RingcacheError(.connection, "a seed is host:port, not '\(seed)'")
            }
            return Topology.Node(name: seed, host: host, port: port)
        }
        guard !nodes.isEmpty else { throw RingcacheError(.connection, "no seed address given") }
        let group = configuration.eventLoopGroup ?? MultiThreadedEventLoopGroup.singleton
        var lastError = RingcacheError(.connection, "no seed answered")
        for seed in nodes {
            let pool = NodePool(node: seed, settings: configuration, group: group)
            defer { pool.close() }
            do {
                let topology = try await readTopology(through: pool, seed: seed)
                let client = RingcacheClient(
                    seeds: nodes, topology: configuration.routing == .firstSeed ? Topology(single: seed) : topology,
                    configuration: configuration, group: group)
                client.startRefreshing()
                return client
            } catch let failure as TransportFailure {
                lastError = failure.error
            } catch let error as RingcacheError where error.code == .wrongPass || error.code == .noAuth {
                throw error
            } catch let error as RingcacheError {
                lastError = error
            }
        }
        throw lastError
    }

    /// Stops the background refresh and closes every connection. Calls after this fail.
    public func close() async {
        let pools = state.withLock { state in
            state.closed = true
            return state.pools
        }
        let task = refresher.withLock { task in
            defer { task = nil }
            return task
        }
        task?.cancel()
        await task?.value
        for pool in pools { pool.close() }
    }

    /// The cluster as the client last read it.
    public var topology: Topology { state.withLock { $0.topology } }

    /// The topology and the favoured node's index in it.
    var placement: (Topology, Int32?) { state.withLock { ($0.topology, $0.home) } }

    /// A node's circuit breaker, by the name `CLUSTER NODES` gives it.
    public func breaker(of node: String) -> CircuitBreaker? {
        state.withLock { state in state.pools.first { $0.node.name == node } }?.breaker
    }

    // MARK: Topology

    /// Reads `CLUSTER NODES` through `pool`; nil from a node without cluster support (a plain
    /// Redis server).
    private static func readNodes(through pool: NodePool) async throws -> (nodes: [Topology.Node], epoch: UInt64)? {
        let reply = try await pool.send(CommandEncoder.command("CLUSTER", ["NODES"]), consistency: nil)
        if case .error(let message) = reply {
            let text = String(buffer: message)
            if text.hasPrefix("NOAUTH") || text.hasPrefix("WRONGPASS") { throw RingcacheError(reply: text, node: pool.node.name) }
            return nil
        }
        guard let text = reply.string else { throw RingcacheError(.protocol, "CLUSTER NODES did not answer text", node: pool.node.name) }
        return try Topology.parseNodes(text)
    }

    /// Reads the ring through `pool`: its shape (`CLUSTER RING SHAPE`), from which the client
    /// builds the same ring as the servers, or else every run of `CLUSTER RING`.
    private static func readRing(through pool: NodePool, nodes: [Topology.Node], epoch: UInt64) async throws -> Topology {
        let shape = try await pool.send(CommandEncoder.command("CLUSTER", ["RING", "SHAPE"]), consistency: nil)
        if case .error = shape {
            let runs = try await pool.send(CommandEncoder.command("CLUSTER", ["RING"]), consistency: nil)
            return try Topology(nodes: nodes, epoch: epoch, ranges: Topology.parseRing(runs))
        }
        return try Topology(nodes: nodes, shape: Topology.parseShape(shape))
    }

    private static func readTopology(through pool: NodePool, seed: Topology.Node) async throws -> Topology {
        guard let (nodes, epoch) = try await readNodes(through: pool) else { return Topology(single: seed) }
        return try await readRing(through: pool, nodes: nodes, epoch: epoch)
    }

    private func startRefreshing() {
        guard configuration.routing == .ringAware else { return }
        let interval = configuration.topologyRefreshInterval
        let task = Task { [weak self] in
            while !Task.isCancelled {
                // Sleep in short steps so that a breaker opening is acted on within ~50 ms.
                var waited = Duration.zero
                while waited < interval, !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(50))
                    waited += .milliseconds(50)
                    guard let self else { return }
                    if state.withLock({ $0.refreshRequested }) { break }
                }
                guard let self, !Task.isCancelled else { return }
                await self.refresh()
            }
        }
        refresher.withLock { $0 = task }
    }

    /// Reads the members' states again from a node that is up; reads the ring too when the
    /// members or the ring epoch changed.
    public func refresh() async {
        let (pools, current, closed) = state.withLock { state in
            state.refreshRequested = false
            return (state.pools, state.topology, state.closed)
        }
        guard !closed else { return }
        let now = ContinuousClock.now
        for pool in pools.shuffled() where pool.wouldAllow(now: now) {
            guard let (nodes, epoch) = try? await Self.readNodes(through: pool) else { continue }
            if epoch == current.epoch, current.sameMembers(as: nodes) {
                state.withLock { state in
                    if state.topology.epoch == epoch { state.topology.updateStates(from: nodes) }
                }
                return
            }
            guard let fresh = try? await Self.readRing(through: pool, nodes: nodes, epoch: epoch) else { continue }
            install(fresh)
            return
        }
    }

    /// Swaps in a new topology, keeping the pools (connections, breakers) of nodes that stay.
    private func install(_ fresh: Topology) {
        let retired: [NodePool] = state.withLock { state in
            guard !state.closed else { return [] }
            var pools: [NodePool] = []
            for node in fresh.nodes {
                pools.append(state.pools.first { $0.node.name == node.name && $0.node.host == node.host && $0.node.port == node.port }
                    ?? NodePool(node: node, settings: configuration, group: group))
            }
            let kept = Set(pools.map(ObjectIdentifier.init))
            let retired = state.pools.filter { !kept.contains(ObjectIdentifier($0)) }
            let homeName = state.home.map { state.topology.nodes[Int($0)].name }
            state.home = (fresh.nodes.firstIndex { $0.name == homeName } ?? Int.random(in: 0..<fresh.nodes.count)).map(Int32.init)
            state.topology = fresh
            state.pools = pools
            return retired
        }
        for pool in retired { pool.close() }
    }

    // MARK: Sending

    /// Where one request may go.
    enum Route {
        /// A key's ring position: one of its replicas; its first one for a read-modify-write
        /// command (`serialized`), which the cluster runs there.
        case position(UInt64, serialized: Bool)
        /// Any node.
        case any
    }

    static func route(for key: some RingcacheBytes, serialized: Bool = false) -> Route {
        .position(key.withBytes { HashRing.position(of: $0) }, serialized: serialized)
    }

    /// Picks the node for a request: among the key's replicas whose breakers let them through,
    /// that gossip does not call dead and that did not fail this call already, the favoured
    /// node if it is one (not for serialized calls), else the first; failing that, any such
    /// node (every node can coordinate).
    private func choose(_ route: Route, excluding tried: [ObjectIdentifier]) throws(RingcacheError) -> NodePool {
        let now = ContinuousClock.now
        return try state.withLock { state throws(RingcacheError) in
            guard !state.closed else { throw RingcacheError(.shutdown, "the client is closed") }
            func usable(_ index: Int) -> Bool {
                let pool = state.pools[index]
                return state.topology.nodes[index].state != "dead" && !tried.contains(ObjectIdentifier(pool))
                    && pool.allowRequest(now: now)
            }
            if case .position(let position, let serialized) = route {
                let owner = state.topology.withOwners(ofPosition: position) { owners -> Int32? in
                    if !serialized, let home = state.home, owners.contains(home), usable(Int(home)) { return home }
                    return owners.first { usable(Int($0)) }
                }
                if let owner { return state.pools[Int(owner)] }
            }
            let count = state.pools.count
            let start = Int.random(in: 0..<count)
            for offset in 0..<count where usable((start + offset) % count) {
                return state.pools[(start + offset) % count]
            }
            throw RingcacheError(.circuitOpen, "no node can take the request: every breaker is open or every node failed")
        }
    }

    /// Sends one encoded command and returns its reply; error replies are thrown as
    /// ``RingcacheError``. Transport failures are retried on another node if the command is
    /// idempotent or was never sent.
    func execute(_ payload: ByteBuffer, route: Route, idempotent: Bool, consistency: Consistency?) async throws -> RESPValue {
        let level = (consistency ?? configuration.consistency).wire
        var tried: [ObjectIdentifier] = []
        var attempt = 0
        while true {
            let pool: NodePool
            do {
                pool = try choose(route, excluding: tried)
            } catch {
                // Every candidate failed this call already: try the nodes again after a pause.
                guard !tried.isEmpty, attempt < configuration.retries, error.code == .circuitOpen else { throw error }
                tried.removeAll()
                attempt += 1
                try await Task.sleep(for: configuration.retryBackoff.delay(attempt: attempt))
                continue
            }
            do {
                let reply = try await pool.send(payload, consistency: level)
                pool.recordSuccess()
                if case .error(let message) = reply { throw RingcacheError(reply: String(buffer: message), node: pool.node.name) }
                return reply
            } catch let failure as TransportFailure {
                guard failure.error.code != .shutdown else { throw failure.error }
                if pool.recordFailure(now: .now) { state.withLock { $0.refreshRequested = true } }
                guard idempotent || !failure.sent, attempt < configuration.retries else { throw failure.error }
                tried.append(ObjectIdentifier(pool))
                attempt += 1
                if failure.sent { try await Task.sleep(for: configuration.retryBackoff.delay(attempt: attempt - 1)) }
            }
        }
    }
}
