import ArgumentParser
import ClusterCore

struct Simulate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the deterministic cluster simulator over many seeded histories and print what it found.",
        discussion: """
            Each history drives the quorum and placement cores through lost, delayed, duplicated and \
            reordered messages, crashes, partitions, members joining and leaving (with the data that moves) \
            and sloppy-quorum hints, and checks that every read that starts after a write was acknowledged \
            returns that write or a newer one, unless a crash took a copy of it. A seed that fails replays \
            exactly: keep it as a regression test.
            """
    )

    @Option(help: "Histories to run.")
    var histories = 10_000

    @Option(help: "Seed of the first history; the others follow it.")
    var firstSeed: UInt64 = 1

    @Option(help: "Client operations per history.")
    var operations = 150

    @Option(name: .customLong("n"), help: "Replicas per key.")
    var replicas = 3

    @Option(name: .customLong("r"), help: "Read quorum.")
    var readQuorum = 2

    @Option(name: .customLong("w"), help: "Write quorum.")
    var writeQuorum = 2

    @Option(help: "Members that join mid-history.")
    var joins = 1

    @Option(help: "Members that leave mid-history.")
    var leaves = 1

    @Option(help: "Sloppy quorum (hinted handoff): never, always, or alternate (odd seeds).")
    var sloppyQuorum = "alternate"

    @Flag(help: "Follow the rules the server is built with (the default; kept for scripts).")
    var asBuilt = false

    @Flag(help: "Hints never count toward W (Cassandra's rule) instead of the server's sloppy quorum (Dynamo's): no read is let off for a write acknowledged through stand-ins.")
    var hintsDoNotCount = false

    @Flag(help: "Follow the rules before every old replica sent and reads asked the added replicas (one sender per key, with takeovers).")
    var singleSender = false

    @Option(name: .customLong("without"), help: ArgumentHelp(
        "Leave one rule out (repeatable): every-old-replica-sends, wait-for-down-gainers, fencing, reads-ask-added."))
    var without: [String] = []

    @Flag(help: "Print the trace of the first failing history.")
    var trace = false

    @Flag(help: "Simulate SWIM membership instead: join spread, crash detection, false suspicions.")
    var membership = false

    @Option(help: "Member counts for --membership, comma-separated.")
    var members = "10,100,1000"

    func run() throws {
        if membership { return runMembership() }
        var settings = ClusterSimulation.Settings()
        settings.operations = operations
        settings.replicas = replicas
        settings.readQuorum = readQuorum
        settings.writeQuorum = writeQuorum
        settings.joins = joins
        settings.leaves = leaves
        settings.rules = singleSender ? .singleSender : hintsDoNotCount ? .proposed : .asBuilt
        for rule in without {
            switch rule {
            case "every-old-replica-sends": settings.rules.everyOldReplicaSends = false
            case "wait-for-down-gainers": settings.rules.transfersWaitForDownGainers = false
            case "fencing": settings.rules.fencing = false
            case "reads-ask-added": settings.rules.readsAskAddedReplicas = false
            default: throw ValidationError("unknown rule '\(rule)' for --without")
            }
        }
        switch sloppyQuorum {
        case "never": settings.sloppyQuorum = .never
        case "always": settings.sloppyQuorum = .always
        case "alternate": settings.sloppyQuorum = .everyOtherSeed
        default: throw ValidationError("--sloppy-quorum must be never, always or alternate")
        }
        var totals = ClusterSimulation.Report(seed: firstSeed)
        var failing: [UInt64] = []
        var sloppyHistories = 0
        for seed in firstSeed..<(firstSeed + UInt64(histories)) {
            var simulation = ClusterSimulation(seed: seed, settings: settings)
            let report = simulation.run()
            totals.add(report)
            if report.sloppyQuorum { sloppyHistories += 1 }
            if !report.violations.isEmpty {
                failing.append(seed)
                if failing.count <= 3 { print("seed \(seed): \(report.violations[0])") }
                if trace && failing.count == 1 {
                    var traced = settings
                    traced.trace = true
                    var again = ClusterSimulation(seed: seed, settings: traced)
                    for line in again.run().trace { print("  \(line)") }
                }
            }
        }
        print("histories:            \(histories) (seeds \(firstSeed)...\(firstSeed + UInt64(histories) - 1)), N=\(replicas) R=\(readQuorum) W=\(writeQuorum), "
              + "\(singleSender ? "one sender per key" : hintsDoNotCount ? "rules as built, hints not counted toward W" : "rules as built")\(without.isEmpty ? "" : " without \(without.joined(separator: ", "))")")
        print("writes acknowledged:  \(totals.writesAcknowledged), failed: \(totals.writesFailed)")
        print("reads answered:       \(totals.readsAnswered), failed: \(totals.readsFailed)")
        print("read repairs:         \(totals.repairs)")
        print("messages dropped:     \(totals.messagesDropped)")
        print("node crashes:         \(totals.crashes)")
        print("joins, leaves:        \(totals.joins), \(totals.leaves); ring changes settled: \(totals.ringChangesSettled)")
        print("transfers finished:   \(totals.transfersFinished), keys moved: \(totals.keysMoved), takeovers: \(totals.takeovers)")
        print("hints kept:           \(totals.hintsKept), replayed: \(totals.hintsReplayed) (sloppy quorum in \(sloppyHistories) histories)")
        print("stale views refused:  \(totals.refusals)")
        print("reads exempted:       \(totals.readsExempted) (a crash took a copy of a write they missed)")
        print("reads of sloppy writes: \(totals.readsOfSloppyWrites) missed a write acknowledged through stand-ins (let off: sloppy-quorum yes promises W nodes, not W replicas)")
        print("histories violating:  \(failing.count)\(failing.isEmpty ? "" : " (seeds \(failing.prefix(10).map(String.init).joined(separator: ", ")))")")
        if !failing.isEmpty { throw ExitCode(1) }
    }

    func runMembership() {
        print("members  loss  join known everywhere  crash declared dead everywhere  live members falsely suspected  messages")
        for count in members.split(separator: ",").compactMap({ Int($0) }) {
            for loss in [0.0, 0.05] {
                var simulation = MembershipSimulation(members: count, lossRate: loss, seed: firstSeed)
                let result = simulation.measure()
                let spread = result.periodsToSpreadJoin.isFinite ? String(format1(result.periodsToSpreadJoin)) + " periods" : "never"
                print(pad(String(count), 7), pad("\(Int(loss * 100))%", 5), pad(spread, 22),
                      pad("\(result.millisToDeclareDead) ms", 31), pad(String(result.falseSuspicions), 31), result.messages)
            }
        }
    }

    private func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }

    private func format1(_ value: Double) -> String {
        String(Double(Int(value * 10)) / 10)
    }
}
