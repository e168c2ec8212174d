import CacheStore
import ClusterCore
import ClusterProtocol
import NIOCore
import RESP

/// Anti-entropy: every `anti-entropy-interval` each node compares, with every peer it can
/// reach, a Merkle digest (``MerkleDigest``) of the entries both replicate; for the buckets
/// that differ it lists the peer's (key, version) pairs, pulls the entries the peer has newer
/// and pushes those it has newer itself. Expired entries are left out on both sides; deletes
/// travel as tombstones until `tombstone-ttl`. Under `reconcile vclock` an entry's version is
/// a fingerprint of its whole sibling set (clocks included), and for a key whose fingerprints
/// differ each side sends its siblings to the other (`RC.VGET`, `RC.VPUT`), which merges them:
/// sibling sets have no order to tell which is newer, and merging both ways converges.
import CXXHash

extension ClusterState {
    static let antiEntropyBits = BusLimits.antiEntropyBits
    /// Buckets exchanged per peer per round, so that one round stays small.
    static let antiEntropyBucketsPerRound = 32

    /// Calls `body` for each unexpired entry that this node and `peer` both replicate.
    func forEachShared(with peer: Int, now: Int64, _ body: (UnsafeRawBufferPointer, UInt64, Version, Bool) -> Void) {
        let me = Int32(selfIndex)
        let them = Int32(peer)
        let ring = ring
        node.store.forEachVersion(now: now) { key, version, tombstone in
            let position = HashRing.position(of: key)
            let shared = ring.withPreferenceList(forPosition: position) { $0.contains(me) && $0.contains(them) }
            if shared { body(key, position, version, tombstone) }
        }
    }

    /// Under vector clocks: the keys shared with `peer` (in `buckets` when given), each with a
    /// fingerprint of its sibling set, clocks included, as its version. The siblings are read
    /// after the store walk (the sibling index is locked before the store, never inside it).
    func siblingFingerprints(sharedWith peer: Int, buckets: Set<Int>? = nil, now: Int64) -> [(key: [UInt8], position: UInt64, version: Version)] {
        let probe = MerkleDigest(bits: Self.antiEntropyBits)
        var shared: [([UInt8], UInt64)] = []
        forEachShared(with: peer, now: now) { key, position, _, _ in
            guard buckets.map({ $0.contains(probe.bucket(ofPosition: position)) }) ?? true else { return }
            shared.append((Array(key), position))
        }
        return shared.compactMap { key, position in
            guard let set = siblings.siblings(of: key, store: node.store, now: now) else { return nil }
            let fingerprint = set.serialized.withUnsafeBytes { ringcache_xxh3_64($0.baseAddress, $0.count) }
            return (key, position, Version(timestamp: HLCTimestamp(rawValue: fingerprint), node: NodeID(rawValue: 0)))
        }
    }

    func digest(sharedWith peer: Int, now: Int64) -> MerkleDigest {
        var digest = MerkleDigest(bits: Self.antiEntropyBits)
        if usesVectorClocks {
            for entry in siblingFingerprints(sharedWith: peer, now: now) {
                entry.key.withUnsafeBytes {
                    digest.add(key: $0, position: entry.position, version: entry.version.timestamp.rawValue, node: 0, tombstone: false)
                }
            }
            return digest
        }
        forEachShared(with: peer, now: now) { key, position, version, tombstone in
            digest.add(key: key, position: position, version: version.timestamp.rawValue, node: version.node.rawValue, tombstone: tombstone)
        }
        return digest
    }

    /// The (key, version) pairs shared with `peer` in `buckets`.
    func entries(sharedWith peer: Int, buckets: Set<Int>, now: Int64) -> [([UInt8], Version, Bool)] {
        if usesVectorClocks {
            return siblingFingerprints(sharedWith: peer, buckets: buckets, now: now).map { ($0.key, $0.version, false) }
        }
        let probe = MerkleDigest(bits: Self.antiEntropyBits)
        var entries: [([UInt8], Version, Bool)] = []
        forEachShared(with: peer, now: now) { key, position, version, tombstone in
            if buckets.contains(probe.bucket(ofPosition: position)) { entries.append((Array(key), version, tombstone)) }
        }
        return entries
    }
}

