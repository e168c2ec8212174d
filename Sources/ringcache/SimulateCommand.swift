import ArgumentParser
import ClusterCore

struct Simulate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the deterministic cluster simulator over many seeded histories and print what it found.",
        discussion: """
            Each history drives the quorum cores through lost, delayed, duplicated and reordered \\
            messages, crashes and partitions, and checks that every read that starts after a write was \\
            acknowledged returns that write or a newer one. A seed that fails replays exactly: keep it as \\
            a regression test.
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
        var totals = ClusterSimulation.Report(seed: firstSeed)
        var failing: [UInt64] = []
        for seed in firstSeed..<(firstSeed + UInt64(histories)) {
            var simulation = ClusterSimulation(seed: seed, settings: settings)
            let report = simulation.run()
            totals.writesAcknowledged += report.writesAcknowledged
            totals.writesFailed += report.writesFailed
            totals.readsAnswered += report.readsAnswered
            totals.readsFailed += report.readsFailed
            totals.repairs += report.repairs
            totals.messagesDropped += report.messagesDropped
            totals.crashes += report.crashes
            if !report.violations.isEmpty {
                failing.append(seed)
                if failing.count <= 3 { print("seed \(seed): \(report.violations[0])") }
            }
        }
        print("histories:            \(histories) (seeds \(firstSeed)...\(firstSeed + UInt64(histories) - 1)), N=\(replicas) R=\(readQuorum) W=\(writeQuorum)")
        print("writes acknowledged:  \(totals.writesAcknowledged), failed: \(totals.writesFailed)")
        print("reads answered:       \(totals.readsAnswered), failed: \(totals.readsFailed)")
        print("read repairs:         \(totals.repairs)")
        print("messages dropped:     \(totals.messagesDropped)")
        print("node crashes:         \(totals.crashes)")
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
