import Persistence
import NIOCore
import CacheStore
import RESP

/// Everything a node is started with: the directives of `cluster.conf` (redis.conf style)
/// and the CLI flags, which use the same names.
public struct NodeConfiguration: Sendable, Equatable {
    /// A `node <name> <host>:<port>` line.
    public struct NodeAddress: Sendable, Equatable {
        public var name: String
        public var host: String
        public var port: Int
        /// The cluster bus port: client port + 10000 unless the `node` line gives one.
        public var busPort: Int
    }

    /// A `seeds` address: a running member's client `host:port`, its bus port after `@` when
    /// it is not client port + 10000 (Redis's `ip:port@cport`).
    public struct SeedAddress: Sendable, Equatable {
        public var host: String
        public var port: Int
        public var busPort: Int
    }

    /// How replicas settle concurrent writes (`reconcile`).
    public enum Reconcile: String, Sendable, Equatable {
        case lww
        case vclock
    }

    /// `tls-auth-clients`: whether a client on the TLS port must show a certificate.
    public enum TLSAuthClients: String, Sendable, Equatable {
        case yes, no, optional
    }

    public var nodeName = "standalone"
    public var bind = "127.0.0.1"
    public var port = 6379
    public var threads = System.coreCount
    public var maxMemory = 0
    public var evictionPolicy = EvictionPolicy.allKeysLRU
    public var requirePass: String? = nil
    /// Seconds a client may stay idle; 0 never closes.
    public var timeout = 0
    public var maxClients = 10_000
    public var limits = RESPLimits()
    /// Bytes of replies a client may leave unread before it is closed; 0 for no limit.
    public var clientOutputBufferLimit = 256 * 1024 * 1024
    /// Active expiry cycles per second.
    public var hz = 10
    public var logLevel = "info"
    public var clusterName = "ringcache"
    public var nodes: [NodeAddress] = []
    /// `seeds host:port ...`: members of a running cluster this node joins through.
    public var seeds: [SeedAddress] = []
    /// `rebalance-max-bytes-per-sec`: the pace of data moving after a join or leave; 0 unbounded.
    public var rebalanceMaxBytesPerSec = 64 << 20
    /// Replicas per key (N).
    public var replicas = 3
    /// Answers a read waits for (R), unless a connection sets CONSISTENCY.
    public var readQuorum = 2
    /// Acknowledgements a write waits for (W), unless a connection sets CONSISTENCY.
    public var writeQuorum = 2
    /// Milliseconds a coordinator waits for replicas before answering NOQUORUM.
    public var requestTimeout = 1000
    /// Shared secrets of the cluster bus and gossip, newest first: a node proves with the
    /// first and accepts any (`cluster-secret new old` while rotating). None: loopback only.
    public var clusterSecrets: [String] = []
    /// The first secret, if any.
    public var clusterSecret: String? { clusterSecrets.first }
    /// Seconds a bus connection may stay silent before it is closed (peers ping every 10).
    public var clusterBusIdleTimeout = 60
    /// Bus connections accepted at once, over all peers.
    public var clusterBusMaxConnections = 1024
    /// Where each directive was last set (`file:line`), to name it in errors found later.
    public var directiveLines: [String: String] = [:]
    public var vnodes = 128
    public var reconcile = Reconcile.lww
    public var maxSiblings = 8
    /// Seconds a delete is remembered so repairs cannot resurrect the key.
    public var tombstoneTTL = 3600
    /// Gossip (SWIM over UDP on the bus port number): protocol period and ping timeout in
    /// milliseconds, members asked to probe indirectly, suspicion length factor.
    public var gossipInterval = 1000
    public var gossipPingTimeout = 300
    public var gossipIndirectProbes = 3
    public var gossipSuspicionMultiplier = 4
    /// `sloppy-quorum yes|no`: a write for an unreachable replica goes to the next healthy node
    /// as a hint (hinted handoff) and counts toward W.
    public var sloppyQuorum = false
    /// Bounds of the hints a node keeps for others: count, bytes, age in seconds.
    public var hintMaxCount = 100_000
    public var hintMaxBytes = 64 << 20
    public var hintMaxAge = 3600
    /// Milliseconds between anti-entropy rounds (Merkle digests with every peer); 0 for none.
    public var antiEntropyInterval = 10_000
    /// TLS (redis.conf's directives). `tls-port`: a TLS listener for clients, 0 for none. In a
    /// cluster file `port 0` makes each node's `node` line port speak TLS only.
    public var tlsPort = 0
    /// Certificate and key files; `{node}` in a path stands for the node's name, so one
    /// cluster.conf serves every node.
    public var tlsCertFile: String? = nil
    public var tlsKeyFile: String? = nil
    /// The certificate and key this node shows when it connects to peers (`tls-cluster`);
    /// `tls-cert-file` and `tls-key-file` when unset.
    public var tlsClientCertFile: String? = nil
    public var tlsClientKeyFile: String? = nil
    /// The CA that client and peer certificates must chain to.
    public var tlsCACertFile: String? = nil
    public var tlsAuthClients = TLSAuthClients.yes
    /// `tls-protocols`: the TLS versions accepted, "TLSv1.2 TLSv1.3" by default.
    public var tlsProtocols = ["TLSv1.2", "TLSv1.3"]
    /// `tls-ciphers` (TLSv1.2 and below, OpenSSL's syntax) and `tls-ciphersuites` (TLSv1.3).
    public var tlsCiphers: String? = nil
    public var tlsCiphersuites: String? = nil
    /// `tls-cluster yes`: the cluster bus runs on mutual TLS.
    public var tlsCluster = false
    /// True when the `node` line port (or `port`) is not plain TCP: `port 0` in a cluster file.
    public var clientPortIsTLS: Bool { isClustered && plainPortOff }
    /// `port 0` was given.
    public var plainPortOff = false

