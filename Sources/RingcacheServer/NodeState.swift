import Persistence
import CacheStore
import NIOCore
import RESP
import Synchronization

/// What every connection of a node shares: the store, the settings that CONFIG SET may
/// change, the connected clients and the counters that INFO reports.
public final class NodeState: Sendable {
    public let store: CacheStore
    /// The SQLite tier under the store (`persistence sqlite`), or nil.
    public let durable: DurableTier?
    let configuration: Mutex<NodeConfiguration>
    /// The TLS contexts new connections use; `CONFIG SET tls-*` replaces them.
    public let tls: TLSState
    let clients = ClientRegistry()
    let startedAt: Int64
    let runID: String

    // Settings read on hot paths, mirrored out of `configuration` so no lock is taken.
    let maxBulkLength: Atomic<Int>
    let maxMultibulkLength: Atomic<Int>
    let maxQueryBuffer: Atomic<Int>
    let outputBufferLimit: Atomic<Int>
    let timeoutSeconds: Atomic<Int>
    let maxClients: Atomic<Int>
    let passwordRequired: Atomic<Bool>

    // Counters for INFO stats.
    let commandsProcessed = Atomic<Int>(0)
    let connectionsReceived = Atomic<Int>(0)
    let rejectedConnections = Atomic<Int>(0)
    let protocolErrors = Atomic<Int>(0)
    let clientsClosedForOutput = Atomic<Int>(0)
    let readRepairs = Atomic<Int>(0)
    /// Anti-entropy rounds run, and entries they pulled from peers and pushed to them.
    let antiEntropyRounds = Atomic<Int>(0)
    let antiEntropyPulled = Atomic<Int>(0)
    let antiEntropyPushed = Atomic<Int>(0)
    /// Times a client stopped being read because the SQLite writer was behind.
    let diskPauses = Atomic<Int>(0)
    let quorumFailures = Atomic<Int>(0)
    /// Keys this node coordinated as one of their replicas, and as none of them (an extra hop
    /// a ring-aware client avoids).
    let keysCoordinatedAsReplica = Atomic<Int>(0)
    let keysCoordinatedNotReplica = Atomic<Int>(0)
    /// Read-modify-write commands sent on to the key's first replica.
    let readModifyWritesForwarded = Atomic<Int>(0)

    /// The client record for commands a node runs on behalf of a peer (read-modify-write).
    let internalClient: ClientInfo

    public init(configuration: NodeConfiguration, now: Int64, durable: DurableTier? = nil, tls: TLSContexts? = nil) {
        self.durable = durable
        self.tls = TLSState(tls)
        self.store = CacheStore(
            configuration: .init(
                maxMemory: configuration.maxMemory,
                evictionPolicy: configuration.evictionPolicy,
                node: NodeID(name: configuration.nodeName),
                journal: durable
            )
        )
        self.configuration = Mutex(configuration)
        self.startedAt = now
        self.internalClient = ClientInfo(id: 0, channel: nil, now: now)
        var generator = SystemRandomNumberGenerator()
        self.runID = (0..<40).map { _ in String(UInt8.random(in: 0..<16, using: &generator), radix: 16) }.joined()
        maxBulkLength = Atomic(configuration.effectiveLimits.maxBulkLength)
        maxMultibulkLength = Atomic(configuration.limits.maxMultibulkLength)
        maxQueryBuffer = Atomic(configuration.limits.maxQueryBuffer)
        outputBufferLimit = Atomic(configuration.clientOutputBufferLimit)
        timeoutSeconds = Atomic(configuration.timeout)
        maxClients = Atomic(configuration.maxClients)
        passwordRequired = Atomic(configuration.requirePass != nil)
    }

    var currentConfiguration: NodeConfiguration { configuration.withLock { $0 } }

    var limits: RESPLimits {
        RESPLimits(
            maxBulkLength: maxBulkLength.load(ordering: .relaxed),
            maxMultibulkLength: maxMultibulkLength.load(ordering: .relaxed),
            maxQueryBuffer: maxQueryBuffer.load(ordering: .relaxed)
        )
    }

    /// Applies `CONFIG SET` pairs all or nothing.
    func reconfigure(_ pairs: [(String, String)]) throws(ConfigurationError) {
        try configuration.withLock { (current: inout NodeConfiguration) throws(ConfigurationError) in
            var updated = current
            for (name, value) in pairs {
                guard NodeConfiguration.runtimeDirectives.contains(name.lowercased()) else {
                    throw ConfigurationError("Unknown option or number of arguments for CONFIG SET - '\(name)'")
                }
                do throws(ConfigurationError) {
                    try updated.apply(name, [value])
                    if name.lowercased() == "proto-max-bulk-len" {
                        try updated.checkBulkLengthFitsPersistence(explicit: true)
                    }
                } catch {
                    throw ConfigurationError(
                        "CONFIG SET failed (possibly related to argument '\(name)') - \(Self.redisReason(for: name.lowercased(), error))")
                }
            }
            // New certificates, keys or settings: checked whole before they replace the old
            // ones, which stay if anything is wrong. Open connections keep theirs.
            if let tlsName = pairs.first(where: { NodeConfiguration.tlsReloadable.contains($0.0.lowercased()) })?.0, updated.usesTLS {
                do throws(ConfigurationError) {
                    tls.replace(try TLSContexts.make(updated))
                } catch {
                    throw ConfigurationError(
                        "CONFIG SET failed (possibly related to argument '\(tlsName)') - Unable to update TLS configuration: \(error.message)")
                }
            }
            current = updated
        }
        let updated = currentConfiguration
        store.maxMemory = updated.maxMemory
        store.evictionPolicy = updated.evictionPolicy
        maxBulkLength.store(updated.effectiveLimits.maxBulkLength, ordering: .relaxed)
        maxMultibulkLength.store(updated.limits.maxMultibulkLength, ordering: .relaxed)
        maxQueryBuffer.store(updated.limits.maxQueryBuffer, ordering: .relaxed)
        outputBufferLimit.store(updated.clientOutputBufferLimit, ordering: .relaxed)
        timeoutSeconds.store(updated.timeout, ordering: .relaxed)
        maxClients.store(updated.maxClients, ordering: .relaxed)
        passwordRequired.store(updated.requirePass != nil, ordering: .relaxed)
    }

