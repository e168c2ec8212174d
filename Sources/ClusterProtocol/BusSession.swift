import ClusterCore

/// What one inbound bus connection may do, decided without sockets or clocks: the handshake
/// comes first, within a few KiB and a deadline; an authenticated joiner may only join until
/// the ring holds it; a request may speak only for the member the connection authenticated
/// as; a coordinator whose view of the ring is behind this node's is told this node's view at
/// once (its replica set may miss where the data is); a peer that owes too many replies,
/// sends what does not parse, or stays silent is closed. The shell (`BusHandler`)
/// feeds in what happened and carries out the verdicts.
public struct BusSession: Sendable {
    public enum Stage: Sendable, Equatable {
        case handshaking
        /// Authenticated as `peer`; `member` is false for a joiner the ring does not hold yet.
        case serving(peer: String, member: Bool)
        case closed
    }

    /// Why a connection is closed (the shell counts and logs each).
    public enum CloseReason: Sendable, Equatable {
        case unauthenticatedOversize
        case handshakeTimeout
        case handshakeRefused
        case idle
        case protocolError
        case replyQueue
    }

    public enum Verdict: Sendable, Equatable {
        /// Answer the request as `peer`'s.
        case serve(peer: String)
        /// Answer the request with this error; the connection stays.
        case refuse(String)
        /// Fencing: refuse the request with this `STALEVIEW` error and send the peer this
        /// node's member list at once. The peer coordinates with a view of the ring an epoch
        /// behind this node's: its write could reach only old replicas whose keys were sent
        /// already, its read could miss what writers of the new ring wrote. The coordinator
        /// catches up and retries (``ReplicaPlan/admits(_:)``; `ringcache simulate`).
        /// `pushView`: send the member list now (at most every ``viewPushInterval`` ms per
        /// connection, however many requests are fenced in between).
        case fence(peer: String, message: String, pushView: Bool)
        /// Write `reply` (when there is one), then close.
        case close(CloseReason, reply: String?, log: String)
    }

    public struct Limits: Sendable, Hashable {
        /// Bytes a connection may send before its handshake is over.
        public var maxUnauthenticatedBytes: Int
        /// Replies a connection may owe (waiting on quorums or the disk).
        public var maxPendingReplies: Int
        /// Idle checks in a row without a read after which the connection is closed.
        public var silentChecks: Int

        public init(maxUnauthenticatedBytes: Int = BusHandshake.maxUnauthenticatedBytes, maxPendingReplies: Int = 65_536, silentChecks: Int = 2) {
            self.maxUnauthenticatedBytes = maxUnauthenticatedBytes
            self.maxPendingReplies = maxPendingReplies
            self.silentChecks = silentChecks
        }
    }

    public let limits: Limits
    public private(set) var stage: Stage = .handshaking
    /// How far the peer's view of the ring had got when it last said (`RC.STAGE`); nil before
    /// it did (a tool, not a coordinator: nothing is fenced).
    public private(set) var peerView: RingStage?
    private var silent = 0
    /// When this connection's coordinator was last sent this node's member list.
    private var lastViewPushed: Int64?
    /// How often a fenced coordinator is sent the member list, at most (milliseconds).
    public static let viewPushInterval: Int64 = 100
    private var readSinceCheck = true

    public init(limits: Limits = Limits()) {
        self.limits = limits
    }

    public var isServing: Bool {
        if case .serving = stage { return true }
        return false
    }

    public var isClosed: Bool { stage == .closed }

    /// Bytes arrived: `buffered` are waiting to be parsed.
    public mutating func onRead(buffered: Int) -> Verdict? {
        readSinceCheck = true
        guard stage == .handshaking, buffered > limits.maxUnauthenticatedBytes else { return nil }
        return close(.unauthenticatedOversize, reply: nil, log: "more than \(limits.maxUnauthenticatedBytes) bytes before the handshake")
    }

    /// The handshake proved the connection is `peer`'s; `member`: the ring holds it.
    public mutating func onAuthenticated(peer: String, member: Bool) {
        guard stage == .handshaking else { return }
        stage = .serving(peer: peer, member: member)
    }

    /// The handshake failed (the message goes back to the peer).
    public mutating func onHandshakeRefused(_ message: String) -> Verdict {
        close(.handshakeRefused, reply: message, log: "refused a handshake: \(message)")
    }

