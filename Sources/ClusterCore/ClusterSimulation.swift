import CacheStore

/// A seeded SplitMix64 generator: every simulated history replays from its seed.
public struct SimulationRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    public mutating func chance(_ probability: Double) -> Bool {
        Double(next() >> 11) / Double(1 << 53) < probability
    }
}

/// A deterministic simulator of quorum replication through ring changes: N-way replicated
/// keys on a set of nodes, clients reading and writing through random coordinators, members
/// joining and leaving mid-history while data moves, and a network that loses, delays,
/// duplicates and reorders messages, while nodes crash (losing their memory, as a cache
/// does), recover and get partitioned. Time is virtual; everything follows the seed.
///
/// It drives the real cores: ``WriteQuorum`` and ``ReadQuorum`` for every operation,
/// ``ReplicaPlan`` for where each goes (the write set while data moves, sloppy-quorum
/// stand-ins), ``RingMembership`` and ``HashRing`` for the rings, ``TransferCoverage`` for
/// when reads may move to the new ring. Each node learns of a join or leave after its own
/// delay (push-pull gossip), so views are stale for a while; ``Rules`` says which placement
/// and rebalancing rules the nodes follow. The checker is ``check()``.
public struct ClusterSimulation {
    /// Which nodes use sloppy quorum (hinted handoff).
    public enum SloppyQuorum: Sendable, Hashable {
        case never, always
        /// Odd seeds: half of the histories.
        case everyOtherSeed
    }

    /// The placement and rebalancing rules the simulated nodes follow: the server's as built,
    /// or the ones this simulator found the guarantee needs (``proposed``).
    public struct Rules: Sendable, Hashable {
        /// Every old replica sends its copy of a key that moves to every member that gains
        /// it (``ReplicaPlan/transferTargets(forPosition:holder:)``). Else only the first
        /// reachable old replica sends (``HashRing/gained(forPosition:from:sender:unreachable:)``),
        /// and live ones take over from old owners that died unfinished.
        public var everyOldReplicaSends: Bool
        /// A transfer waits for a gainer that is down; else it leaves out gainers declared dead.
        public var transfersWaitForDownGainers: Bool
        /// A replica refuses requests from a coordinator at an older ring epoch
        /// (``ReplicaPlan/admits(_:)``), which learns the replica's view (and its claims of
        /// finished transfers) from the refusal. (The server's coordinator then tries again;
        /// that costs availability only, so here a refusal is a failure.)
        public var fencing: Bool
        /// While data moves, reads ask the write set and need R + k answers
        /// (``ReplicaPlan/readSet(forPosition:)``); else they ask the old ring's replicas.
        public var readsAskAddedReplicas: Bool
        /// A stand-in's acknowledgement counts toward W for the replica it stands in for
        /// (Dynamo's sloppy quorum). Such a write is held by W nodes, not W replicas, so a
        /// read may miss it until the hints arrive: the checker lets those reads off and
        /// counts them (``Report/readsOfSloppyWrites``).
        public var hintsCountTowardQuorum: Bool

        public init(everyOldReplicaSends: Bool, transfersWaitForDownGainers: Bool, fencing: Bool, readsAskAddedReplicas: Bool,
                    hintsCountTowardQuorum: Bool) {
            self.everyOldReplicaSends = everyOldReplicaSends
            self.transfersWaitForDownGainers = transfersWaitForDownGainers
            self.fencing = fencing
            self.readsAskAddedReplicas = readsAskAddedReplicas
            self.hintsCountTowardQuorum = hintsCountTowardQuorum
        }

        /// What `Coordinator` and `Rebalance.swift` do: every old replica sends, transfers wait
        /// for gainers that are down, reads ask the added replicas, replicas fence coordinators
        /// an epoch behind, and hints count toward W (`sloppy-quorum yes` trades the read
        /// guarantee for availability, as in Dynamo). `ringcache simulate` runs these.
        public static let asBuilt = Rules(everyOldReplicaSends: true, transfersWaitForDownGainers: true, fencing: true,
                                          readsAskAddedReplicas: true, hintsCountTowardQuorum: true)
        /// The rules before the simulator drove the placement core: one sender per key, with
        /// takeovers, and reads of the old ring alone.
        public static let singleSender = Rules(everyOldReplicaSends: false, transfersWaitForDownGainers: false, fencing: false,
                                               readsAskAddedReplicas: false, hintsCountTowardQuorum: true)
        /// The rules under which no history breaks the guarantee even for writes acknowledged
        /// through stand-ins: hints never count toward W (Cassandra's rule).
        public static let proposed = Rules(everyOldReplicaSends: true, transfersWaitForDownGainers: true, fencing: true,
                                           readsAskAddedReplicas: true, hintsCountTowardQuorum: false)
    }

