/// The replicas one operation on a key uses, and how many of their answers it needs beyond
/// the quorum asked for.
public struct ReplicaSet: Sendable, Hashable, CustomStringConvertible {
    /// Member indices, inline: the old replicas first, then the members the new ring adds.
    public let replicas: ReplicaList
    /// Answers needed beyond R or W: one per member the new ring adds while data moves.
    public let extra: Int

    public init(replicas: ReplicaList, extra: Int) {
        self.replicas = replicas
        self.extra = extra
    }

    /// `quorum` plus ``extra``, at most every replica.
    public func required(_ quorum: Int) -> Int { min(quorum + extra, replicas.count) }

    public var description: String { "\(replicas)+\(extra)" }
}

/// How far a node's view of the ring has got: the membership epoch, and whether the data of
/// the latest change has finished moving. Views only move forward, so a replica whose stage
/// is ahead of a coordinator's knows of a change (or of its end) that the coordinator has
/// not heard of, and the coordinator's replica set may be wrong.
public struct RingStage: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var epoch: UInt64
    /// True once reads and writes moved to the ring of `epoch` (no previous ring).
    public var settled: Bool

    public init(epoch: UInt64, settled: Bool) {
        self.epoch = epoch
        self.settled = settled
    }

    public static func < (a: RingStage, b: RingStage) -> Bool {
        a.epoch != b.epoch ? a.epoch < b.epoch : !a.settled && b.settled
    }

    public var description: String { "\(epoch)\(settled ? "" : " (moving)")" }
}

/// Placement: which members one key's reads, writes, hints and moving data go to, from the
/// ring and, while data moves after a join or leave, the ring before it. A pure value the
/// coordinator builds once per topology and asks once per request; keyed by ring position,
/// so it knows nothing of key bytes or sockets.
///
/// While data moves, a write goes to the old replicas and to the members the new ring adds,
/// and needs one more acknowledgement per added member: of its `W + k` acknowledgements at
/// most `k` come from added members, so `W` old replicas hold it, and at most `k` come from
/// the `k` old replicas the new ring drops, so `W` new replicas hold it too. Reads that use
/// the same set and `R + k` answers hear from `R` old and `R` new replicas, so a read meets
/// every acknowledged write whichever ring its writer used.
public struct ReplicaPlan: Sendable {
    public let ring: HashRing
    /// The ring before the latest join or leave, until every old owner has sent its keys.
    public let previous: HashRing?

    public init(ring: HashRing, previous: HashRing? = nil) {
        self.ring = ring
        self.previous = previous
    }

    /// True while data moves from `previous` to `ring`.
    public var isMoving: Bool { previous != nil }

    /// The ring that holds the data: the old one while data moves.
    public var readRing: HashRing { previous ?? ring }

    public var stage: RingStage { RingStage(epoch: ring.epoch, settled: previous == nil) }

    /// Whether a replica with this plan serves a request from a coordinator at `stage`: not
    /// when the coordinator has not heard of a change (or of its end) this replica knows.
    /// A write from such a coordinator may reach only old replicas whose keys were sent
    /// already, and its read may miss what writers of the new ring wrote.
    public func admits(_ coordinator: RingStage) -> Bool { coordinator.epoch >= stage.epoch }

    /// The replicas a write goes to: the key's preference list or, while data moves, the old
    /// one followed by the members the new ring adds, with one extra acknowledgement each.
    public func writeSet(forPosition position: UInt64) -> ReplicaSet {
        guard let previous else { return ReplicaSet(replicas: ring.replicaList(forPosition: position), extra: 0) }
        var replicas = previous.replicaList(forPosition: position)
        let old = replicas.count
        ring.withPreferenceList(forPosition: position) { current in
            for member in current where !replicas.prefix(old).contains(Int(member)) {
                _ = replicas.append(Int(member))
            }
        }
        return ReplicaSet(replicas: replicas, extra: replicas.count - old)
    }

    /// The replicas a read asks: the same set as a write's, with `R + k` answers needed while
    /// data moves (see the type's summary for why reads of the old ring alone fall short).
    public func readSet(forPosition position: UInt64) -> ReplicaSet { writeSet(forPosition: position) }

    /// The members the new ring adds for the key at `position` (empty when nothing moves).
    public func gainers(forPosition position: UInt64) -> ReplicaList {
        guard let previous else { return ReplicaList() }
        var gainers = ReplicaList()
        ring.withPreferenceList(forPosition: position) { current in
            for member in current where !previous.replicates(Int(member), position: position) {
                _ = gainers.append(Int(member))
            }
        }
        return gainers
    }

    /// Rebalancing: the members `holder` sends the key at `position` to. Every old replica
    /// sends its copy to every gainer: a single sender's copy can lack a write that the
    /// other old replicas acknowledged (W < N), and then no new replica would get it.
    public func transferTargets(forPosition position: UInt64, holder: Int) -> ReplicaList {
        guard let previous, previous.replicates(holder, position: position) else { return ReplicaList() }
        return gainers(forPosition: position)
    }

    /// Sloppy quorum: for each member of the write set in `unreachable`, the next member of
    /// the key's ranking in the current ring that is reachable and not in the write set (so
    /// one node never answers twice for one write), each used once; a member is left out
    /// when none is left. As ``HashRing/standIns(forPosition:unreachable:)`` while the ring
    /// is settled.
    public func standIns(forPosition position: UInt64, unreachable: Set<Int>) -> [Int: Int] {
        guard !unreachable.isEmpty else { return [:] }
        let replicas = writeSet(forPosition: position).replicas
        let missing = replicas.filter { unreachable.contains($0) }
        guard !missing.isEmpty else { return [:] }
        var fallbacks = ring.ranking(forPosition: position).lazy.filter { !unreachable.contains($0) && !replicas.contains($0) }.makeIterator()
        var standIns: [Int: Int] = [:]
        for owner in missing {
            guard let standIn = fallbacks.next() else { break }
            standIns[owner] = standIn
        }
        return standIns
    }
}
