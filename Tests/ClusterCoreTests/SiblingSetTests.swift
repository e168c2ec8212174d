import CacheStore
import Testing

@testable import ClusterCore

private let a = NodeID(rawValue: 1)
private let b = NodeID(rawValue: 2)

/// A write of `text` by `node` at `millis` that had seen `context`.
private func write(_ text: String?, by node: NodeID, at millis: Int64, seen context: VectorClock = VectorClock()) -> Sibling {
    Sibling(clock: context, value: VersionedValue(version: Version(timestamp: HLCTimestamp(millis: millis), node: node),
                                                  value: text.map { Array($0.utf8) }))
}

private func values(_ set: SiblingSet) -> [String?] {
    set.siblings.map { $0.value.value.map { String(decoding: $0, as: UTF8.self) } }
}

@Suite struct SiblingSetTests {
    @Test func aWriteReplacesWhatItsContextCovers() {
        var set = SiblingSet()
        #expect(set.add(write("v1", by: a, at: 10), limit: 8).changed)
        #expect(set.add(write("v2", by: a, at: 20, seen: set.context), limit: 8).changed)
        #expect(values(set) == ["v2"])
        // The first write arriving late (a repair) changes nothing: v2 has seen it.
        #expect(!set.add(write("v1", by: a, at: 10), limit: 8).changed)
        // The same write twice changes nothing either.
        #expect(!set.add(set.siblings[0], limit: 8).changed)
    }

    @Test func writesThatDidNotSeeEachOtherAreSiblingsUntilResolved() {
        var set = SiblingSet()
        let before = write("before", by: a, at: 5)
        set.add(before, limit: 8)
        let context = set.context
        set.add(write("from-a", by: a, at: 10, seen: context), limit: 8)
        set.add(write("from-b", by: b, at: 12, seen: context), limit: 8)
        #expect(Set(values(set)) == ["from-a", "from-b"])
        #expect(set.winner?.value == Array("from-b".utf8))  // plain GET: the LWW choice
        set.add(write("merged", by: b, at: 20, seen: set.context), limit: 8)
        #expect(values(set) == ["merged"])
    }

    /// Two writes through the same node with the same (stale) context are both kept: each
    /// write is its own event, so neither is lost.
    @Test func sameNodeSameContextKeepsBoth() {
        var set = SiblingSet()
        set.add(write("x", by: a, at: 10), limit: 8)
        set.add(write("y", by: a, at: 11), limit: 8)
        #expect(Set(values(set)) == ["x", "y"])
        // A write made with an empty context after both is a third sibling, not dropped.
        set.add(write("z", by: a, at: 12), limit: 8)
        #expect(set.siblings.count == 3)
    }

    @Test func tooManySiblingsCollapseToTheWinnerUnderTheMergedContext() {
        var set = SiblingSet()
        for i in 0..<3 { set.add(write("s\(i)", by: NodeID(rawValue: UInt32(10 + i)), at: Int64(i + 1)), limit: 8) }
        let result = set.add(write("s3", by: NodeID(rawValue: 13), at: 4), limit: 3)
        #expect(result.overflowed)
        #expect(values(set) == ["s3"])
        // The kept winner has seen the dropped ones, so they cannot come back.
        #expect(!set.add(write("s0", by: NodeID(rawValue: 10), at: 1), limit: 3).changed)
    }

    /// Merging is order-independent and idempotent: replicas that saw the same writes in any
    /// order agree.
    @Test func mergeIsCommutativeAndIdempotent() {
        var random = SimulationRandom(seed: 7)
        for _ in 0..<300 {
            var writes: [Sibling] = []
            var seen = VectorClock()
            for i in 0..<6 {
                let node = [a, b, NodeID(rawValue: 3)][Int(random.next() % 3)]
                let context = random.chance(0.5) ? seen : VectorClock()
                let sibling = write("w\(i)", by: node, at: Int64(i + 1), seen: context)
                writes.append(sibling)
                seen = seen.merged(with: sibling.fullClock)
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
        let x = SiblingSet([write("x", by: a, at: 10)])
        let y = SiblingSet([write("y", by: b, at: 11)])
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
            write("x\r\n\u{0}", by: a, at: 10, seen: VectorClock([a: 3, b: 1])),
            write(nil, by: b, at: 11, seen: VectorClock([b: 2])),
        ])
        #expect(SiblingSet(serialized: set.serialized) == set)
        #expect(SiblingSet(serialized: [0, 9, 1]) == nil)
        #expect(SiblingSet(serialized: []) == SiblingSet())
        #expect(VectorClock(hex: UnsafeRawBufferPointer(start: nil, count: 0)) == VectorClock())
    }
}
