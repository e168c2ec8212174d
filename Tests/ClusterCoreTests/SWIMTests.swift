import Testing

@testable import ClusterCore

@Suite struct SWIMTests {
    /// Two members that declared each other dead across a partition take each other back once
    /// it heals: the occasional ping to a dead member carries its death, which it refutes.
    @Test func membersDeadToEachOtherComeBackAfterAPartitionHeals() {
        var random = SimulationRandom(seed: 3)
        var a = SWIM.Instance(name: "a", settings: .learning)
        var b = SWIM.Instance(name: "b", settings: .learning)
        _ = a.add("b", announce: false)
        _ = b.add("a", announce: false)
        // Each heard from a third member that the other died.
        _ = a.onMessage(.ping(sequence: 1, updates: [SWIM.Member(name: "b", incarnation: 0, status: .dead)]), from: "c", now: 0)
        _ = b.onMessage(.ping(sequence: 1, updates: [SWIM.Member(name: "a", incarnation: 0, status: .dead)]), from: "c", now: 0)
        #expect(a.members["b"]?.status == .dead && b.members["a"]?.status == .dead)
        var now: Int64 = 0
        var delivered = 0
        for _ in 0..<20 where a.members["b"]?.status != .alive || b.members["a"]?.status != .alive {
            now += 1000
            var outbox = a.onTimer(.probe, now: now, random: &random).map { ("a", $0) } + b.onTimer(.probe, now: now, random: &random).map { ("b", $0) }
            while let (from, directive) = outbox.first {
                outbox.removeFirst()
                guard case .send(let message, let to) = directive, to == "a" || to == "b" else { continue }
                delivered += 1
                if to == "a" { outbox += a.onMessage(message, from: from, now: now).map { ("a", $0) } }
                if to == "b" { outbox += b.onMessage(message, from: from, now: now).map { ("b", $0) } }
            }
        }
        #expect(delivered > 0)
        #expect(a.members["b"]?.status == .alive && b.members["a"]?.status == .alive)
        #expect(a.incarnation >= 1 && b.incarnation >= 1)
    }

    /// A probe with no ack leads to indirect probes, then suspicion, then death; a suspected
    /// member that hears of it refutes with a higher incarnation.
    @Test func probeSuspectDeadAndRefutation() {
        var random = SimulationRandom(seed: 1)
        var a = SWIM.Instance(name: "a", settings: .learning)
        _ = a.add("b")
        _ = a.add("c")
        var directives = a.onTimer(.probe, now: 0, random: &random)
        guard case .send(.ping(let sequence, _), let target)? = directives.first(where: { if case .send = $0 { return true }; return false }) else {
            Issue.record("no ping in \(directives)")
            return
        }
        directives = a.onTimer(.directTimeout(sequence: sequence), now: 300, random: &random)
        #expect(directives.contains { if case .send(.pingRequest(_, target, _), _) = $0 { return true }; return false })
        directives = a.onTimer(.indirectTimeout(sequence: sequence), now: 1000, random: &random)
        #expect(a.members[target]?.status == .suspect)
        guard case .timer(.suspicionTimeout(let name, let incarnation), _)? = directives.last else {
            Issue.record("no suspicion timer in \(directives)")
            return
        }
        _ = a.onTimer(.suspicionTimeout(member: name, incarnation: incarnation), now: 9000, random: &random)
        #expect(a.members[target]?.status == .dead)

        // The suspected side: hearing that it is suspect raises its incarnation and gossips alive.
        var b = SWIM.Instance(name: "b", settings: .learning)
        _ = b.add("a")
        let replies = b.onMessage(.ping(sequence: 7, updates: [SWIM.Member(name: "b", incarnation: 0, status: .suspect)]), from: "a", now: 0)
        #expect(b.incarnation == 1)
        guard case .send(.ack(7, "b", let updates), "a")? = replies.last else {
            Issue.record("no ack in \(replies)")
            return
        }
        #expect(updates.contains(SWIM.Member(name: "b", incarnation: 1, status: .alive)))
        // And the refutation wins over the suspicion elsewhere.
        var c = SWIM.Instance(name: "c", settings: .learning)
        _ = c.onMessage(.ping(sequence: 1, updates: [SWIM.Member(name: "b", incarnation: 0, status: .suspect)]), from: "a", now: 0)
        _ = c.onMessage(.ping(sequence: 2, updates: [SWIM.Member(name: "b", incarnation: 1, status: .alive)]), from: "a", now: 1)
        #expect(c.members["b"]?.status == .alive && c.members["b"]?.incarnation == 1)
    }

