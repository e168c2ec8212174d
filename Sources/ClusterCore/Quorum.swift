import CacheStore

/// A value as one replica holds it: versioned, and `nil` bytes for a tombstone.
public struct VersionedValue: Sendable, Hashable, CustomStringConvertible {
    public var version: Version
    /// The bytes, or nil for a delete (a tombstone).
    public var value: [UInt8]?
    /// Absolute expiry in Unix milliseconds, 0 for none.
    public var expiry: Int64

    public init(version: Version, value: [UInt8]?, expiry: Int64 = 0) {
        self.version = version
        self.value = value
        self.expiry = expiry
    }

    public var isTombstone: Bool { value == nil }

    /// The value as a read command sees it at `now`: nil for a tombstone or an expired entry.
    public func live(at now: Int64) -> VersionedValue? {
        isTombstone || (expiry != 0 && expiry <= now) ? nil : self
    }

    /// Last-write-wins: the higher version, so every replica keeps the same one.
    public static func newest(_ a: VersionedValue?, _ b: VersionedValue?) -> VersionedValue? {
        guard let a else { return b }
        guard let b else { return a }
        return b.version > a.version ? b : a
    }

    public var description: String {
        "\(value.map { String(decoding: $0, as: UTF8.self) } ?? "<tombstone>")@\(version)"
    }
}

/// Why a quorum operation failed: how many replicas were needed and how many answered.
/// Its message is the reply after `-`, starting with `NOQUORUM`.
public struct NoQuorum: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Operation: String, Sendable { case read, write }
    public let operation: Operation
    public let needed: Int
    public let answered: Int
    public let failed: Int
    public let replicas: Int
    public let timedOut: Bool

    @inlinable
    public init(operation: Operation, needed: Int, answered: Int, failed: Int, replicas: Int, timedOut: Bool) {
        self.operation = operation
        self.needed = needed
        self.answered = answered
        self.failed = failed
        self.replicas = replicas
        self.timedOut = timedOut
    }

    public var message: String {
        "NOQUORUM \(operation.rawValue) needed \(needed) of \(replicas) replicas, \(answered) answered, "
            + "\(failed) failed\(timedOut ? ", the rest timed out" : "")"
    }

    public var description: String { message }
}

/// A quorum write: sent to all N replicas, successful at W acknowledgements, failed as soon as
/// W can no longer be reached or at the request timeout. A pure state machine: the caller
/// sends the messages and feeds in acknowledgements, failures and the timeout.
public struct WriteQuorum: Sendable {
    public enum Action: Sendable, Hashable {
        case succeed
        case fail(NoQuorum)
    }

    /// The replicas, inline: a quorum is decided per request, and its bookkeeping should
    /// cost no allocation.
    public let list: ReplicaList
    public var replicas: [Int] { Array(list) }
    public let required: Int
    /// Bit i: `list[i]` acknowledged / failed. Bit sets, not `Set`s.
    private var acknowledgedMask: UInt64 = 0
    private var failedMask: UInt64 = 0
    /// True once the outcome was given; later events only update the counts.
    public private(set) var isDecided = false

    public init(replicas: [Int], required: Int) {
        guard let list = ReplicaList(replicas) else { preconditionFailure("at most \(ReplicaList.capacity) replicas") }
        self.init(replicas: list, required: required)
    }

    public init(replicas: ReplicaList, required: Int) {
        precondition(required >= 1 && required <= replicas.count, "W must be in 1...N")
        self.list = replicas
        self.required = required
    }

    /// The acknowledgement of the replica at `position` in the list.
    public mutating func onAck(at position: Int) -> Action? {
        guard position >= 0, position < list.count else { return nil }
        let bit = UInt64(1) << position
        guard failedMask & bit == 0 else { return nil }
        acknowledgedMask |= bit
        return decide()
    }

    /// The failure of the replica at `position` in the list.
    public mutating func onFailure(at position: Int) -> Action? {
        guard position >= 0, position < list.count else { return nil }
        let bit = UInt64(1) << position
        guard acknowledgedMask & bit == 0 else { return nil }
        failedMask |= bit
        return decide()
    }

    /// The replicas that acknowledged.
    public var acknowledged: Set<Int> { Set(list.indices.filter { acknowledgedMask & 1 << $0 != 0 }.map { list[$0] }) }
    public var failed: Set<Int> { Set(list.indices.filter { failedMask & 1 << $0 != 0 }.map { list[$0] }) }

    public mutating func onAck(from replica: Int) -> Action? {
        guard let position = list.position(of: replica) else { return nil }
        return onAck(at: position)
    }

    public mutating func onFailure(from replica: Int) -> Action? {
        guard let position = list.position(of: replica) else { return nil }
        return onFailure(at: position)
    }

    public mutating func onTimeout() -> Action? {
        guard !isDecided else { return nil }
        isDecided = true
        return .fail(noQuorum(timedOut: true))
    }

