import CacheStore
import Testing

@testable import RingcacheServer

@Suite struct ConfigurationTests {
    @Test func parsesDirectivesCommentsAndNodes() throws {
        let text = """
            # a comment
            cluster-name test
            node n1 127.0.0.1:7001
            node n2 127.0.0.1:7002

            maxmemory 100mb
            maxmemory-policy volatile-ttl
            requirepass "two words"
            timeout 30
            """
        var configuration = try NodeConfiguration.parse(text, file: "cluster.conf")
        #expect(configuration.clusterName == "test")
        #expect(configuration.maxMemory == 100 * 1024 * 1024)
        #expect(configuration.evictionPolicy == .volatileTTL)
        #expect(configuration.requirePass == "two words")
        #expect(configuration.timeout == 30)
        #expect(configuration.nodes.map(\.name) == ["n1", "n2"])
        try configuration.select(node: "n2")
        #expect(configuration.port == 7002 && configuration.bind == "127.0.0.1" && configuration.nodeName == "n2")
    }

    @Test(arguments: [
        ("port 7001\nbogus 1\n", "cluster.conf:2: unknown directive 'bogus'"),
        ("maxmemory lots\n", "cluster.conf:1: 'maxmemory' needs a size such as 100mb or 1gb, got 'lots'"),
        ("\n\nport 70000\n", "cluster.conf:3: 'port' needs an integer in 0...65535, got '70000'"),
        ("maxmemory-policy random\n", "cluster.conf:1: 'maxmemory-policy' must be one of allkeys-lru, volatile-lru, volatile-ttl, noeviction, got 'random'"),
        ("node n1 nowhere\n", "cluster.conf:1: 'node n1' needs host:port, got 'nowhere'"),
        ("node n1 127.0.0.1:1\nnode n1 127.0.0.1:2\n", "cluster.conf:2: node 'n1' is declared twice"),
        ("requirepass \"open\n", "cluster.conf:1: unbalanced quotes"),
        ("timeout 1 2\n", "cluster.conf:1: 'timeout' takes exactly one value, got 2"),
        ("seeds\n", "cluster.conf:1: 'seeds' needs at least one host:port"),
        ("seeds 10.0.0.1:7001 nowhere\n", "cluster.conf:1: 'seeds' needs host:port or host:port@busport, got 'nowhere'"),
        ("seeds 10.0.0.1:60000\n", "cluster.conf:1: 'seeds' needs host:port or host:port@busport, got '10.0.0.1:60000'"),
        ("tls-auth-clients maybe\n", "cluster.conf:1: 'tls-auth-clients' must be yes, no or optional, got 'maybe'"),
        ("tls-protocols TLSv1.1 TLSv1.3\n", "cluster.conf:1: 'tls-protocols' must name consecutive versions, got 'TLSv1.1 TLSv1.3'"),
        ("tls-protocols SSLv3\n", "cluster.conf:1: 'tls-protocols' knows TLSv1, TLSv1.1, TLSv1.2, TLSv1.3, got 'SSLv3'"),
        ("tls-ciphersuites TLS_AES_128_GCM_SHA256:TLS_RC4\n",
         "cluster.conf:1: 'tls-ciphersuites' knows TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256, got 'TLS_RC4'"),
        ("tls-cluster maybe\n", "cluster.conf:1: 'tls-cluster' must be yes or no, got 'maybe'"),
        ("rebalance-max-bytes-per-sec fast\n", "cluster.conf:1: 'rebalance-max-bytes-per-sec' needs a size such as 100mb or 1gb, got 'fast'"),
    ])
    func badLinesNameFileAndLine(text: String, message: String) {
        #expect(throws: ConfigurationError.self) { try NodeConfiguration.parse(text, file: "cluster.conf") }
        do {
            _ = try NodeConfiguration.parse(text, file: "cluster.conf")
        } catch {
            #expect(error.message == message)
        }
    }

    @Test func tlsDirectivesAndTheirChecks() throws {
        let text = """
            node n1 127.0.0.1:7001
            node n2 127.0.0.1:7002
            replicas 2
            port 0
            tls-cluster yes
            tls-cert-file certs/{node}.crt
            tls-key-file certs/{node}.key
            tls-ca-cert-file certs/ca.crt
            tls-protocols "TLSv1.3 TLSv1.2"
            """
        var configuration = try NodeConfiguration.parse(text, file: "cluster.conf")
        try configuration.select(node: "n2")
        #expect(configuration.clientPortIsTLS && configuration.tlsCluster && configuration.usesTLS)
        #expect(configuration.port == 7002)
        #expect(configuration.tlsPath(configuration.tlsCertFile!) == "certs/n2.crt")
        #expect(configuration.tlsProtocols == ["TLSv1.2", "TLSv1.3"])
        try configuration.validate()
        // tls-cluster without a CA, and a cluster file's tls-port, are refused at start-up.
        var noCA = configuration
        noCA.tlsCACertFile = nil
        #expect { try noCA.validate() } throws: { ($0 as? ConfigurationError)?.message.contains("'tls-ca-cert-file' must be set") ?? false }
        let withPort = try NodeConfiguration.parse(text + "\ntls-port 7100\n", file: "cluster.conf")
        #expect { try withPort.validate() } throws: { ($0 as? ConfigurationError)?.message.contains("cluster.conf:10: 'tls-port' does not apply") ?? false }
        // Standalone: port 0 needs a tls-port; tls-auth-clients no needs no CA.
        var standalone = try NodeConfiguration.parse("port 0\n", file: "x.conf")
        #expect(throws: ConfigurationError.self) { try standalone.validate() }
        try standalone.apply("tls-port", ["6380"])
        try standalone.apply("tls-cert-file", ["a.crt"])
        try standalone.apply("tls-key-file", ["a.key"])
        try standalone.apply("tls-auth-clients", ["no"])
        try standalone.validate()
        #expect(!standalone.clientPortIsTLS && standalone.plainPortOff)
        #expect(NodeConfiguration.runtimeDirectives.contains("tls-cert-file") && !NodeConfiguration.runtimeDirectives.contains("tls-port"))
    }

    @Test func aNodeWithSeedsIsClusteredAndTakesBusPorts() throws {
        let text = """
            node n4 127.0.0.1:7004
            seeds 127.0.0.1:7001 db1.example:6379@16400
            rebalance-max-bytes-per-sec 10mb
            """
        let configuration = try NodeConfiguration.parse(text, file: "n4.conf")
        #expect(configuration.isClustered)
        #expect(configuration.seeds == [.init(host: "127.0.0.1", port: 7001, busPort: 17001), .init(host: "db1.example", port: 6379, busPort: 16400)])
        #expect(configuration.rebalanceMaxBytesPerSec == 10 * 1024 * 1024)
        try configuration.validate()
    }

    @Test func memoryUnitsFollowRedisConf() {
        #expect(NodeConfiguration.parseMemory("1k") == 1000)
        #expect(NodeConfiguration.parseMemory("1kb") == 1024)
        #expect(NodeConfiguration.parseMemory("2GB") == 2 * 1024 * 1024 * 1024)
        #expect(NodeConfiguration.parseMemory("12345") == 12345)
        #expect(NodeConfiguration.parseMemory("-1") == nil)
        #expect(NodeConfiguration.parseMemory("mb") == nil)
        #expect(NodeConfiguration.parseMemory("99999999999999999gb") == nil)
    }

    @Test func unknownNodeIsAnError() throws {
        var configuration = try NodeConfiguration.parse("node n1 127.0.0.1:7001\n", file: "c")
        #expect(throws: ConfigurationError.self) { try configuration.select(node: "n9") }
    }
}
