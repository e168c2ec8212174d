import Benchmark
import CacheStore
import NIOCore
import RESP

/// Hot paths of a node, measured for time, instructions and allocations: the request
/// parser on a pipelined batch, the reply writer, and store reads and writes.
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
}