    /// TLS versions `tls-protocols` may name.
    public static let tlsVersionNames = ["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]
    /// TLSv1.3 suites BoringSSL has, all of them always on.
    public static let tls13Suites = ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"]

    /// True when any listener or link of this node uses TLS.
    public var usesTLS: Bool { tlsPort != 0 || clientPortIsTLS || tlsCluster }

    /// A TLS file path with `{node}` replaced by this node's name.
    public func tlsPath(_ path: String) -> String {
        path.replacingOccurrences(of: "{node}", with: nodeName)
    }

    /// `persistence sqlite|off`: the durable tier under memory.
    public var persistence = false
    /// `dir`: where the database goes (`ringcache-<node>.db`).
    public var dir = "."
    /// `persistence-fsync always|everysec|no`.
    public var persistenceFsync = FsyncPolicy.everysec
    /// `persistence-queue-limit`: bytes of changes queued for the SQLite writer past which
    /// writes wait (back-pressure).
    public var persistenceQueueLimit = DurableTier.defaultQueueLimit

    /// With `persistence sqlite`, a key and its value share one SQLite row, which holds at
    /// most 1,000,000,000 bytes (SQLite's length limit): a bulk string may hold at most half
    /// of that, less room for the row's other columns (476mb). Past it the row could never
    /// be written, and every merge would fail.
    public static let persistentMaxBulkLength = 476 << 20

    /// The protocol limits in force: `proto-max-bulk-len` as set, or, when it was left at its
    /// default and persistence is on, ``persistentMaxBulkLength``.
    public var effectiveLimits: RESPLimits {
        var effective = limits
        if persistence { effective.maxBulkLength = min(effective.maxBulkLength, Self.persistentMaxBulkLength) }
        return effective
    }

    /// A `proto-max-bulk-len` set past what the SQLite tier can store is refused.
    func checkBulkLengthFitsPersistence(explicit: Bool = false) throws(ConfigurationError) {
        guard persistence, explicit || directiveLines["proto-max-bulk-len"] != nil, limits.maxBulkLength > Self.persistentMaxBulkLength else { return }
        throw ConfigurationError(
            "\(directiveLines["proto-max-bulk-len"].map { "\($0): " } ?? "")'proto-max-bulk-len' is at most 476mb (\(Self.persistentMaxBulkLength) bytes) "
                + "with persistence sqlite: a key and its value share one SQLite row of at most 1,000,000,000 bytes")
    }

    /// The database file of this node.
    public var databasePath: String { (dir.hasSuffix("/") ? dir : dir + "/") + "ringcache-\(nodeName).db" }

    /// True when the node runs as a member of a cluster of more than one node.
    public var isClustered: Bool { nodes.count > 1 || !seeds.isEmpty }

    /// This node's entry among the `node` lines, if any.
    public var selfAddress: NodeAddress? { nodes.first { $0.name == nodeName } }

    public init() {}

    /// The directives `CONFIG GET` knows, with their current values.
    public func directiveValues() -> [(String, String)] {
        [
            ("bind", bind),
            ("port", String(port)),
            ("maxmemory", String(maxMemory)),
            ("maxmemory-policy", evictionPolicy.rawValue),
            ("requirepass", requirePass ?? ""),
            ("timeout", String(timeout)),
            ("maxclients", String(maxClients)),
            ("proto-max-bulk-len", String(effectiveLimits.maxBulkLength)),
            ("proto-max-multibulk-len", String(limits.maxMultibulkLength)),
            ("client-query-buffer-limit", String(limits.maxQueryBuffer)),
            ("client-output-buffer-limit", String(clientOutputBufferLimit)),
            ("io-threads", String(threads)),
            ("hz", String(hz)),
            ("loglevel", logLevel),
            ("cluster-name", clusterName),
            ("replicas", String(replicas)),
            ("read-quorum", String(readQuorum)),
            ("write-quorum", String(writeQuorum)),
            ("request-timeout", String(requestTimeout)),
            ("vnodes", String(vnodes)),
            ("reconcile", reconcile.rawValue),
            ("max-siblings", String(maxSiblings)),
            ("tombstone-ttl", String(tombstoneTTL)),
            ("gossip-interval", String(gossipInterval)),
            ("gossip-ping-timeout", String(gossipPingTimeout)),
            ("gossip-indirect-probes", String(gossipIndirectProbes)),
            ("gossip-suspicion-multiplier", String(gossipSuspicionMultiplier)),
            ("sloppy-quorum", sloppyQuorum ? "yes" : "no"),
            ("anti-entropy-interval", String(antiEntropyInterval)),
            ("seeds", seeds.map { "\($0.host):\($0.port)@\($0.busPort)" }.joined(separator: " ")),
            ("rebalance-max-bytes-per-sec", String(rebalanceMaxBytesPerSec)),
            ("hint-max-count", String(hintMaxCount)),
            ("hint-max-bytes", String(hintMaxBytes)),
            ("hint-max-age", String(hintMaxAge)),
            ("tls-port", String(tlsPort)),
            ("tls-cert-file", tlsCertFile ?? ""),
            ("tls-key-file", tlsKeyFile ?? ""),
            ("tls-client-cert-file", tlsClientCertFile ?? ""),
            ("tls-client-key-file", tlsClientKeyFile ?? ""),
            ("tls-ca-cert-file", tlsCACertFile ?? ""),
            ("tls-auth-clients", tlsAuthClients.rawValue),
            ("tls-protocols", tlsProtocols.joined(separator: " ")),
            ("tls-ciphers", tlsCiphers ?? ""),
            ("tls-ciphersuites", tlsCiphersuites ?? ""),
            ("tls-cluster", tlsCluster ? "yes" : "no"),
            ("persistence", persistence ? "sqlite" : "off"),
            ("dir", dir),
            ("persistence-fsync", persistenceFsync.rawValue),
            ("save", ""),
            ("appendonly", "no"),
            ("databases", "1"),
        ]
    }

    /// Directives that `CONFIG SET` may change at run time.
    public static let runtimeDirectives: Set<String> = Set([
        "maxmemory", "maxmemory-policy", "requirepass", "timeout", "maxclients", "proto-max-bulk-len",
        "proto-max-multibulk-len", "client-query-buffer-limit", "client-output-buffer-limit", "hz", "loglevel",
    ]).union(tlsReloadable)

    /// TLS directives `CONFIG SET` may change: the new files take effect for new connections.
    public static let tlsReloadable: Set<String> = [
        "tls-cert-file", "tls-key-file", "tls-client-cert-file", "tls-client-key-file", "tls-ca-cert-file",
        "tls-auth-clients", "tls-protocols", "tls-ciphers", "tls-ciphersuites",
    ]

    /// Applies one directive; throws a message naming what is wrong with the value.
    public mutating func apply(_ directive: String, _ arguments: [String]) throws(ConfigurationError) {
        let name = directive.lowercased()
        func single() throws(ConfigurationError) -> String {
            guard arguments.count == 1 else {
                throw ConfigurationError("'\(name)' takes exactly one value, got \(arguments.count)")
            }
            return arguments[0]
        }
        func integer(_ range: ClosedRange<Int>) throws(ConfigurationError) -> Int {
            let text = try single()
            guard let value = Int(text), range.contains(value) else {
                throw ConfigurationError("'\(name)' needs an integer in \(range.lowerBound)...\(range.upperBound), got '\(text)'")
            }
            return value
        }
        func memory() throws(ConfigurationError) -> Int {
            let text = try single()
            guard let value = Self.parseMemory(text) else {
                throw ConfigurationError("'\(name)' needs a size such as 100mb or 1gb, got '\(text)'")
            }
            return value
        }
        switch name {
        case "bind": bind = try single()
        case "port":
            port = try integer(0...65535)
            plainPortOff = port == 0
        case "tls-port": tlsPort = try integer(0...65535)
        case "tls-cert-file": tlsCertFile = try single().nonEmpty
        case "tls-key-file": tlsKeyFile = try single().nonEmpty
        case "tls-client-cert-file": tlsClientCertFile = try single().nonEmpty
        case "tls-client-key-file": tlsClientKeyFile = try single().nonEmpty
        case "tls-ca-cert-file": tlsCACertFile = try single().nonEmpty
        case "tls-auth-clients":
            let text = try single().lowercased()
            guard let mode = TLSAuthClients(rawValue: text) else {
                throw ConfigurationError("'tls-auth-clients' must be yes, no or optional, got '\(text)'")
            }
            tlsAuthClients = mode
        case "tls-protocols":
            // One value with spaces (CONFIG SET, a quoted line) or several words.
            let names = arguments.flatMap { $0.split(separator: " ").map(String.init) }
            guard !names.isEmpty else { throw ConfigurationError("'tls-protocols' needs at least one of \(Self.tlsVersionNames.joined(separator: ", "))") }
            var indices: [Int] = []
            for name in names {
                guard let index = Self.tlsVersionNames.firstIndex(where: { $0.lowercased() == name.lowercased() }) else {
                    throw ConfigurationError("'tls-protocols' knows \(Self.tlsVersionNames.joined(separator: ", ")), got '\(name)'")
                }
                indices.append(index)
            }
            indices.sort()
            guard indices.last! - indices.first! + 1 == Set(indices).count else {
                throw ConfigurationError("'tls-protocols' must name consecutive versions, got '\(names.joined(separator: " "))'")
            }
            tlsProtocols = indices.map { Self.tlsVersionNames[$0] }
        case "tls-ciphers": tlsCiphers = try single().nonEmpty
        case "tls-ciphersuites":
            let text = try single()
            for suite in text.split(separator: ":") where !Self.tls13Suites.contains(String(suite)) {
                throw ConfigurationError("'tls-ciphersuites' knows \(Self.tls13Suites.joined(separator: ":")), got '\(suite)'")
            }
            tlsCiphersuites = text.nonEmpty
        case "tls-cluster":
            let text = try single().lowercased()
            guard text == "yes" || text == "no" else { throw ConfigurationError("'tls-cluster' must be yes or no, got '\(text)'") }
            tlsCluster = text == "yes"
        case "io-threads", "threads": threads = try integer(1...64)
        case "maxmemory": maxMemory = try memory()
        case "maxmemory-policy":
            let text = try single().lowercased()
            guard let policy = EvictionPolicy(rawValue: text) else {
                throw ConfigurationError(
                    "'maxmemory-policy' must be one of \(EvictionPolicy.allCases.map(\.rawValue).joined(separator: ", ")), got '\(text)'")
            }
            evictionPolicy = policy
        case "requirepass":
            let text = try single()
            requirePass = text.isEmpty ? nil : text
        case "timeout": timeout = try integer(0...Int(Int32.max))
        case "maxclients": maxClients = try integer(1...1_000_000)
        case "proto-max-bulk-len":
            let value = try memory()
            guard value >= 1024, value <= Int(Int32.max) else {
                throw ConfigurationError("'proto-max-bulk-len' must be between 1kb and 2gb (2147483647 bytes)")
            }
            limits.maxBulkLength = value
        case "proto-max-multibulk-len": limits.maxMultibulkLength = try integer(1...Int(Int32.max))
        case "client-query-buffer-limit":
            let value = try memory()
            guard value >= 1024 * 1024 else { throw ConfigurationError("'client-query-buffer-limit' must be at least 1mb") }
            limits.maxQueryBuffer = value
        case "client-output-buffer-limit": clientOutputBufferLimit = try memory()
        case "hz": hz = try integer(1...500)
        case "loglevel":
            let text = try single().lowercased()
            guard ["trace", "debug", "verbose", "info", "notice", "warning", "error", "critical"].contains(text) else {
                throw ConfigurationError("'loglevel' must be one of trace, debug, info, notice, warning, error, critical, got '\(text)'")
            }
            logLevel = text
        case "cluster-name": clusterName = try single()
        case "cluster-secret":
            clusterSecrets = arguments.filter { !$0.isEmpty }
        case "cluster-bus-idle-timeout": clusterBusIdleTimeout = try integer(1...86_400)
        case "cluster-bus-max-connections": clusterBusMaxConnections = try integer(8...1_000_000)
        case "replicas": replicas = try integer(1...16)
        case "read-quorum": readQuorum = try integer(1...16)
        case "write-quorum": writeQuorum = try integer(1...16)
        case "request-timeout": requestTimeout = try integer(1...600_000)
        case "vnodes": vnodes = try integer(1...4096)
        case "max-siblings": maxSiblings = try integer(1...1024)
        case "tombstone-ttl": tombstoneTTL = try integer(1...Int(Int32.max))
        case "gossip-interval": gossipInterval = try integer(10...600_000)
        case "gossip-ping-timeout": gossipPingTimeout = try integer(1...600_000)
        case "gossip-indirect-probes": gossipIndirectProbes = try integer(0...16)
        case "gossip-suspicion-multiplier": gossipSuspicionMultiplier = try integer(1...100)
        case "sloppy-quorum":
            let text = try single().lowercased()
            guard text == "yes" || text == "no" else { throw ConfigurationError("'sloppy-quorum' must be yes or no, got '\(text)'") }
            sloppyQuorum = text == "yes"
        case "hint-max-count": hintMaxCount = try integer(0...100_000_000)
        case "anti-entropy-interval": antiEntropyInterval = try integer(0...86_400_000)
        case "hint-max-bytes": hintMaxBytes = try memory()
        case "rebalance-max-bytes-per-sec": rebalanceMaxBytesPerSec = try memory()
        case "seeds":
            guard !arguments.isEmpty else { throw ConfigurationError("'seeds' needs at least one host:port") }
            for text in arguments {
                guard let seed = Self.parseSeed(text) else {
                    throw ConfigurationError("'seeds' needs host:port or host:port@busport, got '\(text)'")
                }
                seeds.append(seed)
            }
        case "hint-max-age": hintMaxAge = try integer(1...Int(Int32.max))
        case "persistence":
            let text = try single().lowercased()
            guard text == "sqlite" || text == "off" else {
                throw ConfigurationError("'persistence' must be sqlite or off, got '\(text)'")
            }
            persistence = text == "sqlite"
        case "dir":
            let text = try single()
            guard !text.isEmpty else { throw ConfigurationError("'dir' needs a directory") }
            dir = text
        case "persistence-fsync":
            let text = try single().lowercased()
            guard let policy = FsyncPolicy(rawValue: text) else {
                throw ConfigurationError("'persistence-fsync' must be always, everysec or no, got '\(text)'")
            }
            persistenceFsync = policy
        case "persistence-queue-limit":
            let value = try memory()
            guard value >= 64 << 10 else { throw ConfigurationError("'persistence-queue-limit' must be at least 64kb") }
            persistenceQueueLimit = value
        case "reconcile":
            let text = try single().lowercased()
            guard let mode = Reconcile(rawValue: text) else {
                throw ConfigurationError("'reconcile' must be lww or vclock, got '\(text)'")
            }
            reconcile = mode
        case "node":
            guard arguments.count == 2 || arguments.count == 3 else {
                throw ConfigurationError("'node' needs a name and host:port, e.g. 'node n1 127.0.0.1:7001'")
            }
            let address = arguments[1]
            guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
                (1...65535).contains(port), colon != address.startIndex
            else {
                throw ConfigurationError("'node \(arguments[0])' needs host:port, got '\(address)'")
            }
            guard !nodes.contains(where: { $0.name == arguments[0] }) else {
                throw ConfigurationError("node '\(arguments[0])' is declared twice")
            }
            var busPort = port + 10000
            if arguments.count == 3 {
                guard let explicit = Int(arguments[2]), (1...65535).contains(explicit) else {
                    throw ConfigurationError("'node \(arguments[0])' bus port must be in 1...65535, got '\(arguments[2])'")
                }
                busPort = explicit
            }
            nodes.append(NodeAddress(name: arguments[0], host: String(address[..<colon]), port: port, busPort: busPort))
        default:
            throw ConfigurationError("unknown directive '\(directive)'")
        }
    }

    /// Parses `cluster.conf` text. Errors carry the file name and line number.
    public static func parse(_ text: String, file: String) throws(ConfigurationError) -> NodeConfiguration {
        var configuration = NodeConfiguration()
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.trimmingCharacters(in: " \t\r")
            if line.isEmpty || line.hasPrefix("#") { continue }
            let words: [String]
            do {
                words = try splitWords(line)
            } catch {
                throw ConfigurationError("\(file):\(index + 1): \(error.message)")
            }
            guard let directive = words.first else { continue }
            do {
                try configuration.apply(directive, Array(words.dropFirst()))
                let key = directive == "node" && words.count > 1 ? "node \(words[1])" : directive.lowercased()
                configuration.directiveLines[key] = "\(file):\(index + 1)"
            } catch {
                throw ConfigurationError("\(file):\(index + 1): \(error.message)")
            }
        }
        return configuration
    }

