import CacheStore
import ClusterCore
import NIOCore
import RESP
import Synchronization

/// What a clustered node knows of the cluster: its members, the ring built from them, and
/// the replication settings. The member list comes through ``MembershipSource``, which the
/// static `node` lines of cluster.conf feed now and gossip will feed later.
final class ClusterState: Sendable {
    let node: NodeState
    let members: [NodeConfiguration.NodeAddress]
    let ring: HashRing
    /// This node's index in `members` and in the ring.
    let selfIndex: Int
    let clusterName: String
    let secret: String?
    let readQuorum: Int
    let writeQuorum: Int
    let requestTimeout: TimeAmount
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
    var usesVectorClocks: Bool { reconcile == .vclock }
    /// Members gossip declared dead: skipped for routing until they are heard alive again.
    private let statuses = Mutex<[String: SWIM.Status]>([:])
    /// Bus links up, over all event loops (each loop links to every peer).
    let linksUp = Atomic<Int>(0)
    let linksWanted: Int

    init(node: NodeState, configuration: NodeConfiguration, membership: MembershipSource) {
        self.node = node
        let view = membership.currentView
        self.members = view.members
        self.ring = HashRing(members: view.members.map(\.name), vnodes: configuration.vnodes,
                             replicas: configuration.replicas, epoch: view.epoch)
        self.selfIndex = view.members.firstIndex { $0.name == configuration.nodeName } ?? 0
        self.clusterName = configuration.clusterName
        self.secret = configuration.clusterSecret
        self.readQuorum = configuration.readQuorum
        self.writeQuorum = configuration.writeQuorum
        self.requestTimeout = .milliseconds(Int64(configuration.requestTimeout))
        self.tombstoneTTL = Int64(configuration.tombstoneTTL) * 1000
        node.store.expiredTombstoneTTL = Int64(configuration.tombstoneTTL) * 1000
        self.linksWanted = (view.members.count - 1) * configuration.threads
        self.reconcile = configuration.reconcile
        self.maxSiblings = configuration.maxSiblings
        self.sloppyQuorum = configuration.sloppyQuorum
        self.hints = HintStore(limits: .init(count: configuration.hintMaxCount, bytes: configuration.hintMaxBytes,
                                             age: Int64(configuration.hintMaxAge) * 1000))
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
        return Set(members.indices.filter { dead.contains(members[$0].name) })
    }

    /// `ok` when every link to every peer is up, else `degraded`.
    var stateDescription: String { linksUp.load(ordering: .relaxed) >= linksWanted ? "ok" : "degraded" }

    var replicas: Int { ring.replicas }

    /// True if a bus peer presented this cluster's name and secret.
    func authenticate(clusterName: UnsafeRawBufferPointer, secret: UnsafeRawBufferPointer) -> Bool {
        guard clusterName.elementsEqual(self.clusterName.utf8) else { return false }
        guard let expected = self.secret else { return true }
        let given = Array(secret)
        let wanted = Array(expected.utf8)
        var difference = UInt8(given.count == wanted.count ? 0 : 1)
        for i in 0..<given.count { difference |= given[i] ^ (i < wanted.count ? wanted[i] : 0) }
        return difference == 0
    }

    /// The bus handshake a node sends first.
    var authRequest: RESPValue {
        .command([BusCommand.auth, clusterName, secret ?? "", members[selfIndex].name])
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

    /// Member indices from a comma-separated list (empty for none).
    static func members(from bytes: UnsafeRawBufferPointer) -> Set<Int> {
        Set(bytes.asString.split(separator: ",").compactMap { Int($0) })
    }

    /// True if this node is the first replica of the key that is not in `down`: the one
    /// copy counted by keyspace-wide commands, so replicas are not counted twice.
    func isFirstLiveReplica(_ key: UnsafeRawBufferPointer, down: Set<Int>) -> Bool {
        ring.withPreferenceList(forPosition: HashRing.position(of: key)) { replicas in
            replicas.first { !down.contains(Int($0)) }.map { Int($0) == selfIndex } ?? false
        }
    }

    func countOwnedKeys(down: Set<Int>, now: Int64) -> Int {
        var count = 0
        node.store.forEachKey(now: now) { key in
            if isFirstLiveReplica(key, down: down) { count += 1 }
        }
        return count
    }

    /// One SCAN step over this node's store, keeping the keys it is the first live replica of.
    func scanOwned(cursor: UInt64, count: Int, pattern: UnsafeRawBufferPointer?, down: Set<Int>, now: Int64) -> (next: UInt64, keys: [[UInt8]]) {
        var keys: [[UInt8]] = []
        let next = node.store.scan(cursor: cursor, count: count, now: now) { key in
            if let pattern, !GlobPattern.matches(pattern, key) { return }
            if isFirstLiveReplica(key, down: down) { keys.append(Array(key)) }
        }
        return (next, keys)
    }

    func ownedKeys(matching pattern: UnsafeRawBufferPointer, down: Set<Int>, now: Int64) -> [[UInt8]] {
        let everything = GlobPattern.matchesEverything(pattern)
        var keys: [[UInt8]] = []
        node.store.forEachKey(now: now) { key in
            guard everything || GlobPattern.matches(pattern, key), isFirstLiveReplica(key, down: down) else { return }
            keys.append(Array(key))
        }
        return keys
    }
}

/// Where the member list comes from. Now: the `node` lines of cluster.conf; the gossip work
/// will provide a source that changes, under a growing epoch.
protocol MembershipSource: Sendable {
    var currentView: MembershipView { get }
}

struct MembershipView: Sendable {
    var epoch: UInt64
    var members: [NodeConfiguration.NodeAddress]
}

/// The member list as cluster.conf declares it, at epoch 1.
struct StaticMembership: MembershipSource {
    let currentView: MembershipView

    init(configuration: NodeConfiguration) {
        currentView = MembershipView(epoch: 1, members: configuration.nodes)
    }
}
