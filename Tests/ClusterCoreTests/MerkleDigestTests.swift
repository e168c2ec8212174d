import Testing

@testable import ClusterCore

@Suite struct MerkleDigestTests {
    static func add(_ digest: inout MerkleDigest, _ key: String, version: UInt64, tombstone: Bool = false) {
        let bytes = Array(key.utf8)
        bytes.withUnsafeBytes { digest.add(key: $0, position: HashRing.position(of: $0), version: version, node: 1, tombstone: tombstone) }
    }

    @Test func equalContentsGiveEqualDigestsInAnyOrder() {
        var a = MerkleDigest()
        var b = MerkleDigest()
        let keys = (0..<1000).map { "k\($0)" }
        for key in keys { Self.add(&a, key, version: 7) }
        for key in keys.reversed() { Self.add(&b, key, version: 7) }
        #expect(a == b && a.root == b.root)
        #expect(a.differingBuckets(from: b.buckets).isEmpty)
    }

    /// The walk that makes every member's digest at once hashes an entry once and adds the leaf.
    @Test func addingTheLeafIsAddingTheEntry() {
        var byEntry = MerkleDigest(bits: 10)
        var byLeaf = MerkleDigest(bits: 10)
        for i in 0..<500 {
            let bytes = Array("k\(i)".utf8)
            bytes.withUnsafeBytes { key in
                let position = HashRing.position(of: key)
                byEntry.add(key: key, position: position, version: UInt64(i), node: 3, tombstone: i % 7 == 0)
                byLeaf.add(leaf: MerkleDigest.leaf(key: key, version: UInt64(i), node: 3, tombstone: i % 7 == 0), position: position)
            }
        }
        #expect(byEntry == byLeaf)
    }

    @Test func aNewerVersionOrAMissingKeyOrATombstoneShowsInOneBucket() {
        let keys = (0..<1000).map { "k\($0)" }
        var base = MerkleDigest()
        for key in keys { Self.add(&base, key, version: 7) }
        for change in 0..<3 {
            var other = MerkleDigest()
            for key in keys where !(change == 1 && key == "k42") {
                Self.add(&other, key, version: key == "k42" && change == 0 ? 8 : 7, tombstone: change == 2 && key == "k42")
            }
            #expect(other.root != base.root)
            let position = Array("k42".utf8).withUnsafeBytes { HashRing.position(of: $0) }
            #expect(other.differingBuckets(from: base.buckets) == [base.bucket(ofPosition: position)])
        }
    }
}
