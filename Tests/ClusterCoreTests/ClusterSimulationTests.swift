import Testing

@testable import ClusterCore

@Suite struct ClusterSimulationTests {
    /// Random histories with loss, delay, duplication, reordering, crashes, partitions, a join
    /// and a leave each (data moving while nodes learn of it late), and sloppy quorum in every
    /// other one: under the proposed rules, no read misses an acknowledged write unless a
    /// crash took a copy of it.
    @Test func quorumReadsSeeAcknowledgedWritesThroughRingChanges() {
        var totals = ClusterSimulation.Report(seed: 0)
        for seed in UInt64(1)...200 {
            var simulation = ClusterSimulation(seed: seed)
            let report = simulation.run()
            #expect(report.violations.isEmpty, "\(report)\n\(report.violations.prefix(3).joined(separator: "\n"))")
            totals.add(report)
        }
        // The histories did exercise the paths that matter.
        #expect(totals.writesAcknowledged > 8_000 && totals.readsAnswered > 8_000)
        #expect(totals.repairs > 1_000 && totals.crashes == 400)
        #expect(totals.joins > 180 && totals.leaves > 180 && totals.ringChangesSettled > 350)
        #expect(totals.transfersFinished > 1_000 && totals.keysMoved > 500)
        #expect(totals.hintsKept > 500 && totals.hintsReplayed > 500)
        #expect(totals.refusals > 1_000)
    }

    /// Seeds that once failed: a replica applied a write and crashed before its acknowledgement
    /// reached the coordinator, and the checker counted it as a surviving copy. They stay as
    /// regression tests for the checker's crash window.
    @Test(arguments: [UInt64(1292), 1459, 1791, 2091, 2174])
    func formerlyFailingSeeds(seed: UInt64) {
        var simulation = ClusterSimulation(seed: seed)
        let report = simulation.run()
        #expect(report.violations.isEmpty, "\(report.violations.first ?? "")")
    }

    /// Each proposed rule is needed: without it, a history the simulator found reads stale
    /// data. These are the server's gaps as built (the report of the change that added the
    /// rules explains each seed).
    @Test(arguments: [
        ("every old replica sends", UInt64(301)), ("transfers wait for gainers that are down", 3374), ("fencing", 138),
        ("reads ask the added replicas", 5098), ("hints do not count toward W", 3),
    ])
    func withoutAProposedRuleReadsGoStale(rule: String, seed: UInt64) {
        var settings = ClusterSimulation.Settings()
        switch rule {
        case "every old replica sends": settings.rules.everyOldReplicaSends = false
        case "transfers wait for gainers that are down": settings.rules.transfersWaitForDownGainers = false
        case "fencing": settings.rules.fencing = false
        case "reads ask the added replicas": settings.rules.readsAskAddedReplicas = false
        default: settings.rules.hintsCountTowardQuorum = true
        }
        var without = ClusterSimulation(seed: seed, settings: settings)
        #expect(!without.run().violations.isEmpty)
        var with = ClusterSimulation(seed: seed)
        #expect(with.run().violations.isEmpty)
    }

    /// The server's rules today still miss writes in histories the simulator found: a
    /// coordinator with a stale view (no fencing yet), and hints counted toward W.
    @Test(arguments: [UInt64(138), 3])
    func theRulesAsBuiltAreCaught(seed: UInt64) {
        var settings = ClusterSimulation.Settings()
        settings.rules = .asBuilt
        var simulation = ClusterSimulation(seed: seed, settings: settings)
        #expect(!simulation.run().violations.isEmpty)
    }

    /// One sender per key (with takeovers, as the server did before) misses writes the other
    /// old replicas acknowledged.
    @Test func aSingleSenderPerKeyIsCaught() {
        var settings = ClusterSimulation.Settings()
        settings.rules = .singleSender
        settings.sloppyQuorum = .never
        var failing = 0
        var takeovers = 0
        for seed in UInt64(1)...40 {
            var simulation = ClusterSimulation(seed: seed, settings: settings)
            let report = simulation.run()
            if !report.violations.isEmpty { failing += 1 }
            takeovers += report.takeovers
        }
        #expect(failing > 0)
        // Old owners that died unfinished were taken over, as the server did.
        #expect(takeovers > 0)
    }

    /// The checker is not blind: with R + W ≤ N it finds stale reads.
    @Test func weakQuorumsAreCaught() {
        var settings = ClusterSimulation.Settings()
        settings.readQuorum = 1
        settings.writeQuorum = 1
        settings.crashes = 0
        settings.dropRate = 0.3
        var found = 0
        for seed in UInt64(1)...50 {
            var simulation = ClusterSimulation(seed: seed, settings: settings)
            found += simulation.run().violations.count
        }
        #expect(found > 0)
    }

    @Test func sameSeedSameHistory() {
        var settings = ClusterSimulation.Settings()
        settings.trace = true
        var a = ClusterSimulation(seed: 99, settings: settings)
        var b = ClusterSimulation(seed: 99, settings: settings)
        let (first, second) = (a.run(), b.run())
        #expect(first.description == second.description)
        #expect(first.trace == second.trace && first.trace.count > 100)
    }
}
