/// SWIM-style membership: failure detection by probing, suspicion with refutation, and
/// infection-style dissemination of membership changes piggybacked on probe traffic.
///
/// Das, Gupta and Motivala, "SWIM: Scalable Weakly-consistent Infection-style Process Group
/// Membership Protocol" (DSN 2002); the suspicion timeout scales with log(n) as in
/// Dadgar et al., "Lifeguard: Local Health Awareness for More Accurate Failure Detection" (2018).
public enum SWIM {
    /// What one member believes of another.
    public enum Status: Hashable, Sendable, CustomStringConvertible {
        case alive
        case suspect
        case dead

        /// Precedence at equal incarnation: dead over suspect over alive.
        var rank: Int {
            switch self {
            case .alive: return 0
            case .suspect: return 1
            case .dead: return 2
            }
        }

        public var description: String {
            switch self {
            case .alive: return "alive"
            case .suspect: return "suspect"
            case .dead: return "dead"
            }
        }
    }

    /// A member as one node knows it. The incarnation is raised only by the member itself,
    /// to refute a suspicion.
    public struct Member: Hashable, Sendable {
        public var name: String
        public var incarnation: UInt64
        public var status: Status

        public init(name: String, incarnation: UInt64 = 0, status: Status = .alive) {
            self.name = name
            self.incarnation = incarnation
            self.status = status
        }

        /// True if `other` is newer news about the same member than `self`.
        func isSuperseded(by other: Member) -> Bool {
            other.incarnation > incarnation || (other.incarnation == incarnation && other.status.rank > status.rank)
        }
    }

    public struct Settings: Sendable {
        /// Milliseconds between probes.
        public var protocolPeriod: Int64 = 1000
        /// Milliseconds to wait for a direct ack before asking others.
        public var pingTimeout: Int64 = 300
        /// Members asked to probe indirectly.
        public var indirectProbes = 3
        /// Suspicion lasts `suspicionMultiplier × log10(max(n, 10)) × protocolPeriod`.
        public var suspicionMultiplier = 4.0
        /// An update is piggybacked `retransmitMultiplier × ceil(log10(n + 1))` times.
        public var retransmitMultiplier = 4
        /// Updates carried per message.
        public var maxPiggyback = 8
        /// Every this many protocol periods, one member held dead is pinged too, carrying its
        /// own death: if it is alive (a partition healed), it refutes with a higher
        /// incarnation and both sides take each other back. 0 never.
        public var deadProbeEvery = 5
        /// Whether a message from, or an update about, a name this instance does not know adds
        /// it as a member (up to ``maxMembers``), as in the paper. Off in the server, where
        /// members come only from the ring, which changes only by an authenticated join.
        public var learnsMembersFromGossip = false
        /// Members at most, when ``learnsMembersFromGossip`` is on.
        public var maxMembers = 4096
        public init() {}
    }

    /// What travels between members.
    public enum Message: Hashable, Sendable {
        case ping(sequence: UInt64, updates: [Member])
        case pingRequest(sequence: UInt64, target: String, updates: [Member])
        case ack(sequence: UInt64, target: String, updates: [Member])
    }

    /// What the shell must do.
    public enum Directive: Hashable, Sendable {
        case send(Message, to: String)
        /// Call ``Instance/onTimer(_:now:)`` with this timer at `at`.
        case timer(Timer, at: Int64)
        /// A member's status changed (the shell updates routing and logs it).
        case changed(Member)
    }

    public enum Timer: Hashable, Sendable {
        case probe
        case directTimeout(sequence: UInt64)
        case indirectTimeout(sequence: UInt64)
        case suspicionTimeout(member: String, incarnation: UInt64)
    }

    /// One member's protocol state. A pure value: it reads no clock and sends nothing; every
    /// entry point takes `now` and returns what to send and when to call back.
    public struct Instance: Sendable {
        public let name: String
        public let settings: Settings
        public private(set) var incarnation: UInt64 = 0
        public private(set) var members: [String: Member] = [:]
        /// Round-robin probe order, reshuffled each pass (SWIM's "randomized round-robin").
        private var probeOrder: [String] = []
        private var nextSequence: UInt64 = 1
        /// Probes in flight: sequence → target, and who asked (for indirect probes we forward).
        private var probes: [UInt64: (target: String, requester: String?, requesterSequence: UInt64?)] = [:]
        /// Updates waiting to be piggybacked, with how many more times each goes out.
        private var gossip: [(member: Member, remaining: Int)] = []
        /// Protocol periods run, for the occasional ping of a dead member.
        private var periods = 0