    /// Infection-style dissemination with a bound: each update rides on exactly
    /// `retransmitMultiplier × ceil(log10(n + 2))` messages, and no message carries more than
    /// `maxPiggyback` updates.
    @Test func eachUpdateIsPiggybackedABoundedNumberOfTimes() {
        var random = SimulationRandom(seed: 5)
        var a = SWIM.Instance(name: "a", settings: .learning)
        let peers = (0..<12).map { "p\($0)" }
        for peer in peers { _ = a.add(peer, announce: false) }
        // 20 members join at once: more news than one message carries.
        let joiners = (0..<20).map { SWIM.Member(name: "j\($0)", incarnation: 1, status: .alive) }
        var carried: [String: Int] = [:]
        var now: Int64 = 0
        /// Counts what the directives send; answers direct pings, so nobody is suspected
        /// (which would be news too).
        func deliver(_ directives: [SWIM.Directive]) {
            for directive in directives {
                guard case .send(let message, let to) = directive else { continue }
                let updates: [SWIM.Member]
                switch message {
                case .ping(_, let carriedUpdates), .pingRequest(_, _, let carriedUpdates), .ack(_, _, let carriedUpdates):
                    updates = carriedUpdates
                }
                #expect(updates.count <= a.settings.maxPiggyback)
                for update in updates where update.name.hasPrefix("j") { carried[update.name, default: 0] += 1 }
                if case .ping(let sequence, _) = message {
                    deliver(a.onMessage(.ack(sequence: sequence, target: to, updates: []), from: to, now: now))
                }
            }
        }
        deliver(a.onMessage(.ping(sequence: 1, updates: joiners), from: "p0", now: 0))
        for _ in 0..<200 {
            now += 1000
            deliver(a.onTimer(.probe, now: now, random: &random))
        }
        let budget = a.settings.retransmitMultiplier * 2   // ceil(log10(n + 2)) for 14 ≤ n + 2 ≤ 100
        #expect(carried.count == joiners.count)
        #expect(carried.values.allSatisfy { $0 == budget }, "\(carried)")
    }

    @Test func newsOrdersByIncarnationThenStatus() {
        let alive0 = SWIM.Member(name: "x", incarnation: 0, status: .alive)
        #expect(alive0.isSuperseded(by: SWIM.Member(name: "x", incarnation: 0, status: .suspect)))
        #expect(!SWIM.Member(name: "x", incarnation: 0, status: .suspect).isSuperseded(by: alive0))
        #expect(SWIM.Member(name: "x", incarnation: 0, status: .dead).isSuperseded(by: SWIM.Member(name: "x", incarnation: 1, status: .alive)))
    }

    /// 100 members with 5% loss: a join spreads in O(log n) periods, a crash is declared
    /// everywhere within seconds, and few live members are suspected by mistake.
    @Test func scalesWithLogN() {
        var simulation = MembershipSimulation(members: 100, lossRate: 0.05, seed: 42)
        let result = simulation.measure()
        #expect(result.periodsToSpreadJoin <= 10, "\(result)")
        #expect(result.millisToDeclareDead > 0 && result.millisToDeclareDead <= 20_000, "\(result)")
        #expect(result.falseSuspicions <= 5, "\(result)")
    }
}
