import NIOCore
import RESP

/// The reply parser and the frame scanner, which must agree on where every value ends.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let limits = RESPLimits(maxBulkLength: 1 << 16, maxMultibulkLength: 1 << 12)
    var buffer = ByteBuffer(bytes: UnsafeRawBufferPointer(start: data, count: count))
    let parser = RESPValueParser(limits: limits, maxDepth: 16)
    var scanner = RESPFrameScanner(limits: limits, maxDepth: 16)
    while buffer.readableBytes > 0 {
        let length = try? scanner.scan(buffer)
        var copy = buffer
        guard let value = try? parser.parse(&copy) else { return 0 }
        precondition(length == buffer.readableBytes - copy.readableBytes, "the scanner and the parser disagree on a value's end")
        var encoded = ByteBuffer()
        value.encode(into: &encoded)
        buffer = copy
    }
    return 0
}
