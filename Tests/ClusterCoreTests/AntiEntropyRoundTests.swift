import CacheStore
import Testing

@testable import ClusterCore

@Suite struct AntiEntropyRoundTests {
    func version(_ n: UInt64) -> Version { Version(timestamp: HLCTimestamp(rawValue: n << 16), node: NodeID(rawValue: 1)) }
    func key(_ text: String) -> [UInt8] { Array(text.utf8) }

    func digest(_ entries: [(String, UInt64)]) -> MerkleDigest {
        var digest = MerkleDigest(bits: 4)
        for (key, version) in entries {
            Array(key.utf8).withUnsafeBytes {
                digest.add(key: $0, position: HashRing.position(of: $0), version: version, node: 1, tombstone: false)
            }
        }
        return digest
    }

    @Test func matchingDigestsEndTheExchange() {
        var round = AntiEntropyRound(mode: .lastWriteWins)
        #expect(round.start(peers: [1, 2]) == [.requestDigest(peer: 1), .requestDigest(peer: 2)])
        let same = digest([("a", 1)])
        let none = round.onDigest(from: 1, theirs: same.buckets, local: same)
        #expect(none.isEmpty && round.inSync == 1)
        #expect(!round.isFinished)
        let otherShape = round.onDigest(from: 2, theirs: [1, 2, 3], local: same)
        #expect(otherShape.isEmpty && round.isFinished, "a digest of another shape ends the exchange")
    }

    @Test func pullsTheNewerAndPushesTheOlderUnderLastWriteWins() {
        var round = AntiEntropyRound(mode: .lastWriteWins, bucketsPerRound: 32)
        _ = round.start(peers: [3])
        let mine = digest([("a", 1), ("b", 5), ("c", 2)])
        let theirs = digest([("a", 4), ("b", 5), ("d", 1)])
        let asked = round.onDigest(from: 3, theirs: theirs.buckets, local: mine)
        guard case .requestVersions(3, let buckets)? = asked.first else {
            Issue.record("expected a request for versions, got \(asked)")
            return
        }
        #expect(!buckets.isEmpty && round.awaitedBuckets(of: 3) == buckets)
        let actions = round.onVersions(from: 3, theirs: [(key("a"), version(4)), (key("b"), version(5)), (key("d"), version(1))],
                                       mine: [(key("a"), version(1)), (key("b"), version(5)), (key("c"), version(2))])
        #expect(actions == [.pull(key: key("a"), from: 3), .pull(key: key("d"), from: 3), .push(key: key("c"), to: 3)])
        #expect(round.isFinished && round.pulls == 2 && round.pushes == 1)
        #expect(round.onVersions(from: 3, theirs: [(key("z"), version(9))], mine: []).isEmpty, "an answer not waited for is ignored")
    }

    @Test func siblingFingerprintsThatDifferGoBothWays() {
        var round = AntiEntropyRound(mode: .siblings)
        _ = round.start(peers: [1])
        _ = round.onDigest(from: 1, theirs: digest([("a", 2)]).buckets, local: digest([("a", 9)]))
        let actions = round.onVersions(from: 1, theirs: [(key("a"), version(2))], mine: [(key("a"), version(9))])
        #expect(actions == [.pull(key: key("a"), from: 1), .push(key: key("a"), to: 1)])
    }

    @Test func bucketsPerRoundBoundsTheExchangeAndFailuresEndIt() {
        var round = AntiEntropyRound(mode: .lastWriteWins, bucketsPerRound: 1)
        _ = round.start(peers: [1, 2])
        let mine = digest((0..<40).map { ("key\($0)", 1) })
        let asked = round.onDigest(from: 1, theirs: MerkleDigest(bits: 4).buckets, local: mine)
        #expect(asked.count == 1 && round.awaitedBuckets(of: 1)?.count == 1)
        round.onFailure(peer: 1)
        round.onFailure(peer: 2)
        #expect(round.isFinished)
        #expect(round.onDigest(from: 2, theirs: mine.buckets, local: mine).isEmpty)
    }
}
