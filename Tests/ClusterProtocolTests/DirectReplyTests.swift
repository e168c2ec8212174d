import CacheStore
import ClusterCore
import ClusterProtocol
import NIOCore
import RESP
import Testing

/// The hot path's reply reader: what the encoders write reads back, and on any bytes it
/// agrees with the general decoder (which reads a `RESPValue` tree) or refuses, never traps.
@Suite struct DirectReplyTests {
    let limits = BusLimits(maxBulkLength: 1 << 16)
    let now: Int64 = 1_800_000_000_000

    func read(_ kind: DirectReply.Kind, _ bytes: ByteBuffer) -> DirectReply {
        var frame = bytes
        return DirectReply.read(kind, frame: &frame, limits: limits, now: now)
    }

    @Test func readsWhatTheEncodersWrite() {
        var out = ByteBuffer()
        BusReply.encodeFlag(true, into: &out)
        guard case .flag(true) = read(.flag, out) else { Issue.record("flag"); return }
        out.clear()
        BusReply.encodeAbsent(into: &out)
        guard case .absent = read(.entry, out) else { Issue.record("absent"); return }
        let version = Version(timestamp: HLCTimestamp(millis: now - 5), node: NodeID(rawValue: 7))
        for value in [Array("hello".utf8), [], nil] as [[UInt8]?] {
            out.clear()
            if let value {
                value.withUnsafeBytes { BusReply.encodeEntry(version: version, expiry: 123, value: $0, into: &out) }
            } else {
                BusReply.encodeEntry(version: version, expiry: 123, value: nil, into: &out)
            }
            guard case .entry(let got, let expiry, let bytes) = read(.entry, out) else { Issue.record("entry"); return }
            #expect(got == version && expiry == 123)
            #expect(bytes.map { Array($0.readableBytesView) } == value)
        }
        out.clear()
        out.writeRESPError("MISCONF the disk")
        guard case .error = read(.flag, out) else { Issue.record("error"); return }
        out.clear()
        out.writeRESPError("STALEVIEW coordinator 'n2' is at ring epoch 6, this replica at 7")
        guard case .staleView = read(.entry, out) else { Issue.record("a fencing refusal"); return }
    }

    @Test func refusesWhatIsNotAnAnswer() {
        for text in [":2\r\n", "+OK\r\n", "*4\r\n:1\r\n:1\r\n:1\r\n", "*4\r\n:-1\r\n:1\r\n:0\r\n$-1\r\n", "*4\r\n:1\r\n:4294967296\r\n:0\r\n$-1\r\n",
                     "*4\r\n:1\r\n:1\r\n:0\r\n$5\r\nab\r\n", "*3\r\n:1\r\n:1\r\n:0\r\n", ":99999999999999999999999\r\n", ""] {
            let bytes = ByteBuffer(string: text)
            for kind in [DirectReply.Kind.flag, .entry] {
                if case .malformed = read(kind, bytes) { continue }
                Issue.record("\(text.debugDescription) read as an answer to \(kind)")
            }
        }
        // A timestamp far ahead of this node's clock is refused, as the general decoder does.
        let ahead = "*4\r\n:\(UInt64(now + 3_600_000) << 16)\r\n:1\r\n:0\r\n$-1\r\n"
        guard case .malformed = read(.entry, ByteBuffer(string: ahead)) else { Issue.record("a clock far ahead"); return }
    }

    /// Random mutations of valid answers: whatever the reader reads, the general decoder reads
    /// the same way.
    @Test func agreesWithTheGeneralDecoderOnMutatedAnswers() {
        var random = SimulationRandom(seed: 0x5EED_D1EC)
        let parser = RESPValueParser(limits: RESPLimits(maxBulkLength: 1 << 16, maxMultibulkLength: 1 << 12), maxDepth: 16)
        var scanner = RESPFrameScanner(limits: RESPLimits(maxBulkLength: 1 << 16, maxMultibulkLength: 1 << 12))
        var seeds: [[UInt8]] = [Array(":1\r\n".utf8), Array(":0\r\n".utf8), Array("*0\r\n".utf8)]
        var out = ByteBuffer()
        Array("value".utf8).withUnsafeBytes {
            BusReply.encodeEntry(version: Version(timestamp: HLCTimestamp(millis: now), node: NodeID(rawValue: 2)), expiry: 9, value: $0, into: &out)
        }
        seeds.append(Array(out.readableBytesView))
        for round in 0..<20_000 {
            let bytes = DecoderFuzzTests.mutate(seeds[round % seeds.count], &random)
            let buffer = ByteBuffer(bytes: bytes)
            // Only whole frames reach the reader, as the scanner delimits them.
            guard let length = try? scanner.scan(buffer) else {
                scanner = RESPFrameScanner(limits: RESPLimits(maxBulkLength: 1 << 16, maxMultibulkLength: 1 << 12))
                continue
            }
            let frame = buffer.getSlice(at: buffer.readerIndex, length: length)!
            var copy = frame
            let value = try? parser.parse(&copy)
            let context = BusDecodingContext(limits: limits, now: now, members: [:])
            let flag = value.flatMap { try? BusReply.decodeFlag($0, .put) }
            switch read(.flag, frame) {
            case .flag(let got): #expect(got == flag, "\(bytes)")
            default: break  // refusing is always allowed (the reader is the stricter: `\r\n` exactly)
            }
            var decoded: BusValue??
            if let value, let entry = Optional(Result { () throws(BusProtocolError) in try BusReply.decodeEntry(value, context: context) }),
               case .success(let held) = entry {
                decoded = .some(held)
            }
            switch read(.entry, frame) {
            case .absent:
                #expect(decoded != nil && decoded! == nil, "\(bytes)")
            case .entry(let version, let expiry, let bytesRead):
                guard case .some(.some(let held)) = decoded else {
                    Issue.record("read an entry the general decoder refuses: \(bytes)")
                    continue
                }
                #expect(held.version == version && held.expiry == expiry && held.value == bytesRead, "\(bytes)")
            default: break
            }
        }
    }
}
