import CacheStore
import ClusterCore
import ClusterProtocol
import NIOCore
import RESP
import Synchronization

/// One version of the cluster's shape: the members this node knows (joined or left, in the
/// order it heard of them, so indices stay put), the ring they make, and, while data moves
/// after a join or leave, the ring before it.
final class Topology: Sendable {
    let membership: RingMembership
    let members: [NodeConfiguration.NodeAddress]
    let ring: HashRing
    /// The ring before the latest join or leave, while this node has not yet heard that every
    /// old owner finished sending: reads are served by its replicas, writes go to both.
    let previous: HashRing?
    let indexByName: [String: Int]
    /// Members that hold data: owners of the ring and, while data moves, of the old ring.
    let participants: Set<Int>
    /// Where each key's reads, writes, hints and moving data go (``ReplicaPlan``).
    let plan: ReplicaPlan

    init(membership: RingMembership, vnodes: Int, replicas: Int, previous: HashRing?) {
        self.membership = membership
        self.members = membership.entries.map {
            NodeConfiguration.NodeAddress(name: $0.name, host: $0.host, port: $0.port, busPort: $0.busPort)
        }
        let ring = membership.ring(vnodes: vnodes, replicas: replicas)
        self.ring = ring
        self.previous = previous
        self.plan = ReplicaPlan(ring: ring, previous: previous)
        self.ringID = membership.digest
        self.indexByName = Dictionary(members.enumerated().map { ($0.element.name, $0.offset) }, uniquingKeysWith: { a, _ in a })
        var participants = Set(members.indices.filter { !ring.excluded.contains($0) })
        if let previous { participants.formUnion(previous.members.indices.filter { !previous.excluded.contains($0) }) }
        self.participants = participants
    }

    var epoch: UInt64 { ring.epoch }
    /// The ring's identity (``RingMembership/digest``): what claims about a change are keyed by.
    let ringID: UInt64


    /// The ring reads are served by: the old one while data moves.
    var readRing: HashRing { previous ?? ring }

    /// Indices of the members in the ring (not left).
    var owners: [Int] { members.indices.filter { !ring.excluded.contains($0) } }

    func isOwner(_ member: Int) -> Bool { member < members.count && !ring.excluded.contains(member) }
}

/// What a clustered node knows of the cluster: its members, the ring built from them, and
/// the replication settings. Members join and leave under a growing epoch (``RingMembership``);
/// each change makes a new ``Topology``, which readers take whole.
final class ClusterState: Sendable {
    let node: NodeState
    private let current: Mutex<Topology>
    /// Raised with each new topology, so event loops can tell theirs is stale with one load.
    let generation = Atomic<Int>(0)
    /// This node's index in `members` and in the ring (entries are only appended, so it stays).
    let selfIndex: Int
    let selfName: String
    let clusterName: String
    /// Proves and checks bus handshakes with the cluster secrets.
    let handshake: BusHandshake
    /// Cluster secrets, newest first (gossip MACs use them too).
    let secrets: [String]
    /// `tls-cluster yes`: bus links run on mutual TLS, each peer's certificate naming it.
    let tlsCluster: Bool
    /// What the bus decoders hold received fields to.
    let busLimits: BusLimits
    /// Bus connection limits and refusal counters.
    let busGuard: BusGuard
    /// Seconds a bus connection may stay silent.
    let busIdleTimeout: TimeAmount
    let readQuorum: Int
    let writeQuorum: Int
    let requestTimeout: TimeAmount
    let vnodes: Int
    let configuredReplicas: Int
    let threads: Int
    /// Milliseconds.
    let tombstoneTTL: Int64
    let reconcile: NodeConfiguration.Reconcile
    let maxSiblings: Int
    /// Clocks and siblings of keys, under `reconcile vclock`.
    let siblings = SiblingIndex()
    /// `sloppy-quorum yes`: writes for unreachable replicas go to stand-ins as hints.
    let sloppyQuorum: Bool
    /// Hints this node keeps for other members.
    let hints: HintStore
    /// Data moving after joins and leaves.
    let rebalance: RebalanceState
    var usesVectorClocks: Bool { reconcile == .vclock }
    /// Members gossip declared dead: skipped for routing until they are heard alive again.
    private let statuses = Mutex<[String: SWIM.Status]>([:])
    /// Told of each new topology (the gossip shell adds and drops members to probe).
    private let observers = Mutex<[@Sendable (Topology) -> Void]>([])
    /// The gossip shell's view and merge, for the push-pull over the bus.
    private let gossipHooks = Mutex<GossipHooks?>(nil)
    struct GossipHooks: Sendable {
        var view: @Sendable () -> [String: SWIM.Member]
        var absorb: @Sendable ([SWIM.Member]) -> Void
    }
    /// Called once this node has left the ring and handed its data out: the node stops.
    let whenLeft = Mutex<(@Sendable () -> Void)?>(nil)
    /// Bus links up, over all event loops (each loop links to every peer).
    let linksUp = Atomic<Int>(0)
    /// The digests of what this node shares with each member, from one walk of the store
    /// (``digest(sharedWith:now:)``), while they are fresh enough to answer with.
    let sharedDigests = Mutex<SharedDigests?>(nil)
    /// How long (ms) those digests answer for: half the anti-entropy interval, at most 5 s.
    let digestReuse: Int64

