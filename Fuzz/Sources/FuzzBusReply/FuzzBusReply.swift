import ClusterProtocol
import NIOCore
import RESP

/// A peer's reply, decoded as the answer to every kind of request (and by the hot path's
/// direct reader), and a member list.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    var buffer = ByteBuffer(bytes: UnsafeRawBufferPointer(start: data, count: count))
    var copy = buffer
    _ = try? MemberList.decode(&copy)
    let context = BusDecodingContext(limits: BusLimits(maxBulkLength: 1 << 16), now: 1_800_000_000_000, members: ["n1": 0, "n2": 1])
    // The hot path's reader, on the input as one frame, for both kinds of answer.
    for kind in [DirectReply.Kind.flag, .entry] {
        var frame = buffer
        _ = DirectReply.read(kind, frame: &frame, limits: context.limits, now: context.now)
    }
    let parser = RESPValueParser(limits: RESPLimits(maxBulkLength: 1 << 16, maxMultibulkLength: 1 << 12), maxDepth: 16)
    guard let value = try? parser.parse(&buffer) else { return 0 }
    for kind in BusRequest.Kind.allCases {
        if let reply = try? BusReply.decode(value, answering: kind, context: context) {
            var encoded = ByteBuffer()
            reply.encode(into: &encoded)
        }
    }
    return 0
}
