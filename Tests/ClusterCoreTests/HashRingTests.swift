import Testing

@testable import ClusterCore

@Suite struct HashRingTests {
    static func names(_ count: Int) -> [String] { (1...count).map { "n\($0)" } }

    /// Counts sampled keys per primary.
    static func keysPerMember(_ ring: HashRing, keys: Int = 200_000) -> [Int] {
        var counts = [Int](repeating: 0, count: ring.members.count)
        for i in 0..<keys {
            counts[ring.preferenceList(forKey: "key:\(i)").primary!] += 1
        }
        return counts
    }

    @Test(arguments: [3, 5, 10, 20, 50])
    func keysSpreadEvenlyAt128VirtualNodes(members: Int) {
        let ring = HashRing(members: Self.names(members), vnodes: 128, replicas: 3)
        let counts = Self.keysPerMember(ring)
        let mean = Double(counts.reduce(0, +)) / Double(members)
        let worst = counts.map { abs(Double($0) - mean) / mean }.max()!
        #expect(worst <= 0.10, "worst deviation \(worst) for \(members) members: \(counts)")
    }

    @Test func preferenceListsAreDistinctAndDeterministic() {
        let a = HashRing(members: Self.names(5), vnodes: 64, replicas: 3)
        let b = HashRing(members: Self.names(5), vnodes: 64, replicas: 3)
        for i in 0..<2_000 {
            let list = a.preferenceList(forKey: "k\(i)")
            #expect(list.members.count == 3)
            #expect(Set(list.members).count == 3)
            #expect(list == b.preferenceList(forKey: "k\(i)"))
        }
        // `replicates` answers the same as the preference list, for every member.
        for i in 0..<500 {
            let position = Array("k\(i)".utf8).withUnsafeBytes { HashRing.position(of: $0) }
            let list = a.preferenceList(forPosition: position)
            for member in 0..<5 { #expect(a.replicates(member, position: position) == list.contains(member)) }
        }
        // N is clamped to the member count.
        #expect(HashRing(members: ["solo"], replicas: 3).preferenceList(forKey: "x").members == [0])
    }

    /// The full ranking a sloppy quorum falls back along starts with the preference list and
    /// names every member once.
    @Test func rankingExtendsThePreferenceList() {
        let ring = HashRing(members: Self.names(7), vnodes: 16, replicas: 3)
        for i in 0..<2_000 {
            let key = Array("k\(i)".utf8)
            let position = key.withUnsafeBytes { HashRing.position(of: $0) }
            let ranking = ring.ranking(forPosition: position)
            #expect(Array(ranking.prefix(3)) == ring.preferenceList(forPosition: position).members)
            #expect(Set(ranking) == Set(0..<7))
        }
    }

    /// Each unreachable replica gets its own reachable stand-in from past the preference list.
    @Test func standInsComeFromPastThePreferenceList() {
        let ring = HashRing(members: Self.names(5), vnodes: 16, replicas: 3)
        for i in 0..<500 {
            let position = Array("k\(i)".utf8).withUnsafeBytes { HashRing.position(of: $0) }
            let replicas = ring.preferenceList(forPosition: position).members
            let ranking = ring.ranking(forPosition: position)
            #expect(ring.standIns(forPosition: position, unreachable: []).isEmpty)
            let one = ring.standIns(forPosition: position, unreachable: [replicas[1]])
            #expect(one == [replicas[1]: ranking[3]])
            // Two replicas down and the first fallback too: the one fallback left goes to the first.
            let two = ring.standIns(forPosition: position, unreachable: [replicas[0], replicas[2], ranking[3]])
            #expect(two == [replicas[0]: ranking[4]])
        }
    }

    /// Adding member n+1 moves about 1/(n+1) of the keys, and only onto the new member.
    @Test(arguments: [3, 9, 24])
    func addingAMemberMovesOnlyItsShare(members: Int) {
        let before = HashRing(members: Self.names(members), vnodes: 128, replicas: 1)
        let after = HashRing(members: Self.names(members + 1), vnodes: 128, replicas: 1)
        let keys = 100_000
        var moved = 0
        for i in 0..<keys {
            let old = before.preferenceList(forKey: "key:\(i)").primary!
            let new = after.preferenceList(forKey: "key:\(i)").primary!
            if old != new {
                moved += 1
                #expect(new == members, "a key moved between two old members")
            }
        }
        let expected = Double(keys) / Double(members + 1)
        #expect(abs(Double(moved) - expected) / expected < 0.15, "moved \(moved), expected about \(Int(expected))")
    }

    @Test func sharesAndRangesCoverTheRing() {
        let ring = HashRing(members: Self.names(4), vnodes: 32, replicas: 2)
        #expect(ring.partitionCount == 16_384)
        #expect(abs(ring.primaryShares.reduce(0, +) - 1) < 1e-9)
        let ranges = ring.ranges
        #expect(ranges.first?.start == 0 && ranges.last?.end == UInt64.max)
        for (a, b) in zip(ranges, ranges.dropFirst()) { #expect(a.end &+ 1 == b.start) }
        #expect(ranges.allSatisfy { $0.replicas.count == 2 })
    }

    /// The ring depends on the member set, not on the order it is listed in.
    @Test func memberOrderDoesNotMatter() {
        let a = HashRing(members: ["a", "b", "c", "d"], vnodes: 16, replicas: 3)
        let b = HashRing(members: ["d", "b", "a", "c"], vnodes: 16, replicas: 3)
        for i in 0..<1_000 {
            #expect(a.preferenceList(forKey: "k\(i)").members.map { a.members[$0] }
                == b.preferenceList(forKey: "k\(i)").members.map { b.members[$0] })
        }
    }

    /// With N = 3, adding a member changes a preference list only by bringing the new member in.
    @Test func addingAMemberOnlyInsertsItIntoPreferenceLists() {
        let before = HashRing(members: Self.names(6), vnodes: 16, replicas: 3)
        let after = HashRing(members: Self.names(7), vnodes: 16, replicas: 3)
        for i in 0..<5_000 {
            let old = before.preferenceList(forKey: "k\(i)").members
            let new = after.preferenceList(forKey: "k\(i)").members
            #expect(new.filter { $0 != 6 } == Array(old.prefix(new.contains(6) ? 2 : 3)))
        }
    }
}
