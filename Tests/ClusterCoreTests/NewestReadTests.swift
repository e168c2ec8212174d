import CacheStore
import Testing

@testable import ClusterCore

@Suite struct NewestReadTests {
    func version(_ n: UInt64) -> Version { Version(timestamp: HLCTimestamp(rawValue: n << 16), node: NodeID(rawValue: 1)) }

    @Test func replicaListsHoldMembersInlineInOrder() {
        var list = ReplicaList()
        for member in [4, 0, 9] {
            let added = list.append(member)
            #expect(added)
        }
        #expect(Array(list) == [4, 0, 9])
        #expect(list.position(of: 9) == 2)
        #expect(list.position(of: 5) == nil)
        #expect(ReplicaList(0..<ReplicaList.capacity) != nil)
        #expect(ReplicaList(0...ReplicaList.capacity) == nil, "past the capacity")
        #expect(ReplicaList([70_000]) == nil, "past a lane")
        let ring = HashRing(members: ["a", "b", "c", "d"], vnodes: 8, replicas: 3)
        for position in stride(from: UInt64(0), to: UInt64.max - (UInt64.max / 50), by: Int(UInt64.max / 50)) {
            #expect(Array(ring.replicaList(forPosition: position)) == ring.preferenceList(forPosition: position).members)
        }
    }

    @Test func answersAtRWithTheNewestAndRepairsTheStale() {
        var read = NewestRead(replicas: ReplicaList([0, 1, 2])!, required: 2)
        let first = read.onAnswer(at: 0, version: version(5))
        #expect(first.isNewest && first.decision == nil)
        let second = read.onAnswer(at: 1, version: version(3))
        #expect(!second.isNewest)
        #expect(second.decision == .reply(newest: 0))
        #expect(second.repairs == 0b010)
        let late = read.onAnswer(at: 2, version: nil)
        #expect(late.repairs == 0b100, "a late answer without the key is repaired too")
        #expect(late.decision == nil)
    }

    @Test func aNewerLateAnswerRepairsThoseThatAnsweredBefore() {
        var read = NewestRead(replicas: ReplicaList([0, 1, 2])!, required: 2)
        _ = read.onAnswer(at: 0, version: version(3))
        let decided = read.onAnswer(at: 1, version: version(3))
        #expect(decided.decision == .reply(newest: 0))
        #expect(decided.repairs == 0)
        let late = read.onAnswer(at: 2, version: version(9))
        #expect(late.isNewest)
        #expect(late.repairs == 0b011)
    }

    @Test func failsWhenRCannotBeReachedOrAtTheTimeout() {
        var read = NewestRead(replicas: ReplicaList([0, 1, 2])!, required: 2)
        let first = read.onFailure(at: 0)
        #expect(first == nil)
        guard case .fail(let error)? = read.onFailure(at: 1) else { Issue.record("no failure"); return }
        #expect(error.failed == 2 && !error.timedOut)
        var slow = NewestRead(replicas: ReplicaList([0, 1, 2])!, required: 3)
        _ = slow.onAnswer(at: 0, version: nil)
        guard case .fail(let timeout)? = slow.onTimeout() else { Issue.record("no timeout"); return }
        #expect(timeout.timedOut && timeout.answered == 1)
        let again = slow.onTimeout()
        #expect(again == nil)
    }

    /// The same decisions and repairs as the general ``ReadQuorum`` over versioned values,
    /// on random answers, failures and timeouts.
    @Test func decidesAsTheGeneralReadQuorumDoes() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<1500 {
            let n = Int.random(in: 1...5, using: &generator)
            let r = Int.random(in: 1...n, using: &generator)
            let members = Array(0..<n).shuffled(using: &generator)
            var general = ReadQuorum<VersionedValue>(replicas: members, required: r)
            var newest = NewestRead(replicas: ReplicaList(members)!, required: r)
            let held: [Version?] = (0..<n).map { _ in Bool.random(using: &generator) ? nil : version(UInt64.random(in: 1...4, using: &generator)) }
            func value(_ v: Version?) -> VersionedValue? {
                // A version's bytes follow from it (odd timestamps are tombstones).
                v.map { VersionedValue(version: $0, value: ($0.timestamp.rawValue >> 16) % 2 == 1 ? nil : [UInt8(truncatingIfNeeded: $0.timestamp.rawValue >> 16)]) }
            }
            var kept: VersionedValue?
            for position in (0..<n).shuffled(using: &generator) {
                let member = members[position]
                let roll = Int.random(in: 0..<10, using: &generator)
                if roll == 0 {
                    let expected = general.onTimeout()
                    let got = newest.onTimeout()
                    #expect(expected == (got.map { [.fail($0.failure)] } ?? []))
                } else if roll < 3 {
                    let expected = general.onFailure(from: member)
                    let got = newest.onFailure(at: position)
                    #expect(expected == (got.map { [.fail($0.failure)] } ?? []))
                } else {
                    let expected = general.onResponse(from: member, value(held[position]))
                    let step = newest.onAnswer(at: position, version: held[position])
                    if step.isNewest { kept = value(held[position]) }
                    var actions: [ReadQuorum<VersionedValue>.Action] = []
                    if case .reply(let at)? = step.decision { actions.append(.reply(at == nil ? nil : kept)) }
                    if case .fail(let error)? = step.decision { actions.append(.fail(error)) }
                    for i in 0..<n where step.repairs & (1 << i) != 0 { actions.append(.repair(replica: members[i], value: kept!)) }
                    #expect(Set(expected) == Set(actions), "N\(n) R\(r) held \(held)")
                }
            }
        }
    }
}

extension NewestRead.Decision {
    var failure: NoQuorum {
        if case .fail(let error) = self { return error }
        preconditionFailure("not a failure")
    }
}
