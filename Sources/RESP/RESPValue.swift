import NIOCore

/// A RESP2 or RESP3 value, as a reply or as a request element.
///
/// The server's hot path writes replies directly with the `ByteBuffer` writers; this type is
/// for everything that needs a value it can hold: clients, tests and the cluster bus.
public enum RESPValue: Hashable, Sendable {
    case simpleString(ByteBuffer)
    case error(ByteBuffer)
    case integer(Int)
    /// A bulk string; `nil` is RESP2's null bulk string.
    case bulkString(ByteBuffer?)
    /// An array; `nil` is RESP2's null array.
    case array([RESPValue]?)
    // RESP3
    case null
    case double(Double)
    case boolean(Bool)
    case bigNumber(ByteBuffer)
    case bulkError(ByteBuffer)
    case verbatimString(ByteBuffer)
    case map([RESPValue], [RESPValue])
    case set([RESPValue])
    case attribute([RESPValue], [RESPValue])
    case push([RESPValue])

    /// A bulk string holding `text`.
    public static func bulk(_ text: String) -> RESPValue {
        .bulkString(ByteBuffer(string: text))
    }

    /// A request: an array of bulk strings, as clients send commands.
    public static func command(_ parts: [String]) -> RESPValue {
        .array(parts.map { .bulk($0) })
    }

    /// The bytes of a string-like value (simple, bulk, verbatim, error), else nil.
    public var bytes: ByteBuffer? {
        switch self {
        case .simpleString(let b), .error(let b), .bulkError(let b), .verbatimString(let b), .bigNumber(let b):
            return b
        case .bulkString(let b):
            return b
        default:
            return nil
        }
    }

    /// The value as text where it is string-like.
    public var string: String? {
        bytes.map { String(buffer: $0) }
    }

    /// Encodes the value in its own wire form.
    public func encode(into buffer: inout ByteBuffer) {
        switch self {
        case .simpleString(let s):
            buffer.writeInteger(UInt8(ascii: "+"))
            buffer.writeImmutableBuffer(s)
            buffer.writeCRLF()
        case .error(let s):
            buffer.writeInteger(UInt8(ascii: "-"))
            buffer.writeImmutableBuffer(s)
            buffer.writeCRLF()
        case .integer(let i):
            buffer.writeRESPInteger(i)
        case .bulkString(nil):
            buffer.writeStaticString("$-1\r\n")
        case .bulkString(let b?):
            buffer.writeRESPNumberLine(UInt8(ascii: "$"), b.readableBytes)
            buffer.writeImmutableBuffer(b)
            buffer.writeCRLF()
        case .array(nil):
            buffer.writeStaticString("*-1\r\n")
        case .array(let values?):
            buffer.writeRESPArrayHeader(values.count)
            for value in values { value.encode(into: &buffer) }
        case .null:
            buffer.writeStaticString("_\r\n")
        case .double(let d):
            buffer.writeInteger(UInt8(ascii: ","))
            if d.isNaN {
                buffer.writeStaticString("nan")
            } else if d.isInfinite {
                buffer.writeStaticString(d > 0 ? "inf" : "-inf")
            } else {
                buffer.writeString("\(d)")
            }
            buffer.writeCRLF()
        case .boolean(let b):
            buffer.writeStaticString(b ? "#t\r\n" : "#f\r\n")
        case .bigNumber(let b):
            buffer.writeInteger(UInt8(ascii: "("))
            buffer.writeImmutableBuffer(b)
            buffer.writeCRLF()
        case .bulkError(let b):
            buffer.writeRESPNumberLine(UInt8(ascii: "!"), b.readableBytes)
            buffer.writeImmutableBuffer(b)
            buffer.writeCRLF()
        case .verbatimString(let b):
            buffer.writeRESPNumberLine(UInt8(ascii: "="), b.readableBytes)
            buffer.writeImmutableBuffer(b)
            buffer.writeCRLF()
        case .map(let keys, let values), .attribute(let keys, let values):
            if case .attribute = self {
                buffer.writeRESPNumberLine(UInt8(ascii: "|"), keys.count)
            } else {
                buffer.writeRESPNumberLine(UInt8(ascii: "%"), keys.count)
            }
            for (key, value) in zip(keys, values) {
                key.encode(into: &buffer)
                value.encode(into: &buffer)
            }
        case .set(let values):
            buffer.writeRESPNumberLine(UInt8(ascii: "~"), values.count)
            for value in values { value.encode(into: &buffer) }
        case .push(let values):
            buffer.writeRESPNumberLine(UInt8(ascii: ">"), values.count)
            for value in values { value.encode(into: &buffer) }
        }
    }
}
