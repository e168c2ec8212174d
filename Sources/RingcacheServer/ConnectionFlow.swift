/// Where a client connection stands: one state with named transitions, in place of the flags
/// the handler used to carry. Pure: ``ClientHandler`` tells it what happened, asks it what to
/// do, and does it; the tests drive it without a socket.
struct ConnectionFlow: Equatable, Sendable {
    enum Phase: Equatable, Sendable {
        /// Requests are read and answered.
        case reading
        /// The socket does not take more replies: wait until it is writable.
        case pausedForOutput
        /// The SQLite writer is behind: wait (checked on a timer) until its queue drains.
        case pausedForDisk
        /// Too many cluster replies are outstanding, or a read-through holds the connection's
        /// later requests: wait until enough of them have answered.
        case pausedForReplies
        /// Close once the replies still outstanding are written (QUIT, a protocol error, the
        /// client's half-close while cluster replies were pending).
        case draining
        case closed
    }

    private(set) var phase = Phase.reading
    /// The channel asked for a read while the connection was not reading: issued on resume.
    private(set) var readHeld = false

    var isReading: Bool { phase == .reading }
    var isPaused: Bool { phase == .pausedForOutput || phase == .pausedForDisk || phase == .pausedForReplies }
    var isClosing: Bool { phase == .draining || phase == .closed }

    // MARK: Transitions

    /// The channel asks for more bytes: true to read now, false when the read is held.
    mutating func readRequested() -> Bool {
        guard phase == .reading else {
            readHeld = true
            return false
        }
        return true
    }

    /// Stops reading for `reason` (one of the paused phases); a closing connection stays closing.
    mutating func pause(_ reason: Phase) {
        precondition(reason == .pausedForOutput || reason == .pausedForDisk || reason == .pausedForReplies, "\(reason) is not a pause")
        guard !isClosing else { return }
        phase = reason
    }

    /// Reading again after a pause.
    mutating func resume() {
        guard isPaused else { return }
        phase = .reading
    }

    /// Once reading again (and still reading after what resuming processed): true when a
    /// read was held and must be issued now.
    mutating func takeHeldRead() -> Bool {
        guard phase == .reading, readHeld else { return false }
        readHeld = false
        return true
    }

    /// Close once the outstanding replies are written.
    mutating func drain() {
        guard phase != .closed else { return }
        phase = .draining
    }

    /// Close now. False if the connection was closed already.
    mutating func close() -> Bool {
        guard phase != .closed else { return false }
        phase = .closed
        return true
    }

    // MARK: Decisions

    /// The socket became writable: whether that ends the pause.
    func resumesWhenWritable() -> Bool {
        phase == .pausedForOutput
    }

    /// The disk check ran: `congested` if the writer is still behind. Returns the phase to
    /// take: still paused for the disk, reading (`writable`), or paused for output.
    func afterDiskCheck(congested: Bool, writable: Bool) -> Phase? {
        guard phase == .pausedForDisk else { return nil }
        if congested { return .pausedForDisk }
        return writable ? .reading : .pausedForOutput
    }

    /// A cluster reply came in: whether the connection reads again (enough replies answered,
    /// no read-through holds it, and the socket takes replies), or, when draining, closes.
    func afterReply(waiting: Int, maximumWaiting: Int, held: Bool, writable: Bool) -> Phase? {
        switch phase {
        case .draining:
            return waiting == 0 ? .closed : nil
        case .pausedForReplies:
            guard waiting < maximumWaiting / 2, !held else { return nil }
            return writable ? .reading : .pausedForOutput
        default:
            return nil
        }
    }
}