    /// Checks the settings against each other once the whole file is read.
    public func validate() throws(ConfigurationError) {
        guard readQuorum <= replicas, writeQuorum <= replicas else {
            throw ConfigurationError("read-quorum (\(readQuorum)) and write-quorum (\(writeQuorum)) cannot exceed replicas (\(replicas))")
        }
        if isClustered, let node = nodes.first(where: { $0.busPort > 65535 }) {
            throw ConfigurationError("node '\(node.name)' needs an explicit bus port: \(node.port) + 10000 is past 65535")
        }
        if gossipPingTimeout >= gossipInterval {
            throw ConfigurationError("gossip-ping-timeout (\(gossipPingTimeout)) must be shorter than gossip-interval (\(gossipInterval))")
        }
        if seeds.isEmpty && isClustered && replicas > nodes.count {
            throw ConfigurationError("replicas (\(replicas)) cannot exceed the number of nodes (\(nodes.count))")
        }
        try requireSecretOffLoopback()
        try checkBulkLengthFitsPersistence()
        try validateTLS()
    }

    /// The TLS directives against each other, as Redis checks them at start-up.
    func validateTLS() throws(ConfigurationError) {
        if !isClustered && port == 0 && tlsPort == 0 {
            throw ConfigurationError("\(directiveLines["port"].map { "\($0): " } ?? "")'port 0' turns plain TCP off, and no 'tls-port' is set: nothing to listen on")
        }
        if isClustered, let line = directiveLines["tls-port"], !line.hasPrefix("--") {
            throw ConfigurationError("\(line): 'tls-port' does not apply in a cluster file, where each node's port is on its 'node' line. "
                + "Hint: write 'port 0' to make those ports speak TLS only (or give a node 'ringcache serve --tls-port')")
        }
        guard usesTLS else { return }
        guard tlsCertFile != nil, tlsKeyFile != nil else {
            throw ConfigurationError("TLS is on (\(tlsReason)) but 'tls-cert-file' and 'tls-key-file' are not both set")
        }
        if tlsCACertFile == nil && (tlsCluster || tlsAuthClients != .no) {
            throw ConfigurationError("'tls-ca-cert-file' must be set when tls-cluster or tls-auth-clients is on "
                + "(\(tlsCluster ? "tls-cluster yes" : "tls-auth-clients \(tlsAuthClients.rawValue)"))")
        }
    }

