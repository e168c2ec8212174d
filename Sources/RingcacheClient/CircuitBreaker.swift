/// A circuit breaker for one node, as a pure state machine: the caller passes the time.
///
/// Closed, it lets every request through and counts consecutive failures; after
/// `failureThreshold` of them it opens, and for `openDuration` no request goes to the node
/// (each costs nothing, instead of a timeout). Then it lets one probe through (half-open): a
/// success closes it, a failure opens it again.
public struct CircuitBreaker: Sendable, Hashable {
    /// Where the breaker stands.
    public enum State: Sendable, Hashable {
        case closed(consecutiveFailures: Int)
        case open(until: ContinuousClock.Instant)
        case halfOpen(probeInFlight: Bool)
    }

    /// The current state; starts closed.
    public private(set) var state: State = .closed(consecutiveFailures: 0)
    /// Consecutive failures that open a closed breaker.
    public let failureThreshold: Int
    /// How long an open breaker refuses requests before it lets a probe through.
    public let openDuration: Duration

    /// A closed breaker.
    public init(failureThreshold: Int = 3, openDuration: Duration = .seconds(2)) {
        precondition(failureThreshold >= 1, "a breaker needs at least one failure to open")
        self.failureThreshold = failureThreshold
        self.openDuration = openDuration
    }

    /// Whether a request may go to the node now; a half-open breaker lets one probe through.
    public mutating func allowRequest(now: ContinuousClock.Instant) -> Bool {
        switch state {
        case .closed:
            return true
        case .open(let until):
            guard now >= until else { return false }
            state = .halfOpen(probeInFlight: true)
            return true
        case .halfOpen(let probeInFlight):
            guard !probeInFlight else { return false }
            state = .halfOpen(probeInFlight: true)
            return true
        }
    }

    /// Whether a request would be allowed, without taking the probe.
    public func wouldAllow(now: ContinuousClock.Instant) -> Bool {
        switch state {
        case .closed: true
        case .open(let until): now >= until
        case .halfOpen(let probeInFlight): !probeInFlight
        }
    }

    /// Waiting for the answer to its probe, or ready to let one through.
    public var isHalfOpen: Bool {
        if case .halfOpen = state { return true }
        return false
    }

    /// Refusing requests (until its open period ends).
    public var isOpen: Bool {
        if case .open = state { return true }
        return false
    }

    /// Letting every request through.
    public var isClosed: Bool {
        if case .closed = state { return true }
        return false
    }

    /// The node answered (any reply, error replies included: the node is alive).
    public mutating func recordSuccess() {
        state = .closed(consecutiveFailures: 0)
    }

    /// The node did not answer. Returns true when this failure opened the breaker.
    @discardableResult
    public mutating func recordFailure(now: ContinuousClock.Instant) -> Bool {
        switch state {
        case .closed(let failures):
            if failures + 1 >= failureThreshold {
                state = .open(until: now + openDuration)
                return true
            }
            state = .closed(consecutiveFailures: failures + 1)
            return false
        case .halfOpen:
            state = .open(until: now + openDuration)
            return true
        case .open:
            return false
        }
    }
}

/// Exponential backoff with full jitter: attempt n waits a random time in
/// [0, min(cap, base·2ⁿ)], so clients that failed together do not retry together.
public struct Backoff: Sendable, Hashable {
    /// The ceiling of the first wait; it doubles with each attempt.
    public var base: Duration
    /// The largest ceiling.
    public var cap: Duration

    /// Backoff from `base`, doubling up to `cap`.
    public init(base: Duration, cap: Duration) {
        self.base = base
        self.cap = cap
    }

    /// The longest wait before attempt `attempt` (0 for the first retry).
    public func ceiling(attempt: Int) -> Duration {
        let factor = 1 << min(max(attempt, 0), 30)
        let grown = base * factor
        return grown < cap ? grown : cap
    }

    /// A random wait for `attempt`; `unit` is a number in [0, 1] (random in use, fixed in tests).
    public func delay(attempt: Int, unit: Double) -> Duration {
        ceiling(attempt: attempt) * min(max(unit, 0), 1)
    }

    /// A random wait for `attempt`.
    public func delay(attempt: Int) -> Duration {
        delay(attempt: attempt, unit: Double.random(in: 0...1))
    }
}
