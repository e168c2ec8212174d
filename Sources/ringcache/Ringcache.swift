import ArgumentParser
import Logging
import RingcacheServer
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

@main
struct Ringcache: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ringcache",
        abstract: "A distributed key-value cache that speaks the Redis protocol.",
        discussion: """
            Start a node with `ringcache serve`, then talk to it with redis-cli or any Redis client. \
            Settings come from a redis.conf-style file (--config) and from flags with the same names; \
            flags win.
            """,
        version: RingcacheServer.ringcacheVersion,
        subcommands: [Serve.self, Cluster.self, Cli.self, Bench.self, Simulate.self, TLS.self]
    )
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a node in the foreground until SIGTERM or SIGINT."
    )

    @Option(help: "A cluster.conf-style file (redis.conf syntax: `directive value ...`, # comments).")
    var config: String?

    @Option(help: "The name of the `node` line in --config to run as (its address sets bind and port).")
    var node: String?

    @Option(help: "TCP port for clients (default 6379).")
    var port: Int?

    @Option(help: "Address to listen on (default 127.0.0.1).")
    var bind: String?

    @Option(name: [.long, .customLong("io-threads")], help: "Event-loop threads (default: number of cores).")
    var threads: Int?

    @Option(help: "Memory limit for keys and values, e.g. 100mb or 2gb; 0 for none (default 0).")
    var maxmemory: String?

    @Option(name: .customLong("maxmemory-policy"), help: "allkeys-lru (default), volatile-lru, volatile-ttl or noeviction.")
    var maxmemoryPolicy: String?

    @Option(help: "Password clients must send with AUTH or HELLO before other commands.")
    var requirepass: String?

    @Option(help: "Close clients idle for this many seconds; 0 never (default 0).")
    var timeout: Int?

    @Option(help: "Most connected clients (default 10000).")
    var maxclients: Int?

    @Option(name: .customLong("proto-max-bulk-len"), help: "Largest bulk string accepted (default 512mb).")
    var protoMaxBulkLen: String?

    @Option(name: .customLong("proto-max-multibulk-len"), help: "Most elements in one request (default 1048576).")
    var protoMaxMultibulkLen: Int?

    @Option(name: .customLong("client-query-buffer-limit"), help: "Most unparsed bytes buffered per client (default 1gb).")
    var clientQueryBufferLimit: String?

    @Option(name: .customLong("client-output-buffer-limit"), help: "Unread reply bytes after which a client is closed; 0 for none (default 256mb).")
    var clientOutputBufferLimit: String?

    @Option(help: "Active-expiry cycles per second (default 10).")
    var hz: Int?

    @Option(help: "trace, debug, info (default), notice, warning, error or critical.")
    var loglevel: String?

    @Option(help: "sqlite: keep every write in an SQLite database under memory; off (default).")
    var persistence: String?

    @Option(help: "Directory of the database, ringcache-<node>.db (default .).")
    var dir: String?

    @Option(name: .customLong("persistence-fsync"), help: "always, everysec (default) or no.")
    var persistenceFsync: String?

    @Option(name: .customLong("persistence-queue-limit"), help: "Bytes of changes queued for the SQLite writer before writes wait (default 64mb).")
    var persistenceQueueLimit: String?

    @Option(name: .customLong("tls-port"), help: "TCP port for TLS clients; 0 for none (default 0).")
    var tlsPort: Int?

    @Option(name: .customLong("tls-cert-file"), help: "The node's certificate (PEM); {node} stands for the node's name.")
    var tlsCertFile: String?

    @Option(name: .customLong("tls-key-file"), help: "The node's private key (PEM); {node} stands for the node's name.")
    var tlsKeyFile: String?

    @Option(name: .customLong("tls-ca-cert-file"), help: "The CA that client and peer certificates must chain to (PEM).")
    var tlsCACertFile: String?

    @Option(name: .customLong("tls-auth-clients"), help: "yes (default), no or optional: whether TLS clients must show a certificate.")
    var tlsAuthClients: String?

    @Option(name: .customLong("tls-protocols"), help: "TLS versions accepted, e.g. \"TLSv1.2 TLSv1.3\" (the default).")
    var tlsProtocols: String?

    @Option(name: .customLong("tls-cluster"), help: "yes: the cluster bus runs on mutual TLS (default no).")
    var tlsCluster: String?

    func run() async throws {
        let configuration: NodeConfiguration
        do {
            configuration = try makeConfiguration()
        } catch {
            FileHandleOutput.standardError("ringcache: \(error)\n")
            throw ExitCode(1)
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = Self.logLevel(configuration.logLevel)
            return handler
        }
        let logger = Logger(label: "ringcache")
        let node: RingcacheNode
        do {
            node = try RingcacheNode(configuration: configuration, logger: logger)
        } catch {
            FileHandleOutput.standardError("ringcache: \(error)\n")
            throw ExitCode(1)
        }
        let group = ServiceGroup(
            // The node's run returns by itself only after CLUSTER LEAVE: a normal end.
            configuration: .init(services: [.init(service: node, successTerminationBehavior: .gracefullyShutdownGroup)],
                                 gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        )
        do {
            try await group.run()
            logger.debug("service group finished")
        } catch {
            logger.critical("\(error)")
            throw ExitCode(1)
        }
    }

    func makeConfiguration() throws -> NodeConfiguration {
        var configuration = NodeConfiguration()
        if let config {
            guard let text = Self.readFile(config) else {
                throw ConfigurationError("cannot read configuration file '\(config)'")
            }
            configuration = try NodeConfiguration.parse(text, file: config)
            if let node {
                try configuration.select(node: node)
            } else if configuration.nodes.count == 1 {
                try configuration.select(node: configuration.nodes[0].name)
            } else if configuration.nodes.count > 1 {
                throw ConfigurationError("\(config) declares \(configuration.nodes.count) nodes: choose one with --node")
            }
        } else if node != nil {
            throw ConfigurationError("--node needs --config")
        }
        let flags: [(String, String?)] = [
            ("port", port.map(String.init)), ("bind", bind), ("io-threads", threads.map(String.init)),
            ("maxmemory", maxmemory), ("maxmemory-policy", maxmemoryPolicy), ("requirepass", requirepass),
            ("timeout", timeout.map(String.init)), ("maxclients", maxclients.map(String.init)),
            ("proto-max-bulk-len", protoMaxBulkLen), ("proto-max-multibulk-len", protoMaxMultibulkLen.map(String.init)),
            ("client-query-buffer-limit", clientQueryBufferLimit), ("client-output-buffer-limit", clientOutputBufferLimit),
            ("hz", hz.map(String.init)), ("loglevel", loglevel),
            ("persistence", persistence), ("dir", dir), ("persistence-fsync", persistenceFsync),
            ("persistence-queue-limit", persistenceQueueLimit),
            ("tls-port", tlsPort.map(String.init)), ("tls-cert-file", tlsCertFile), ("tls-key-file", tlsKeyFile),
            ("tls-ca-cert-file", tlsCACertFile), ("tls-auth-clients", tlsAuthClients), ("tls-cluster", tlsCluster),
            ("tls-protocols", tlsProtocols),
        ]
        for case let (name, value?) in flags {
            do {
                try configuration.apply(name, [value])
                configuration.directiveLines[name] = "--\(name)"
            } catch {
                throw ConfigurationError("--\(name): \(error.message)")
            }
        }
        try configuration.validate()
        return configuration
    }

    static func readFile(_ path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = fread(&chunk, 1, chunk.count, file)
            if count <= 0 { break }
            bytes.append(contentsOf: chunk[0..<count])
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func logLevel(_ name: String) -> Logger.Level {
        switch name {
        case "trace": return .trace
        case "debug", "verbose": return .debug
        case "notice": return .notice
        case "warning": return .warning
        case "error": return .error
        case "critical": return .critical
        default: return .info
        }
    }
}

enum FileHandleOutput {
    static func standardError(_ text: String) {
        var text = text
        text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    }
}
