import NIOCore

/// Reply encoding straight into an outbound buffer: each writer fills the buffer in one
/// pass, with no intermediate values.
extension ByteBuffer {
    /// Writes pre-encoded bytes such as `+OK\r\n`.
    @inlinable
    public mutating func writeRESPRaw(_ encoded: StaticString) {
        self.writeStaticString(encoded)
    }

    @inlinable
    public mutating func writeRESPSimpleString(_ text: some StringProtocol) {
        self.writeInteger(UInt8(ascii: "+"))
        self.writeString(String(text))
        self.writeCRLF()
    }

    /// Writes an error reply; `message` carries its own prefix (`ERR ...`, `WRONGTYPE ...`).
    @inlinable
    public mutating func writeRESPError(_ message: String) {
        self.writeInteger(UInt8(ascii: "-"))
        // A CR or LF from client input inside the message would split the reply: as Redis
        // does, they become spaces.
        if message.utf8.contains(where: { $0 == 0x0D || $0 == 0x0A }) {
            self.writeBytes(message.utf8.map { $0 == 0x0D || $0 == 0x0A ? UInt8(ascii: " ") : $0 })
        } else {
            self.writeString(message)
        }
        self.writeCRLF()
    }

    @inlinable
    public mutating func writeRESPInteger(_ value: Int) {
        self.writeRESPNumberLine(UInt8(ascii: ":"), value)
    }

    /// A bulk string from raw bytes: `$<n>\r\n<bytes>\r\n`, in one pass.
    @inlinable
    public mutating func writeRESPBulk(_ bytes: UnsafeRawBufferPointer) {
        self.writeWithUnsafeMutableBytes(minimumWritableBytes: bytes.count + 24) { RESPDigits.writeBulk(bytes, into: $0, at: 0) }
    }

    @inlinable
    public mutating func writeRESPBulk(_ bytes: some Collection<UInt8>) {
        self.writeRESPNumberLine(UInt8(ascii: "$"), bytes.count)
        self.writeBytes(bytes)
        self.writeCRLF()
    }

    @inlinable
    public mutating func writeRESPBulk(_ text: String) {
        var text = text
        text.withUTF8 { self.writeRESPBulk(UnsafeRawBufferPointer($0)) }
    }

    /// The null reply: `$-1` in RESP2, `_` in RESP3.
    @inlinable
    public mutating func writeRESPNull(resp3: Bool) {
        if resp3 { self.writeStaticString("_\r\n") } else { self.writeStaticString("$-1\r\n") }
    }

    /// The null array reply: `*-1` in RESP2, `_` in RESP3.
    @inlinable
    public mutating func writeRESPNullArray(resp3: Bool) {
        if resp3 { self.writeStaticString("_\r\n") } else { self.writeStaticString("*-1\r\n") }
    }

    @inlinable
    public mutating func writeRESPArrayHeader(_ count: Int) {
        self.writeRESPNumberLine(UInt8(ascii: "*"), count)
    }

    /// A map header: `%<n>` in RESP3, an array of `2n` elements in RESP2.
    @inlinable
    public mutating func writeRESPMapHeader(_ count: Int, resp3: Bool) {
        if resp3 { self.writeRESPNumberLine(UInt8(ascii: "%"), count) } else { self.writeRESPArrayHeader(count * 2) }
    }

    /// A set header: `~<n>` in RESP3, an array in RESP2.
    @inlinable
    public mutating func writeRESPSetHeader(_ count: Int, resp3: Bool) {
        self.writeRESPNumberLine(resp3 ? UInt8(ascii: "~") : UInt8(ascii: "*"), count)
    }

    /// A double: `,<d>` in RESP3, a bulk string in RESP2. `text` is already formatted.
    @inlinable
    public mutating func writeRESPDouble(formatted text: String, resp3: Bool) {
        if resp3 {
            self.writeInteger(UInt8(ascii: ","))
            self.writeString(text)
            self.writeCRLF()
        } else {
            self.writeRESPBulk(text)
        }
    }

    /// A boolean: `#t`/`#f` in RESP3, `:1`/`:0` in RESP2.
    @inlinable
    public mutating func writeRESPBoolean(_ value: Bool, resp3: Bool) {
        if resp3 {
            self.writeStaticString(value ? "#t\r\n" : "#f\r\n")
        } else {
            self.writeStaticString(value ? ":1\r\n" : ":0\r\n")
        }
    }

    /// A verbatim string (`=<n>\r\ntxt:...`) in RESP3, a bulk string in RESP2.
    @inlinable
    public mutating func writeRESPVerbatim(_ text: String, resp3: Bool) {
        if resp3 {
            let utf8Count = text.utf8.count + 4
            self.writeRESPNumberLine(UInt8(ascii: "="), utf8Count)
            self.writeStaticString("txt:")
            self.writeString(text)
            self.writeCRLF()
        } else {
            self.writeRESPBulk(text)
        }
    }

    @inlinable
    mutating func writeCRLF() {
        self.writeInteger(UInt16(0x0D0A), endianness: .big)
    }

    @inlinable
    mutating func writeRESPNumberLine(_ marker: UInt8, _ value: Int) {
        self.writeWithUnsafeMutableBytes(minimumWritableBytes: 24) { out in
            out[0] = marker
            var at = 1 + RESPDigits.write(value, into: out, at: 1)
            out[at] = 0x0D
            out[at + 1] = 0x0A
            at += 2
            return at
        }
    }
}

/// Decimal formatting without allocation.
public enum RESPDigits {
    /// Writes `bytes` as a bulk string (`$<n>\r\n<bytes>\r\n`) at `out[at...]` and returns where
    /// it ends. `out` must have room for `bytes.count + 24` bytes.
    @inlinable
    public static func writeBulk(_ bytes: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer, at: Int) -> Int {
        var at = at
        out[at] = UInt8(ascii: "$")
        at += 1
        at += write(bytes.count, into: out, at: at)
        out[at] = 0x0D
        out[at + 1] = 0x0A
        at += 2
        if bytes.count > 0 {
            UnsafeMutableRawBufferPointer(rebasing: out[at..<(at + bytes.count)]).copyMemory(from: bytes)
            at += bytes.count
        }
        out[at] = 0x0D
        out[at + 1] = 0x0A
        return at + 2
    }

    /// Writes `value` in decimal at `out[at...]` and returns the number of bytes written.
    /// `out` must have room for 20 bytes.
    @inlinable
    public static func write(_ value: Int, into out: UnsafeMutableRawBufferPointer, at: Int) -> Int {
        var at = at
        var written = 0
        var magnitude = value.magnitude
        if value < 0 {
            out[at] = UInt8(ascii: "-")
            at += 1
            written = 1
        }
        if magnitude < 10 {
            out[at] = UInt8(truncatingIfNeeded: magnitude) &+ 0x30
            return written + 1
        }
        var digits = 0
        var probe = magnitude
        while probe > 0 {
            digits += 1
            probe /= 10
        }
        var position = at + digits - 1
        while magnitude > 0 {
            out[position] = UInt8(truncatingIfNeeded: magnitude % 10) &+ 0x30
            magnitude /= 10
            position -= 1
        }
        return written + digits
    }
}
