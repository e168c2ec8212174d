import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import X509

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The TLS contexts a node serves and connects with, made from its `tls-*` directives. Every
/// file is read and checked here, so a bad one is refused with its name and the reason
/// before anything uses it (at start-up, or by `CONFIG SET`, which keeps the old contexts).
public struct TLSContexts: Sendable {
    /// For the client port (`tls-port`, or the `node` line port with `port 0`).
    public let clients: NIOSSLContext
    /// For bus connections this node accepts and makes (`tls-cluster yes`).
    public let busServer: NIOSSLContext?
    public let busClient: NIOSSLContext?

    /// The contexts of `configuration`, nil when it uses no TLS.
    public static func make(_ configuration: NodeConfiguration) throws(ConfigurationError) -> TLSContexts? {
        guard configuration.usesTLS else { return nil }
        guard let certFile = configuration.tlsCertFile, let keyFile = configuration.tlsKeyFile else {
            throw ConfigurationError("TLS needs both 'tls-cert-file' and 'tls-key-file'")
        }
        let identity = try Identity(
            certificate: configuration.tlsPath(certFile), certificateDirective: "tls-cert-file",
            key: configuration.tlsPath(keyFile), keyDirective: "tls-key-file")
        let roots = try configuration.tlsCACertFile.map { file throws(ConfigurationError) in
            try loadCertificates(configuration.tlsPath(file), directive: "tls-ca-cert-file")
        }
        var server = TLSConfiguration.makeServerConfiguration(
            certificateChain: identity.chain.map { .certificate($0) }, privateKey: .privateKey(identity.key))
        try restrict(&server, configuration)
        if let roots { server.trustRoots = .certificates(roots) }
        switch configuration.tlsAuthClients {
        case .yes: server.certificateVerification = .noHostnameVerification
        case .optional: server.certificateVerification = .optionalVerification
        case .no: server.certificateVerification = .none
        }
        let clients = try context(server, "the client port")
        guard configuration.tlsCluster else { return TLSContexts(clients: clients, busServer: nil, busClient: nil) }
        guard let roots else { throw ConfigurationError("'tls-cluster yes' needs 'tls-ca-cert-file'") }
        var busServer = server
        busServer.trustRoots = .certificates(roots)
        busServer.certificateVerification = .noHostnameVerification
        let outgoing = try Identity(
            certificate: configuration.tlsPath(configuration.tlsClientCertFile ?? certFile),
            certificateDirective: configuration.tlsClientCertFile == nil ? "tls-cert-file" : "tls-client-cert-file",
            key: configuration.tlsPath(configuration.tlsClientKeyFile ?? keyFile),
            keyDirective: configuration.tlsClientKeyFile == nil ? "tls-key-file" : "tls-client-key-file")
        var busClient = TLSConfiguration.makeClientConfiguration()
        busClient.certificateChain = outgoing.chain.map { .certificate($0) }
        busClient.privateKey = .privateKey(outgoing.key)
        busClient.trustRoots = .certificates(roots)
        // The peer's name is checked against the member it claims to be, in the bus handshake.
        busClient.certificateVerification = .noHostnameVerification
        try restrict(&busClient, configuration)
        return TLSContexts(clients: clients, busServer: try context(busServer, "the cluster bus"),
                           busClient: try context(busClient, "the cluster bus"))
    }

    /// `tls-protocols` and `tls-ciphers`.
    private static func restrict(_ tls: inout TLSConfiguration, _ configuration: NodeConfiguration) throws(ConfigurationError) {
        let versions = configuration.tlsProtocols.compactMap(version(named:))
        guard let lowest = versions.first, let highest = versions.last else {
            throw ConfigurationError("'tls-protocols' names no TLS version")
        }
        tls.minimumTLSVersion = lowest
        tls.maximumTLSVersion = highest
        if let ciphers = configuration.tlsCiphers { tls.cipherSuites = ciphers }
    }

    static func version(named name: String) -> TLSVersion? {
        switch name.lowercased() {
        case "tlsv1": .tlsv1
        case "tlsv1.1": .tlsv11
        case "tlsv1.2": .tlsv12
        case "tlsv1.3": .tlsv13
        default: nil
        }
    }

