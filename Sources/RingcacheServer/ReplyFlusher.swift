import NIOCore

/// Writes the replies of one turn of an event loop together, after every ready socket of the
/// turn was read (as Redis writes its replies before its loop sleeps).
///
/// A connection that answered its read batch asks whether to flush now; the first deferred
/// ask of a turn schedules one task, which runs once the loop has handled all its ready
/// sockets. The clients then find their replies ready together: measured against
/// redis-benchmark at `-c 50`, writing each reply as soon as it was ready woke the client about
/// three times as often as Redis did, and each wake-up costs the client time it could spend
/// sending. The task costs about as much as it saves when a turn has one connection to answer
/// (`-c 1`), so after such a turn the next ``probeInterval`` flushes happen at once, and then
/// a turn is deferred again to see whether the loop got busier. One per event loop, touched on
/// that loop only.
final class ReplyFlusher {
    private let loop: any EventLoop
    private var waiting: [ClientHandler] = []
    /// The list the previous turn flushed, kept to be reused (no allocation per turn).
    private var spare: [ClientHandler] = []
    /// Flushes left to do at once before the next deferred turn.
    private var immediateLeft = 0

    static let probeInterval = 64

    init(loop: any EventLoop) {
        self.loop = loop
    }

    /// True if `handler` is to flush (``ClientHandler/flushDeferred()``) at the end of this
    /// turn, false if it should flush now.
    func deferFlush(_ handler: ClientHandler) -> Bool {
        if waiting.isEmpty {
            if immediateLeft > 0 {
                immediateLeft -= 1
                return false
            }
            loop.assumeIsolated().execute { self.flushAll() }
        }
        waiting.append(handler)
        return true
    }

    /// Defers `handler`'s flush to the end of this turn whatever the probe says: for cluster
    /// replies, which arrive many to a read of a peer's link, and which would otherwise each
    /// be written with a system call of their own.
    func deferReplies(_ handler: ClientHandler) {
        if waiting.isEmpty { loop.assumeIsolated().execute { self.flushAll() } }
        waiting.append(handler)
    }

    private func flushAll() {
        swap(&waiting, &spare)
        if spare.count == 1 { immediateLeft = Self.probeInterval }
        for handler in spare { handler.flushDeferred() }
        spare.removeAll(keepingCapacity: true)
    }
}
