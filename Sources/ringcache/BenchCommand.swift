import ArgumentParser
import NIOPosix
import RingcacheClient

/// A load generator that goes through RingcacheClient: what an embedding application sees.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load a cluster through RingcacheClient and print throughput and latency.",
        discussion: """
            Runs --clients concurrent callers, each awaiting one call at a time; the client pipelines \
            them over its connections. `--routing ring` sends each key to its replica; `--routing \
            first-seed` sends everything to the first seed (what a plain Redis client does). The last \
            line is key=value pairs for scripts (tools/bench --mode client reads it).
            """
    )

    enum Operation: String, ExpressibleByArgument, CaseIterable { case set, get }
    enum RoutingChoice: String, ExpressibleByArgument, CaseIterable {
        case ring
        case firstSeed = "first-seed"
    }

    @Option(help: "Seed addresses, comma-separated host:port.")
    var seeds = "127.0.0.1:7001"

    @Option(help: "set or get.")
    var operation = Operation.set

    @Option(help: "ring or first-seed.")
    var routing = RoutingChoice.ring

    @Option(help: "Calls in all.")
    var requests = 100_000

    @Option(help: "Concurrent callers.")
    var clients = 50

    @Option(help: "Pipelined connections per node.")
    var connections = 2

    @Option(help: "Keys are key:0 ... key:<keyspace-1>, picked at random.")
    var keyspace = 100_000

    @Option(name: .customLong("value-size"), help: "Bytes per value.")
    var valueSize = 16

    @Option(help: "Password, if the nodes have requirepass.")
    var password: String?

    func validate() throws {
        guard requests > 0, clients > 0, connections > 0, keyspace > 0, valueSize >= 0 else {
            throw ValidationError("--requests, --clients, --connections and --keyspace must be positive")
        }
    }

    func run() async throws {
        var configuration = RingcacheClient.Configuration()
        configuration.routing = routing == .ring ? .ringAware : .firstSeed
        configuration.connectionsPerNode = connections
        configuration.password = password
        // One event loop for every connection, and the callers run on it too: no call or
        // reply crosses a thread (the way redis-benchmark runs, single-threaded).
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        configuration.eventLoopGroup = group
        let executor = EventLoopTaskExecutor(group.next())
        try await withTaskExecutorPreference(executor) {
            try await load(configuration)
        }
        try await group.shutdownGracefully()
    }

    private func load(_ configuration: RingcacheClient.Configuration) async throws {
        let client = try await RingcacheClient.connect(seeds.split(separator: ",").map(String.init), configuration: configuration)
        let value = [UInt8](repeating: UInt8(ascii: "x"), count: valueSize)
        let keys = (0..<keyspace).map { Array("key:\($0)".utf8) }
        let operation = self.operation

        // Warm up: connections open and every key exists, so that the measured calls find
        // the same store whichever routing runs first (a SET then overwrites, a GET hits).
        try await run(client: client, calls: keyspace, callers: clients) { i in try await client.set(keys[i % keys.count], value) }

        let perCaller = (requests + clients - 1) / clients
        let started = ContinuousClock.now
        let latencies = try await run(client: client, calls: perCaller * clients, callers: clients) { i in
            // A cheap hash of the call number picks the key: no random-number syscall per call.
            var mixed = UInt64(i) &* 0x9E37_79B9_7F4A_7C15
            mixed ^= mixed >> 29
            let key = keys[Int(mixed % UInt64(keys.count))]
            switch operation {
            case .set: try await client.set(key, value)
            case .get: _ = try await client.get(key)
            }
        }
        let elapsed = ContinuousClock.now - started
        await client.close()

        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let rate = Double(latencies.count) / seconds
        let sorted = latencies.sorted()
        func percentile(_ p: Double) -> Double { sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        print("\(operation.rawValue.uppercased()): \(latencies.count) calls, \(clients) callers, routing \(routing.rawValue): "
              + "\(Int(rate)) calls/s, p50 \(format(percentile(0.5))) ms, p99 \(format(percentile(0.99))) ms")
        print("ops_per_sec=\(Int(rate)) p50_ms=\(format(percentile(0.5))) p99_ms=\(format(percentile(0.99))) calls=\(latencies.count)")
    }

    private func format(_ milliseconds: Double) -> String {
        String(Double(Int(milliseconds * 1000)) / 1000)
    }

    /// Runs `calls` calls over `callers` concurrent tasks; returns each call's latency in ms.
    @discardableResult
    private func run(client: RingcacheClient, calls: Int, callers: Int, _ call: @escaping @Sendable (Int) async throws -> Void) async throws -> [Double] {
        try await withThrowingTaskGroup(of: [Double].self) { group in
            for caller in 0..<callers {
                group.addTask {
                    var latencies: [Double] = []
                    latencies.reserveCapacity(calls / callers + 1)
                    var i = caller
                    while i < calls {
                        let start = ContinuousClock.now
                        try await call(i)
                        let took = ContinuousClock.now - start
                        latencies.append(Double(took.components.seconds) * 1000 + Double(took.components.attoseconds) / 1e15)
                        i += callers
                    }
                    return latencies
                }
            }
            var all: [Double] = []
            for try await part in group { all += part }
            return all
        }
    }
}