    init(node: NodeState, configuration: NodeConfiguration, membership: RingMembership) {
        self.node = node
        self.vnodes = configuration.vnodes
        self.configuredReplicas = configuration.replicas
        self.threads = configuration.threads
        let topology = Topology(membership: membership, vnodes: configuration.vnodes, replicas: configuration.replicas, previous: nil)
        self.current = Mutex(topology)
        self.selfIndex = topology.indexByName[configuration.nodeName] ?? 0
        self.selfName = configuration.nodeName
        self.clusterName = configuration.clusterName
        self.secrets = configuration.clusterSecrets
        self.tlsCluster = configuration.tlsCluster
        self.handshake = BusHandshake(cluster: configuration.clusterName, secrets: configuration.clusterSecrets)
        self.busLimits = BusLimits(maxBulkLength: configuration.limits.maxBulkLength, replicas: configuration.replicas,
                                   maxSiblings: max(64, configuration.maxSiblings * 4))
        self.busGuard = BusGuard(maxConnections: configuration.clusterBusMaxConnections,
                                 maxPerPeer: 4 * configuration.threads + 8)
        self.busIdleTimeout = .seconds(Int64(configuration.clusterBusIdleTimeout))
        self.readQuorum = configuration.readQuorum
        self.writeQuorum = configuration.writeQuorum
        self.requestTimeout = .milliseconds(Int64(configuration.requestTimeout))
        self.tombstoneTTL = Int64(configuration.tombstoneTTL) * 1000
        self.digestReuse = Int64(min(configuration.antiEntropyInterval / 2, 5_000))
        node.store.expiredTombstoneTTL = Int64(configuration.tombstoneTTL) * 1000
        self.reconcile = configuration.reconcile
        self.maxSiblings = configuration.maxSiblings
        self.sloppyQuorum = configuration.sloppyQuorum
        self.hints = HintStore(limits: .init(count: configuration.hintMaxCount, bytes: configuration.hintMaxBytes,
                                             age: Int64(configuration.hintMaxAge) * 1000,
                                             tombstoneTTL: Int64(configuration.tombstoneTTL) * 1000))
        self.rebalance = RebalanceState(maxBytesPerSecond: configuration.rebalanceMaxBytesPerSec)
    }

    /// The current topology, whole.
    var topology: Topology { current.withLock { $0 } }
    var members: [NodeConfiguration.NodeAddress] { topology.members }
    var ring: HashRing { topology.ring }

    /// Bus links wanted over all event loops: one per loop to every other ring member.
    var linksWanted: Int { max(0, topology.owners.filter { $0 != selfIndex }.count) * threads }

    func attachGossip(_ hooks: GossipHooks) { gossipHooks.withLock { $0 = hooks } }
    func gossipView() -> [String: SWIM.Member] { gossipHooks.withLock { $0 }?.view() ?? [:] }
    func gossipAbsorb(_ members: [SWIM.Member]) { gossipHooks.withLock { $0 }?.absorb(members) }

    func onTopologyChange(_ observer: @escaping @Sendable (Topology) -> Void) {
        observers.withLock { $0.append(observer) }
    }

    /// Takes in a member list another node sent (or a join or leave made here). When the ring
    /// changes, the old ring is kept for reads until the data has moved. Nil if nothing
    /// changed; else the new topology, with the ring before it when the ring changed.
    @discardableResult
    func update(_ change: (inout RingMembership) -> Bool) -> (old: HashRing?, new: Topology)? {
        let result: (old: HashRing?, new: Topology)? = current.withLock { topology in
            var membership = topology.membership
            guard change(&membership), membership != topology.membership else { return nil }
            let old = topology.ring
            let ringChanged = membership.owners.sorted() != topology.membership.owners.sorted()
            // Reads stay with the ring that holds the data: the one from before the first
            // change whose data is still moving.
            var previous = ringChanged ? (topology.previous ?? old) : topology.previous
            if ringChanged, topology.membership.owners == [selfName] {
                // A node that knew only itself is joining: it holds nothing, and the data is
                // where the ring without it puts it.
                var without = membership
                without.leave(selfName)
                let ring = without.ring(vnodes: vnodes, replicas: configuredReplicas)
                previous = ring.owners.isEmpty ? nil : ring
            }
            topology = Topology(membership: membership, vnodes: vnodes, replicas: configuredReplicas, previous: previous)
            return (ringChanged ? old : nil, topology)
        }
        guard let result else { return nil }
        generation.add(1, ordering: .releasing)
        for observer in observers.withLock({ $0 }) { observer(result.new) }
        return result
    }