    private mutating func decide() -> Action? {
        guard !isDecided else { return nil }
        if acknowledgedMask.nonzeroBitCount >= required {
            isDecided = true
            return .succeed
        }
        if list.count - failedMask.nonzeroBitCount < required {
            isDecided = true
            return .fail(noQuorum(timedOut: false))
        }
        return nil
    }

    private func noQuorum(timedOut: Bool) -> NoQuorum {
        NoQuorum(operation: .write, needed: required, answered: acknowledgedMask.nonzeroBitCount, failed: failedMask.nonzeroBitCount,
                 replicas: list.count, timedOut: timedOut)
    }
}

/// A quorum read: asks all N replicas, answers with the reconciled value once R have
/// answered (the newest version under LWW, the sibling set under vector clocks), and plans
/// read repairs for every replica that answered with something less or nothing, including
/// replicas that answer after the reply went out.
public struct ReadQuorum<Value: Reconcilable>: Sendable {
    public enum Action: Sendable, Hashable {
        /// Answer the client with the reconciled value (a tombstone is for the caller to read
        /// as absent), or nil when no replica had the key.
        case reply(Value?)
        case fail(NoQuorum)
        /// Send `value` to `replica`, which holds less than it.
        case repair(replica: Int, value: Value)
    }

    public let replicas: [Int]
    public let required: Int
    /// What each replica answered, by position in `replicas`: its value, or nil for "no such key".
    @usableFromInline var values: [Value?]
    @usableFromInline var answeredMask: UInt64 = 0
    @usableFromInline var failedMask: UInt64 = 0
    /// Replicas known to hold `newest` (they answered it, or were sent a repair of it).
    @usableFromInline var currentMask: UInt64 = 0
    @usableFromInline var reconciled: Value?
    @usableFromInline var decided = false

    /// The reconciled value of the answers so far.
    @inlinable public var newest: Value? { reconciled }
    /// True once the outcome was given; later answers only plan repairs.
    @inlinable public var isDecided: Bool { decided }

    @inlinable
    public init(replicas: [Int], required: Int) {
        precondition(required >= 1 && required <= replicas.count, "R must be in 1...N")
        precondition(replicas.count <= 64, "at most 64 replicas")
        self.replicas = replicas
        self.required = required
        self.values = Array(repeating: nil, count: replicas.count)
    }

    /// Replicas that answered, with their answers.
    public var answers: [Int: Value?] {
        Dictionary(uniqueKeysWithValues: replicas.indices.filter { answeredMask & 1 << $0 != 0 }.map { (replicas[$0], values[$0]) })
    }

    @inlinable
    public mutating func onResponse(from replica: Int, _ value: Value?) -> [Action] {
        guard let index = replicas.firstIndex(of: replica) else { return [] }
        let bit = UInt64(1) << index
        guard answeredMask & bit == 0, failedMask & bit == 0 else { return [] }
        answeredMask |= bit
        values[index] = value
        let previous = reconciled
        reconciled = Value.reconcile(reconciled, value)
        if newest != previous {
            currentMask = 0
            for i in values.indices where answeredMask & 1 << i != 0 && values[i] != nil && values[i] == newest {
                currentMask |= 1 << i
            }
        } else if value != nil && value == newest {
            currentMask |= bit
        }
        var actions: [Action] = []
        if !isDecided && answeredMask.nonzeroBitCount >= required {
            decided = true
            actions.append(.reply(newest))
        }
        if isDecided { plannedRepairs(into: &actions) }
        return actions
    }

    @inlinable
    public mutating func onFailure(from replica: Int) -> [Action] {
        guard let index = replicas.firstIndex(of: replica) else { return [] }
        let bit = UInt64(1) << index
        guard answeredMask & bit == 0 else { return [] }
        failedMask |= bit
        guard !isDecided, replicas.count - failedMask.nonzeroBitCount < required else { return [] }
        decided = true
        return [.fail(noQuorum(timedOut: false))]
    }

    @inlinable
    public mutating func onTimeout() -> [Action] {
        guard !isDecided else { return [] }
        decided = true
        return [.fail(noQuorum(timedOut: true))]
    }

    /// Repairs for answered replicas that lack `newest` and were not repaired yet.
    @inlinable
    mutating func plannedRepairs(into actions: inout [Action]) {
        guard let newest else { return }
        let stale = answeredMask & ~currentMask
        guard stale != 0 else { return }
        for i in replicas.indices where stale & 1 << i != 0 {
            actions.append(.repair(replica: replicas[i], value: newest))
        }
        currentMask |= stale
    }

    @inlinable
    func noQuorum(timedOut: Bool) -> NoQuorum {
        NoQuorum(operation: .read, needed: required, answered: answeredMask.nonzeroBitCount, failed: failedMask.nonzeroBitCount,
                 replicas: replicas.count, timedOut: timedOut)
    }
}
