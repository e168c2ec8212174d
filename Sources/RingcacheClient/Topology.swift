import ClusterCore
import NIOCore
import RESP

/// What the client knows of the cluster: its nodes (from `CLUSTER NODES`) and which nodes hold
/// which positions of the ring (from `CLUSTER RING`). Pure: built from replies, asked for keys.
public struct Topology: Sendable {
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
    private var placement: Placement

    /// Where keys live: the ring itself, rebuilt from its shape (members in `nodes` order), or
    /// the runs of positions `CLUSTER RING` lists.
    private enum Placement: Sendable {
        case ring(HashRing)
        /// First position of each run, ascending, and the nodes holding it, primary first.
        case runs(starts: [UInt64], owners: [[Int32]])
    }

    /// A single node that owns everything (a standalone node, or one that cannot say more).
    public init(single node: Node) {
        nodes = [node]
        epoch = 0
        placement = .runs(starts: [0], owners: [[0]])
    }

    /// The ring from `CLUSTER RING SHAPE` (epoch, vnodes, replicas, members in ring order),
    /// built here with the servers' own code, so it places every key where they do.
    public init(nodes: [Node], shape: (epoch: UInt64, vnodes: Int, replicas: Int, members: [String])) throws(RingcacheError) {
        var ordered: [Node] = []
        for name in shape.members {
            guard let node = nodes.first(where: { $0.name == name }) else {
                throw RingcacheError(.protocol, "CLUSTER RING names \(name), which CLUSTER NODES does not list")
            }
            ordered.append(node)
        }
        guard shape.vnodes > 0, !ordered.isEmpty else { throw RingcacheError(.protocol, "CLUSTER RING SHAPE describes no ring") }
        self.nodes = ordered
        self.epoch = shape.epoch
        self.placement = .ring(HashRing(members: shape.members, vnodes: shape.vnodes, replicas: shape.replicas, epoch: shape.epoch))
    }

    /// The runs of `CLUSTER RING`: each run's first position and the names of its replicas.
    public init(nodes: [Node], epoch: UInt64, ranges: [(start: UInt64, replicas: [String])]) throws(RingcacheError) {
        var index: [String: Int32] = [:]
        for (i, node) in nodes.enumerated() { index[node.name] = Int32(i) }
        let sorted = ranges.sorted { $0.start < $1.start }
        guard let first = sorted.first, first.start == 0 else {
            throw RingcacheError(.protocol, "CLUSTER RING does not start at position 0")
        }
        var owners: [[Int32]] = []
        for range in sorted {
            var members: [Int32] = []
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
        self.placement = .runs(starts: sorted.map(\.start), owners: owners)
    }

    /// Takes the nodes' gossip states from a newer `CLUSTER NODES` of the same members.
    mutating func updateStates(from fresh: [Node]) {
        for i in nodes.indices {
            if let node = fresh.first(where: { $0.name == nodes[i].name }) { nodes[i].state = node.state }
        }
    }

    /// Whether `fresh` lists the same members at the same addresses (states aside).
    func sameMembers(as fresh: [Node]) -> Bool {
        fresh.count == nodes.count && nodes.allSatisfy { node in
            fresh.contains { $0.name == node.name && $0.host == node.host && $0.port == node.port }
        }
    }

    /// The nodes that hold `key`, primary first, as indices into `nodes`.
    public func owners(of key: some RingcacheBytes) -> [Int] {
        owners(ofPosition: key.withBytes { HashRing.position(of: $0) })
    }

    public func owners(ofPosition position: UInt64) -> [Int] {
        withOwners(ofPosition: position) { $0.map(Int.init) }
    }

    /// Calls `body` with the owners of `position`, primary first, without allocating.
    func withOwners<R>(ofPosition position: UInt64, _ body: (UnsafeBufferPointer<Int32>) throws -> R) rethrows -> R {
        switch placement {
        case .ring(let ring):
            return try ring.withPreferenceList(forPosition: position, body)
        case .runs(let starts, let owners):
            // The last run whose start is at or before the position.
            var low = 0
            var high = starts.count
            while high - low > 1 {
                let middle = (low + high) / 2
                if starts[middle] <= position { low = middle } else { high = middle }
            }
            return try owners[low].withUnsafeBufferPointer(body)
        }
    }

    /// Reads `CLUSTER RING SHAPE`: `[epoch, vnodes, replicas, [members]]`.
    public static func parseShape(_ reply: RESPValue) throws(RingcacheError) -> (epoch: UInt64, vnodes: Int, replicas: Int, members: [String]) {
        guard case .array(let parts?) = reply, parts.count == 4, case .integer(let epoch) = parts[0], case .integer(let vnodes) = parts[1],
              case .integer(let replicas) = parts[2], case .array(let members?) = parts[3]
        else { throw RingcacheError(.protocol, "unreadable CLUSTER RING SHAPE reply") }
        return (UInt64(max(0, epoch)), vnodes, replicas, members.compactMap(\.string))
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
