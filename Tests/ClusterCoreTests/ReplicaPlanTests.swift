import Testing

@testable import ClusterCore

@Suite struct ReplicaPlanTests {
    static let names = ["n0", "n1", "n2", "n3", "n4", "n5"]
    static let positions = (0..<2000).map { UInt64($0) &* 0x9E37_79B9_7F4A_7C15 }

    /// n5 joins a ring of five; then n1 leaves the ring of six.
    static let beforeJoin = HashRing(members: names, vnodes: 4, replicas: 3, epoch: 5, excluded: [5])
    static let afterJoin = HashRing(members: names, vnodes: 4, replicas: 3, epoch: 6)
    static let afterLeave = HashRing(members: names, vnodes: 4, replicas: 3, epoch: 7, excluded: [1])

    @Test func settledPlanUsesThePreferenceList() {
        let plan = ReplicaPlan(ring: Self.afterJoin)
        #expect(!plan.isMoving)
        #expect(plan.stage == RingStage(epoch: 6, settled: true))
        for position in Self.positions.prefix(200) {
            let list = Self.afterJoin.preferenceList(forPosition: position).members
            let write = plan.writeSet(forPosition: position)
            #expect(Array(write.replicas) == list && write.extra == 0)
            #expect(plan.readSet(forPosition: position) == write)
            #expect(Array(plan.readRing.replicaList(forPosition: position)) == list)
            #expect(plan.gainers(forPosition: position).isEmpty)
            #expect(plan.transferTargets(forPosition: position, holder: list[0]).isEmpty)
        }
    }

    /// `Coordinator.writeReplicas(of:)`'s rule: the old list, then the members the new ring
    /// adds, one extra acknowledgement each; reads of today's server use the old ring.
    @Test(arguments: ["join", "leave"])
    func movingPlanWritesToTheOldAndTheAddedReplicas(change: String) {
        let (old, new) = change == "join" ? (Self.beforeJoin, Self.afterJoin) : (Self.afterJoin, Self.afterLeave)
        let plan = ReplicaPlan(ring: new, previous: old)
        #expect(plan.isMoving)
        #expect(plan.stage == RingStage(epoch: new.epoch, settled: false))
        var moved = 0
        for position in Self.positions {
            let before = old.preferenceList(forPosition: position).members
            let added = new.preferenceList(forPosition: position).members.filter { !before.contains($0) }
            let write = plan.writeSet(forPosition: position)
            #expect(Array(write.replicas) == before + added)
            #expect(write.extra == added.count)
            #expect(Array(plan.gainers(forPosition: position)) == added)
            #expect(Array(plan.readRing.replicaList(forPosition: position)) == before)
            if !added.isEmpty { moved += 1 }
        }
        // With N = 3 of six members, the member that joins or leaves is a replica of half the keys.
        #expect(moved > 700 && moved < 1_300)
    }

    /// With R + W > N, any W + k acknowledgements of a write set hold W old and W new
    /// replicas, and any R + k answers of a read set meet them in both rings.
    @Test func quorumsOfTheMovingSetsMeetInBothRings() {
        let plan = ReplicaPlan(ring: Self.afterJoin, previous: Self.beforeJoin)
        let (r, w) = (2, 2)
        for position in Self.positions.prefix(300) {
            let set = Array(plan.writeSet(forPosition: position).replicas)
            let extra = plan.writeSet(forPosition: position).extra
            let old = Set(Self.beforeJoin.preferenceList(forPosition: position).members)
            let new = Set(Self.afterJoin.preferenceList(forPosition: position).members)
            for acknowledged in subsets(of: set, size: min(w + extra, set.count)) {
                #expect(acknowledged.intersection(old).count >= w && acknowledged.intersection(new).count >= w)
                for answered in subsets(of: set, size: min(r + extra, set.count)) {
                    #expect(!answered.isDisjoint(with: acknowledged))
                }
            }
        }
    }

    @Test func everyOldReplicaSendsToEveryGainer() {
        let plan = ReplicaPlan(ring: Self.afterLeave, previous: Self.afterJoin)
        for position in Self.positions.prefix(500) {
            let old = Self.afterJoin.preferenceList(forPosition: position).members
            let gainers = plan.gainers(forPosition: position)
            for member in Self.names.indices {
                let targets = plan.transferTargets(forPosition: position, holder: member)
                #expect(targets == (old.contains(member) ? gainers : ReplicaList()))
            }
        }
    }

    @Test func standInsAreReachableMembersOutsideTheWriteSet() {
        let settled = ReplicaPlan(ring: Self.afterJoin)
        let moving = ReplicaPlan(ring: Self.afterJoin, previous: Self.beforeJoin)
        let unreachable: Set<Int> = [0, 3]
        for position in Self.positions.prefix(300) {
            #expect(settled.standIns(forPosition: position, unreachable: unreachable)
                == Self.afterJoin.standIns(forPosition: position, unreachable: unreachable))
            let set = moving.writeSet(forPosition: position).replicas
            let standIns = moving.standIns(forPosition: position, unreachable: unreachable)
            #expect(Set(standIns.keys).isSubset(of: set.filter { unreachable.contains($0) }))
            #expect(Set(standIns.values).count == standIns.count)
            for (owner, standIn) in standIns {
                #expect(unreachable.contains(owner) && !unreachable.contains(standIn) && !set.contains(standIn))
            }
        }
        #expect(settled.standIns(forPosition: 1, unreachable: []).isEmpty)
    }

    @Test func replicasRefuseCoordinatorsThatAreBehind() {
        let moving = ReplicaPlan(ring: Self.afterJoin, previous: Self.beforeJoin)
        let settled = ReplicaPlan(ring: Self.afterJoin)
        let before = ReplicaPlan(ring: Self.beforeJoin)
        // A coordinator that has not heard of the join writes where a transfer may have passed.
        #expect(!moving.admits(before.stage))
        #expect(moving.admits(moving.stage) && moving.admits(settled.stage))
        // One that has not heard the data finished moving is served: its write set holds the
        // new replicas, and its reads need R of them to answer.
        #expect(settled.admits(moving.stage))
        #expect(before.admits(moving.stage) && before.admits(settled.stage))
        #expect(RingStage(epoch: 6, settled: true) < RingStage(epoch: 7, settled: false))
    }

    @Test func requiredAnswersNeverExceedTheReplicas() {
        let set = ReplicaSet(replicas: ReplicaList([1, 2, 3, 4])!, extra: 1)
        #expect(set.required(2) == 3)
        #expect(set.required(4) == 4)
        #expect(ReplicaSet(replicas: ReplicaList([1])!, extra: 0).required(2) == 1)
    }

    private func subsets(of members: [Int], size: Int) -> [Set<Int>] {
        guard size > 0 else { return [[]] }
        guard members.count >= size else { return [] }
        let rest = Array(members.dropFirst())
        return subsets(of: rest, size: size - 1).map { $0.union([members[0]]) } + subsets(of: rest, size: size)
    }
}
