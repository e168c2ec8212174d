import NIOCore
import RESP
import Synchronization

/// The connections to one node, its circuit breaker and its reconnect backoff.
///
/// Connections open lazily, `size` of them, and requests take them in turn. A failed connect
/// makes the next attempt wait a jittered, growing delay; until then requests fail at once
/// (unsent, so the caller may try another node).
final class NodePool: Sendable {
    let node: Topology.Node
    private let settings: RingcacheClient.Configuration
    private let group: any EventLoopGroup
    private let state: Mutex<State>

    private struct State {
        var connections: [Connection?]
        var connecting: [EventLoopFuture<Connection>?]
        var next = 0
        var breaker: CircuitBreaker
        var failedConnects = 0
        var reconnectAt: ContinuousClock.Instant?
        var closed = false
    }

    init(node: Topology.Node, settings: RingcacheClient.Configuration, group: any EventLoopGroup) {
        self.node = node
        self.settings = settings
        self.group = group
        let size = max(1, settings.connectionsPerNode)
        state = Mutex(State(
            connections: Array(repeating: nil, count: size),
            connecting: Array(repeating: nil, count: size),
            breaker: CircuitBreaker(failureThreshold: settings.breakerFailureThreshold, openDuration: settings.breakerOpenDuration)))
    }

    var breaker: CircuitBreaker { state.withLock { $0.breaker } }

    /// Takes the breaker's permission for one request (a half-open breaker gives one probe).
    func allowRequest(now: ContinuousClock.Instant) -> Bool {
        state.withLock { $0.breaker.allowRequest(now: now) }
    }

    func wouldAllow(now: ContinuousClock.Instant) -> Bool {
        state.withLock { $0.breaker.wouldAllow(now: now) }
    }

    func recordSuccess() {
        state.withLock { $0.breaker.recordSuccess() }
    }

    /// Returns true when this failure opened the breaker.
    func recordFailure(now: ContinuousClock.Instant) -> Bool {
        state.withLock { $0.breaker.recordFailure(now: now) }
    }

    /// Sends one command on the next connection, connecting first if need be.
    func send(_ payload: ByteBuffer, consistency: String?) async throws -> RESPValue {
        let connection = try await connection()
        return try await connection.send(payload, consistency: consistency).get()
    }

    private enum Pick {
        case ready(Connection)
        case wait(EventLoopFuture<Connection>)
        case refuse(RingcacheError)
        case started(EventLoopFuture<Connection>, slot: Int)
    }

    private func connection() async throws -> Connection {
        let now = ContinuousClock.now
        let pick: Pick = state.withLock { state in
            guard !state.closed else { return .refuse(RingcacheError(.shutdown, "the client is closed", node: node.name)) }
            let slot = state.next
            state.next = (slot + 1) % state.connections.count
            if let connection = state.connections[slot], connection.isActive { return .ready(connection) }
            state.connections[slot] = nil
            if let future = state.connecting[slot] { return .wait(future) }
            // A half-open breaker's probe connects at once: it is what finds the node back.
            if let at = state.reconnectAt, now < at, !state.breaker.isHalfOpen {
                return .refuse(RingcacheError(.connection, "\(node.name) is unreachable; reconnecting in \(at - now)", node: node.name))
            }
            let future = Connection.connect(
                node: node.name, host: node.host, port: node.port, group: group,
                connectTimeout: settings.connectTimeout, requestTimeout: settings.requestTimeout,
                username: settings.username, password: settings.password,
                tls: settings.tlsContext.flatMap { context in settings.tls.map { (context, $0) } })
            state.connecting[slot] = future
            return .started(future, slot: slot)
        }
        switch pick {
        case .ready(let connection): return connection
        case .refuse(let error): throw TransportFailure(error: error, sent: false)
        case .wait(let future): return try await future.get()
        case .started(let future, let slot):
            // Registered outside the lock: the callback takes it.
            future.whenComplete { [self] result in connected(result, slot: slot) }
            return try await future.get()
        }
    }

    private func connected(_ result: Result<Connection, any Error>, slot: Int) {
        state.withLock { state in
            state.connecting[slot] = nil
            switch result {
            case .success(let connection):
                if state.closed {
                    connection.close()
                    return
                }
                state.connections[slot] = connection
                state.failedConnects = 0
                state.reconnectAt = nil
            case .failure:
                state.reconnectAt = .now + settings.reconnectBackoff.delay(attempt: state.failedConnects)
                state.failedConnects += 1
            }
        }
    }

    func close() {
        let connections = state.withLock { state in
            state.closed = true
            defer { state.connections = state.connections.map { _ in nil } }
            return state.connections
        }
        for connection in connections { connection?.close() }
    }
}
