/// A deterministic simulation of SWIM membership on many members: virtual time, seeded
/// randomness, messages delayed and lost. It measures how fast a change spreads, how long a
/// crashed member takes to be declared dead everywhere, and how many live members get
/// suspected by mistake.
public struct MembershipSimulation {
    public struct Result: Sendable, CustomStringConvertible {
        public var members: Int
        public var lossRate: Double
        /// Protocol periods until every member knew of a member that joined through one of them.
        public var periodsToSpreadJoin: Double
        /// Milliseconds from a crash until every live member declared it dead.
        public var millisToDeclareDead: Int64
        /// Live members that some member suspected, over the run.
        public var falseSuspicions: Int
        /// Suspect events about live members, over all members' views.
        public var falseSuspicionEvents: Int
        public var messages: Int

        public var description: String {
            "\(members) members, \(Int(lossRate * 100))% loss: join known everywhere after \(periodsToSpreadJoin) periods, "
                + "crash declared dead everywhere after \(millisToDeclareDead) ms, \(falseSuspicions) live members falsely "
                + "suspected (\(falseSuspicionEvents) events), \(messages) messages"
        }
    }

    private enum Event {
        case timer(member: Int, SWIM.Timer)
        case deliver(from: Int, to: Int, SWIM.Message)
    }

    private var random: SimulationRandom
    private var instances: [SWIM.Instance]
    private var index: [String: Int] = [:]
    private var crashed: Set<Int> = []
    private var queue = SimulationQueue<Event>()
    private var now: Int64 = 0
    private let lossRate: Double
    private var messages = 0
    private var suspected: Set<String> = []
    private var suspicionEvents = 0

    public init(members count: Int, lossRate: Double, seed: UInt64, settings: SWIM.Settings = .learning) {
        random = SimulationRandom(seed: seed)
        self.lossRate = lossRate
        instances = (0..<count).map { SWIM.Instance(name: "m\($0)", settings: settings) }
        for i in 0..<count { index["m\(i)"] = i }
        // Everyone starts with the full list (as from cluster.conf), probing at random offsets.
        for i in 0..<count {
            for j in 0..<count where j != i { _ = instances[i].add("m\(j)", announce: false) }
            schedule(.timer(member: i, .probe), at: Int64.random(in: 0..<settings.protocolPeriod, using: &random))
        }
        run(until: 10 * settings.protocolPeriod)
        suspected = []
        suspicionEvents = 0
        messages = 0
    }

    /// Runs the scenario: a member joins through one node, then another member crashes.
    public mutating func measure() -> Result {
        let period = instances[0].settings.protocolPeriod
        // A join: a new member known to one node only; count periods until everyone knows it.
        let joiner = "joiner"
        let start = now
        handle(instances[0].add(joiner), member: 0)
        var spread: Int64 = -1
        while spread < 0 && now < start + 200 * period {
            run(until: now + period / 10)
            if instances.indices.allSatisfy({ crashed.contains($0) || instances[$0].members[joiner] != nil }) { spread = now - start }
        }
        // The joiner never answers (it is not simulated); let its suspicion settle before the crash.
        run(until: now + 60 * period)
        suspected = []
        suspicionEvents = 0
        // A crash: measure until every live member declared it dead.
        let victim = instances.count - 1
        crashed.insert(victim)
        let crashedAt = now
        var declared: Int64 = -1
        while declared < 0 && now < crashedAt + 300 * period {
            run(until: now + period / 10)
            let everyone = instances.indices.allSatisfy { i in
                crashed.contains(i) || instances[i].members["m\(victim)"]?.status == .dead
            }
            if everyone { declared = now - crashedAt }
        }
        return Result(
            members: instances.count, lossRate: lossRate,
            periodsToSpreadJoin: spread < 0 ? .infinity : Double(spread) / Double(period),
            millisToDeclareDead: declared, falseSuspicions: suspected.subtracting(["m\(victim)", joiner]).count,
            falseSuspicionEvents: suspicionEvents, messages: messages)
    }

    private mutating func schedule(_ event: Event, at time: Int64) {
        queue.schedule(event, at: time)
    }

    private mutating func run(until end: Int64) {
        while let next = queue.nextTime, next <= end, let (time, event) = queue.popEarliest() {
            now = time
            switch event {
            case .timer(let member, let timer):
                guard !crashed.contains(member) else { continue }
                handle(instances[member].onTimer(timer, now: now, random: &random), member: member)
            case .deliver(let from, let to, let message):
                guard !crashed.contains(to) else { continue }
                handle(instances[to].onMessage(message, from: "m\(from)", now: now), member: to)
            }
        }
        now = max(now, end)
    }

    private mutating func handle(_ directives: [SWIM.Directive], member: Int) {
        for directive in directives {
            switch directive {
            case .send(let message, let to):
                guard let target = index[to] else { continue }
                messages += 1
                if random.chance(lossRate) { continue }
                schedule(.deliver(from: member, to: target, message), at: now + Int64.random(in: 1...10, using: &random))
            case .timer(let timer, let at):
                schedule(.timer(member: member, timer), at: at)
            case .changed(let changed):
                if changed.status == .suspect {
                    suspected.insert(changed.name)
                    suspicionEvents += 1
                }
            }
        }
    }
}

extension SWIM.Settings {
    /// The paper's SWIM: members learn of each other from gossip alone.
    public static var learning: SWIM.Settings {
        var settings = SWIM.Settings()
        settings.learnsMembersFromGossip = true
        return settings
    }
}