    /// The handshake's deadline passed.
    public mutating func onHandshakeDeadline(after limit: String) -> Verdict? {
        guard stage == .handshaking else { return nil }
        return close(.handshakeTimeout, reply: nil, log: "no handshake within \(limit)")
    }

    /// A periodic idle check (every half idle timeout): a connection that read nothing for
    /// `silentChecks` checks in a row is closed; before the handshake that is a handshake
    /// that did not come.
    public mutating func onIdleCheck(timeout: String) -> Verdict? {
        guard !isClosed else { return nil }
        silent = readSinceCheck ? 0 : silent + 1
        readSinceCheck = false
        guard silent >= limits.silentChecks else { return nil }
        return close(isServing ? .idle : .handshakeTimeout, reply: nil, log: "silent for \(timeout); closing")
    }

    /// Bytes that are no bus message (a RESP error, an inline request): closed either way.
    public mutating func onUnparsable(_ message: String, reply: String) -> Verdict {
        close(isServing ? .protocolError : .handshakeRefused, reply: reply, log: message)
    }

    /// A message that parsed but did not decode as a request: after the handshake only that
    /// request is refused; before it, the connection is closed.
    public mutating func onUndecodable(_ message: String) -> Verdict {
        guard isServing else { return close(.handshakeRefused, reply: "NOAUTH \(message)", log: "refused a request: \(message)") }
        return .refuse("ERR \(message)")
    }

    /// An authenticated request. `isMember`: the ring holds the peer now; `owed`: replies the
    /// connection owes already; `view`: how far this node's view of the ring has got.
    public mutating func onRequest(_ request: BusRequest, isMember: Bool, owed: Int, view: RingStage = RingStage(epoch: 0, settled: true),
                                   now: Int64 = 0) -> Verdict {
        guard case .serving(let peer, var member) = stage else { return .refuse("NOAUTH authenticate first") }
        if !member {
            // A joiner may only join; once the ring holds it, it is a member like any other.
            if isMember {
                member = true
                stage = .serving(peer: peer, member: true)
            } else if !Self.allowedBeforeJoining(request) {
                return .refuse("NOPERM '\(peer)' is not a member: it may only join")
            }
        }
        guard owed < limits.maxPendingReplies else { return close(.replyQueue, reply: nil, log: "\(owed) replies owed; closing") }
        if let claimed = Self.claimedSender(of: request), claimed != peer {
            return .refuse("NOPERM this connection is '\(peer)', not '\(claimed)'")
        }
        switch request {
        case .hello, .prove:
            return .refuse("ERR already authenticated")
        case .stage(let view):
            peerView = view
            return .serve(peer: peer)
        case .get, .put, .delete, .siblingGet, .siblingPut:
            if let peerView, peerView.epoch < view.epoch {
                let push = lastViewPushed.map { now - $0 >= Self.viewPushInterval } ?? true
                if push { lastViewPushed = now }
                return .fence(peer: peer, message: "\(Self.staleViewPrefix) coordinator '\(peer)' is at ring epoch \(peerView.epoch), this replica at \(view.epoch)",
                              pushView: push)
            }
            return .serve(peer: peer)
        default:
            return .serve(peer: peer)
        }
    }

    /// The error prefix of a fenced request: the coordinator catches up and tries again.
    public static let staleViewPrefix = "STALEVIEW"

    /// The connection closed (either side).
    public mutating func onClosed() { stage = .closed }

    /// Requests a joiner may send before the ring holds it.
    public static func allowedBeforeJoining(_ request: BusRequest) -> Bool {
        switch request {
        case .join, .ping, .stage: return true
        default: return false
        }
    }

    /// The member a request says it comes from, where it names one: it must be the member the
    /// connection authenticated as.
    public static func claimedSender(of request: BusRequest) -> String? {
        switch request {
        case .join(let entry): return entry.name
        case .members(let list): return list.sender
        case .transferDone(_, let sender, _), .transfer(let sender, _): return sender
        case .transferPart(let chunk): return chunk.sender
        case .tree(let requester), .bucket(let requester, _): return requester
        default: return nil
        }
    }

    private mutating func close(_ reason: CloseReason, reply: String?, log: String) -> Verdict {
        stage = .closed
        return .close(reason, reply: reply, log: log)
    }
}
