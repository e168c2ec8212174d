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

/// A deterministic simulator of quorum replication: N-way replicated keys on a set of nodes,
/// clients reading and writing through random coordinators, and a network that loses,
/// delays, duplicates and reorders messages, while nodes crash (losing their memory, as a
/// cache does), recover and get partitioned. Time is virtual; everything follows the seed.
///
/// It drives the real ``WriteQuorum`` and ``ReadQuorum`` cores and checks, for every read
/// that starts after a write was acknowledged, that it returns that write or a newer one —
/// unless a replica that acknowledged the write has crashed since (its copy is gone).
public struct ClusterSimulation {
    public struct Settings: Sendable {
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
        public init() {}
    }

    public struct Report: Sendable, CustomStringConvertible {
        public var seed: UInt64
        public var writesAcknowledged = 0
        public var writesFailed = 0
        public var readsAnswered = 0
        public var readsFailed = 0
        public var repairs = 0
        public var messagesDropped = 0
        public var crashes = 0
        public var violations: [String] = []

        public init(seed: UInt64) { self.seed = seed }

        public var description: String {
            "seed \(seed): \(writesAcknowledged) writes acknowledged, \(writesFailed) failed; \(readsAnswered) reads answered, "
                + "\(readsFailed) failed; \(repairs) repairs; \(messagesDropped) messages dropped; \(crashes) crashes; "
                + "\(violations.count) violations"
        }
    }

    enum Payload {
        case write(operation: Int, key: Int, value: VersionedValue)
        case writeAck(operation: Int)
        case read(operation: Int, key: Int)
        case readReply(operation: Int, value: VersionedValue?)
        case repair(key: Int, value: VersionedValue)
    }

    enum Event {
        case deliver(from: Int, to: Int, payload: Payload)
        case timeout(operation: Int)
        case client
        case crash(node: Int)
        case recover(node: Int)
        case partition(side: Set<Int>)
        case heal
    }

    struct Node {
        var store: [Int: VersionedValue] = [:]
        var alive = true
        var clock = HybridLogicalClock()
        var skew: Int64 = 0
        /// Bumped on every restart, so replies meant for an earlier life are ignored.
        var incarnation = 0
    }

    enum Pending {
        case write(WriteQuorum, key: Int, value: VersionedValue)
        case read(ReadQuorum<VersionedValue>, key: Int)
    }

    struct Operation {
        var coordinator: Int
        var incarnation: Int
        var startedAt: Int64
        var pending: Pending
    }

    struct AcknowledgedWrite {
        let key: Int
        let version: Version
        /// When the coordinator sent it: a replica can apply it and crash before the ack arrives.
        let startedAt: Int64
        let at: Int64
        let by: Set<Int>
    }

    struct AnsweredRead {
        let key: Int
        let startedAt: Int64
        let endedAt: Int64
        let result: VersionedValue?
    }

    public let settings: Settings
    public let seed: UInt64
    private var random: SimulationRandom
    private var now: Int64 = 0
    private var queue = SimulationQueue<Event>()
    private var nodes: [Node]
    private var operations: [Int: Operation] = [:]
    private var nextOperation = 0
    private var clientOperationsLeft: Int
    private var cutOff: Set<Int> = []
    private var writes: [AcknowledgedWrite] = []
    private var reads: [AnsweredRead] = []
    private var crashTimes: [Int: [Int64]] = [:]
    private var report: Report
    private let ring: HashRing

    public init(seed: UInt64, settings: Settings = Settings()) {
        self.seed = seed
        self.settings = settings
        self.random = SimulationRandom(seed: seed)
        self.nodes = Array(repeating: Node(), count: settings.nodes)
        self.clientOperationsLeft = settings.operations
        self.report = Report(seed: seed)
        self.ring = HashRing(members: (0..<settings.nodes).map { "sim\($0)" }, vnodes: 1, replicas: settings.replicas)
        for i in nodes.indices {
            nodes[i].skew = Int64.random(in: -Int64(settings.clockSkew)...Int64(settings.clockSkew), using: &random)
        }
    }

