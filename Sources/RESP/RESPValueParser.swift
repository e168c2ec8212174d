import NIOCore

/// Parses whole RESP2/RESP3 values (replies, or requests on the cluster bus) from a buffer.
///
/// Bulk payloads become slices of the input buffer, not copies. A value that has not fully
/// arrived leaves the buffer untouched and yields nil; the same limits as for requests
/// apply, and nesting is bounded.
public struct RESPValueParser: Sendable {
    public var limits: RESPLimits
    public var maxDepth: Int

    public init(limits: RESPLimits = RESPLimits(), maxDepth: Int = 64) {
        self.limits = limits
        self.maxDepth = maxDepth
    }

    /// Reads one value, or returns nil and leaves `buffer` as it was if more bytes are needed.
    public func parse(_ buffer: inout ByteBuffer) throws(RESPProtocolError) -> RESPValue? {
        var index = buffer.readerIndex
        guard let value = try parseValue(buffer, &index, depth: 0) else { return nil }
        buffer.moveReaderIndex(to: index)
        return value
    }

    private func line(_ buffer: ByteBuffer, _ index: inout Int) throws(RESPProtocolError) -> ByteBuffer? {
        let available = buffer.writerIndex - index
        let found: Int? = buffer.withUnsafeReadableBytes { bytes in
            let offset = index - buffer.readerIndex
            return RESPRequestParser.findCR(bytes, from: offset).map { $0 - offset }
        }
        guard let length = found else {
            if available > limits.maxInlineLength { throw RESPProtocolError.tooBigInlineRequest }
            return nil
        }
        guard length + 2 <= available else { return nil }
        let slice = buffer.getSlice(at: index, length: length)!
        index += length + 2
        return slice
    }

    private func integer(_ line: ByteBuffer) throws(RESPProtocolError) -> Int {
        let value = line.withUnsafeReadableBytes { RESPInteger.parse($0) }
        guard let value else { throw RESPProtocolError(.invalidReply, "Protocol error: invalid integer") }
        return value
    }

    private func parseValue(_ buffer: ByteBuffer, _ index: inout Int, depth: Int) throws(RESPProtocolError) -> RESPValue? {
        guard depth <= maxDepth else { throw RESPProtocolError(.nestingTooDeep, "Protocol error: nesting too deep") }
        guard index < buffer.writerIndex, let marker = buffer.getInteger(at: index, as: UInt8.self) else { return nil }
        var cursor = index + 1
        guard let header = try line(buffer, &cursor) else { return nil }
        let value: RESPValue
        switch marker {
        case UInt8(ascii: "+"): value = .simpleString(header)
        case UInt8(ascii: "-"): value = .error(header)
        case UInt8(ascii: ":"): value = .integer(try integer(header))
        case UInt8(ascii: "("): value = .bigNumber(header)
        case UInt8(ascii: "_"): value = .null
        case UInt8(ascii: "#"):
            switch header.getInteger(at: header.readerIndex, as: UInt8.self) {
            case UInt8(ascii: "t"): value = .boolean(true)
            case UInt8(ascii: "f"): value = .boolean(false)
            default: throw RESPProtocolError(.invalidReply, "Protocol error: invalid boolean")
            }
        case UInt8(ascii: ","):
            let text = String(buffer: header)
            switch text {
            case "inf": value = .double(.infinity)
            case "-inf": value = .double(-.infinity)
            case "nan": value = .double(.nan)
            default:
                guard let d = Double(text) else { throw RESPProtocolError(.invalidReply, "Protocol error: invalid double") }
                value = .double(d)
            }
        case UInt8(ascii: "$"), UInt8(ascii: "!"), UInt8(ascii: "="):
            let length = try integer(header)
            if length == -1 && marker == UInt8(ascii: "$") {
                value = .bulkString(nil)
                break
            }
            guard length >= 0, length <= limits.maxBulkLength else { throw RESPProtocolError.invalidBulkLength }
            guard buffer.writerIndex - cursor - 2 >= length else { return nil }
            let payload = buffer.getSlice(at: cursor, length: length)!
            cursor += length + 2
            switch marker {
            case UInt8(ascii: "$"): value = .bulkString(payload)
            case UInt8(ascii: "!"): value = .bulkError(payload)
            default: value = .verbatimString(payload)
            }
        case UInt8(ascii: "*"), UInt8(ascii: "~"), UInt8(ascii: ">"), UInt8(ascii: "%"), UInt8(ascii: "|"):
            let count = try integer(header)
            if count == -1 && marker == UInt8(ascii: "*") {
                value = .array(nil)
                break
            }
            guard count >= 0, count <= limits.maxMultibulkLength else { throw RESPProtocolError.invalidMultibulkLength }
            let isPairs = marker == UInt8(ascii: "%") || marker == UInt8(ascii: "|")
            var elements: [RESPValue] = []
            for _ in 0..<(isPairs ? count * 2 : count) {
                guard let element = try parseValue(buffer, &cursor, depth: depth + 1) else { return nil }
                elements.append(element)
            }
            switch marker {
            case UInt8(ascii: "*"): value = .array(elements)
            case UInt8(ascii: "~"): value = .set(elements)
            case UInt8(ascii: ">"): value = .push(elements)
            default:
                let keys = stride(from: 0, to: elements.count, by: 2).map { elements[$0] }
                let values = stride(from: 1, to: elements.count, by: 2).map { elements[$0] }
                value = marker == UInt8(ascii: "%") ? .map(keys, values) : .attribute(keys, values)
            }
        default:
            throw RESPProtocolError(.invalidReply, "Protocol error: unexpected byte '\(Character(Unicode.Scalar(marker)))'")
        }
        index = cursor
        return value
    }
}

/// A channel decoder for whole RESP values.
public struct RESPValueDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = RESPValue
    let parser: RESPValueParser

    public init(limits: RESPLimits = RESPLimits()) {
        self.parser = RESPValueParser(limits: limits)
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> RESPValue? {
        try parser.parse(&buffer)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> RESPValue? {
        try decode(buffer: &buffer)
    }
}

/// A channel decoder for client requests that yields each request's arguments as buffers.
///
/// The server parses in place with ``RESPRequestParser`` instead; this adapter serves tools,
/// tests and peers that want whole requests as values.
public struct RESPRequestDecoder: ByteToMessageDecoder {
    public typealias InboundOut = [ByteBuffer]
    var parser: RESPRequestParser

    public init(limits: RESPLimits = RESPLimits()) {
        self.parser = RESPRequestParser(limits: limits)
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let request = try next(&buffer) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(request))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        try decode(context: context, buffer: &buffer)
    }

    /// Reads one request; returns nil if more bytes are needed. Empty requests are skipped.
    public mutating func next(_ buffer: inout ByteBuffer) throws(RESPProtocolError) -> [ByteBuffer]? {
        while true {
            let step = buffer.withUnsafeReadableBytes { parser.next($0) }
            switch step {
            case .incomplete:
                return nil
            case .error(let error):
                throw error
            case .skip(let consumed):
                buffer.moveReaderIndex(forwardBy: consumed)
            case .request(let consumed):
                let arguments = buffer.withUnsafeReadableBytes { bytes in
                    parser.withArguments(in: bytes) { arguments in
                        (0..<arguments.count).map { ByteBuffer(bytes: arguments[$0]) }
                    }
                }
                buffer.moveReaderIndex(forwardBy: consumed)
                return arguments
            }
        }
    }
}
