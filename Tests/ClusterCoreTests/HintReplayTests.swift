import CacheStore
import Testing

@testable import ClusterCore

@Suite struct HintReplayTests {
    func value(_ bytes: [UInt8]?, at millis: Int64, expiry: Int64 = 0) -> VersionedValue {
        VersionedValue(version: Version(timestamp: HLCTimestamp(millis: millis), node: NodeID(rawValue: 1)), value: bytes, expiry: expiry)
    }

    func hint(_ owner: Int, _ key: String, stored: Int64 = 0, _ value: VersionedValue? = nil) -> HintReplay.Hint {
        HintReplay.Hint(owner: owner, key: Array(key.utf8), value: value ?? self.value([1, 2, 3], at: stored), stored: stored)
    }

    let limits = HintReplay.Limits(count: 4, bytes: 1 << 20, age: 10_000, batch: 2, tombstoneTTL: 1_000)

    @Test func keepsWithinCountAndBytes() {
        var replay = HintReplay(limits: limits)
        for index in 0..<4 {
            let kept = replay.add(hint(1, "k\(index)"))
            #expect(kept)
        }
        let overCount = replay.add(hint(1, "k4"))
        #expect(!overCount, "a full store refuses: the stand-in's write must not count")
        #expect(replay.count == 4 && replay.dropped == 1)
        var small = HintReplay(limits: .init(count: 10, bytes: 200, age: 10_000, tombstoneTTL: 1_000))
        let big = small.add(hint(1, String(repeating: "x", count: 40)))
        let tooBig = small.add(hint(1, String(repeating: "y", count: 40)))
        #expect(big && !tooBig)
        #expect(small.bytes == 40 + 3 + 64)
    }

    @Test func replaysOneBatchPerReachableOwnerAndKeepsWhatDidNotArrive() {
        var replay = HintReplay(limits: limits)
        for key in ["a", "b", "c"] { _ = replay.add(hint(1, key)) }
        _ = replay.add(hint(2, "d"))
        let first = replay.onTick(now: 10, reachable: { $0 == 1 })
        #expect(first.map(\.owner) == [1])
        #expect(first[0].hints.map(\.key) == [Array("a".utf8), Array("b".utf8)], "batches are bounded")
        let again = replay.onTick(now: 20, reachable: { $0 == 1 })
        #expect(again.isEmpty, "no second batch while one is out")
        replay.onDelivered(owner: 1, delivered: [true, false])
        #expect(replay.delivered == 1 && replay.count == 3)
        let next = replay.onTick(now: 30, reachable: { _ in true })
        #expect(next.map(\.owner) == [1, 2])
        #expect(next[0].hints.map(\.key) == [Array("b".utf8), Array("c".utf8)], "what did not arrive goes first")
        replay.onDelivered(owner: 1, delivered: [true, true])
        replay.onDelivered(owner: 2, delivered: [])
        replay.onDelivered(owner: 2, delivered: [true])
        #expect(replay.pending(for: 1) == 0 && replay.pending(for: 2) == 1, "a report for no batch out is ignored")
        #expect(replay.owners == [2])
    }

    @Test func dropsExpiredTombstonesPastTheirTTLAndOldHints() {
        var replay = HintReplay(limits: limits)
        _ = replay.add(hint(1, "expires", stored: 0, value(Array("v".utf8), at: 0, expiry: 500)))
        _ = replay.add(hint(1, "tombstone", stored: 0, value(nil, at: 0)))
        _ = replay.add(hint(1, "old", stored: 0))
        _ = replay.add(hint(1, "fresh", stored: 9_500))
        let early = replay.onTick(now: 400, reachable: { _ in false })
        #expect(early.isEmpty && replay.count == 4)
        _ = replay.onTick(now: 1_200, reachable: { _ in false })
        #expect(replay.count == 2 && replay.dropped == 2, "the expired value and the tombstone past its TTL go, even for an unreachable owner")
        let late = replay.onTick(now: 10_001, reachable: { _ in true })
        #expect(late.flatMap(\.hints).map(\.key) == [Array("fresh".utf8)], "past the age limit a hint is dropped, not replayed")
    }
}