    private var tlsReason: String {
        if tlsCluster { return "tls-cluster yes" }
        if tlsPort != 0 { return "tls-port \(tlsPort)" }
        return "port 0 in a cluster file"
    }

    /// A clustered node that listens beyond loopback must have a cluster secret: without one,
    /// anyone who can reach the bus could join, read and write.
    func requireSecretOffLoopback() throws(ConfigurationError) {
        guard isClustered, clusterSecrets.isEmpty, !Self.isLoopback(bind) else { return }
        let line = directiveLines["node \(nodeName)"] ?? directiveLines["bind"]
        throw ConfigurationError("\(line.map { "\($0): " } ?? "")node '\(nodeName)' listens on \(bind), which is not loopback, and no "
            + "cluster-secret is set. Hint: add 'cluster-secret <random>' (e.g. from 'openssl rand -hex 32') to every node's file")
    }

    /// True for addresses only this machine can reach.
    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    /// Chooses the node named `name` from the `node` lines: its port and bind address.
    public mutating func select(node name: String) throws(ConfigurationError) {
        guard let node = nodes.first(where: { $0.name == name }) else {
            let known = nodes.map(\.name).joined(separator: ", ")
            throw ConfigurationError("no node named '\(name)' in the configuration (nodes: \(known.isEmpty ? "none" : known))")
        }
        nodeName = node.name
        port = node.port
        bind = node.host
    }