    /// Redis's wording for a rejected CONFIG SET value, where it has one.
    private static func redisReason(for directive: String, _ error: ConfigurationError) -> String {
        switch directive {
        case "maxmemory", "proto-max-bulk-len", "client-query-buffer-limit", "client-output-buffer-limit":
            return NodeConfiguration.parseMemory(error.message) == nil && !error.message.contains("at least") && !error.message.contains("at most")
                ? "argument must be a memory value" : error.message
        case "timeout", "maxclients", "hz", "proto-max-multibulk-len":
            return "argument couldn't be parsed into an integer"
        case "maxmemory-policy":
            return "argument(s) must be one of the following: \(EvictionPolicy.allCases.map(\.rawValue).joined(separator: ", "))"
        default:
            return error.message
        }
    }

    /// True if `password` is the configured one (compared in constant time).
    func checkPassword(_ password: UnsafeRawBufferPointer) -> Bool {
        guard let expected = configuration.withLock({ $0.requirePass }) else { return false }
        var difference = UInt8(expected.utf8.count == password.count ? 0 : 1)
        let expectedBytes = Array(expected.utf8)
        for i in 0..<password.count {
            difference |= password[i] ^ (i < expectedBytes.count ? expectedBytes[i] : 0)
        }
        return difference == 0
    }
}

/// One connected client as CLIENT LIST and the idle sweeper see it.
final class ClientInfo: Sendable {
    struct Details {
        var name: [UInt8] = []
        var resp = 2
        var libName = ""
        var libVersion = ""
    }

    let id: Int
    let address: String
    let localAddress: String
    let createdAt: Int64
    /// The connection, or nil for the node's internal client.
    let channel: (any Channel)?
    let details: Mutex<Details>
    /// Unix milliseconds of the last read batch: stored once per batch, without a lock.
    let lastInteraction: Atomic<Int64>
    /// The last command's raw value + 1 (0: none yet), only turned into text for CLIENT LIST.
    let lastCommand = Atomic<UInt8>(0)

    init(id: Int, channel: (any Channel)?, now: Int64) {
        self.id = id
        self.channel = channel
        self.address = channel?.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "internal"
        self.localAddress = channel?.localAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "internal"
        self.createdAt = now
        self.details = Mutex(Details())
        self.lastInteraction = Atomic(now)
    }

    /// The CLIENT LIST / CLIENT INFO line.
    func describe(now: Int64) -> String {
        let idle = (now - lastInteraction.load(ordering: .relaxed)) / 1000
        let command = CommandSpec.Name(rawValue: lastCommand.load(ordering: .relaxed) &- 1).map { CommandTable.name(of: $0) } ?? "NULL"
        return details.withLock { d in
            let name = String(decoding: d.name, as: UTF8.self)
            return "id=\(id) addr=\(address) laddr=\(localAddress) fd=0 name=\(name) age=\((now - createdAt) / 1000) "
                + "idle=\(idle) flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 "
                + "argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=\(command) "
                + "user=default redir=-1 resp=\(d.resp) lib-name=\(d.libName) lib-ver=\(d.libVersion)"
        }
    }
}

/// The connected clients, for CLIENT LIST, `maxclients` and the idle sweeper.
final class ClientRegistry: Sendable {
    private let clients = Mutex<[Int: ClientInfo]>([:])
    private let nextID = Atomic<Int>(1)

    var count: Int { clients.withLock { $0.count } }

    /// Registers a new connection unless `limit` clients are connected already.
    func register(channel: any Channel, now: Int64, limit: Int) -> ClientInfo? {
        let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        let info = ClientInfo(id: id, channel: channel, now: now)
        return clients.withLock { clients in
            guard clients.count < limit else { return nil }
            clients[id] = info
            return info
        }
    }

    func remove(_ id: Int) {
        _ = clients.withLock { $0.removeValue(forKey: id) }
    }

    var all: [ClientInfo] { clients.withLock { $0.values.sorted { $0.id < $1.id } } }

    /// Closes clients idle for `timeout` seconds or more.
    func closeIdle(timeout: Int, now: Int64) {
        guard timeout > 0 else { return }
        for client in all where now - client.lastInteraction.load(ordering: .relaxed) >= Int64(timeout) * 1000 {
            client.channel?.close(promise: nil)
        }
    }
}