    public struct Settings: Sendable {
        /// Members at the start.
        public var nodes = 5
        public var replicas = 3
        public var readQuorum = 2
        public var writeQuorum = 2
        public var operations = 150
        public var keys = 4
        public var dropRate = 0.05
        public var duplicateRate = 0.03
        /// Milliseconds; delivery takes 1...maxDelay, so messages reorder.
        public var maxDelay = 20
        public var requestTimeout = 100
        /// Milliseconds between client operations, on average.
        public var operationGap = 5
        public var crashes = 2
        public var partitions = 2
        /// Wall clocks differ by up to this many milliseconds between nodes.
        public var clockSkew = 50
        /// Nodes that join mid-history (beyond `nodes`), and members that leave. One ring
        /// change at a time: the next waits until every live node has settled the last.
        public var joins = 1
        public var leaves = 1
        public var sloppyQuorum = SloppyQuorum.everyOtherSeed
        /// A node hears of a join or leave up to this many milliseconds after it happened
        /// (the member that joins or leaves, and the seed a joiner contacts, at once).
        public var learnDelay = 60
        /// Milliseconds until a crashed node is declared dead.
        public var failureDetection = 40
        /// Milliseconds until a node counts a member a partition cut it off from as unreachable.
        public var linkDetection = 15
        /// Milliseconds between a node's membership rounds: it resends what was not
        /// acknowledged, takes over, replays hints and, after a leave, stops.
        public var roundPeriod = 20
        public var rules = Rules.asBuilt
        /// Keep a line per event in ``Report/trace``.
        public var trace = false
        public init() {}
    }

    public struct Report: Sendable, CustomStringConvertible {
        public var seed: UInt64
        public var sloppyQuorum = false
        public var writesAcknowledged = 0
        public var writesFailed = 0
        public var readsAnswered = 0
        public var readsFailed = 0
        public var repairs = 0
        public var messagesDropped = 0
        public var crashes = 0
        public var joins = 0
        public var leaves = 0
        /// Ring changes every live node settled (reads and writes on the new ring).
        public var ringChangesSettled = 0
        public var transfersFinished = 0
        /// Transfer runs again for old owners that died unfinished (one sender per key only).
        public var takeovers = 0
        /// (key, gainer) copies delivered by transfers.
        public var keysMoved = 0
        public var hintsKept = 0
        public var hintsReplayed = 0
        /// Requests a replica refused because the coordinator's view was behind.
        public var refusals = 0
        /// Reads the checker let off for a write because a copy of it was lost to a crash.
        public var readsExempted = 0
        /// Reads let off for a write acknowledged through stand-ins (hints counted toward W).
        public var readsOfSloppyWrites = 0
        public var violations: [String] = []
        public var trace: [String] = []

        public init(seed: UInt64) { self.seed = seed }

        /// Adds another history's counts (and violations) to these.
        public mutating func add(_ other: Report) {
            sloppyQuorum = sloppyQuorum || other.sloppyQuorum
            writesAcknowledged += other.writesAcknowledged
            writesFailed += other.writesFailed
            readsAnswered += other.readsAnswered
            readsFailed += other.readsFailed
            repairs += other.repairs
            messagesDropped += other.messagesDropped
            crashes += other.crashes
            joins += other.joins
            leaves += other.leaves
            ringChangesSettled += other.ringChangesSettled
            transfersFinished += other.transfersFinished
            takeovers += other.takeovers
            keysMoved += other.keysMoved
            hintsKept += other.hintsKept
            hintsReplayed += other.hintsReplayed
            refusals += other.refusals
            readsExempted += other.readsExempted
            readsOfSloppyWrites += other.readsOfSloppyWrites
            violations += other.violations
        }

        public var description: String {
            "seed \(seed)\(sloppyQuorum ? " (sloppy quorum)" : ""): \(writesAcknowledged) writes acknowledged, \(writesFailed) failed; "
                + "\(readsAnswered) reads answered, \(readsFailed) failed; \(repairs) repairs; \(messagesDropped) messages dropped; "
                + "\(crashes) crashes; \(joins) joins, \(leaves) leaves, \(ringChangesSettled) ring changes settled; "
                + "\(transfersFinished) transfers, \(keysMoved) keys moved, \(takeovers) takeovers; \(hintsKept) hints kept, "
                + "\(hintsReplayed) replayed; \(refusals) refusals; \(readsExempted) reads exempted; \(violations.count) violations"
        }
    }