        public init(name: String, settings: Settings = Settings()) {
            self.name = name
            self.settings = settings
        }

        /// Members believed alive or suspect (dead ones are left out).
        public var liveMembers: [String] { members.values.filter { $0.status != .dead }.map(\.name).sorted() }

        /// Learns of a member. `announce` gossips it on: a member that joined through us is
        /// news; one every node read from the same configuration is not.
        public mutating func add(_ member: String, announce: Bool = true) -> [Directive] {
            guard member != name, members[member] == nil else { return [] }
            guard announce else {
                members[member] = Member(name: member)
                return []
            }
            return apply(Member(name: member))
        }

        /// Forgets a member that left the cluster for good: it is no longer probed.
        public mutating func remove(_ member: String) {
            members[member] = nil
            probeOrder.removeAll { $0 == member }
            gossip.removeAll { $0.member.name == member }
        }

        /// Takes in another member's full view (the periodic push-pull over the cluster bus,
        /// which repairs what lost datagrams did not carry): merged like piggybacked updates;
        /// members this node does not know are left to ``add(_:announce:)``.
        public mutating func absorb(_ view: [Member], now: Int64) -> [Directive] {
            merge(view.filter { $0.name == name || members[$0.name] != nil }, now: now)
        }

        // MARK: Probing

        /// The protocol period: probe the next member in the shuffled round.
        public mutating func onTimer(_ timer: Timer, now: Int64, random: inout some RandomNumberGenerator) -> [Directive] {
            switch timer {
            case .probe:
                var directives: [Directive] = [.timer(.probe, at: now + settings.protocolPeriod)]
                periods += 1
                if settings.deadProbeEvery > 0, periods % settings.deadProbeEvery == 0,
                   let dead = members.values.filter({ $0.status == .dead }).map(\.name).sorted().randomElement(using: &random),
                   let record = members[dead] {
                    // Gossip to the dead: no timers (silence changes nothing), just the news of
                    // its death, which a live member refutes in its ack.
                    directives.append(.send(.ping(sequence: takeSequence(), updates: [record] + piggyback()), to: dead))
                }
                guard let target = nextProbeTarget(random: &random) else { return directives }
                let sequence = takeSequence()
                probes[sequence] = (target, nil, nil)
                directives.append(.send(.ping(sequence: sequence, updates: piggyback()), to: target))
                directives.append(.timer(.directTimeout(sequence: sequence), at: now + settings.pingTimeout))
                return directives
            case .directTimeout(let sequence):
                guard let probe = probes[sequence], probe.requester == nil else {
                    // An indirect probe for someone else that got no answer: nothing to report.
                    probes[sequence] = nil
                    return []
                }
                let helpers = members.values.filter { $0.status == .alive && $0.name != probe.target }.map(\.name)
                    .shuffled(using: &random).prefix(settings.indirectProbes)
                var directives: [Directive] = helpers.map {
                    .send(.pingRequest(sequence: sequence, target: probe.target, updates: piggyback()), to: $0)
                }
                directives.append(.timer(.indirectTimeout(sequence: sequence), at: now + settings.protocolPeriod - settings.pingTimeout))
                return directives
            case .indirectTimeout(let sequence):
                guard let probe = probes.removeValue(forKey: sequence), let member = members[probe.target],
                    member.status == .alive
                else { return [] }
                // No ack, direct or indirect: suspect it until it refutes or the timeout passes.
                var suspect = member
                suspect.status = .suspect
                return apply(suspect) + [.timer(.suspicionTimeout(member: member.name, incarnation: member.incarnation),
                                                 at: now + suspicionTimeout)]
            case .suspicionTimeout(let name, let incarnation):
                guard let member = members[name], member.status == .suspect, member.incarnation == incarnation else { return [] }
                var dead = member
                dead.status = .dead
                return apply(dead)
            }
        }

        /// Milliseconds a member stays suspect before it is declared dead.
        public var suspicionTimeout: Int64 {
            let n = Double(max(members.count + 1, 10))
            return Int64(settings.suspicionMultiplier * log10(n) * Double(settings.protocolPeriod))
        }

        /// Probes waiting for an ack, at most: requests past it are ignored.
        static let maxProbesInFlight = 1024

