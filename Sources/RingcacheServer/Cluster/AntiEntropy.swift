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

    /// The digest of the entries this node and `peer` both replicate. Under last-write-wins
    /// one walk of the store makes the digests for every member at once, and they answer for
    /// ``digestReuse`` ms: a round needs one per peer, and each peer asks for its own, so the
    /// store is walked once where it was walked once per digest (the walk is what costs:
    /// every key hashed and its preference list read). A digest a little old only makes a
    /// difference show a round later.
    func digest(sharedWith peer: Int, now: Int64) -> MerkleDigest {
        guard usesVectorClocks else { return sharedDigest(with: peer, now: now) }
        var digest = MerkleDigest(bits: Self.antiEntropyBits)
        for entry in siblingFingerprints(sharedWith: peer, now: now) {
            entry.key.withUnsafeBytes {
                digest.add(key: $0, position: entry.position, version: entry.version.timestamp.rawValue, node: 0, tombstone: false)
            }
        }
        return digest
    }

    private func sharedDigest(with peer: Int, now: Int64) -> MerkleDigest {
        let generation = generation.load(ordering: .acquiring)
        let shared: SharedDigests
        if let kept = sharedDigests.withLock({ $0 }), kept.answers(generation: generation, now: now, reuse: digestReuse) {
            shared = kept
        } else {
            shared = SharedDigests(at: now, generation: generation, digests: digestsForEveryMember(now: now))
            sharedDigests.withLock { $0 = shared }
        }
        return peer < shared.digests.count ? shared.digests[peer] : MerkleDigest(bits: Self.antiEntropyBits)
    }

    /// One walk of the store: for each member, the digest of the entries it and this node
    /// both replicate.
    private func digestsForEveryMember(now: Int64) -> [MerkleDigest] {
        let ring = self.ring
        let me = Int32(selfIndex)
        var digests = [MerkleDigest](repeating: MerkleDigest(bits: Self.antiEntropyBits), count: ring.members.count)
        node.store.forEachVersion(now: now) { key, version, tombstone in
            let position = HashRing.position(of: key)
            ring.withPreferenceList(forPosition: position) { replicas in
                guard replicas.contains(me) else { return }
                let leaf = MerkleDigest.leaf(key: key, version: version.timestamp.rawValue, node: version.node.rawValue, tombstone: tombstone)
                for member in replicas where member != me && Int(member) < digests.count {
                    digests[Int(member)].add(leaf: leaf, position: position)
                }
            }
        }
        return digests
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

/// Digests from one walk of the store, by member index, and when and for which ring they were made.
struct SharedDigests: Sendable {
    let at: Int64
    let generation: Int
    let digests: [MerkleDigest]

    /// Whether they still answer: made for this ring, less than `reuse` ms ago.
    func answers(generation: Int, now: Int64, reuse: Int64) -> Bool {
        self.generation == generation && now >= at && now - at < reuse
    }
}

extension Coordinator {
    /// One anti-entropy round with every reachable peer; ``AntiEntropyRound`` decides what to
    /// ask and what to pull and push, this shell sends it. A round still waiting for answers
    /// is given up to two more periods; then a new one replaces it (its late answers are
    /// ignored).
    func antiEntropyRound() {
        if let round = antiEntropy, !round.isFinished, antiEntropyWaited < 2 {
            antiEntropyWaited += 1
            return
        }
        antiEntropyWaited = 0
        cluster.node.antiEntropyRounds.add(1, ordering: .relaxed)
        let down = unreachable
        antiEntropyGeneration &+= 1
        antiEntropy = AntiEntropyRound(mode: cluster.usesVectorClocks ? .siblings : .lastWriteWins,
                                       bucketsPerRound: ClusterState.antiEntropyBucketsPerRound)
        let peers = cluster.members.indices.filter { $0 != cluster.selfIndex && !down.contains($0) }
        let actions = antiEntropy?.start(peers: peers) ?? []
        perform(actions, round: antiEntropyGeneration)
    }

    /// Feeds one event to the running round, if it is still round `generation`.
    private func onRound(_ generation: UInt64, _ event: (inout AntiEntropyRound) -> [AntiEntropyRound.Action]) {
        guard generation == antiEntropyGeneration, var round = antiEntropy else { return }
        let actions = event(&round)
        antiEntropy = round
        perform(actions, round: generation)
    }

    private func perform(_ actions: [AntiEntropyRound.Action], round generation: UInt64) {
        let now = wallClockMillis()
        for action in actions {
            switch action {
            case .requestDigest(let peer):
                guard let link = link(to: peer) else {
                    onRound(generation) { $0.onFailure(peer: peer); return [] }
                    continue
                }
                link.send(.tree(requester: cluster.selfName)) { [self] reply in
                    onRound(generation) { round in
                        guard case .digest(let theirs)? = reply else {
                            round.onFailure(peer: peer)
                            return []
                        }
                        return round.onDigest(from: peer, theirs: theirs, local: cluster.digest(sharedWith: peer, now: wallClockMillis()))
                    }
                }
            case .requestVersions(let peer, let buckets):
                guard let link = link(to: peer) else {
                    onRound(generation) { $0.onFailure(peer: peer); return [] }
                    continue
                }
                link.send(.bucket(requester: cluster.selfName, buckets: buckets)) { [self] reply in
                    onRound(generation) { round in
                        guard case .versions(let entries)? = reply else {
                            round.onFailure(peer: peer)
                            return []
                        }
                        let theirs = entries.map { (Array($0.key.readableBytesView), $0.version) }
                        let mine = cluster.entries(sharedWith: peer, buckets: Set(buckets), now: wallClockMillis()).map { ($0.0, $0.1) }
                        return round.onVersions(from: peer, theirs: theirs, mine: mine)
                    }
                }
            case .pull(let key, let peer):
                if cluster.usesVectorClocks { pullSiblings(key, from: peer) } else { pull(key, from: peer) }
            case .push(let key, let peer):
                if cluster.usesVectorClocks { pushSiblings(key, to: peer, now: now) } else { push(key, to: peer, now: now) }
            }
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
