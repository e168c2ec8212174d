#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An incremental parser for client requests: RESP multibulk arrays of bulk strings, and
/// Redis's inline form (`SET k "a b"`).
///
/// It reads raw bytes in place and records each argument as an offset and a length, so a
/// parsed request costs no allocation once the argument table has grown to its working
/// size. A multibulk request that arrives in pieces is resumed where it stopped; nothing is
/// reserved from a length prefix before its bytes have arrived.
public struct RESPRequestParser: Sendable {
    /// Where one argument sits: in the request bytes, or for inline requests in the
    /// parser's own unescaped copy.
    public struct Span: Sendable, Hashable {
        public var start: Int
        public var count: Int

        public init(start: Int, count: Int) {
            self.start = start
            self.count = count
        }
    }

    /// What one call to ``next(_:authenticated:)`` found.
    public enum Step: Sendable, Hashable {
        /// A whole request of `consumed` bytes; read it with ``withArguments(in:_:)``.
        case request(consumed: Int)
        /// `consumed` bytes that hold no command (an empty line, `*0`): drop them.
        case skip(consumed: Int)
        /// The request is not complete yet; call again with the same start and more bytes.
        case incomplete
        /// The request breaks the grammar or a limit; answer with the message and close.
        case error(RESPProtocolError)
    }

    public var limits: RESPLimits
    @usableFromInline var spans: [Span] = []
    @usableFromInline var inlineBytes: [UInt8] = []
    @usableFromInline var isInline = false
    /// Elements still expected by the multibulk request being parsed, or 0 when idle.
    var remaining = 0
    /// Offset of the next unparsed element header in the current request.
    var position = 0

    public init(limits: RESPLimits = RESPLimits()) {
        self.limits = limits
        self.spans.reserveCapacity(8)
    }

    /// Number of arguments of the last complete request.
    public var argumentCount: Int { spans.count }

    /// Where the arguments of the last complete request sit in its bytes (offsets from the
    /// request's first byte). Meaningless for an inline request: see ``isInlineRequest``.
    public var argumentSpans: [Span] { spans }

    /// True if the last complete request was an inline line, whose arguments live in the
    /// parser's own copy rather than in the request bytes.
    public var isInlineRequest: Bool { isInline }

    /// Parses the request that starts at `bytes[0]`.
    ///
    /// After `.incomplete` the caller keeps the same bytes (plus whatever arrived) and calls
    /// again; after `.request` or `.skip` it drops the consumed bytes first.
    public mutating func next(_ bytes: UnsafeRawBufferPointer, authenticated: Bool = true) -> Step {
        if remaining == 0 {
            guard let first = bytes.first else { return .incomplete }
            if first != UInt8(ascii: "*") {
                return parseInline(bytes)
            }
            isInline = false
            spans.removeAll(keepingCapacity: true)
            guard let cr = Self.findCR(bytes, from: 0) else {
                return bytes.count > limits.maxInlineLength ? .error(.tooBigMultibulkCount) : .incomplete
            }
            guard cr + 1 < bytes.count else { return .incomplete }
            guard let count = Self.parseInteger(bytes, from: 1, to: cr), count <= limits.maxMultibulkLength else {
                return .error(.invalidMultibulkLength)
            }
            if !authenticated && count > RESPLimits.unauthenticatedMultibulkLength {
                return .error(.unauthenticatedMultibulkLength)
            }
            if count <= 0 {
                return .skip(consumed: cr + 2)
            }
            remaining = count
            position = cr + 2
        }
        while remaining > 0 {
            guard let cr = Self.findCR(bytes, from: position) else {
                if bytes.count - position > limits.maxInlineLength {
                    return fail(.tooBigBulkCount)
                }
                return .incomplete
            }
            guard cr + 1 < bytes.count else { return .incomplete }
            let marker = bytes[position]
            guard marker == UInt8(ascii: "$") else { return fail(.expectedDollar(got: marker)) }
            guard let length = Self.parseInteger(bytes, from: position + 1, to: cr), length >= 0,
                length <= limits.maxBulkLength
            else {
                return fail(.invalidBulkLength)
            }
            if !authenticated && length > RESPLimits.unauthenticatedBulkLength {
                return fail(.unauthenticatedBulkLength)
            }
            let start = cr + 2
            // Like Redis, the two bytes after the payload are skipped, not checked.
            guard bytes.count - start - 2 >= length else { return .incomplete }
            spans.append(Span(start: start, count: length))
            position = start + length + 2
            remaining -= 1
        }
        return .request(consumed: position)
    }