    /// Runs the whole history and checks it.
    public mutating func run() -> Report {
        let span = Int64(settings.operations * settings.operationGap)
        schedule(.client, after: 0)
        for _ in 0..<settings.crashes {
            let node = Int.random(in: 0..<settings.nodes, using: &random)
            let at = Int64.random(in: 0...span, using: &random)
            schedule(.crash(node: node), after: at)
            schedule(.recover(node: node), after: at + Int64.random(in: 10...300, using: &random))
        }
        for _ in 0..<settings.partitions {
            let at = Int64.random(in: 0...span, using: &random)
            var side = Set<Int>()
            for node in 0..<settings.nodes where random.chance(0.4) { side.insert(node) }
            schedule(.partition(side: side), after: at)
            schedule(.heal, after: at + Int64.random(in: 10...200, using: &random))
        }
        while let (time, event) = queue.popEarliest() {
            now = time
            handle(event)
        }
        check()
        return report
    }

    // MARK: Events

    private mutating func schedule(_ event: Event, after delay: Int64) {
        queue.schedule(event, at: now + delay)
    }

    private mutating func send(_ payload: Payload, from: Int, to: Int) {
        if random.chance(settings.dropRate) {
            report.messagesDropped += 1
            return
        }
        let copies = random.chance(settings.duplicateRate) ? 2 : 1
        for _ in 0..<copies {
            schedule(.deliver(from: from, to: to, payload: payload), after: Int64.random(in: 1...Int64(settings.maxDelay), using: &random))
        }
    }

    private mutating func handle(_ event: Event) {
        switch event {
        case .client:
            guard clientOperationsLeft > 0 else { return }
            clientOperationsLeft -= 1
            startClientOperation()
            schedule(.client, after: Int64.random(in: 1...Int64(2 * settings.operationGap), using: &random))
        case .deliver(let from, let to, let payload):
            guard nodes[to].alive else { return }
            if cutOff.contains(from) != cutOff.contains(to) {
                report.messagesDropped += 1
                return
            }
            receive(payload, from: from, at: to)
        case .timeout(let id):
            guard let operation = operations[id], isCurrent(operation) else { return }
            switch operation.pending {
            case .write(var quorum, let key, let value):
                let action = quorum.onTimeout()
                operations[id]!.pending = .write(quorum, key: key, value: value)
                if let action { finishWrite(id, action) }
            case .read(var quorum, let key):
                let actions = quorum.onTimeout()
                operations[id]!.pending = .read(quorum, key: key)
                perform(actions, operation: id)
            }
        case .crash(let node):
            guard nodes[node].alive else { return }
            nodes[node].alive = false
            nodes[node].store = [:]
            crashTimes[node, default: []].append(now)
            report.crashes += 1
        case .recover(let node):
            nodes[node].alive = true
            nodes[node].incarnation += 1
        case .partition(let side):
            cutOff = side
        case .heal:
            cutOff = []
        }
    }

    private func isCurrent(_ operation: Operation) -> Bool {
        nodes[operation.coordinator].alive && nodes[operation.coordinator].incarnation == operation.incarnation
    }

    private func replicas(of key: Int) -> [Int] {
        ring.preferenceList(forKey: "key\(key)").members
    }

    private mutating func startClientOperation() {
        let alive = nodes.indices.filter { nodes[$0].alive }
        guard let coordinator = alive.randomElement(using: &random) else { return }
        let key = Int.random(in: 0..<settings.keys, using: &random)
        let id = nextOperation
        nextOperation += 1
        let replicas = replicas(of: key)
        if random.chance(0.5) {
            let wall = now + nodes[coordinator].skew
            let timestamp = nodes[coordinator].clock.tick(wallMillis: wall)
            let version = Version(timestamp: timestamp, node: NodeID(rawValue: UInt32(coordinator)))
            let bytes: [UInt8]? = random.chance(0.1) ? nil : Array("v\(id)".utf8)
            let value = VersionedValue(version: version, value: bytes)
            operations[id] = Operation(
                coordinator: coordinator, incarnation: nodes[coordinator].incarnation, startedAt: now,
                pending: .write(WriteQuorum(replicas: replicas, required: settings.writeQuorum), key: key, value: value))
            for replica in replicas {
                if replica == coordinator {
                    apply(key, value, at: coordinator)
                    acknowledgeWrite(id, from: coordinator)
                } else {
                    send(.write(operation: id, key: key, value: value), from: coordinator, to: replica)
                }
            }
        } else {
            operations[id] = Operation(
                coordinator: coordinator, incarnation: nodes[coordinator].incarnation, startedAt: now,
                pending: .read(ReadQuorum<VersionedValue>(replicas: replicas, required: settings.readQuorum), key: key))
            for replica in replicas {
                if replica == coordinator {
                    answerRead(id, from: coordinator, nodes[coordinator].store[key])
                } else {
                    send(.read(operation: id, key: key), from: coordinator, to: replica)
                }
            }
        }
        schedule(.timeout(operation: id), after: Int64(settings.requestTimeout))
    }

