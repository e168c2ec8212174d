import NIOCore

/// Finds where one whole RESP value ends in bytes that arrive in pieces, remembering how far
/// it got: a large reply that comes in many reads is scanned once in all, not once per read.
/// The caller parses the value once the scanner has found its end.
public struct RESPFrameScanner: Sendable {
    public var limits: RESPLimits
    public var maxDepth: Int
    /// Bytes of the current value already scanned.
    private var scanned = 0
    /// Elements still expected by each open aggregate, innermost last.
    private var open: [Int] = []
    /// True once the first header of the current value was read.
    private var started = false

    public init(limits: RESPLimits = RESPLimits(), maxDepth: Int = 64) {
        self.limits = limits
        self.maxDepth = maxDepth
    }

    /// True when no value is being scanned: the next call starts a new one.
    public var isIdle: Bool { !started && scanned == 0 }

    /// Scans on from where the last call stopped; `bytes` starts at the value's first byte
    /// and holds everything that has arrived. Returns the value's length once it is whole
    /// (and resets for the next value), nil while more bytes are needed.
    public mutating func scan(_ bytes: UnsafeRawBufferPointer) throws(RESPProtocolError) -> Int? {
        while true {
            if started && open.isEmpty { return finish() }
            guard scanned < bytes.count else { return nil }
            let marker = bytes[scanned]
            guard let cr = RESPRequestParser.findCR(bytes, from: scanned + 1) else {
                if bytes.count - scanned > limits.maxInlineLength { throw RESPProtocolError.tooBigInlineRequest }
                return nil
            }
            guard cr + 1 < bytes.count else { return nil }
            let header = UnsafeRawBufferPointer(rebasing: bytes[(scanned + 1)..<cr])
            var next = cr + 2
            var children = 0
            switch marker {
            case UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: ":"), UInt8(ascii: "("), UInt8(ascii: "_"), UInt8(ascii: "#"),
                 UInt8(ascii: ","):
                break
            case UInt8(ascii: "$"), UInt8(ascii: "!"), UInt8(ascii: "="):
                guard let length = RESPInteger.parse(header), length >= -1, length <= limits.maxBulkLength else {
                    throw RESPProtocolError.invalidBulkLength
                }
                if length >= 0 {
                    guard bytes.count - next >= length + 2 else { return nil }
                    next += length + 2
                }
            case UInt8(ascii: "*"), UInt8(ascii: "~"), UInt8(ascii: ">"), UInt8(ascii: "%"), UInt8(ascii: "|"):
                guard let count = RESPInteger.parse(header), count >= -1, count <= limits.maxMultibulkLength else {
                    throw RESPProtocolError.invalidMultibulkLength
                }
                let pairs = marker == UInt8(ascii: "%") || marker == UInt8(ascii: "|")
                children = max(0, pairs ? count * 2 : count)
            default:
                throw RESPProtocolError(.invalidReply, "Protocol error: unexpected byte \(marker)")
            }
            scanned = next
            started = true
            if !open.isEmpty { open[open.count - 1] -= 1 }
            if children > 0 {
                guard open.count < maxDepth else { throw RESPProtocolError(.nestingTooDeep, "Protocol error: nesting too deep") }
                open.append(children)
            }
            while let last = open.last, last == 0 { open.removeLast() }
        }
    }

    /// ``scan(_:)`` over a buffer's readable bytes.
    public mutating func scan(_ buffer: ByteBuffer) throws(RESPProtocolError) -> Int? {
        let result: Result<Int?, RESPProtocolError> = buffer.withUnsafeReadableBytes { bytes in
            do throws(RESPProtocolError) { return .success(try scan(bytes)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    private mutating func finish() -> Int {
        let length = scanned
        scanned = 0
        started = false
        return length
    }
}