    /// `host:port` or `host:port@busport`.
    static func parseSeed(_ text: String) -> SeedAddress? {
        let parts = text.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count <= 2, let colon = parts[0].lastIndex(of: ":"), colon != parts[0].startIndex,
              let port = Int(parts[0][parts[0].index(after: colon)...]), (1...65535).contains(port)
        else { return nil }
        var busPort = port + 10000
        if parts.count == 2 {
            guard let explicit = Int(parts[1]), (1...65535).contains(explicit) else { return nil }
            busPort = explicit
        }
        guard busPort <= 65535 else { return nil }
        return SeedAddress(host: String(parts[0][..<colon]), port: port, busPort: busPort)
    }

    /// `100`, `1k`, `1kb`, `2mb`, `1gb` (k = 1000, kb = 1024, as in redis.conf).
    public static func parseMemory(_ text: String) -> Int? {
        let lower = text.lowercased()
        let units: [(String, Int)] = [
            ("kb", 1024), ("mb", 1024 * 1024), ("gb", 1024 * 1024 * 1024),
            ("k", 1000), ("m", 1_000_000), ("g", 1_000_000_000), ("b", 1),
        ]
        for (suffix, factor) in units where lower.hasSuffix(suffix) {
            guard let number = Int(lower.dropLast(suffix.count)), number >= 0 else { return nil }
            let (product, overflow) = number.multipliedReportingOverflow(by: factor)
            return overflow ? nil : product
        }
        guard let number = Int(lower), number >= 0 else { return nil }
        return number
    }

    /// Splits a config line into words; double quotes group words.
    static func splitWords(_ line: String) throws(ConfigurationError) -> [String] {
        var words: [String] = []
        var current = ""
        var inQuotes = false
        var hasWord = false
        for character in line {
            if inQuotes {
                if character == "\"" { inQuotes = false } else { current.append(character) }
            } else if character == "\"" {
                inQuotes = true
                hasWord = true
            } else if character == " " || character == "\t" {
                if hasWord { words.append(current) }
                current = ""
                hasWord = false
            } else {
                current.append(character)
                hasWord = true
            }
        }
        if inQuotes { throw ConfigurationError("unbalanced quotes") }
        if hasWord { words.append(current) }
        return words
    }
}

/// A configuration line or value that cannot be used; the message says where and why.
public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

extension String {
    /// nil for an empty string, which unsets a file directive.
    var nonEmpty: String? { isEmpty ? nil : self }
}

extension StringProtocol {
    func trimmingCharacters(in characters: String) -> String {
        let set = Set(characters)
        guard let start = firstIndex(where: { !set.contains($0) }) else { return "" }
        let end = lastIndex(where: { !set.contains($0) })!
        return String(self[start...end])
    }
}