    private mutating func fail(_ error: RESPProtocolError) -> Step {
        remaining = 0
        position = 0
        return .error(error)
    }

    /// Calls `body` with the arguments of the last complete request.
    ///
    /// - Parameter bytes: the same bytes, starting at the same request, that were given to
    ///   the ``next(_:authenticated:)`` call that returned `.request`.
    @inlinable
    public func withArguments<Result>(
        in bytes: UnsafeRawBufferPointer,
        _ body: (RESPArguments) throws -> Result
    ) rethrows -> Result {
        try spans.withUnsafeBufferPointer { spans in
            if isInline {
                return try inlineBytes.withUnsafeBytes { inline in
                    try body(RESPArguments(base: inline.baseAddress, spans: spans))
                }
            }
            return try body(RESPArguments(base: bytes.baseAddress, spans: spans))
        }
    }

    // MARK: - Inline requests

    private mutating func parseInline(_ bytes: UnsafeRawBufferPointer) -> Step {
        guard let newline = Self.find(UInt8(ascii: "\n"), in: bytes, from: 0) else {
            return bytes.count > limits.maxInlineLength ? .error(.tooBigInlineRequest) : .incomplete
        }
        if newline > limits.maxInlineLength {
            return .error(.tooBigInlineRequest)
        }
        var end = newline
        if end > 0 && bytes[end - 1] == UInt8(ascii: "\r") {
            end -= 1
        }
        isInline = true
        spans.removeAll(keepingCapacity: true)
        inlineBytes.removeAll(keepingCapacity: true)
        guard Self.splitArguments(UnsafeRawBufferPointer(rebasing: bytes[0..<end]), into: &inlineBytes, spans: &spans)
        else {
            return .error(.unbalancedQuotes)
        }
        return spans.isEmpty ? .skip(consumed: newline + 1) : .request(consumed: newline + 1)
    }

    /// Splits a command line into arguments as redis-cli and inline requests do (see
    /// `splitArguments`); nil on unbalanced quotes.
    public static func splitCommandLine(_ line: [UInt8]) -> [[UInt8]]? {
        var output: [UInt8] = []
        var spans: [Span] = []
        guard line.withUnsafeBytes({ splitArguments($0, into: &output, spans: &spans) }) else { return nil }
        return spans.map { Array(output[$0.start..<($0.start + $0.count)]) }
    }

    /// Splits a line into arguments the way Redis's `sdssplitargs` does: whitespace
    /// separates, double quotes take `\n \r \t \b \a \\ \" \xHH`, single quotes take `\'`.
    /// Returns false on unbalanced quotes or a closing quote followed by a non-space.
    static func splitArguments(_ line: UnsafeRawBufferPointer, into output: inout [UInt8], spans: inout [Span]) -> Bool {
        var i = 0
        let n = line.count
        func isSpace(_ c: UInt8) -> Bool {
            c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0B || c == 0x0C || c == 0x0D
        }
        func hexValue(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
            default: return nil
            }
        }
        while true {
            while i < n && isSpace(line[i]) { i += 1 }
            if i == n { return true }
            let start = output.count
            var inDouble = false
            var inSingle = false
            var done = false
            while !done {
                let c: UInt8? = i < n ? line[i] : nil
                let next: UInt8? = i + 1 < n ? line[i + 1] : nil
                if inDouble {
                    guard let c else { return false }
                    if c == UInt8(ascii: "\\"), next == UInt8(ascii: "x"), i + 3 < n,
                        let high = hexValue(line[i + 2]), let low = hexValue(line[i + 3])
                    {
                        output.append(high << 4 | low)
                        i += 3
                    } else if c == UInt8(ascii: "\\"), let escaped = next {
                        i += 1
                        switch escaped {
                        case UInt8(ascii: "n"): output.append(0x0A)
                        case UInt8(ascii: "r"): output.append(0x0D)
                        case UInt8(ascii: "t"): output.append(0x09)
                        case UInt8(ascii: "b"): output.append(0x08)
                        case UInt8(ascii: "a"): output.append(0x07)
                        default: output.append(escaped)
                        }
                    } else if c == UInt8(ascii: "\"") {
                        if let next, !isSpace(next) { return false }
                        done = true
                    } else {
                        output.append(c)
                    }
                } else if inSingle {
                    guard let c else { return false }
                    if c == UInt8(ascii: "\\"), next == UInt8(ascii: "'") {
                        i += 1
                        output.append(UInt8(ascii: "'"))
                    } else if c == UInt8(ascii: "'") {
                        if let next, !isSpace(next) { return false }
                        done = true
                    } else {
                        output.append(c)
                    }
                } else {
                    switch c {
                    case nil, 0x20, 0x0A, 0x0D, 0x09, 0x00: done = true
                    case UInt8(ascii: "\""): inDouble = true
                    case UInt8(ascii: "'"): inSingle = true
                    case let c?: output.append(c)
                    }
                }
                if i < n { i += 1 }
            }
            spans.append(Span(start: start, count: output.count - start))
        }
    }

    // MARK: - Scanning

    @inline(__always)
    static func findCR(_ bytes: UnsafeRawBufferPointer, from start: Int) -> Int? {
        find(UInt8(ascii: "\r"), in: bytes, from: start)
    }

    @inline(__always)
    static func find(_ byte: UInt8, in bytes: UnsafeRawBufferPointer, from start: Int) -> Int? {
        guard start < bytes.count, let base = bytes.baseAddress else { return nil }
        guard let hit = memchr(base + start, Int32(byte), bytes.count - start) else { return nil }
        return UnsafeRawPointer(hit) - base
    }

    /// Parses a decimal integer strictly, as Redis's `string2ll` does: optional `-`, no
    /// `+`, no leading zeros, no spaces, no overflow.
    @inline(__always)
    static func parseInteger(_ bytes: UnsafeRawBufferPointer, from start: Int, to end: Int) -> Int? {
        RESPInteger.parse(UnsafeRawBufferPointer(rebasing: bytes[start..<end]))
    }
}

