import CacheStore
import ClusterCore
import NIOCore
import RESP

/// Anti-entropy: every `anti-entropy-interval` each node compares, with every peer it can
/// reach, a Merkle digest (``MerkleDigest``) of the entries both replicate; for the buckets
/// that differ it lists the peer's (key, version) pairs, pulls the entries the peer has newer
/// and pushes those it has newer itself. Expired entries are left out on both sides; deletes
/// travel as tombstones until `tombstone-ttl`. Under `reconcile vclock` it does not run yet.
extension ClusterState {
    static let antiEntropyBits = 8
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

    func digest(sharedWith peer: Int, now: Int64) -> MerkleDigest {
        var digest = MerkleDigest(bits: Self.antiEntropyBits)
        forEachShared(with: peer, now: now) { key, position, version, tombstone in
            digest.add(key: key, position: position, version: version.timestamp.rawValue, node: version.node.rawValue, tombstone: tombstone)
        }
        return digest
    }

    /// The (key, version) pairs shared with `peer` in `buckets`.
    func entries(sharedWith peer: Int, buckets: Set<Int>, now: Int64) -> [([UInt8], Version, Bool)] {
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
        guard !cluster.usesVectorClocks else { return }
        let now = wallClockMillis()
        let down = unreachable
        cluster.node.antiEntropyRounds.add(1, ordering: .relaxed)
        for peer in cluster.members.indices where peer != cluster.selfIndex && !down.contains(peer) {
            guard let link = link(to: peer) else { continue }
            let local = cluster.digest(sharedWith: peer, now: now)
            let request = RESPValue.array([.bulk(BusCommand.tree), .bulk(cluster.selfName), .bulk(String(ClusterState.antiEntropyBits))])
            link.send(request) { [self] reply in
                guard case .array(let items?) = reply else { return }
                let theirs = items.compactMap { $0.string.flatMap { UInt64($0) } }
                guard theirs.count == local.buckets.count, local.root != MerkleDigest.root(of: theirs) else { return }
                let differing = local.differingBuckets(from: theirs).prefix(ClusterState.antiEntropyBucketsPerRound)
                exchange(with: peer, buckets: Set(differing))
            }
        }
    }

    /// Lists the peer's entries in `buckets`, pulls those it has newer, pushes those this node
    /// has newer.
    private func exchange(with peer: Int, buckets: Set<Int>) {
        let request = RESPValue.array(
            [.bulk(BusCommand.bucket), .bulk(cluster.selfName), .bulk(String(ClusterState.antiEntropyBits))]
                + buckets.sorted().map { .bulk(String($0)) })
        link(to: peer)?.send(request) { [self] reply in
            guard case .array(let items?) = reply, items.count % 3 == 0 else { return }
            let now = wallClockMillis()
            var theirs: [[UInt8]: Version] = [:]
            for i in stride(from: 0, to: items.count, by: 3) {
                guard case .bulkString(let key?) = items[i], let timestamp = items[i + 1].string.flatMap({ UInt64($0) }),
                      let node = items[i + 2].string.flatMap({ UInt32($0) })
                else { return }
                theirs[Array(buffer: key)] = Version(timestamp: HLCTimestamp(rawValue: timestamp), node: NodeID(rawValue: node))
            }
            var mine: [[UInt8]: Version] = [:]
            for (key, version, _) in cluster.entries(sharedWith: peer, buckets: buckets, now: now) { mine[key] = version }
            for (key, version) in theirs where mine[key].map({ $0 < version }) ?? true { pull(key, from: peer) }
            for (key, version) in mine where theirs[key].map({ $0 < version }) ?? true { push(key, to: peer, now: now) }
        }
    }

    private func pull(_ key: [UInt8], from peer: Int) {
        link(to: peer)?.send({ Self.encodeCommand(BusCommand.get, key, into: &$0) }) { [cluster] reply in
            guard let reply, let decoded = Self.decodeVersioned(reply), let value = decoded.value else { return }
            if cluster.applyLocally(key, value, now: wallClockMillis()) { cluster.node.antiEntropyPulled.add(1, ordering: .relaxed) }
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
