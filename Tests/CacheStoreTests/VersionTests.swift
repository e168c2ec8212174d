import Testing

@testable import CacheStore

@Suite struct VersionTests {
    @Test func hybridLogicalClockNeverGoesBack() {
        var clock = HybridLogicalClock()
        let a = clock.tick(wallMillis: 1_000)
        let b = clock.tick(wallMillis: 1_000)
        let c = clock.tick(wallMillis: 900)  // wall clock stepped back
        let d = clock.tick(wallMillis: 2_000)
        #expect(a < b && b < c && c < d)
        #expect(c.millis == 1_000 && c.logical == 2)
        #expect(d == HLCTimestamp(millis: 2_000))
        let e = clock.observe(HLCTimestamp(millis: 5_000, logical: 7), wallMillis: 2_001)
        #expect(e == HLCTimestamp(millis: 5_000, logical: 8))
    }

    @Test func versionsOrderByTimestampThenNode() {
        let t = HLCTimestamp(millis: 10)
        #expect(Version(timestamp: t, node: NodeID(rawValue: 1)) < Version(timestamp: t, node: NodeID(rawValue: 2)))
        #expect(Version(timestamp: t, node: NodeID(rawValue: 9)) < Version(timestamp: HLCTimestamp(millis: 11), node: NodeID(rawValue: 1)))
        #expect(NodeID(name: "n1") == NodeID(name: "n1"))
        #expect(NodeID(name: "n1") != NodeID(name: "n2"))
    }

    @Test func vectorClockCompareAndMerge() {
        let a = NodeID(rawValue: 1)
        let b = NodeID(rawValue: 2)
        var x = VectorClock()
        x.increment(a)
        var y = x
        y.increment(b)
        #expect(x.compare(to: y) == .before)
        #expect(y.compare(to: x) == .after)
        #expect(x.compare(to: x) == .equal)
        var z = x
        z.increment(a)
        #expect(y.compare(to: z) == .concurrent)
        #expect(!y.descends(from: z))
        let merged = y.merged(with: z)
        #expect(merged[a] == 2 && merged[b] == 1)
        #expect(merged.descends(from: y) && merged.descends(from: z))
        #expect(VectorClock().compare(to: VectorClock()) == .equal)
        #expect(VectorClock().compare(to: x) == .before)
    }

    @Test func vectorClockEncodingRoundTrips() {
        var clock = VectorClock()
        for n in [5, 1, 9, 1] { clock.increment(NodeID(rawValue: UInt32(n))) }
        #expect(clock.entries.map(\.node.rawValue) == [1, 5, 9])
        #expect(VectorClock(encoded: clock.encoded) == clock)
        #expect(VectorClock(encoded: [1, 2, 3]) == nil)
    }

    /// Merge is commutative, associative and idempotent, and its result descends from both.
    @Test func vectorClockMergeLaws() {
        var generator = SystemRandomNumberGenerator()
        func random() -> VectorClock {
            var counters: [NodeID: UInt64] = [:]
            for _ in 0..<Int.random(in: 0...4, using: &generator) {
                counters[NodeID(rawValue: UInt32.random(in: 0..<6, using: &generator))] = UInt64.random(in: 1...3, using: &generator)
            }
            return VectorClock(counters)
        }
        for _ in 0..<500 {
            let (x, y, z) = (random(), random(), random())
            #expect(x.merged(with: y) == y.merged(with: x))
            #expect(x.merged(with: y).merged(with: z) == x.merged(with: y.merged(with: z)))
            #expect(x.merged(with: x) == x)
            #expect(x.merged(with: y).descends(from: x))
            let forward = x.compare(to: y)
            let backward = y.compare(to: x)
            switch forward {
            case .before: #expect(backward == .after)
            case .after: #expect(backward == .before)
            case .equal, .concurrent: #expect(backward == forward)
            }
        }
    }

    @Test func globPatternsMatchLikeRedis() {
        func match(_ p: String, _ s: String) -> Bool { GlobPattern.matches(Array(p.utf8), Array(s.utf8)) }
        #expect(match("*", "anything"))
        #expect(match("h?llo", "hello"))
        #expect(!match("h?llo", "hllo"))
        #expect(match("h*llo", "heeeello"))
        #expect(match("h[ae]llo", "hallo"))
        #expect(!match("h[ae]llo", "hillo"))
        #expect(match("h[^e]llo", "hallo"))
        #expect(!match("h[^e]llo", "hello"))
        #expect(match("h[a-b]llo", "hbllo"))
        #expect(match("h\\*llo", "h*llo"))
        #expect(!match("h\\*llo", "hello"))
        #expect(match("user:*:name", "user:42:name"))
        #expect(!match("a*b", "acbd"))
        #expect(match("", ""))
        #expect(!match("a", ""))
        #expect(!match(String(repeating: "a*", count: 30) + "b", String(repeating: "a", count: 60)))
    }
}
