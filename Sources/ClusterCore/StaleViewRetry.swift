/// When a quorum operation that a replica fenced goes again (the replica's view of the ring
/// was an epoch ahead of the coordinator's, and it sent its member list with the refusal).
/// The pauses give that list time to arrive; a write tried again keeps its version.
public enum StaleViewRetry {
    /// Times an operation goes again after a refusal.
    public static let attempts = 3

    /// The pause (ms) before attempt `attempt + 1` of an operation whose attempt `attempt`
    /// (0: the first) failed; nil when it is not tried again: no replica refused it since it
    /// started (`refused`), or it had its tries. 20, 60, then 180 ms.
    public static func pause(afterAttempt attempt: Int, refused: Bool) -> Int64? {
        guard refused, attempt >= 0, attempt < attempts else { return nil }
        var pause: Int64 = 20
        for _ in 0..<attempt { pause *= 3 }
        return pause
    }
}
