import RESP

/// The client request parser, fed the input in two pieces (as a socket would), with small
/// limits so that limit paths run too.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: count)
    var parser = RESPRequestParser(limits: RESPLimits(maxBulkLength: 4096, maxMultibulkLength: 64, maxInlineLength: 1024, maxQueryBuffer: 1 << 20))
    var start = 0
    var end = min(count, count / 2 + 1)
    while start < count {
        let step = parser.next(UnsafeRawBufferPointer(rebasing: input[start..<end]), authenticated: count % 2 == 0)
        switch step {
        case .incomplete:
            if end == count { return 0 }
            end = count
        case .skip(let consumed):
            start += consumed
            end = max(end, start)
        case .request(let consumed):
            parser.withArguments(in: UnsafeRawBufferPointer(rebasing: input[start..<end])) { arguments in
                for index in 0..<arguments.count { _ = arguments[index].count }
            }
            start += consumed
            end = max(end, start)
        case .error:
            return 0
        }
    }
    return 0
}
