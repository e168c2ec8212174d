import Testing

@testable import ClusterCore

@Suite struct RingMembershipTests {
    static func entry(_ name: String, version: UInt64 = 1, left: Bool = false) -> RingMembership.Entry {
        RingMembership.Entry(name: name, host: "127.0.0.1", port: 7000, busPort: 17000, version: version, left: left)
    }

    static func names(_ ring: HashRing, _ members: [Int]) -> [String] { members.map { ring.members[$0] } }

    @Test func mergesAreOrderFreeAndIdempotentAndTheEpochOnlyGrows() {
        let base = RingMembership(["n1", "n2", "n3"].map { Self.entry($0) })
        var a = base
        a.join(Self.entry("n4"))
        var b = base
        b.leave("n2")
        var c = base
        c.join(Self.entry("n5"))
        c.leave("n5")

        var abc = a
        abc.merge(b.entries)
        abc.merge(c.entries)
        var cba = c
        cba.merge(b.entries)
        cba.merge(a.entries)
        #expect(abc.epoch == cba.epoch)
        #expect(Set(abc.entries) == Set(cba.entries))
        #expect(abc.owners.sorted() == ["n1", "n3", "n4"])
        #expect(abc.epoch > base.epoch)
        // Merging again changes nothing.
        let again = abc.merge(cba.entries)
        let older = abc.merge(base.entries)
        #expect(!again && !older)
        // The same members and epoch give the same ring, whatever order a node learned them in.
        let x = abc.ring(vnodes: 8, replicas: 2)
        let y = cba.ring(vnodes: 8, replicas: 2)
        #expect(x.epoch == y.epoch)
        for i in 0..<2_000 {
            #expect(Self.names(x, x.preferenceList(forKey: "k\(i)").members) == Self.names(y, y.preferenceList(forKey: "k\(i)").members))
        }
    }

    @Test func theDigestTellsApartRingsOfOneEpochAndNotTheOrderTheyWereHeardIn() {
        let base = RingMembership(["n1", "n2", "n3"].map { Self.entry($0) })
        // n4 rejoins here while n2 leaves there: both lists reach the same epoch.
        var rejoined = base
        rejoined.merge([Self.entry("n4", version: 2, left: true)])
        var left = rejoined
        rejoined.join(Self.entry("n4"))
        left.leave("n2")
        #expect(rejoined.epoch == left.epoch)
        #expect(rejoined.digest != left.digest)
        var both = rejoined
        both.merge(left.entries)
        var other = left
        other.merge(rejoined.entries)
        #expect(both.digest == other.digest)
        #expect(both.epoch > left.epoch)
    }

    @Test func aLeaveWinsOverTheJoinItFollowsAndARejoinWinsOverTheLeave() {
        var a = RingMembership([Self.entry("n1"), Self.entry("n2")])
        var b = a
        b.leave("n2")
        a.merge(b.entries)
        #expect(a.owners == ["n1"])
        let present = a.join(Self.entry("n1"))
        #expect(!present, "a member in the ring joining again changes nothing")
        let rejoined = a.join(Self.entry("n2"))
        #expect(rejoined)
        b.merge(a.entries)
        #expect(b.owners == ["n1", "n2"])
        #expect(b.entries.first { $0.name == "n2" }?.version == 3)
    }

    @Test func aRingWithExcludedMembersPlacesKeysAsTheRingOfTheOthers() {
        let all = HashRing(members: ["n1", "n2", "n3", "n4"], vnodes: 16, replicas: 2, excluded: [1])
        let others = HashRing(members: ["n1", "n3", "n4"], vnodes: 16, replicas: 2)
        #expect(all.owners == ["n1", "n3", "n4"])
        #expect(all.primaryShares[1] == 0)
        for i in 0..<5_000 {
            #expect(Self.names(all, all.preferenceList(forKey: "k\(i)").members)
                    == Self.names(others, others.preferenceList(forKey: "k\(i)").members))
        }
        #expect(!all.ranking(forPosition: 42).contains(1))
    }

    @Test(arguments: [(3, 2), (4, 3), (6, 3)])
    func aJoinMovesOnlyWhatChangesOwnerEachKeyFromOneHolder(members: Int, replicas: Int) {
        let names = (1...members).map { "n\($0)" }
        let old = HashRing(members: names + ["new"], vnodes: 32, replicas: replicas, excluded: [members])
        let new = HashRing(members: names + ["new"], vnodes: 32, replicas: replicas)
        let keys = 20_000
        var moved = 0
        for i in 0..<keys {
            let position = Array("key:\(i)".utf8).withUnsafeBytes { HashRing.position(of: $0) }
            let before = old.preferenceList(forPosition: position).members
            let after = new.preferenceList(forPosition: position).members
            var sends: [Int: [Int]] = [:]
            for sender in 0...members {
                let targets = new.gained(forPosition: position, from: old, sender: sender, unreachable: [])
                if !targets.isEmpty { sends[sender] = targets }
            }
            if before == after || Set(after).isSubset(of: Set(before)) {
                #expect(sends.isEmpty)
            } else {
                // Exactly one holder (the first old replica) sends, and only to the newcomer.
                #expect(Array(sends.keys) == [before[0]])
                #expect(sends[before[0]] == [members])
                moved += 1
            }
        }
        // The newcomer replicates about N/(n+1) of the keys.
        let expected = Double(keys) * Double(replicas) / Double(members + 1)
        #expect(abs(Double(moved) - expected) / expected < 0.1, "\(moved) moved, about \(expected) expected")
    }

    @Test func whenTheFirstHolderIsUnreachableTheNextOneSends() {
        let old = HashRing(members: ["n1", "n2", "n3", "n4"], vnodes: 16, replicas: 3, excluded: [3])
        let new = HashRing(members: ["n1", "n2", "n3", "n4"], vnodes: 16, replicas: 3)
        for i in 0..<2_000 {
            let position = Array("k\(i)".utf8).withUnsafeBytes { HashRing.position(of: $0) }
            let before = old.preferenceList(forPosition: position).members
            guard new.preferenceList(forPosition: position).members.contains(3) else { continue }
            #expect(new.gained(forPosition: position, from: old, sender: before[0], unreachable: [before[0]]).isEmpty)
            #expect(new.gained(forPosition: position, from: old, sender: before[1], unreachable: [before[0]]) == [3])
        }
    }

    @Test func aLeaveSendsTheLeaversKeysToTheirNewReplicas() {
        let old = HashRing(members: ["n1", "n2", "n3", "n4"], vnodes: 16, replicas: 2)
        let new = HashRing(members: ["n1", "n2", "n3", "n4"], vnodes: 16, replicas: 2, excluded: [1])
        for i in 0..<5_000 {
            let position = Array("k\(i)".utf8).withUnsafeBytes { HashRing.position(of: $0) }
            let before = old.preferenceList(forPosition: position).members
            let after = new.preferenceList(forPosition: position).members
            #expect(!after.contains(1))
            let sent = (0..<4).flatMap { new.gained(forPosition: position, from: old, sender: $0, unreachable: []) }
            #expect(Set(sent) == Set(after).subtracting(before))
        }
    }
}