    enum Payload {
        case write(operation: Int, key: Int, value: VersionedValue, stage: RingStage)
        case writeAck(operation: Int)
        case read(operation: Int, key: Int, stage: RingStage)
        case readReply(operation: Int, value: VersionedValue?)
        /// A replica's answer to a coordinator whose view is behind: its view and claims.
        case refused(operation: Int, view: Int, claims: TransferCoverage)
        case repair(key: Int, value: VersionedValue)
        case hint(operation: Int, owner: Int, key: Int, value: VersionedValue)
        case hintAck(operation: Int, owner: Int)
        case replay(hint: Int, key: Int, value: VersionedValue)
        case replayAck(hint: Int)
        case transfer(run: Int, entry: Int, key: Int, value: VersionedValue)
        case transferAck(run: Int, entry: Int)
        /// `member` finished sending for the change to `change`, covering `covering`.
        case finished(change: Int, member: Int, covering: Set<String>?)
        case finishedAck(change: Int)
    }

    enum Event {
        case deliver(from: Int, to: Int, payload: Payload)
        case timeout(operation: Int)
        case client
        case crash
        case recover(node: Int)
        case partition(side: Set<Int>)
        case heal
        case join
        case leave
        case learn(node: Int, change: Int)
        case round(node: Int)
    }

    enum Life {
        /// Not a member yet (a node that joins later).
        case waiting
        case up
        case down
        /// Left the ring, sent its data and stopped.
        case gone
    }

    struct Hint {
        let owner: Int
        let key: Int
        let value: VersionedValue
    }

    struct TransferEntry {
        let target: Int
        let key: Int
        let value: VersionedValue
    }

    /// One run of a node sending, for the change to `change`, the keys others gain.
    struct Transfer {
        let id: Int
        let change: Int
        /// Entries not acknowledged yet, by entry id; resent every round.
        var outstanding: [Int: TransferEntry]
        /// What the run claims to cover when it finishes (``TransferCoverage``).
        let covering: Set<String>?
    }

    struct Node {
        let name: String
        var life = Life.waiting
        var store: [Int: VersionedValue] = [:]
        /// Hints this node keeps for others, by hint id.
        var hints: [Int: Hint] = [:]
        var clock = HybridLogicalClock()
        var skew: Int64 = 0
        /// Bumped on every restart, so replies meant for an earlier life are ignored.
        var incarnation = 0
        var downSince: Int64 = 0
        /// The membership this node knows (an index into `changes`) and, while its data
        /// moves, the one before the latest change.
        var view = 0
        var previous: Int?
        var plan: ReplicaPlan
        /// Claims of members that finished sending, by change.
        var claims: [Int: TransferCoverage] = [:]
        var transfer: Transfer?
        /// Own claims not yet acknowledged: change → (covering, members still to tell).
        var announcing: [Int: (covering: Set<String>?, to: Set<Int>)] = [:]
        var leaving = false
    }

    /// A membership after a join or leave, and its ring.
    struct Change {
        let membership: RingMembership
        let ring: HashRing
    }

    enum Pending {
        case write(WriteQuorum, key: Int, value: VersionedValue)
        case read(ReadQuorum<VersionedValue>, key: Int)
    }

    struct Operation {
        var coordinator: Int
        var incarnation: Int
        var startedAt: Int64
        var stage: RingStage
        var pending: Pending
        /// Replicas whose acknowledgement came from a stand-in.
        var hinted: Set<Int> = []
    }

    struct AcknowledgedWrite {
        let key: Int
        let version: Version
        let startedAt: Int64
        let at: Int64
        let coordinator: Int
        let stage: RingStage
        let by: Set<Int>
        /// Some of `by` acknowledged through a stand-in's hint (sloppy quorum).
        let throughHints: Bool
    }

    struct AnsweredRead {
        let key: Int
        let startedAt: Int64
        let endedAt: Int64
        let result: VersionedValue?
        let coordinator: Int
        let stage: RingStage
        let asked: [Int]
    }

    /// A copy that a crash took: the node held this version of the key (or its hint) then.
    struct LostCopy {
        let key: Int
        let version: Version
        let at: Int64
    }

