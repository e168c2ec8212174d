import NIOCore
import RESP

/// One bus request as it arrived: a RESP array of bulk strings, each argument a slice of the
/// receive buffer (no copy). Decoded once into a ``BusRequest``.
public struct BusFrame: Sendable {
    private let buffer: ByteBuffer
    private let spans: [RESPRequestParser.Span]

    /// The arguments of the request `parser` just parsed from `buffer`'s readable bytes.
    public init(buffer: ByteBuffer, parser: RESPRequestParser) {
        self.buffer = buffer
        self.spans = parser.argumentSpans
    }

    /// A frame of the given arguments (tests, fuzzing, tools).
    public init(arguments: [ByteBuffer]) {
        var buffer = ByteBuffer()
        var spans: [RESPRequestParser.Span] = []
        for argument in arguments {
            spans.append(.init(start: buffer.writerIndex, count: argument.readableBytes))
            buffer.writeImmutableBuffer(argument)
        }
        self.buffer = buffer
        self.spans = spans
    }

    /// Parses one whole request from `bytes` (the way the bus handler does); nil if it is
    /// incomplete. Throws for bytes that are not a RESP request, or an inline line.
    public static func parse(_ bytes: inout ByteBuffer, parser: inout RESPRequestParser) throws(BusProtocolError) -> BusFrame? {
        while true {
            let step = bytes.withUnsafeReadableBytes { parser.next($0) }
            switch step {
            case .incomplete: return nil
            case .skip(let consumed): bytes.moveReaderIndex(forwardBy: consumed)
            case .error(let error): throw BusProtocolError(.malformed, error.message)
            case .request(let consumed):
                guard !parser.isInlineRequest else { throw BusProtocolError(.malformed, "inline requests are not bus messages") }
                let frame = BusFrame(buffer: bytes, parser: parser)
                bytes.moveReaderIndex(forwardBy: consumed)
                return frame
            }
        }
    }

    public var count: Int { spans.count }

    /// Argument `index` as a slice of the receive buffer.
    public subscript(index: Int) -> ByteBuffer {
        let span = spans[index]
        return buffer.getSlice(at: buffer.readerIndex + span.start, length: span.count) ?? ByteBuffer()
    }

    /// Calls `body` with the bytes of argument `index`, in place.
    func withArgumentBytes<Result>(_ index: Int, _ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        let span = spans[index]
        return buffer.withUnsafeReadableBytes { bytes in
            body(UnsafeRawBufferPointer(rebasing: bytes[span.start..<(span.start + span.count)]))
        }
    }

    // MARK: Field readers: each checks its range and throws, never traps.

    func integer(_ index: Int, _ field: String, in range: ClosedRange<Int>) throws(BusProtocolError) -> Int {
        let value = self[index].withUnsafeReadableBytes { RESPInteger.parse($0) }
        guard let value else { throw BusProtocolError(.malformed, "\(field) is not an integer") }
        guard range.contains(value) else { throw BusProtocolError(.outOfRange, "\(field) \(value) is outside \(range.lowerBound)...\(range.upperBound)") }
        return value
    }

    func unsigned(_ index: Int, _ field: String) throws(BusProtocolError) -> UInt64 {
        guard let value = Self.parseUnsigned(self[index]) else { throw BusProtocolError(.malformed, "\(field) is not an unsigned integer") }
        return value
    }

    /// A member name: 1...255 bytes of UTF-8.
    func name(_ index: Int, _ field: String) throws(BusProtocolError) -> String {
        let bytes = self[index]
        guard (1...BusLimits.maxNameLength).contains(bytes.readableBytes), let text = bytes.getString(at: bytes.readerIndex, length: bytes.readableBytes),
              text.utf8.count == bytes.readableBytes else {
            throw BusProtocolError(.malformed, "\(field) must be a name of 1 to \(BusLimits.maxNameLength) bytes")
        }
        return text
    }

    func bulk(_ index: Int, _ field: String, max: Int) throws(BusProtocolError) -> ByteBuffer {
        let bytes = self[index]
        guard bytes.readableBytes <= max else { throw BusProtocolError(.tooLarge, "\(field) of \(bytes.readableBytes) bytes is over \(max)") }
        return bytes
    }

