import Logging
import Synchronization

/// The bus's limits on connections, and its counts of what it refused (INFO `# Cluster`).
///
/// Every refusal is counted; each is logged once per peer and reason per minute, so a flood
/// of bad packets or connections costs a counter, not a log line each.
final class BusGuard: Sendable {
    /// Why a bus connection was closed or a message refused: INFO's field names.
    enum Reason: String, CaseIterable, Sendable {
        case handshakeRefused = "bus_handshakes_refused"
        case handshakeTimeout = "bus_handshake_timeouts"
        case unauthenticatedOversize = "bus_closed_unauthenticated_oversize"
        case protocolError = "bus_protocol_errors"
        case idle = "bus_closed_idle"
        case connectionLimit = "bus_closed_connection_limit"
        case outputLimit = "bus_closed_output_limit"
        case replyQueue = "bus_closed_reply_queue"
        case peerReplyError = "bus_bad_replies"
        case transferRefused = "bus_transfers_refused"
        case joinRefused = "bus_joins_refused"
        case staleCoordinator = "bus_requests_from_stale_views"
        case tlsRefused = "bus_tls_handshakes_refused"
        case certificateName = "bus_certificate_names_refused"
        case gossipBadMAC = "gossip_dropped_bad_mac"
        case gossipForeign = "gossip_dropped_foreign_cluster"
        case gossipMalformed = "gossip_dropped_malformed"
        case gossipReplay = "gossip_dropped_replay"
        case gossipStale = "gossip_dropped_stale"
        case gossipUnknownSender = "gossip_dropped_unknown_sender"
    }

    let maxConnections: Int
    let maxPerPeer: Int
    /// Connections that have not finished the handshake, at most.
    static let maxUnauthenticated = 64
    /// Replies a bus connection may owe (waiting on quorums or disk) before it is closed.
    static let maxPendingReplies = 65_536
    /// Bytes written to a peer that it has not read, past which the connection is closed.
    static let maxOutputBytes = 256 * 1024 * 1024

    private let counts = Mutex<[Reason: Int]>([:])
    private let connections = Mutex<(total: Int, unauthenticated: Int, byPeer: [String: Int])>((0, 0, [:]))
    private let lastLogged = Mutex<[String: Int64]>([:])

    init(maxConnections: Int, maxPerPeer: Int) {
        self.maxConnections = maxConnections
        self.maxPerPeer = maxPerPeer
    }

    func count(_ reason: Reason) { counts.withLock { $0[reason, default: 0] += 1 } }
    func value(_ reason: Reason) -> Int { counts.withLock { $0[reason] ?? 0 } }

    /// Counts a refusal and logs it, unless this peer's refusals of this kind were logged in
    /// the last minute.
    func refuse(_ reason: Reason, peer: String, _ message: @autoclosure () -> String, logger: Logger, now: Int64) {
        count(reason)
        let key = "\(reason.rawValue) \(peer)"
        let log = lastLogged.withLock { logged in
            if let last = logged[key], now - last < 60_000 { return false }
            if logged.count > 10_000 { logged.removeAll() }
            logged[key] = now
            return true
        }
        if log { logger.warning("cluster bus: \(message())", metadata: ["peer": "\(peer)", "reason": "\(reason.rawValue)"]) }
    }

    /// A new connection; false if the total or unauthenticated limit is reached.
    func open() -> Bool {
        connections.withLock { state in
            guard state.total < maxConnections, state.unauthenticated < Self.maxUnauthenticated else { return false }
            state.total += 1
            state.unauthenticated += 1
            return true
        }
    }

    /// The connection authenticated as `peer`; false if that peer has too many already.
    func authenticated(_ peer: String) -> Bool {
        connections.withLock { state in
            state.unauthenticated -= 1
            guard state.byPeer[peer, default: 0] < maxPerPeer else { return false }
            state.byPeer[peer, default: 0] += 1
            return true
        }
    }

    /// A connection closed: `peer` if it had authenticated (and was admitted), else nil.
    func closed(peer: String?, wasUnauthenticated: Bool) {
        connections.withLock { state in
            state.total -= 1
            if wasUnauthenticated { state.unauthenticated -= 1 }
            if let peer {
                state.byPeer[peer, default: 1] -= 1
                if state.byPeer[peer] == 0 { state.byPeer[peer] = nil }
            }
        }
    }

    var openConnections: Int { connections.withLock { $0.total } }

    /// New members a node admits, at most, per ``joinWindowMillis``: joins are rare, and a
    /// burst of new names (even authenticated) must not grow the ring and gossip tables fast.
    static let maxJoinsPerWindow = 16
    static let joinWindowMillis: Int64 = 10_000
    private let joins = Mutex<[Int64]>([])

    /// True if one more new member may join now.
    func admitJoin(now: Int64) -> Bool {
        joins.withLock { times in
            times.removeAll { now - $0 >= Self.joinWindowMillis }
            guard times.count < Self.maxJoinsPerWindow else { return false }
            times.append(now)
            return true
        }
    }

    /// INFO lines.
    var infoLines: [String] {
        ["bus_connections:\(openConnections)"] + Reason.allCases.map { "\($0.rawValue):\(value($0))" }
    }
}
