import NIOCore
import RESP

/// Anything that can be sent as a key or a value: bytes, or text as UTF-8.
public protocol RingcacheBytes: Sendable {
    /// Writes the bytes as one RESP bulk string.
    func writeBulk(into buffer: inout ByteBuffer)
    /// The bytes, for hashing a key onto the ring.
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
}

extension RingcacheBytes {
    public func writeBulk(into buffer: inout ByteBuffer) {
        withBytes { buffer.writeRESPBulk($0) }
    }
}

extension Array: RingcacheBytes where Element == UInt8 {
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withUnsafeBytes(body)
    }
}

extension ArraySlice: RingcacheBytes where Element == UInt8 {
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withUnsafeBytes(body)
    }
}

extension String: RingcacheBytes {
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        var copy = self
        return try copy.withUTF8 { try body(UnsafeRawBufferPointer($0)) }
    }
}

extension Substring: RingcacheBytes {
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        var copy = self
        return try copy.withUTF8 { try body(UnsafeRawBufferPointer($0)) }
    }
}

extension ByteBuffer: RingcacheBytes {
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withUnsafeReadableBytes(body)
    }
}

extension Int: RingcacheBytes {
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try String(self).withBytes(body)
    }
}

/// One command's encoding: a RESP array of bulk strings, written straight into a buffer.
struct CommandEncoder {
    var buffer: ByteBuffer

    init(count: Int, capacity: Int = 64) {
        buffer = ByteBuffer()
        buffer.reserveCapacity(capacity)
        buffer.writeRESPArrayHeader(count)
    }

    mutating func append(_ argument: some RingcacheBytes) {
        argument.writeBulk(into: &buffer)
    }

    mutating func append(_ argument: StaticString) {
        buffer.writeRESPBulk(UnsafeRawBufferPointer(start: argument.utf8Start, count: argument.utf8CodeUnitCount))
    }

    /// A whole command from its parts.
    static func command(_ name: StaticString, _ arguments: [any RingcacheBytes]) -> ByteBuffer {
        var encoder = CommandEncoder(count: arguments.count + 1)
        encoder.append(name)
        for argument in arguments { encoder.append(argument) }
        return encoder.buffer
    }
}
