import CacheStore

/// A quorum read under last-write-wins, decided on versions alone, with no allocation: the
/// hot path's read. The shell keeps the bytes of the answer this core calls the newest;
/// equal versions are the same write (a version is unique to one write), so a replica whose
/// answer carries the newest version holds the newest value.
///
/// It answers once R replicas have answered (with the newest, or nil when none had the key),
/// fails once R can no longer be reached or at the timeout, and plans read repairs for every
/// replica that answered with less, including those that answer after the reply went out:
/// the same rules as ``ReadQuorum`` over ``VersionedValue``.
public struct NewestRead: Sendable, Hashable {
    public enum Decision: Sendable, Hashable {
        /// Answer with the answer at this position in the replica list (nil: no replica had
        /// the key). A tombstone is for the caller to read as absent.
        case reply(newest: Int?)
        case fail(NoQuorum)
    }

    /// What one answer changed.
    public struct Step: Sendable, Hashable {
        /// This answer is the newest so far: the shell keeps its bytes.
        public var isNewest = false
        public var decision: Decision?
        /// Positions of replicas to send the newest to (bit i: position i).
        public var repairs: UInt64 = 0
    }

    public let replicas: ReplicaList
    public let required: Int
    private var answered: UInt64 = 0
    private var failed: UInt64 = 0
    /// Replicas known to hold the newest (they answered it, or were sent a repair of it).
    private var current: UInt64 = 0
    public private(set) var newest: Version?
    public private(set) var newestPosition: Int?
    public private(set) var isDecided = false

    public init(replicas: ReplicaList, required: Int) {
        precondition(required >= 1 && required <= replicas.count, "R must be in 1...N")
        self.replicas = replicas
        self.required = required
    }

    /// The answer of the replica at `position`: its version, nil when it has no such key.
    public mutating func onAnswer(at position: Int, version: Version?) -> Step {
        let bit = UInt64(1) << position
        var step = Step()
        guard position < replicas.count, answered & bit == 0, failed & bit == 0 else { return step }
        answered |= bit
        if let version, newest.map({ version > $0 }) ?? true {
            // A newer answer: every replica that answered before holds less.
            newest = version
            newestPosition = position
            current = bit
            step.isNewest = true
        } else if let version, version == newest {
            current |= bit
        }
        if !isDecided && answered.nonzeroBitCount >= required {
            isDecided = true
            step.decision = .reply(newest: newestPosition)
        }
        if isDecided, newest != nil {
            step.repairs = answered & ~current
            current |= step.repairs
        }
        return step
    }

    public mutating func onFailure(at position: Int) -> Decision? {
        let bit = UInt64(1) << position
        guard position < replicas.count, answered & bit == 0 else { return nil }
        failed |= bit
        guard !isDecided, replicas.count - failed.nonzeroBitCount < required else { return nil }
        isDecided = true
        return .fail(noQuorum(timedOut: false))
    }

    public mutating func onTimeout() -> Decision? {
        guard !isDecided else { return nil }
        isDecided = true
        return .fail(noQuorum(timedOut: true))
    }

    private func noQuorum(timedOut: Bool) -> NoQuorum {
        NoQuorum(operation: .read, needed: required, answered: answered.nonzeroBitCount, failed: failed.nonzeroBitCount,
                 replicas: replicas.count, timedOut: timedOut)
    }
}
