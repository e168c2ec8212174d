import CacheStore

/// One anti-entropy round's decisions: with each reachable peer, compare Merkle digests of the
/// entries both replicate; for the buckets that differ (at most `bucketsPerRound` of them) list
/// the peer's (key, version) pairs; pull what the peer has newer, push what this node has
/// newer. A pure state machine: the shell sends what the actions say, computes this node's
/// side when asked, and feeds the peers' answers back.
///
/// Under vector clocks a version is a fingerprint of a key's whole sibling set: fingerprints
/// have no order, so where they differ each side gets the other's siblings (a pull and a push),
/// and merging both ways converges.
public struct AntiEntropyRound: Sendable {
    public enum Mode: Sendable, Hashable {
        /// Versions are ordered: the newer one wins.
        case lastWriteWins
        /// Versions are fingerprints of sibling sets: differing ones are exchanged both ways.
        case siblings
    }

    public enum Action: Sendable, Hashable {
        /// Ask `peer` for its digest of what both replicate.
        case requestDigest(peer: Int)
        /// Ask `peer` for its (key, version) pairs in `buckets`.
        case requestVersions(peer: Int, buckets: [Int])
        /// Fetch `key` from `peer` and apply it here.
        case pull(key: [UInt8], from: Int)
        /// Send this node's `key` to `peer`.
        case push(key: [UInt8], to: Int)
    }

    private enum Stage: Sendable, Hashable {
        case awaitingDigest
        case awaitingVersions(buckets: [Int])
        case done
    }

    public let mode: Mode
    public let bucketsPerRound: Int
    private var stages: [Int: Stage] = [:]
    /// Peers whose digest matched this node's: nothing to exchange.
    public private(set) var inSync = 0
    public private(set) var pulls = 0
    public private(set) var pushes = 0

    public init(mode: Mode, bucketsPerRound: Int = 32) {
        self.mode = mode
        self.bucketsPerRound = max(1, bucketsPerRound)
    }

    /// Starts the round with `peers` (those this node can reach).
    public mutating func start(peers: [Int]) -> [Action] {
        var actions: [Action] = []
        for peer in peers where stages[peer] == nil {
            stages[peer] = .awaitingDigest
            actions.append(.requestDigest(peer: peer))
        }
        return actions
    }

    /// Every peer answered, failed or matched.
    public var isFinished: Bool { stages.values.allSatisfy { $0 == .done } }

    /// The buckets the round is waiting on `peer` for (nil when it waits for nothing of it).
    public func awaitedBuckets(of peer: Int) -> [Int]? {
        if case .awaitingVersions(let buckets)? = stages[peer] { return buckets }
        return nil
    }

    /// `peer`'s digest, and this node's of the same entries. A digest of another shape (the
    /// peer runs with another bucket count) ends the exchange with it.
    public mutating func onDigest(from peer: Int, theirs: [UInt64], local: MerkleDigest) -> [Action] {
        guard stages[peer] == .awaitingDigest else { return [] }
        guard theirs.count == local.buckets.count, local.root != MerkleDigest.root(of: theirs) else {
            stages[peer] = .done
            if theirs.count == local.buckets.count { inSync += 1 }
            return []
        }
        let buckets = Array(local.differingBuckets(from: theirs).prefix(bucketsPerRound))
        guard !buckets.isEmpty else {
            stages[peer] = .done
            return []
        }
        stages[peer] = .awaitingVersions(buckets: buckets)
        return [.requestVersions(peer: peer, buckets: buckets)]
    }

    /// `peer`'s (key, version) pairs in the buckets asked for, and this node's in the same
    /// buckets.
    public mutating func onVersions(from peer: Int, theirs: [([UInt8], Version)], mine: [([UInt8], Version)]) -> [Action] {
        guard case .awaitingVersions? = stages[peer] else { return [] }
        stages[peer] = .done
        var theirVersions: [[UInt8]: Version] = [:]
        for (key, version) in theirs { theirVersions[key] = theirVersions[key].map { max($0, version) } ?? version }
        var myVersions: [[UInt8]: Version] = [:]
        for (key, version) in mine { myVersions[key] = myVersions[key].map { max($0, version) } ?? version }
        var actions: [Action] = []
        // Sorted, so a round's actions do not depend on dictionary order.
        for key in theirVersions.keys.sorted(by: Self.precedes) {
            let version = theirVersions[key]!
            if needs(myVersions[key], to: version) { actions.append(.pull(key: key, from: peer)) }
        }
        for key in myVersions.keys.sorted(by: Self.precedes) {
            let version = myVersions[key]!
            if needs(theirVersions[key], to: version) { actions.append(.push(key: key, to: peer)) }
        }
        for action in actions {
            if case .pull = action { pulls += 1 } else { pushes += 1 }
        }
        return actions
    }

    /// `peer` could not be reached or gave a bad answer: the round goes on without it.
    public mutating func onFailure(peer: Int) {
        guard stages[peer] != nil else { return }
        stages[peer] = .done
    }

    /// Whether a side holding `held` should take a copy at `version`.
    private func needs(_ held: Version?, to version: Version) -> Bool {
        guard let held else { return true }
        switch mode {
        case .lastWriteWins: return held < version
        case .siblings: return held != version
        }
    }

    private static func precedes(_ a: [UInt8], _ b: [UInt8]) -> Bool { a.lexicographicallyPrecedes(b) }
}
