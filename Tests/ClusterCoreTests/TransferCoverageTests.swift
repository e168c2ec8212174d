import Testing

@testable import ClusterCore

@Suite struct TransferCoverageTests {
    @Test func readsWaitForTheLiveOwnersToCoverThoseThatDiedUnfinished() {
        let owners = ["a", "b", "c"]
        var coverage = TransferCoverage()
        #expect(coverage.waiting(oldOwners: owners, dead: []) == owners)
        coverage.record("a", covering: [])
        coverage.record("b", covering: [])
        #expect(coverage.waiting(oldOwners: owners, dead: []) == ["c"])
        // c dies before it finished: a and b sent nothing of its share yet.
        #expect(coverage.waiting(oldOwners: owners, dead: ["c"]) == ["a", "b"])
        #expect(coverage.owedBy("a", oldOwners: owners, dead: ["c"]) == ["c"])
        let added1 = coverage.record("a", covering: ["c"])
        #expect(added1)
        #expect(coverage.owedBy("a", oldOwners: owners, dead: ["c"]).isEmpty)
        #expect(coverage.waiting(oldOwners: owners, dead: ["c"]) == ["b"])
        coverage.record("b", covering: ["c"])
        #expect(coverage.waiting(oldOwners: owners, dead: ["c"]).isEmpty)
        // Had c finished before it died, nobody would owe anything for it.
        var finishedFirst = TransferCoverage()
        for owner in owners { finishedFirst.record(owner, covering: []) }
        #expect(finishedFirst.waiting(oldOwners: owners, dead: ["c"]).isEmpty)
        #expect(finishedFirst.owedBy("a", oldOwners: owners, dead: ["c"]).isEmpty)
    }

    @Test func claimsMergeByUnionAndCoveringAllWins() {
        var coverage = TransferCoverage()
        let added2 = coverage.record("a", covering: ["b"])
        #expect(added2)
        let added3 = coverage.record("a", covering: ["b"])
        #expect(!added3)
        let added4 = coverage.record("a", covering: ["c"])
        #expect(added4)
        #expect(coverage.coverage(of: "a") == .some(["b", "c"]))
        let added5 = coverage.record("a", covering: nil)
        #expect(added5)
        let added6 = coverage.record("a", covering: ["d"])
        #expect(!added6)
        #expect(coverage.coverage(of: "a") == .some(nil))
        #expect(coverage.coverage(of: "z") == nil)
        #expect(coverage.waiting(oldOwners: ["a"], dead: ["b", "c", "d"]).isEmpty)
    }

    /// Keys moving to a joiner from four old owners (N=3): the first sender dies after sending
    /// nothing, then a second one dies after its first run; takeover runs of the live owners,
    /// as the coordinator makes them, deliver every (key, gainer) pair.
    @Test func takeoverRunsDeliverTheShareOfOwnersThatDied() {
        let names = ["n0", "n1", "n2", "n3", "n4"]
        let old = HashRing(members: names, vnodes: 16, replicas: 3, epoch: 4, excluded: [4])
        let new = HashRing(members: names, vnodes: 16, replicas: 3, epoch: 5)
        let positions = (0..<3000).map { UInt64($0) &* 0x9E37_79B9_7F4A_7C15 }
        var wanted = Set<[UInt64]>()
        for position in positions {
            let before = old.preferenceList(forPosition: position).members
            for gainer in new.preferenceList(forPosition: position).members where !before.contains(gainer) {
                wanted.insert([position, UInt64(gainer)])
            }
        }
        #expect(!wanted.isEmpty)
        var delivered = Set<[UInt64]>()
        /// One run of `sender` with `down` counted as down, skipping what it sent with `sentBefore`.
        func run(_ sender: Int, down: Set<Int>, sentBefore: Set<Int>?) {
            for position in positions {
                if let sentBefore, old.sender(forPosition: position, unreachable: sentBefore) == sender { continue }
                for gainer in new.gained(forPosition: position, from: old, sender: sender, unreachable: down) {
                    delivered.insert([position, UInt64(gainer)])
                }
            }
        }
        var coverage = TransferCoverage()
        // n0 dies before delivering anything; n1 finishes (covering nobody), then dies too.
        for sender in [1, 2, 3] {
            run(sender, down: [], sentBefore: nil)
            coverage.record(names[sender], covering: [])
        }
        #expect(delivered != wanted)
        let owners = Array(names.prefix(4))
        #expect(coverage.waiting(oldOwners: owners, dead: ["n0"]) == ["n1", "n2", "n3"])
        // n1 dies as well, before it takes over from n0.
        let dead: Set<String> = ["n0", "n1"]
        #expect(coverage.waiting(oldOwners: owners, dead: dead) == ["n2", "n3"])
        for sender in [2, 3] {
            // n1 finished, but sent nothing for n0: both count as down now.
            let owed = coverage.owedBy(names[sender], oldOwners: owners, dead: dead)
            #expect(owed == ["n0", "n1"])
            run(sender, down: [0, 1], sentBefore: [])
            coverage.record(names[sender], covering: owed)
        }
        #expect(coverage.waiting(oldOwners: owners, dead: dead).isEmpty)
        let missing = wanted.subtracting(delivered)
        #expect(missing.isEmpty, "\(missing.count) of \(wanted.count) never sent")
    }
}
