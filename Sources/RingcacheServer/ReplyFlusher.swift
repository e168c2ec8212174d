import NIOCore

/// Writes the replies of one turn of an event loop together, after every ready socket of the
/// turn was read (as Redis writes its replies before its loop sleeps).
///
/// A connection that answered its read batch asks for a flush instead of writing at once; the
/// first ask of a turn schedules one task, which runs once the loop has handled all its
/// ready sockets. The clients then find their replies ready together: measured against
/// redis-benchmark at `-c 50`, writing each reply as soon as it was ready woke the client about
/// three times as often as Redis did, and each wake-up costs the client time it could spend
/// sending. One per event loop, touched on that loop only.
final class ReplyFlusher {
    private let loop: any EventLoop
    private var waiting: [ClientHandler] = []
    /// The list the previous turn flushed, kept to be reused (no allocation per turn).
    private var spare: [ClientHandler] = []
    private var scheduled = false

    init(loop: any EventLoop) {
        self.loop = loop
    }

    /// `handler` flushes (``ClientHandler/flushDeferred()``) at the end of this turn.
    func enqueue(_ handler: ClientHandler) {
        waiting.append(handler)
        guard !scheduled else { return }
        scheduled = true
        loop.assumeIsolated().execute { self.flushAll() }
    }

    private func flushAll() {
        scheduled = false
        swap(&waiting, &spare)
        for handler in spare { handler.flushDeferred() }
        spare.removeAll(keepingCapacity: true)
    }
}