    /// Decimal digits of an unsigned 64-bit number, no sign, no leading zeros (except "0").
    static func parseUnsigned(_ buffer: ByteBuffer) -> UInt64? {
        buffer.withUnsafeReadableBytes { bytes in
            guard !bytes.isEmpty, bytes.count <= 20, bytes.count == 1 || bytes[0] != UInt8(ascii: "0") else { return nil }
            var value: UInt64 = 0
            for byte in bytes {
                let digit = byte &- UInt8(ascii: "0")
                guard digit < 10 else { return nil }
                let (times10, o1) = value.multipliedReportingOverflow(by: 10)
                let (sum, o2) = times10.addingReportingOverflow(UInt64(digit))
                guard !o1, !o2 else { return nil }
                value = sum
            }
            return value
        }
    }
}

extension ByteBuffer {
    /// Writes an unsigned number as a bulk string, its digits formed on the stack (no String:
    /// the hot path writes three of these per replicated write).
    mutating func writeRESPBulk(unsigned value: UInt64) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: UInt64.max has 20 digits
        withUnsafeMutableBytes(of: &digits) { raw in
            var rest = value
            var start = raw.count
            repeat {
                start -= 1
                raw[start] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
            } while rest > 0
            writeRESPBulk(UnsafeRawBufferPointer(rebasing: raw[start...]))
        }
    }
}

/// Writes RESP bulk strings into memory the caller reserved (``ByteBuffer/writeWithUnsafeMutableBytes(minimumWritableBytes:_:)``):
/// the hot path's requests in one pass, numbers formed in place.
enum BulkWriter {
    /// Room a bulk string needs beyond its bytes: `$`, up to 20 digits of length, two CRLFs;
    /// also the most a bulk number takes (20 digits and a sign, and its length line).
    static let bulkOverhead = 28

    @inline(__always)
    static func copy(_ text: StaticString, to raw: UnsafeMutableRawBufferPointer, at: Int) -> Int {
        let count = text.utf8CodeUnitCount
        UnsafeMutableRawBufferPointer(rebasing: raw[at..<(at + count)]).copyMemory(from: UnsafeRawBufferPointer(start: text.utf8Start, count: count))
        return at + count
    }

    @inline(__always)
    static func bulk(_ bytes: UnsafeRawBufferPointer, to raw: UnsafeMutableRawBufferPointer, at: Int) -> Int {
        RESPDigits.writeBulk(bytes, into: raw, at: at)
    }

    /// An unsigned number as a bulk string of its decimal digits.
    @inline(__always)
    static func number(_ value: UInt64, to raw: UnsafeMutableRawBufferPointer, at: Int) -> Int {
        numberBulk(value, negative: false, to: raw, at: at)
    }

    /// A signed number as a bulk string of its decimal digits.
    @inline(__always)
    static func number(_ value: Int64, to raw: UnsafeMutableRawBufferPointer, at: Int) -> Int {
        numberBulk(value.magnitude, negative: value < 0, to: raw, at: at)
    }

    private static func numberBulk(_ magnitude: UInt64, negative: Bool, to raw: UnsafeMutableRawBufferPointer, at: Int) -> Int {
        var digits = 1
        var probe = magnitude
        while probe >= 10 {
            probe /= 10
            digits += 1
        }
        let length = digits + (negative ? 1 : 0)
        var at = at
        raw[at] = UInt8(ascii: "$")
        at += 1
        at += RESPDigits.write(length, into: raw, at: at)
        raw[at] = 0x0D
        raw[at + 1] = 0x0A
        at += 2
        if negative {
            raw[at] = UInt8(ascii: "-")
            at += 1
        }
        var rest = magnitude
        var position = at + digits - 1
        repeat {
            raw[position] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: rest % 10)
            rest /= 10
            position -= 1
        } while rest > 0
        at += digits
        raw[at] = 0x0D
        raw[at + 1] = 0x0A
        return at + 2
    }
}