    public let settings: Settings
    public let seed: UInt64
    let sloppy: Bool
    var random: SimulationRandom
    var now: Int64 = 0
    /// No rounds, joins or leaves after this.
    var end: Int64 = 0
    var queue = SimulationQueue<Event>()
    var nodes: [Node]
    var changes: [Change]
    /// The ring position of each key.
    let positions: [UInt64]
    var operations: [Int: Operation] = [:]
    var nextOperation = 0
    /// Ids for hints, transfer runs and their entries.
    var nextID = 0
    var clientOperationsLeft: Int
    var cutOff: Set<Int> = []
    var partitionedAt: Int64 = 0
    var settledChanges = 0
    var writes: [AcknowledgedWrite] = []
    var reads: [AnsweredRead] = []
    var lostCopies: [LostCopy] = []
    var report: Report
    let traceLog: TraceLog?

    public init(seed: UInt64, settings: Settings = Settings()) {
        self.seed = seed
        self.settings = settings
        self.random = SimulationRandom(seed: seed)
        self.sloppy = switch settings.sloppyQuorum {
        case .never: false
        case .always: true
        case .everyOtherSeed: seed % 2 == 1
        }
        let names = (0..<(settings.nodes + settings.joins)).map { "sim\($0)" }
        let initial = RingMembership(names.prefix(settings.nodes).map { RingMembership.Entry(name: $0, host: "sim", port: 0, busPort: 0) })
        let ring = initial.ring(vnodes: 1, replicas: settings.replicas)
        self.changes = [Change(membership: initial, ring: ring)]
        self.nodes = names.map { Node(name: $0, plan: ReplicaPlan(ring: ring)) }
        self.positions = (0..<settings.keys).map { key in Array("key\(key)".utf8).withUnsafeBytes { HashRing.position(of: $0) } }
        self.clientOperationsLeft = settings.operations
        self.report = Report(seed: seed)
        self.traceLog = settings.trace ? TraceLog() : nil
        report.sloppyQuorum = sloppy
        for node in nodes.indices {
            nodes[node].skew = Int64.random(in: -Int64(settings.clockSkew)...Int64(settings.clockSkew), using: &random)
            if node < settings.nodes { nodes[node].life = .up }
        }
    }

    /// Runs the whole history and checks it.
    public mutating func run() -> Report {
        let span = Int64(settings.operations * settings.operationGap)
        end = span + 1_000
        schedule(.client, after: 0)
        for node in nodes.indices where nodes[node].life == .up {
            schedule(.round(node: node), after: Int64.random(in: 1...Int64(settings.roundPeriod), using: &random))
        }
        for _ in 0..<settings.crashes { schedule(.crash, after: Int64.random(in: 0...span, using: &random)) }
        for _ in 0..<settings.partitions {
            let at = Int64.random(in: 0...span, using: &random)
            var side = Set<Int>()
            for node in nodes.indices where random.chance(0.4) { side.insert(node) }
            schedule(.partition(side: side), after: at)
            schedule(.heal, after: at + Int64.random(in: 10...200, using: &random))
        }
        for _ in 0..<settings.joins { schedule(.join, after: Int64.random(in: 0...span, using: &random)) }
        for _ in 0..<settings.leaves { schedule(.leave, after: Int64.random(in: 0...span, using: &random)) }
        while let (time, event) = queue.popEarliest() {
            now = time
            handle(event)
        }
        check()
        report.trace = traceLog?.lines ?? []
        return report
    }

    // MARK: Events and the network

    mutating func schedule(_ event: Event, after delay: Int64) {
        queue.schedule(event, at: now + delay)
    }

    mutating func send(_ payload: Payload, from: Int, to: Int) {
        if random.chance(settings.dropRate) {
            report.messagesDropped += 1
            return
        }
        let copies = random.chance(settings.duplicateRate) ? 2 : 1
        for _ in 0..<copies {
            schedule(.deliver(from: from, to: to, payload: payload), after: Int64.random(in: 1...Int64(settings.maxDelay), using: &random))
        }
    }

    func separated(_ a: Int, _ b: Int) -> Bool { cutOff.contains(a) != cutOff.contains(b) }

