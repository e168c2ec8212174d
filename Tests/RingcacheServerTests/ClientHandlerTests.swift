import NIOCore
import NIOEmbedded
import RESP
import Testing

@testable import RingcacheServer

/// The connection shell on an in-memory channel: real handler and store, no sockets.
private func makeChannel(_ configure: (inout NodeConfiguration) -> Void = { _ in }) throws -> EmbeddedChannel {
    var configuration = NodeConfiguration()
    configure(&configuration)
    let node = NodeState(configuration: configuration, now: 0)
    let channel = EmbeddedChannel(handler: ClientHandler(node: node, logger: .init(label: "test")))
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    return channel
}

private func send(_ channel: EmbeddedChannel, _ text: String) throws -> String {
    try channel.writeInbound(ByteBuffer(string: text))
    var replies = ""
    while let buffer = try channel.readOutbound(as: ByteBuffer.self) {
        replies += String(buffer: buffer)
    }
    return replies
}

@Suite struct ClientHandlerTests {
    @Test func pipelinedRepliesComeInOrderInOneWrite() throws {
        let channel = try makeChannel()
        var request = ""
        for i in 0..<100 { request += "*3\r\n$3\r\nSET\r\n$\(String(i).count + 2)\r\nk:\(i)\r\n$1\r\nv\r\n" }
        for i in 0..<100 { request += "*2\r\n$3\r\nGET\r\n$\(String(i).count + 2)\r\nk:\(i)\r\n" }
        try channel.writeInbound(ByteBuffer(string: request))
        let first = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        #expect(String(buffer: first) == String(repeating: "+OK\r\n", count: 100) + String(repeating: "$1\r\nv\r\n", count: 100))
        _ = try channel.finish()
    }

    @Test func requestsSplitAcrossReadsAreAnsweredOnce() throws {
        let channel = try makeChannel()
        let request = "*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\nPING\r\n"
        var replies = ""
        for byte in request.utf8 {
            replies += try send(channel, String(decoding: [byte], as: UTF8.self))
        }
        #expect(replies == "$5\r\nhello\r\n+PONG\r\n")
        _ = try channel.finish()
    }

    @Test func protocolErrorRepliesThenCloses() throws {
        let channel = try makeChannel()
        #expect(try send(channel, "PING\r\n*1\r\nfoo\r\nPING\r\n") == "+PONG\r\n-ERR Protocol error: expected '$', got 'f'\r\n")
        #expect(!channel.isActive)
    }

    @Test func quitRepliesThenCloses() throws {
        let channel = try makeChannel()
        #expect(try send(channel, "QUIT\r\nPING\r\n") == "+OK\r\n")
        #expect(!channel.isActive)
    }

    @Test func authIsRequiredWhenConfigured() throws {
        let channel = try makeChannel { $0.requirePass = "secret" }
        #expect(try send(channel, "GET k\r\n") == "-NOAUTH Authentication required.\r\n")
        #expect(try send(channel, "AUTH nope\r\n") == "-WRONGPASS invalid username-password pair or user is disabled.\r\n")
        #expect(try send(channel, "AUTH secret\r\nGET k\r\n") == "+OK\r\n$-1\r\n")
        _ = try channel.finish()
    }

    @Test func resp3NullsAfterHello() throws {
        let channel = try makeChannel()
        let hello = try send(channel, "HELLO 3\r\n")
        #expect(hello.hasPrefix("%7\r\n"))
        #expect(try send(channel, "GET missing\r\n") == "_\r\n")
        _ = try channel.finish()
    }

    @Test func noevictionAnswersOOM() throws {
        let channel = try makeChannel {
            $0.maxMemory = 1
            $0.evictionPolicy = .noEviction
        }
        #expect(try send(channel, "SET a b\r\n") == "-OOM command not allowed when used memory > 'maxmemory'.\r\n")
        #expect(try send(channel, "GET a\r\n") == "$-1\r\n")
        _ = try channel.finish()
    }
}