/// The arguments of one parsed request, valid only inside
/// ``RESPRequestParser/withArguments(in:_:)``.
public struct RESPArguments {
    @usableFromInline let base: UnsafeRawPointer?
    @usableFromInline let spans: UnsafeBufferPointer<RESPRequestParser.Span>

    @inlinable
    init(base: UnsafeRawPointer?, spans: UnsafeBufferPointer<RESPRequestParser.Span>) {
        self.base = base
        self.spans = spans
    }

    @inlinable
    public var count: Int { spans.count }

    @inlinable
    public subscript(index: Int) -> UnsafeRawBufferPointer {
        let span = spans[index]
        return UnsafeRawBufferPointer(start: base.map { $0 + span.start }, count: span.count)
    }
}

extension RESPArguments {
    /// Calls `body` with arguments made of owned bytes: a request kept to run later.
    public static func withArguments<R>(_ parts: [[UInt8]], _ body: (RESPArguments) throws -> R) rethrows -> R {
        var spans: [RESPRequestParser.Span] = []
        spans.reserveCapacity(parts.count)
        var joined: [UInt8] = []
        for part in parts {
            spans.append(RESPRequestParser.Span(start: joined.count, count: part.count))
            joined.append(contentsOf: part)
        }
        return try joined.withUnsafeBytes { bytes in
            try spans.withUnsafeBufferPointer { try body(RESPArguments(base: bytes.baseAddress, spans: $0)) }
        }
    }
}

/// Decimal integers as Redis reads and writes them.
public enum RESPInteger {
    /// Strict parse: optional `-`, digits without leading zeros, no overflow.
    @inlinable
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> Int? {
        let n = bytes.count
        guard n > 0, n <= 20 else { return nil }
        if n == 1 {
            let d = bytes[0] &- UInt8(ascii: "0")
            return d < 10 ? Int(d) : nil
        }
        var i = 0
        var negative = false
        if bytes[0] == UInt8(ascii: "-") {
            negative = true
            i = 1
        }
        guard i < n, bytes[i] != UInt8(ascii: "0") else { return nil }
        var value: UInt64 = 0
        while i < n {
            let d = bytes[i] &- UInt8(ascii: "0")
            guard d < 10 else { return nil }
            let (times10, o1) = value.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times10.addingReportingOverflow(UInt64(d))
            guard !o1, !o2 else { return nil }
            value = sum
            i += 1
        }
        if negative {
            guard value <= UInt64(Int.max) + 1 else { return nil }
            return value == UInt64(Int.max) + 1 ? Int.min : -Int(value)
        }
        guard value <= UInt64(Int.max) else { return nil }
        return Int(value)
    }
}
