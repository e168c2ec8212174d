import CacheStore
import Testing

@testable import ClusterCore

private let a = NodeID(rawValue: 1)
private let b = NodeID(rawValue: 2)

private func sibling(_ text: String?, _ clock: [NodeID: UInt64], at millis: Int64, by node: NodeID = a) -> Sibling {
    Sibling(clock: VectorClock(clock),
            value: VersionedValue(version: Version(timestamp: HLCTimestamp(millis: millis), node: node), value: text.map { Array($0.utf8) }))
}

@Suite struct SiblingSetTests {
    @Test func descendantsReplaceAncestors() {
        var set = SiblingSet()
        #expect(set.add(sibling("v1", [a: 1], at: 10), limit: 8).changed)
        #expect(set.add(sibling("v2", [a: 2], at: 20), limit: 8).changed)
        #expect(set.siblings.map(\.value.value) == [Array("v2".utf8)])
        // An ancestor arriving late changes nothing.
        #expect(!set.add(sibling("v1", [a: 1], at: 10), limit: 8).changed)
        #expect(set.siblings.count == 1)
    }

    @Test func concurrentWritesBecomeSiblingsUntilAContextResolvesThem() {
        var set = SiblingSet()
        set.add(sibling("from-a", [a: 1], at: 10, by: a), limit: 8)
        set.add(sibling("from-b", [b: 1], at: 12, by: b), limit: 8)
        #expect(set.siblings.count == 2)
        #expect(set.winner?.value == Array("from-b".utf8))  // plain GET: the LWW choice
        #expect(set.context == VectorClock([a: 1, b: 1]))
        let resolved = SiblingSet.clock(for: set.context, writtenBy: a)
        set.add(Sibling(clock: resolved, value: sibling("merged", [:], at: 20).value), limit: 8)
        #expect(set.siblings.count == 1 && set.winner?.value == Array("merged".utf8))
    }

    @Test func tooManySiblingsCollapseToTheWinnerUnderTheMergedClock() {
        var set = SiblingSet()
        for i in 0..<3 {
            set.add(sibling("s\(i)", [NodeID(rawValue: UInt32(10 + i)): 1], at: Int64(i), by: NodeID(rawValue: UInt32(10 + i))), limit: 8)
        }
        let result = set.add(sibling("s3", [NodeID(rawValue: 13): 1], at: 3, by: NodeID(rawValue: 13)), limit: 3)
        #expect(result.overflowed)
        #expect(set.siblings.count == 1 && set.winner?.value == Array("s3".utf8))
        #expect(set.siblings[0].clock.descends(from: VectorClock([NodeID(rawValue: 10): 1])))
    }

    /// Merging is order-independent: replicas that saw the same writes in any order agree.
    @Test func mergeIsCommutativeAndIdempotent() {
        var random = SimulationRandom(seed: 7)
        for _ in 0..<300 {
            var writes: [Sibling] = []
            for i in 0..<5 {
                var clock: [NodeID: UInt64] = [:]
                for node in [a, b, NodeID(rawValue: 3)] where random.chance(0.6) { clock[node] = UInt64(random.next() % 3 + 1) }
                writes.append(sibling("w\(i)", clock, at: Int64(i), by: a))
            }
            let forward = SiblingSet(writes)
            let backward = SiblingSet(writes.reversed())
            #expect(Set(forward.siblings) == Set(backward.siblings))
            #expect(forward.merged(with: forward) == forward)
            #expect(Set(forward.merged(with: backward).siblings) == Set(forward.siblings))
        }
    }

    @Test func readQuorumMergesSiblingSetsAndRepairs() {
        var quorum = ReadQuorum<SiblingSet>(replicas: [0, 1, 2], required: 2)
        let x = SiblingSet([sibling("x", [a: 1], at: 10, by: a)])
        let y = SiblingSet([sibling("y", [b: 1], at: 11, by: b)])
        #expect(quorum.onResponse(from: 0, x).isEmpty)
        let actions = quorum.onResponse(from: 1, y)
        let both = x.merged(with: y)
        #expect(actions.first == .reply(both))
        #expect(Set(actions.dropFirst()) == [.repair(replica: 0, value: both), .repair(replica: 1, value: both)])
    }
}

@Suite struct SiblingSetEncodingTests {
    @Test func serializedFormRoundTrips() {
        let set = SiblingSet([
            sibling("x\r\n\u{0}", [a: 3, b: 1], at: 10, by: a),
            sibling(nil, [b: 2], at: 11, by: b),
        ])
        #expect(SiblingSet(serialized: set.serialized) == set)
        #expect(SiblingSet(serialized: [0, 9, 1]) == nil)
        #expect(SiblingSet(serialized: []) == SiblingSet())
    }
}