extension Coordinator {
    /// One anti-entropy round with every reachable peer.
    func antiEntropyRound() {
        let now = wallClockMillis()
        let down = unreachable
        cluster.node.antiEntropyRounds.add(1, ordering: .relaxed)
        for peer in cluster.members.indices where peer != cluster.selfIndex && !down.contains(peer) {
            guard let link = link(to: peer) else { continue }
            let local = cluster.digest(sharedWith: peer, now: now)
            link.send(.tree(requester: cluster.selfName)) { [self] reply in
                guard case .digest(let theirs)? = reply else { return }
                guard theirs.count == local.buckets.count, local.root != MerkleDigest.root(of: theirs) else { return }
                let differing = local.differingBuckets(from: theirs).prefix(ClusterState.antiEntropyBucketsPerRound)
                exchange(with: peer, buckets: Set(differing))
            }
        }
    }

    /// Lists the peer's entries in `buckets`, pulls those it has newer, pushes those this node
    /// has newer.
    private func exchange(with peer: Int, buckets: Set<Int>) {
        link(to: peer)?.send(.bucket(requester: cluster.selfName, buckets: buckets.sorted())) { [self] reply in
            guard case .versions(let entries)? = reply else { return }
            let now = wallClockMillis()
            var theirs: [[UInt8]: Version] = [:]
            for entry in entries { theirs[Array(entry.key.readableBytesView)] = entry.version }
            var mine: [[UInt8]: Version] = [:]
            for (key, version, _) in cluster.entries(sharedWith: peer, buckets: buckets, now: now) { mine[key] = version }
            if cluster.usesVectorClocks {
                // Fingerprints have no order: where they differ, each side gets the other's siblings.
                for (key, version) in theirs where mine[key] != version { pullSiblings(key, from: peer) }
                for (key, version) in mine where theirs[key] != version { pushSiblings(key, to: peer, now: now) }
                return
            }
            for (key, version) in theirs where mine[key].map({ $0 < version }) ?? true { pull(key, from: peer) }
            for (key, version) in mine where theirs[key].map({ $0 < version }) ?? true { push(key, to: peer, now: now) }
        }
    }

    private func pull(_ key: [UInt8], from peer: Int) {
        link(to: peer)?.send(.get(key: ByteBuffer(bytes: key))) { [cluster] reply in
            guard case .entry(let entry?)? = reply else { return }
            let value = VersionedValue(version: entry.version, value: entry.value.map { Array($0.readableBytesView) }, expiry: entry.expiry)
            if cluster.applyLocally(key, value, now: wallClockMillis()) { cluster.node.antiEntropyPulled.add(1, ordering: .relaxed) }
        }
    }

    private func pullSiblings(_ key: [UInt8], from peer: Int) {
        link(to: peer)?.send(.siblingGet(key: ByteBuffer(bytes: key))) { [cluster, store] reply in
            guard case .siblings(let set?)? = reply else { return }
            let result = cluster.siblings.apply(key, set, limit: cluster.maxSiblings, store: store, now: wallClockMillis(),
                                                tombstoneTTL: cluster.tombstoneTTL)
            if result.changed { cluster.node.antiEntropyPulled.add(1, ordering: .relaxed) }
        }
    }

    private func pushSiblings(_ key: [UInt8], to peer: Int, now: Int64) {
        guard let set = cluster.siblings.siblings(of: key, store: store, now: now) else { return }
        link(to: peer)?.send(.siblingPut(key: ByteBuffer(bytes: key), siblings: set)) { [cluster] reply in
            if case .flag? = reply { cluster.node.antiEntropyPushed.add(1, ordering: .relaxed) }
        }
    }

    private func push(_ key: [UInt8], to peer: Int, now: Int64) {
        var local: VersionedValue?
        key.withUnsafeBytes { k in
            store.readVersioned(k, now: now) { entry in
                local = entry.map { VersionedValue(version: $0.version, value: $0.value.map(Array.init), expiry: $0.expiry) }
            }
        }
        guard let local else { return }
        replicate(key, local, to: peer, now: now) { [cluster] answer in
            if answer != nil { cluster.node.antiEntropyPushed.add(1, ordering: .relaxed) }
        }
    }
}