    /// Every old owner finished sending for this ring: reads move to it.
    func finishTransition(ring: UInt64) {
        let finished = current.withLock { topology -> Topology? in
            guard topology.previous != nil, topology.ringID == ring else { return nil }
            topology = Topology(membership: topology.membership, vnodes: vnodes, replicas: configuredReplicas, previous: nil)
            return topology
        }
        guard let finished else { return }
        generation.add(1, ordering: .releasing)
        for observer in observers.withLock({ $0 }) { observer(finished) }
    }

    func setStatus(_ status: SWIM.Status, of member: String) {
        statuses.withLock { $0[member] = status }
    }

    /// What gossip last said of `member` (alive when nothing was said).
    func status(of member: String) -> SWIM.Status {
        statuses.withLock { $0[member] ?? .alive }
    }

    /// Members gossip declared dead, by index.
    var deadMembers: Set<Int> {
        let dead = statuses.withLock { statuses in Set(statuses.filter { $0.value == .dead }.keys) }
        guard !dead.isEmpty else { return [] }
        let topology = topology
        return Set(dead.compactMap { topology.indexByName[$0] })
    }

    /// `ok` when every link to every peer is up, else `degraded`.
    var stateDescription: String { linksUp.load(ordering: .relaxed) >= linksWanted ? "ok" : "degraded" }

    var replicas: Int { ring.replicas }

    /// The indices of the members named (names travel between nodes, indices do not);
    /// names this node does not know are left out.
    func memberIndices(named names: [String]) -> Set<Int> {
        let topology = topology
        return Set(names.compactMap { topology.indexByName[$0] })
    }

    /// The names of `members`, for another node.
    func memberNames(_ indices: Set<Int>) -> [String] {
        let members = members
        return indices.sorted().filter { $0 < members.count }.map { members[$0].name }
    }

    /// What a decoder checks fields against, now.
    func decodingContext(now: Int64) -> BusDecodingContext {
        BusDecodingContext(limits: busLimits, now: now, members: topology.indexByName)
    }

    /// Stores a replicated version in this node's store if it is newer (last write wins).
    @discardableResult
    func applyLocally(_ key: [UInt8], _ value: VersionedValue, now: Int64) -> Bool {
        let store = node.store
        return key.withUnsafeBytes { k in
            guard let bytes = value.value else {
                return store.applyVersioned(k, value: nil, expiry: 0, version: value.version, now: now, tombstoneTTL: tombstoneTTL)
            }
            return bytes.withUnsafeBytes { v in
                store.applyVersioned(k, value: v, expiry: value.expiry, version: value.version, now: now, tombstoneTTL: tombstoneTTL)
            }
        }
    }

    /// True if this node is the first replica of the key that is not in `down`: the one
    /// copy counted by keyspace-wide commands, so replicas are not counted twice.
    func isFirstLiveReplica(_ key: UnsafeRawBufferPointer, down: Set<Int>, in ring: HashRing) -> Bool {
        ring.withPreferenceList(forPosition: HashRing.position(of: key)) { replicas in
            replicas.first { !down.contains(Int($0)) }.map { Int($0) == selfIndex } ?? false
        }
    }

    func countOwnedKeys(down: Set<Int>, now: Int64) -> Int {
        var count = 0
        let ring = topology.readRing
        node.store.forEachKey(now: now) { key in
            if isFirstLiveReplica(key, down: down, in: ring) { count += 1 }
        }
        return count
    }

    /// One SCAN step over this node's store, keeping the keys it is the first live replica of.
    func scanOwned(cursor: UInt64, count: Int, pattern: UnsafeRawBufferPointer?, down: Set<Int>, now: Int64) -> (next: UInt64, keys: [[UInt8]]) {
        var keys: [[UInt8]] = []
        let ring = topology.readRing
        let next = node.store.scan(cursor: cursor, count: count, now: now) { key in
            if let pattern, !GlobPattern.matches(pattern, key) { return }
            if isFirstLiveReplica(key, down: down, in: ring) { keys.append(Array(key)) }
        }
        return (next, keys)
    }

    func ownedKeys(matching pattern: UnsafeRawBufferPointer, down: Set<Int>, now: Int64) -> [[UInt8]] {
        let everything = GlobPattern.matchesEverything(pattern)
        var keys: [[UInt8]] = []
        let ring = topology.readRing
        node.store.forEachKey(now: now) { key in
            guard everything || GlobPattern.matches(pattern, key), isFirstLiveReplica(key, down: down, in: ring) else { return }
            keys.append(Array(key))
        }
        return keys
    }
}