    private static func context(_ configuration: TLSConfiguration, _ purpose: String) throws(ConfigurationError) -> NIOSSLContext {
        var configuration = configuration
        // A closing connection waits this long for the peer's close_notify (5 s by default).
        configuration.shutdownTimeout = .milliseconds(500)
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw ConfigurationError("cannot set up TLS for \(purpose): \(error) (check tls-ciphers and tls-protocols)")
        }
    }

    /// A certificate chain and the private key that goes with its first certificate.
    struct Identity {
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey

        init(certificate: String, certificateDirective: String, key keyPath: String, keyDirective: String) throws(ConfigurationError) {
            chain = try loadCertificates(certificate, directive: certificateDirective)
            let keyText = try readText(keyPath, directive: keyDirective)
            let parsed: Certificate.PrivateKey
            do {
                parsed = try Certificate.PrivateKey(pemEncoded: keyText)
                key = try NIOSSLPrivateKey(bytes: Array(keyText.utf8), format: .pem)
            } catch {
                throw ConfigurationError("\(keyDirective) '\(keyPath)' holds no PEM private key that can be read (\(error))")
            }
            do {
                let leaf = try Certificate(derEncoded: try chain[0].toDERBytes())
                guard leaf.publicKey == parsed.publicKey else {
                    throw ConfigurationError("\(keyDirective) '\(keyPath)' is not the key of \(certificateDirective) '\(certificate)'")
                }
            } catch let error as ConfigurationError {
                throw error
            } catch {
                throw ConfigurationError("\(certificateDirective) '\(certificate)': \(error)")
            }
        }
    }

    static func loadCertificates(_ path: String, directive: String) throws(ConfigurationError) -> [NIOSSLCertificate] {
        let text = try readText(path, directive: directive)
        let certificates: [NIOSSLCertificate]
        do {
            certificates = try NIOSSLCertificate.fromPEMBytes(Array(text.utf8))
        } catch {
            throw ConfigurationError("\(directive) '\(path)' holds no PEM certificate that can be read (\(error))")
        }
        guard !certificates.isEmpty else { throw ConfigurationError("\(directive) '\(path)' holds no PEM certificate") }
        return certificates
    }

    /// A PEM file's text, with the reason when it cannot be read.
    static func readText(_ path: String, directive: String) throws(ConfigurationError) -> String {
        guard let file = fopen(path, "r") else {
            throw ConfigurationError("\(directive) '\(path)' cannot be read: \(String(cString: strerror(errno)))")
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            let count = fread(&chunk, 1, chunk.count, file)
            if count <= 0 { break }
            bytes.append(contentsOf: chunk[0..<count])
            guard bytes.count <= 1 << 20 else { throw ConfigurationError("\(directive) '\(path)' is over 1 MiB: not a PEM file") }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The names a peer's certificate gives: its DNS subject alternative names and common name.
    public static func names(of certificate: NIOSSLCertificate) -> Set<String> {
        guard let bytes = try? certificate.toDERBytes(), let parsed = try? Certificate(derEncoded: bytes) else { return [] }
        var names = Set<String>()
        if let alternatives = try? parsed.extensions.subjectAlternativeNames {
            for case .dnsName(let name) in alternatives { names.insert(name) }
        }
        for relative in parsed.subject {
            for attribute in relative where attribute.type == .RDNAttributeType.commonName {
                if let name = String(attribute.value) { names.insert(name) }
            }
        }
        return names
    }
}

/// The node's current TLS contexts: replaced whole by `CONFIG SET`, read by each new connection.
public final class TLSState: Sendable {
    private let current: NIOLockedValueBox<TLSContexts?>

    init(_ contexts: TLSContexts?) {
        current = NIOLockedValueBox(contexts)
    }

    public var contexts: TLSContexts? { current.withLockedValue { $0 } }

    func replace(_ contexts: TLSContexts?) {
        current.withLockedValue { $0 = contexts }
    }
}
