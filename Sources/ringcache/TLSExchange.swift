import Dispatch
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import RingcacheServer

/// A blocking request and reply over TLS, for the `cluster` commands when a cluster file's
/// client ports speak TLS (`port 0`).
enum TLSExchange {
    /// The context the `cluster` commands connect with: the file's CA, and as client
    /// certificate `tls-client-cert-file` (or the first node's `tls-cert-file`), since nodes
    /// may ask for one.
    static func context(for configuration: NodeConfiguration) throws -> NIOSSLContext? {
        guard configuration.clientPortIsTLS else { return nil }
        var named = configuration
        if let first = configuration.nodes.first { named.nodeName = first.name }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateVerification = .noHostnameVerification
        if let ca = configuration.tlsCACertFile {
            tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(named.tlsPath(ca)))
        }
        if let cert = configuration.tlsClientCertFile ?? configuration.tlsCertFile,
           let key = configuration.tlsClientKeyFile ?? configuration.tlsKeyFile {
            tls.certificateChain = try NIOSSLCertificate.fromPEMFile(named.tlsPath(cert)).map { .certificate($0) }
            tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: named.tlsPath(key), format: .pem))
        }
        return try NIOSSLContext(configuration: tls)
    }

    /// Sends `request` and reads until `complete` says the reply is whole; nil if the node
    /// does not answer within 2 s a read, or closes first.
    static func exchange(host: String, port: Int, _ request: String, context: NIOSSLContext, until complete: ([UInt8]) -> Bool) -> String? {
        let collector = Collector()
        let channel: any Channel
        do {
            channel = try ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(2))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: context, serverHostname: nil))
                        try channel.pipeline.syncOperations.addHandler(collector)
                    }
                }
                .connect(host: host, port: port).wait()
        } catch {
            return nil
        }
        defer { channel.close(promise: nil) }
        channel.writeAndFlush(ByteBuffer(string: request), promise: nil)
        while true {
            let (bytes, closed) = collector.state.withLockedValue { $0 }
            if complete(bytes) { return String(decoding: bytes, as: UTF8.self) }
            if closed { return nil }
            guard collector.arrived.wait(timeout: .now() + 2) == .success else { return nil }
        }
    }

    final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let state = NIOLockedValueBox<([UInt8], Bool)>(([], false))
        let arrived = DispatchSemaphore(value: 0)

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            state.withLockedValue { $0.0 += buffer.readableBytesView }
            arrived.signal()
        }

        func channelInactive(context: ChannelHandlerContext) {
            state.withLockedValue { $0.1 = true }
            arrived.signal()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }
}
