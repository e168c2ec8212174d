import NIOCore
import Testing

@testable import RESP

@Suite struct RESPValueTests {
    static let samples: [RESPValue] = [
        .simpleString(ByteBuffer(string: "OK")),
        .error(ByteBuffer(string: "ERR bad")),
        .integer(-42),
        .bulkString(ByteBuffer(string: "a\r\nb")),
        .bulkString(nil),
        .array(nil),
        .array([.integer(1), .bulk("two"), .array([])]),
        .null,
        .double(1.5),
        .double(.infinity),
        .boolean(true),
        .bigNumber(ByteBuffer(string: "123456789012345678901234567890")),
        .bulkError(ByteBuffer(string: "SYNTAX x")),
        .verbatimString(ByteBuffer(string: "txt:hello")),
        .map([.bulk("k")], [.integer(1)]),
        .set([.bulk("a"), .bulk("b")]),
        .push([.bulk("message"), .bulk("x")]),
    ]

    @Test(arguments: samples)
    func roundTrips(_ value: RESPValue) throws {
        var buffer = ByteBuffer()
        value.encode(into: &buffer)
        let parser = RESPValueParser()
        // Every strict prefix is incomplete and leaves the buffer alone.
        for length in 0..<buffer.readableBytes {
            var prefix = buffer.getSlice(at: buffer.readerIndex, length: length)!
            #expect(try parser.parse(&prefix) == nil)
            #expect(prefix.readableBytes == length)
        }
        var whole = buffer
        #expect(try parser.parse(&whole) == value)
        #expect(whole.readableBytes == 0)
    }

    @Test func writersProduceRedisBytes() {
        var buffer = ByteBuffer()
        buffer.writeRESPInteger(0)
        buffer.writeRESPInteger(-1234567890123)
        buffer.writeRESPNull(resp3: false)
        buffer.writeRESPNull(resp3: true)
        buffer.writeRESPMapHeader(2, resp3: false)
        buffer.writeRESPMapHeader(2, resp3: true)
        buffer.writeRESPBoolean(true, resp3: false)
        buffer.writeRESPBoolean(false, resp3: true)
        Array("abc".utf8).withUnsafeBytes { buffer.writeRESPBulk($0) }
        buffer.writeRESPBulk(UnsafeRawBufferPointer(start: nil, count: 0))
        #expect(String(buffer: buffer) == ":0\r\n:-1234567890123\r\n$-1\r\n_\r\n*4\r\n%2\r\n:1\r\n#f\r\n$3\r\nabc\r\n$0\r\n\r\n")
    }

    @Test func malformedRepliesThrow() {
        let parser = RESPValueParser(maxDepth: 3)
        for text in ["?\r\n", ":12a\r\n", "$-2\r\n", "#x\r\n", "*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n"] {
            var buffer = ByteBuffer(string: text)
            #expect(throws: RESPProtocolError.self) { try parser.parse(&buffer) }
        }
    }
}

@Suite struct RESPFrameScannerTests {
    /// Fed one byte at a time, the scanner finds each value's end exactly where the parser
    /// does, scanning each byte once.
    @Test func findsTheSameEndsAsTheParserByteByByte() throws {
        let values: [RESPValue] = [
            .integer(7), .simpleString(ByteBuffer(string: "OK")), .error(ByteBuffer(string: "ERR x")), .bulkString(nil),
            .bulkString(ByteBuffer(string: "hello\r\nworld")), .array([]), .array(nil),
            .array([.integer(1), .array([.bulkString(ByteBuffer(string: "a")), .array([])]), .bulkString(nil)]),
            .map([.bulkString(ByteBuffer(string: "k"))], [.array([.integer(2)])]), .null, .boolean(true), .double(1.5),
        ]
        var stream = ByteBuffer()
        var lengths: [Int] = []
        for value in values {
            let before = stream.writerIndex
            value.encode(into: &stream)
            lengths.append(stream.writerIndex - before)
        }
        var scanner = RESPFrameScanner()
        var found: [Int] = []
        var start = 0
        let bytes = Array(stream.readableBytesView)
        for end in 1...bytes.count {
            let window = ByteBuffer(bytes: bytes[start..<end])
            if let length = try scanner.scan(window) {
                found.append(length)
                start += length
            }
        }
        #expect(found == lengths)
    }

    @Test func refusesWhatTheParserRefuses() {
        for bad in ["$-2\r\n", "*2147483648\r\n", "?\r\n", "$999999999999\r\n"] {
            var scanner = RESPFrameScanner()
            #expect(throws: RESPProtocolError.self) { _ = try scanner.scan(ByteBuffer(string: bad)) }
        }
    }
}
