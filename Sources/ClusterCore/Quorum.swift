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

    public let replicas: [Int]
    public let required: Int
    public private(set) var acknowledged: Set<Int> = []
    public private(set) var failed: Set<Int> = []
    /// True once the outcome was given; later events only update the counts.
    public private(set) var isDecided = false

    public init(replicas: [Int], required: Int) {
        precondition(required >= 1 && required <= replicas.count, "W must be in 1...N")
        self.replicas = replicas
        self.required = required
    }

    public mutating func onAck(from replica: Int) -> Action? {
        guard replicas.contains(replica), !failed.contains(replica) else { return nil }
        acknowledged.insert(replica)
        return decide(timedOut: false)
    }

    public mutating func onFailure(from replica: Int) -> Action? {
        guard replicas.contains(replica), !acknowledged.contains(replica) else { return nil }
        failed.insert(replica)
        return decide(timedOut: false)
    }

    public mutating func onTimeout() -> Action? {
        guard !isDecided else { return nil }
        isDecided = true
        return .fail(noQuorum(timedOut: true))
    }

    private mutating func decide(timedOut: Bool) -> Action? {
        guard !isDecided else { return nil }
        if acknowledged.count >= required {
            isDecided = true
            return .succeed
        }
        if replicas.count - failed.count < required {
            isDecided = true
            return .fail(noQuorum(timedOut: false))
        }
        return nil
    }

    private func noQuorum(timedOut: Bool) -> NoQuorum {
        NoQuorum(operation: .write, needed: required, answered: acknowledged.count, failed: failed.count,
                 replicas: replicas.count, timedOut: timedOut)
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
    /// What each replica answered: its value, or nil for "no such key".
    public private(set) var answers: [Int: Value?] = [:]
    public private(set) var failed: Set<Int> = []
    public private(set) var newest: Value?
    public private(set) var isDecided = false
    /// Replicas known to hold `newest` (they answered it, or were sent a repair of it).
    private var current: Set<Int> = []

    public init(replicas: [Int], required: Int) {
        precondition(required >= 1 && required <= replicas.count, "R must be in 1...N")
        self.replicas = replicas
        self.required = required
    }

    public mutating func onResponse(from replica: Int, _ value: Value?) -> [Action] {
        guard replicas.contains(replica), answers[replica] == nil, !failed.contains(replica) else { return [] }
        answers[replica] = .some(value)
        let previous = newest
        newest = Value.reconcile(newest, value)
        if newest != previous {
            current = Set(answers.compactMap { $0.value != nil && $0.value == newest ? $0.key : nil })
        } else if value != nil && value == newest {
            current.insert(replica)
        }
        var actions: [Action] = []
        if !isDecided && answers.count >= required {
            isDecided = true
            actions.append(.reply(newest))
        }
        if isDecided { actions += plannedRepairs() }
        return actions
    }

    public mutating func onFailure(from replica: Int) -> [Action] {
        guard replicas.contains(replica), answers[replica] == nil else { return [] }
        failed.insert(replica)
        guard !isDecided, replicas.count - failed.count < required else { return [] }
        isDecided = true
        return [.fail(noQuorum(timedOut: false))]
    }

    public mutating func onTimeout() -> [Action] {
        guard !isDecided else { return [] }
        isDecided = true
        return [.fail(noQuorum(timedOut: true))]
    }

    /// Repairs for answered replicas that lack `newest` and were not repaired yet.
    private mutating func plannedRepairs() -> [Action] {
        guard let newest else { return [] }
        var actions: [Action] = []
        for replica in replicas where answers[replica] != nil && !current.contains(replica) {
            current.insert(replica)
            actions.append(.repair(replica: replica, value: newest))
        }
        return actions
    }

    private func noQuorum(timedOut: Bool) -> NoQuorum {
        NoQuorum(operation: .read, needed: required, answered: answers.count, failed: failed.count,
                 replicas: replicas.count, timedOut: timedOut)
    }
}