        /// A message from `sender`, which the shell has checked is a member.
        public mutating func onMessage(_ message: Message, from sender: String, now: Int64) -> [Directive] {
            var directives: [Directive] = []
            if mayLearn(sender) { directives += add(sender) }
            if let known = members[sender], known.status != .alive {
                // It speaks, yet we hold it suspect or dead: tell it (on our reply), so it
                // refutes with a higher incarnation — how a restarted member comes back.
                enqueue(known)
            }
            switch message {
            case .ping(let sequence, let updates):
                directives += merge(updates, now: now)
                directives.append(.send(.ack(sequence: sequence, target: name, updates: piggyback()), to: sender))
            case .pingRequest(let sequence, let target, let updates):
                directives += merge(updates, now: now)
                // Probes only members, and keeps a bounded number of them in flight.
                guard members[target] != nil, probes.count < Self.maxProbesInFlight else { break }
                let mine = takeSequence()
                probes[mine] = (target, sender, sequence)
                directives.append(.send(.ping(sequence: mine, updates: piggyback()), to: target))
                directives.append(.timer(.directTimeout(sequence: mine), at: now + settings.pingTimeout))
            case .ack(let sequence, let target, let updates):
                directives += merge(updates, now: now)
                guard let probe = probes.removeValue(forKey: sequence) else { break }
                // A suspect member clears itself by refuting with a higher incarnation, which
                // it does when the suspicion reaches it; an ack only completes the probe.
                if let requester = probe.requester, let theirs = probe.requesterSequence {
                    directives.append(.send(.ack(sequence: theirs, target: target, updates: piggyback()), to: requester))
                }
            }
            return directives
        }

        // MARK: Dissemination

        /// Folds in updates others sent; refutes suspicion of ourselves, and starts our own
        /// suspicion timer for a member others suspect (so it is declared dead even if the
        /// member who first suspected it is gone too).
        private mutating func merge(_ updates: [Member], now: Int64) -> [Directive] {
            var directives: [Directive] = []
            for update in updates {
                if update.name == name {
                    if update.status != .alive && update.incarnation >= incarnation {
                        // Saturating: an incarnation at the maximum (only a forged one gets
                        // there) cannot make the refutation overflow.
                        incarnation = update.incarnation == .max ? .max : update.incarnation + 1
                        enqueue(Member(name: name, incarnation: incarnation, status: .alive))
                    }
                    continue
                }
                let changes = apply(update)
                directives += changes
                if update.status == .suspect && !changes.isEmpty {
                    directives.append(.timer(.suspicionTimeout(member: update.name, incarnation: update.incarnation), at: now + suspicionTimeout))
                }
            }
            return directives
        }

        /// True if `name` is new and may be added from what gossip says.
        private func mayLearn(_ name: String) -> Bool {
            settings.learnsMembersFromGossip && name != self.name && members[name] == nil && members.count < settings.maxMembers
        }

        /// Records `update` if it is news about a member, queues it for gossip and reports the
        /// change. Unless ``Settings/learnsMembersFromGossip`` is on, updates about names that
        /// are not members are ignored, so no message can grow the table.
        private mutating func apply(_ update: Member) -> [Directive] {
            if let known = members[update.name] {
                guard known.isSuperseded(by: update) else { return [] }
            } else if !mayLearn(update.name) {
                return []
            }
            members[update.name] = update
            enqueue(update)
            return [.changed(update)]
        }

        private mutating func enqueue(_ member: Member) {
            gossip.removeAll { $0.member.name == member.name }
            let n = Double(members.count + 2)
            gossip.append((member, settings.retransmitMultiplier * Int(log10(n).rounded(.up))))
        }

        /// The updates to carry on the next message: those sent the fewest times first.
        private mutating func piggyback() -> [Member] {
            gossip.sort { $0.remaining > $1.remaining }
            let chosen = gossip.prefix(settings.maxPiggyback).map(\.member)
            for i in 0..<min(settings.maxPiggyback, gossip.count) { gossip[i].remaining -= 1 }
            gossip.removeAll { $0.remaining <= 0 }
            return chosen
        }

        private mutating func nextProbeTarget(random: inout some RandomNumberGenerator) -> String? {
            if probeOrder.isEmpty {
                probeOrder = members.values.filter { $0.status != .dead }.map(\.name).shuffled(using: &random)
            }
            while let candidate = probeOrder.popLast() {
                if let member = members[candidate], member.status != .dead { return candidate }
            }
            return nil
        }

        private mutating func takeSequence() -> UInt64 {
            defer { nextSequence += 1 }
            return nextSequence
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
