import ClusterProtocol
import NIOCore
import RESP

/// Bus requests as the bus handler reads them: framed, then decoded against a member table.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    var buffer = ByteBuffer(bytes: UnsafeRawBufferPointer(start: data, count: count))
    var parser = RESPRequestParser(limits: RESPLimits(maxBulkLength: 1 << 16, maxMultibulkLength: 1 << 12))
    let context = BusDecodingContext(limits: BusLimits(maxBulkLength: 1 << 16), now: 1_800_000_000_000, members: ["n1": 0, "n2": 1, "n3": 2])
    while let frame = try? BusFrame.parse(&buffer, parser: &parser) {
        if let request = try? BusRequest.decode(frame, context: context) {
            var encoded = ByteBuffer()
            request.encode(into: &encoded)
        }
    }
    return 0
}
