import Benchmark
import CacheStore
import ClusterCore
import ClusterProtocol
import NIOCore
import RESP

/// Hot paths of a node, measured for time, instructions and allocations: the request
/// parser on a pipelined batch, the reply writer, store reads and writes, and the decisions
/// a cluster coordinator makes per request (placement, quorum, the bus requests it writes
/// and the peers' answers it reads).
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .instructions, .mallocCountTotal, .throughput],
        scalingFactor: .kilo,
        maxDuration: .seconds(3)
    )

    // 1,000 pipelined `GET key:NNNNNNNNNNNN` requests, as redis-benchmark -P sends them.
    var pipelined = ByteBuffer()
    for i in 0..<1_000 {
        let key = "key:" + String(repeating: "0", count: 12 - String(i).count) + String(i)
        RESPValue.command(["GET", key]).encode(into: &pipelined)
    }
    let batch = pipelined

    Benchmark("RESP parse 1k pipelined GETs") { benchmark in
        var parser = RESPRequestParser()
        for _ in benchmark.scaledIterations {
            batch.withUnsafeReadableBytes { bytes in
                var offset = 0
                while case .request(let consumed) = parser.next(UnsafeRawBufferPointer(rebasing: bytes[offset...])) {
                    parser.withArguments(in: UnsafeRawBufferPointer(rebasing: bytes[offset...])) { blackHole($0.count) }
                    offset += consumed
                }
            }
        }
    }

    let value = [UInt8](repeating: 0x61, count: 64)
    Benchmark("RESP encode 1k bulk replies") { benchmark in
        var out = ByteBuffer()
        out.reserveCapacity(128 * 1_000)
        for _ in benchmark.scaledIterations {
            out.clear()
            value.withUnsafeBytes { bytes in
                for _ in 0..<1_000 { out.writeRESPBulk(bytes) }
            }
            blackHole(out.readableBytes)
        }
    }

    let keys = (0..<100_000).map { i in Array(("key:" + String(repeating: "0", count: 12 - String(i).count) + String(i)).utf8) }
    let store = CacheStore()
    for key in keys {
        key.withUnsafeBytes { k in value.withUnsafeBytes { v in _ = store.set(k, v, now: 1) } }
    }

    Benchmark("store GET (100k keys, 64-byte values)") { benchmark in
        var index = 0
        for _ in benchmark.scaledIterations {
            keys[index].withUnsafeBytes { k in store.read(k, now: 1) { blackHole($0?.value.count) } }
            index = index &+ 7919 < keys.count ? index &+ 7919 : (index &+ 7919) % keys.count
        }
    }

    Benchmark("store SET overwrite (100k keys, 64-byte values)") { benchmark in
        var index = 0
        for _ in benchmark.scaledIterations {
            keys[index].withUnsafeBytes { k in value.withUnsafeBytes { v in blackHole(store.set(k, v, now: 2)) } }
            index = index &+ 7919 < keys.count ? index &+ 7919 : (index &+ 7919) % keys.count
        }
    }

    // The coordinator's work per request at N=3 (R=2, W=2), without sockets: the key's
    // replicas, the quorum, the two bus requests written to the peers' outbound buffers and
    // the two answers read back. What the hot path adds on top is one slot of a reused table.
    let ring = HashRing(members: ["n1", "n2", "n3"], vnodes: 128, replicas: 3)
    let limits = BusLimits()
    let version = Version(timestamp: HLCTimestamp(millis: 1_700_000_000_000), node: NodeID(rawValue: 1))
    let flagReply = ByteBuffer(string: ":0\r\n")
    var entryBuffer = ByteBuffer()
    entryBuffer.writeString("*4\r\n:\(version.timestamp.rawValue)\r\n:1\r\n:0\r\n$64\r\n")
    entryBuffer.writeBytes(value)
    entryBuffer.writeString("\r\n")
    let entryReply = entryBuffer

    /// Runs `body` on a key of the 100,000 (stepping through them) per iteration, with an
    /// outbound buffer that is emptied now and then, as a link's is at each flush.
    func perRequest(_ name: String, _ body: @escaping (UnsafeRawBufferPointer, inout ByteBuffer) -> Void) {
        Benchmark(name) { benchmark in
            var outbound = ByteBuffer()
            outbound.reserveCapacity(1 << 20)
            var index = 0
            for _ in benchmark.scaledIterations {
                keys[index].withUnsafeBytes { body($0, &outbound) }
                if outbound.writerIndex > 1 << 19 { outbound.clear() }
                index = index &+ 7919 < keys.count ? index &+ 7919 : (index &+ 7919) % keys.count
            }
        }
    }

    perRequest("cluster SET decisions per request (N=3 W=2)") { key, outbound in
        let replicas = ring.replicaList(forPosition: HashRing.position(of: key))
        var quorum = WriteQuorum(replicas: replicas, required: 2)
        var decided: WriteQuorum.Action?
        for position in 0..<replicas.count {
            if position > 0 {
                value.withUnsafeBytes { BusRequest.encodePut(key: key, version: version, expiry: 0, value: $0, into: &outbound) }
                var frame = flagReply
                guard case .flag = DirectReply.read(.flag, frame: &frame, limits: limits, now: 1_700_000_000_000) else { continue }
            }
            decided = quorum.onAck(at: position) ?? decided
        }
        blackHole(decided)
    }

    perRequest("cluster GET decisions per request (N=3 R=2)") { key, outbound in
        let replicas = ring.replicaList(forPosition: HashRing.position(of: key))
        var read = NewestRead(replicas: replicas, required: 2)
        var decision: NewestRead.Decision?
        for position in 0..<replicas.count {
            var answered: Version? = version
            if position > 0 {
                BusRequest.encodeGet(key: key, into: &outbound)
                var frame = entryReply
                guard case .entry(let got, _, let bytes) = DirectReply.read(.entry, frame: &frame, limits: limits, now: 1_700_000_000_000)
                else { continue }
                blackHole(bytes?.readableBytes)
                answered = got
            }
            decision = read.onAnswer(at: position, version: answered).decision ?? decision
        }
        blackHole(decision)
    }
}