    mutating func handle(_ event: Event) {
        switch event {
        case .client:
            guard clientOperationsLeft > 0 else { return }
            clientOperationsLeft -= 1
            startClientOperation()
            schedule(.client, after: Int64.random(in: 1...Int64(2 * settings.operationGap), using: &random))
        case .deliver(let from, let to, let payload):
            guard nodes[to].life == .up else { return }
            if separated(from, to) {
                report.messagesDropped += 1
                return
            }
            receive(payload, from: from, at: to)
        case .timeout(let id):
            expire(id)
        case .crash:
            crash()
        case .recover(let node):
            recover(node)
        case .partition(let side):
            cutOff = side
            partitionedAt = now
            trace("partition \(side.sorted())")
        case .heal:
            cutOff = []
            trace("heal")
        case .join:
            join()
        case .leave:
            leave()
        case .learn(let node, let change):
            learn(node, change: change)
        case .round(let node):
            guard nodes[node].life != .gone, now < end else { return }
            if nodes[node].life == .up { membershipRound(node) }
            schedule(.round(node: node), after: Int64(settings.roundPeriod))
        }
    }

    mutating func receive(_ payload: Payload, from: Int, at node: Int) {
        switch payload {
        case .write, .writeAck, .read, .readReply, .refused, .repair:
            receiveQuorumMessage(payload, from: from, at: node)
        case .hint, .hintAck, .replay, .replayAck:
            receiveHintMessage(payload, from: from, at: node)
        case .transfer, .transferAck, .finished, .finishedAck:
            receiveTransferMessage(payload, from: from, at: node)
        }
    }

    mutating func apply(_ key: Int, _ value: VersionedValue, at node: Int) {
        nodes[node].clock.observe(value.version.timestamp, wallMillis: now + nodes[node].skew)
        nodes[node].store[key] = VersionedValue.newest(nodes[node].store[key], value)
    }

    /// Members `node` cannot reach now, as its failure detector and links tell it: those
    /// declared dead, those that left, and those a partition has cut off for a while.
    func unreachable(from node: Int) -> Set<Int> {
        var down = Set<Int>()
        for other in nodes.indices where other != node {
            if isDeclaredDead(other) || (nodes[other].life != .waiting && separated(node, other) && now - partitionedAt >= Int64(settings.linkDetection)) {
                down.insert(other)
            }
        }
        return down
    }

    /// Gossip's verdict: crashed for longer than the failure detection takes, or gone.
    func isDeclaredDead(_ node: Int) -> Bool {
        switch nodes[node].life {
        case .gone: true
        case .down: now - nodes[node].downSince >= Int64(settings.failureDetection)
        case .up, .waiting: false
        }
    }

    var deadNames: Set<String> { Set(nodes.indices.filter(isDeclaredDead).map { nodes[$0].name }) }

    mutating func crash() {
        let up = nodes.indices.filter { nodes[$0].life == .up }
        guard let node = up.randomElement(using: &random) else { return }
        for (key, value) in nodes[node].store { lostCopies.append(LostCopy(key: key, version: value.version, at: now)) }
        // A hint is a copy the write counted on only when it counted toward W.
        if settings.rules.hintsCountTowardQuorum {
            for hint in nodes[node].hints.values { lostCopies.append(LostCopy(key: hint.key, version: hint.value.version, at: now)) }
        }
        nodes[node].life = .down
        nodes[node].downSince = now
        nodes[node].store = [:]
        nodes[node].hints = [:]
        nodes[node].transfer = nil
        nodes[node].announcing = [:]
        nodes[node].claims = [:]
        report.crashes += 1
        trace("crash \(nodes[node].name)")
        schedule(.recover(node: node), after: Int64.random(in: 10...300, using: &random))
    }

    /// A node restarts empty and takes the member list and claims of a live peer, as a
    /// restarted node joins through a seed, and hears of later news by gossip; then it sends
    /// what it holds (nothing) if data moves.
    mutating func recover(_ node: Int) {
        guard nodes[node].life == .down else { return }
        nodes[node].life = .up
        nodes[node].incarnation += 1
        let peers = nodes.indices.filter { nodes[$0].life == .up && $0 != node }
        if let peer = peers.randomElement(using: &random) {
            nodes[node].view = nodes[peer].view
            nodes[node].previous = nodes[peer].previous
            nodes[node].claims = nodes[peer].claims
            refreshPlan(node)
        }
        if nodes[node].view < changes.count - 1 {
            schedule(.learn(node: node, change: changes.count - 1), after: Int64.random(in: 1...Int64(settings.learnDelay), using: &random))
        }
        trace("recover \(nodes[node].name) at \(nodes[node].plan.stage)")
        startTransfer(node)
        checkTransition(node)
    }

    /// Lines of the trace, when ``Settings/trace`` is on (a reference, so that tracing reads
    /// the state without a mutating access).
    final class TraceLog {
        var lines: [String] = []
    }

    func trace(_ line: @autoclosure () -> String) {
        traceLog?.lines.append("\(now) \(line())")
    }
}
