import ClusterCore
import NIOCore
import RESP

/// What the client knows of the cluster: its nodes (from `CLUSTER NODES`) and which nodes hold
/// which positions of the ring (from `CLUSTER RING`). Pure: built from replies, asked for keys.
public struct Topology: Sendable, Hashable {
    public struct Node: Sendable, Hashable {
        public var name: String
        public var host: String
        public var port: Int
        /// The gossip state the answering node sees: alive, suspect or dead.
        public var state: String

        public init(name: String, host: String, port: Int, state: String = "alive") {
            self.name = name
            self.host = host
            self.port = port
            self.state = state
        }
    }

    public private(set) var nodes: [Node]
    public private(set) var epoch: UInt64
    /// First ring position of each run of partitions, ascending.
    private var starts: [UInt64]
    /// Node indices holding each run, primary first.
    private var owners: [[Int]]

    /// A single node that owns everything (a standalone node, or one that cannot say more).
    public init(single node: Node) {
        nodes = [node]
        epoch = 0
        starts = [0]
        owners = [[0]]
    }

    public init(nodes: [Node], epoch: UInt64, ranges: [(start: UInt64, replicas: [String])]) throws(RingcacheError) {
        var index: [String: Int] = [:]
        for (i, node) in nodes.enumerated() { index[node.name] = i }
        let sorted = ranges.sorted { $0.start < $1.start }
        guard let first = sorted.first, first.start == 0 else {
            throw RingcacheError(.protocol, "CLUSTER RING does not start at position 0")
        }
        var owners: [[Int]] = []
        for range in sorted {
            var members: [Int] = []
            for name in range.replicas {
                guard let i = index[name] else {
                    throw RingcacheError(.protocol, "CLUSTER RING names \(name), which CLUSTER NODES does not list")
                }
                members.append(i)
            }
            owners.append(members)
        }
        self.nodes = nodes
        self.epoch = epoch
        self.starts = sorted.map(\.start)
        self.owners = owners
    }

    /// The nodes that hold `key`, primary first, as indices into `nodes`.
    public func owners(of key: some RingcacheBytes) -> [Int] {
        owners(ofPosition: key.withBytes { HashRing.position(of: $0) })
    }

    public func owners(ofPosition position: UInt64) -> [Int] {
        // The last run whose start is at or before the position.
        var low = 0
        var high = starts.count
        while high - low > 1 {
            let middle = (low + high) / 2
            if starts[middle] <= position { low = middle } else { high = middle }
        }
        return owners[low]
    }

    /// Reads `CLUSTER NODES`: `name host:port host:busport [myself,]state epoch share` a line.
    public static func parseNodes(_ text: String) throws(RingcacheError) -> (nodes: [Node], epoch: UInt64) {
        var nodes: [Node] = []
        var epoch: UInt64 = 0
        for line in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            let fields = line.split(separator: " ")
            guard fields.count >= 5, let (host, port) = splitAddress(fields[1]) else {
                throw RingcacheError(.protocol, "unreadable CLUSTER NODES line: \(line)")
            }
            let flags = fields[3].split(separator: ",")
            epoch = max(epoch, UInt64(fields[4]) ?? 0)
            nodes.append(Node(name: String(fields[0]), host: host, port: port, state: String(flags.last ?? "alive")))
        }
        guard !nodes.isEmpty else { throw RingcacheError(.protocol, "CLUSTER NODES listed no node") }
        return (nodes, epoch)
    }

    /// Reads `CLUSTER RING`: an array of `[start, end, [replica names]]`.
    public static func parseRing(_ reply: RESPValue) throws(RingcacheError) -> [(start: UInt64, replicas: [String])] {
        guard case .array(let runs?) = reply else { throw RingcacheError(.protocol, "CLUSTER RING did not answer an array") }
        var ranges: [(start: UInt64, replicas: [String])] = []
        ranges.reserveCapacity(runs.count)
        for run in runs {
            guard case .array(let parts?) = run, parts.count == 3, let start = parts[0].string.flatMap({ UInt64($0) }),
                  case .array(let names?) = parts[2]
            else { throw RingcacheError(.protocol, "unreadable CLUSTER RING entry") }
            ranges.append((start, names.compactMap(\.string)))
        }
        return ranges
    }

    /// `host:port`, the host possibly an IPv6 address (the port follows the last colon).
    static func splitAddress(_ text: Substring) -> (String, Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]) else { return nil }
        var host = text[..<colon]
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        return (String(host), port)
    }
}
