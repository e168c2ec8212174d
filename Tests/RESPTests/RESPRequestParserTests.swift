import NIOCore
import NIOTestUtils
import Testing

@testable import RESP

/// Feeds `input` to a fresh decoder in one piece; returns the requests as strings, or the error.
private func decode(_ input: String, limits: RESPLimits = RESPLimits()) -> Result<[[String]], RESPProtocolError> {
    var decoder = RESPRequestDecoder(limits: limits)
    var buffer = ByteBuffer(string: input)
    var requests: [[String]] = []
    do {
        while let request = try decoder.next(&buffer) {
            requests.append(request.map { String(buffer: $0) })
        }
    } catch {
        return .failure(error)
    }
    return .success(requests)
}

@Suite struct RESPRequestParserTests {
    @Test func multibulkRequests() throws {
        #expect(try decode("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").get() == [["GET", "k"]])
        #expect(try decode("*3\r\n$3\r\nSET\r\n$0\r\n\r\n$4\r\na\r\nb\r\n").get() == [["SET", "", "a\r\nb"]])
        #expect(try decode("*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n").get() == [["PING"]])
    }

    @Test func inlineRequests() throws {
        #expect(try decode("PING\r\n").get() == [["PING"]])
        #expect(try decode("set k \"hello world\"\n").get() == [["set", "k", "hello world"]])
        #expect(try decode("SET k 'it\\'s'\r\n").get() == [["SET", "k", "it's"]])
        #expect(try decode("ECHO \"\\x41\\n\\t\"\r\n").get() == [["ECHO", "A\n\t"]])
        #expect(try decode("\r\n   \r\nPING\r\n").get() == [["PING"]])
    }

    @Test func incompleteInputWaits() throws {
        #expect(try decode("*2\r\n$3\r\nGET\r\n$1\r\n").get() == [])
        #expect(try decode("*2\r\n$3\r\nGET\r\n$1\r\nk").get() == [])
        #expect(try decode("PING").get() == [])
    }

    @Test func protocolErrorsUseRedisWording() {
        func message(_ input: String, limits: RESPLimits = RESPLimits()) -> String? {
            if case .failure(let error) = decode(input, limits: limits) { return error.message }
            return nil
        }
        #expect(message("*abc\r\n") == "Protocol error: invalid multibulk length")
        #expect(message("*1\r\n$-5\r\n") == "Protocol error: invalid bulk length")
        #expect(message("*1\r\nfoo\r\n") == "Protocol error: expected '$', got 'f'")
        #expect(message("SET \"a b\r\n") == "Protocol error: unbalanced quotes in request")
        #expect(message("SET \"a\"b\r\n") == "Protocol error: unbalanced quotes in request")
        #expect(message(String(repeating: "x", count: 70_000)) == "Protocol error: too big inline request")
        #expect(message("*" + String(repeating: "1", count: 70_000)) == "Protocol error: too big mbulk count string")
        #expect(message("*1\r\n$2000\r\n", limits: RESPLimits(maxBulkLength: 1024)) == "Protocol error: invalid bulk length")
        #expect(message("*5\r\n", limits: RESPLimits(maxMultibulkLength: 4)) == "Protocol error: invalid multibulk length")
        #expect(message("*01\r\n") == "Protocol error: invalid multibulk length")
    }

    @Test func unauthenticatedLimits() {
        var parser = RESPRequestParser()
        let step = Array("*11\r\n".utf8).withUnsafeBytes { parser.next($0, authenticated: false) }
        #expect(step == .error(RESPProtocolError(.unauthenticatedMultibulkLength, "Protocol error: unauthenticated multibulk length")))
        var parser2 = RESPRequestParser()
        let step2 = Array("*1\r\n$20000\r\n".utf8).withUnsafeBytes { parser2.next($0, authenticated: false) }
        #expect(step2 == .error(RESPProtocolError(.unauthenticatedBulkLength, "Protocol error: unauthenticated bulk length")))
    }

    /// A huge claimed length costs nothing until the bytes arrive.
    @Test func claimedLengthsAreNotReserved() throws {
        var parser = RESPRequestParser()
        let step = Array("*1000000\r\n$536870912\r\n".utf8).withUnsafeBytes { parser.next($0) }
        #expect(step == .incomplete)
        #expect(parser.spans.capacity < 1024)
    }

    @Test func byteByByteAndRandomSplits() throws {
        let input =
            "*3\r\n$3\r\nSET\r\n$4\r\nk\r\n1\r\n$10\r\n0123456789\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$0\r\n\r\nset a \"b c\"\r\n"
        let expected: [[ByteBuffer]] = [
            ["SET", "k\r\n1", "0123456789"], ["PING"], ["ECHO", ""], ["set", "a", "b c"],
        ].map { $0.map { ByteBuffer(string: $0) } }
        try ByteToMessageDecoderVerifier.verifyDecoder(
            inputOutputPairs: [(ByteBuffer(string: input), expected)],
            decoderFactory: { RESPRequestDecoder() }
        )
        var generator = SeededGenerator(seed: 42)
        let bytes = Array(input.utf8)
        for _ in 0..<200 {
            var decoder = RESPRequestDecoder()
            var buffer = ByteBuffer()
            var got: [[ByteBuffer]] = []
            var offset = 0
            while offset < bytes.count {
                let size = Int.random(in: 1...9, using: &generator)
                let end = min(bytes.count, offset + size)
                buffer.writeBytes(bytes[offset..<end])
                offset = end
                while let request = try decoder.next(&buffer) { got.append(request) }
            }
            #expect(got == expected)
        }
    }

    /// Random bytes never crash the parser: every call ends in a request, a wait or an error.
    @Test func randomGarbage() {
        var generator = SeededGenerator(seed: 1234)
        let alphabet = Array("*$\r\n0123456789-abc \"'\\x".utf8)
        for _ in 0..<5_000 {
            let count = Int.random(in: 0..<64, using: &generator)
            var bytes = (0..<count).map { _ in
                Bool.random(using: &generator) ? alphabet.randomElement(using: &generator)! : UInt8.random(in: 0...255, using: &generator)
            }
            bytes.append(contentsOf: [13, 10])
            var decoder = RESPRequestDecoder(limits: RESPLimits(maxBulkLength: 4096, maxMultibulkLength: 64))
            var buffer = ByteBuffer(bytes: bytes)
            var rounds = 0
            while rounds < 100, (try? decoder.next(&buffer)) != nil {
                rounds += 1
            }
            #expect(buffer.readableBytes <= bytes.count)
        }
    }

    @Test func integersParseStrictly() {
        func parse(_ text: String) -> Int? { Array(text.utf8).withUnsafeBytes { RESPInteger.parse($0) } }
        #expect(parse("0") == 0)
        #expect(parse("-12") == -12)
        #expect(parse("9223372036854775807") == Int.max)
        #expect(parse("-9223372036854775808") == Int.min)
        #expect(parse("9223372036854775808") == nil)
        #expect(parse("+1") == nil)
        #expect(parse("01") == nil)
        #expect(parse(" 1") == nil)
        #expect(parse("-") == nil)
        #expect(parse("") == nil)
        #expect(parse("-0") == nil)
    }
}

/// SplitMix64: a small seeded generator so failures replay.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
