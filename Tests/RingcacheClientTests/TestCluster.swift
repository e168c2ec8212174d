import Foundation
import Testing

@testable import RingcacheClient

#if canImport(Glibc)
import Glibc
#endif

/// Real `ringcache serve` processes on loopback, one per node of a generated cluster.conf.
/// The binary is `RINGCACHE_BIN`, or the debug build of this package (`swift test` builds it).
final class TestCluster: @unchecked Sendable {
    let names: [String]
    let ports: [String: Int]
    let directory: URL
    let config: URL
    private var processes: [String: Process] = [:]
    /// The nodes' requirepass, for the fixture's own connections.
    var password: String?

    init(nodes: Int = 3, settings: String) throws {
        names = (1...nodes).map { "n\($0)" }
        var ports: [String: Int] = [:]
        var busPorts: [String: Int] = [:]
        for name in names {
            ports[name] = try Self.freePort()
            busPorts[name] = try Self.freePort()
        }
        self.ports = ports
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("ringcache-client-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        config = directory.appendingPathComponent("cluster.conf")
        var text = "cluster-name clienttest\ncluster-secret s3cret\nrequest-timeout 500\n" + settings + "\n"
        for name in names { text += "node \(name) 127.0.0.1:\(ports[name]!) \(busPorts[name]!)\n" }
        try text.write(to: config, atomically: true, encoding: .utf8)
    }

    deinit { stopAll() }

    static var binary: String {
        if let path = ProcessInfo.processInfo.environment["RINGCACHE_BIN"] { return path }
        // Tests/RingcacheClientTests/TestCluster.swift → the package root.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return root.appendingPathComponent(".build/debug/ringcache").path
    }

    var seeds: [String] { names.map { "127.0.0.1:\(ports[$0]!)" } }

    func start(_ name: String) async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = ["serve", "--config", config.path, "--node", name]
        let log = directory.appendingPathComponent("\(name).log")
        if !FileManager.default.fileExists(atPath: log.path) { _ = FileManager.default.createFile(atPath: log.path, contents: nil) }
        let handle = try FileHandle(forWritingTo: log)
        handle.seekToEndOfFile()
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        processes[name] = process
        let deadline = ContinuousClock.now + .seconds(20)
        while true {
            #expect(process.isRunning, "\(name) exited: \(self.log(name))")
            guard process.isRunning else { throw RingcacheError(.connection, "\(name) exited") }
            if (try? await info(name, "server")) != nil { return }
            guard ContinuousClock.now < deadline else { throw RingcacheError(.timeout, "\(name) did not answer") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Starts every node and waits until every node's links to its peers are up.
    func startAll() async throws {
        for name in names { try await start(name) }
        for name in names {
            try await waitUntil("\(name) links up") {
                let text = try await self.direct(name) { try await $0.send(["CLUSTER", "INFO"]).string ?? "" }
                return text.contains("cluster_state:ok")
            }
        }
    }

    /// Sends SIGKILL (or another signal) to a node; SIGKILL and SIGTERM wait for it to end.
    func signal(_ name: String, _ number: Int32 = SIGKILL) {
        guard let process = processes[name] else { return }
        kill(process.processIdentifier, number)
        if number == SIGKILL || number == SIGTERM {
            process.waitUntilExit()
            processes[name] = nil
        }
    }

    func stopAll() {
        for name in Array(processes.keys) {
            if let process = processes[name] { kill(process.processIdentifier, SIGCONT) }
            signal(name, SIGKILL)
        }
        try? FileManager.default.removeItem(at: directory)
    }

    func log(_ name: String) -> String {
        let text = (try? String(contentsOf: directory.appendingPathComponent("\(name).log"), encoding: .utf8)) ?? ""
        return String(text.suffix(3000))
    }

    /// Runs `body` with a client that talks to `name` only.
    func direct<T: Sendable>(_ name: String, _ body: (RingcacheClient) async throws -> T) async throws -> T {
        var configuration = RingcacheClient.Configuration()
        configuration.routing = .firstSeed
        configuration.retries = 0
        configuration.connectionsPerNode = 1
        configuration.password = password
        let client = try await RingcacheClient.connect(["127.0.0.1:\(ports[name]!)"], configuration: configuration)
        do {
            let result = try await body(client)
            await client.close()
            return result
        } catch {
            await client.close()
            throw error
        }
    }

    /// One section of a node's INFO, as numbers by field.
    func info(_ name: String, _ section: String) async throws -> [String: Int] {
        let text = try await direct(name) { try await $0.send(["INFO", section]).string ?? "" }
        var fields: [String: Int] = [:]
        for line in text.split(whereSeparator: \.isNewline) {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2, let value = Int(parts[1]) { fields[String(parts[0])] = value }
        }
        return fields
    }

    /// A field of INFO summed over the running nodes.
    func total(_ field: String, section: String = "cluster") async throws -> Int {
        var sum = 0
        for name in names where processes[name] != nil { sum += try await info(name, section)[field] ?? 0 }
        return sum
    }

    func waitUntil(_ what: String, timeout: Duration = .seconds(15), _ check: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while true {
            if (try? await check()) == true { return }
            guard ContinuousClock.now < deadline else {
                Issue.record("timed out waiting for: \(what)")
                throw RingcacheError(.timeout, "timed out waiting for \(what)")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else { throw RingcacheError(.connection, "no free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