    private mutating func receive(_ payload: Payload, from: Int, at node: Int) {
        switch payload {
        case .write(let operation, let key, let value):
            apply(key, value, at: node)
            send(.writeAck(operation: operation), from: node, to: from)
        case .writeAck(let operation):
            guard let pending = operations[operation], pending.coordinator == node, isCurrent(pending) else { return }
            acknowledgeWrite(operation, from: from)
        case .read(let operation, let key):
            send(.readReply(operation: operation, value: nodes[node].store[key]), from: node, to: from)
        case .readReply(let operation, let value):
            guard let pending = operations[operation], pending.coordinator == node, isCurrent(pending) else { return }
            answerRead(operation, from: from, value)
        case .repair(let key, let value):
            apply(key, value, at: node)
        }
    }

    private mutating func apply(_ key: Int, _ value: VersionedValue, at node: Int) {
        nodes[node].clock.observe(value.version.timestamp, wallMillis: now + nodes[node].skew)
        nodes[node].store[key] = VersionedValue.newest(nodes[node].store[key], value)
    }

    private mutating func acknowledgeWrite(_ id: Int, from replica: Int) {
        guard case .write(var quorum, let key, let value) = operations[id]?.pending else { return }
        let action = quorum.onAck(from: replica)
        operations[id]!.pending = .write(quorum, key: key, value: value)
        if let action { finishWrite(id, action) }
    }

    private mutating func finishWrite(_ id: Int, _ action: WriteQuorum.Action) {
        guard case .write(let quorum, let key, let value) = operations[id]?.pending else { return }
        switch action {
        case .succeed:
            report.writesAcknowledged += 1
            let startedAt = operations[id]?.startedAt ?? now
            writes.append(AcknowledgedWrite(key: key, version: value.version, startedAt: startedAt, at: now, by: quorum.acknowledged))
        case .fail:
            report.writesFailed += 1
        }
    }

    private mutating func answerRead(_ id: Int, from replica: Int, _ value: VersionedValue?) {
        guard case .read(var quorum, let key) = operations[id]?.pending else { return }
        let actions = quorum.onResponse(from: replica, value)
        operations[id]!.pending = .read(quorum, key: key)
        perform(actions, operation: id)
    }

    private mutating func perform(_ actions: [ReadQuorum<VersionedValue>.Action], operation id: Int) {
        guard let operation = operations[id], case .read(let quorum, let key) = operation.pending else { return }
        for action in actions {
            switch action {
            case .reply:
                report.readsAnswered += 1
                reads.append(AnsweredRead(key: key, startedAt: operation.startedAt, endedAt: now, result: quorum.newest))
            case .fail:
                report.readsFailed += 1
            case .repair(let replica, let value):
                report.repairs += 1
                if replica == operation.coordinator {
                    apply(key, value, at: replica)
                } else {
                    send(.repair(key: key, value: value), from: operation.coordinator, to: replica)
                }
            }
        }
    }

    // MARK: Checking

    private mutating func check() {
        for read in reads {
            for write in writes where write.key == read.key && write.at < read.startedAt {
                // A replica that crashed any time after it may have applied the write lost its copy.
                let lost = write.by.contains { node in
                    (crashTimes[node] ?? []).contains { $0 >= write.startedAt && $0 <= read.endedAt }
                }
                if lost { continue }
                if read.result.map({ $0.version < write.version }) ?? true {
                    report.violations.append(
                        "read of key\(read.key) started at \(read.startedAt) returned \(read.result.map(\.description) ?? "nothing") "
                            + "but the write \(write.version) was acknowledged at \(write.at) by \(write.by.sorted())")
                }
            }
        }
    }
}
