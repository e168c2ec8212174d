import NIOCore
import NIOSSL

extension RingcacheClient {
    /// TLS for every connection to the nodes: the CA their certificates chain to, a client
    /// certificate when the nodes ask for one (`tls-auth-clients yes`), and the name check.
    public struct TLS: Sendable {
        /// PEM file of the CA the nodes' certificates must chain to; the system's roots when nil.
        public var caCertificateFile: String?
        /// PEM files of the certificate and key this client shows.
        public var certificateFile: String?
        public var keyFile: String?
        /// The name every node's certificate must give; when nil, each node's address (its
        /// host name, or its IP address) is checked against its certificate.
        public var serverName: String?
        /// False: the chain is checked, the name is not (nodes reached by addresses their
        /// certificates do not list).
        public var verifyServerName = true

        public init(caCertificateFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil,
                    serverName: String? = nil, verifyServerName: Bool = true) {
            self.caCertificateFile = caCertificateFile
            self.certificateFile = certificateFile
            self.keyFile = keyFile
            self.serverName = serverName
            self.verifyServerName = verifyServerName
        }

        /// The context all connections share, made once when the client connects: a missing or
        /// unreadable file fails `connect` with its name.
        func makeContext() throws(RingcacheError) -> NIOSSLContext {
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.certificateVerification = verifyServerName ? .fullVerification : .noHostnameVerification
            do {
                if let caCertificateFile {
                    configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caCertificateFile))
                }
                if let certificateFile {
                    configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(certificateFile).map { .certificate($0) }
                }
                if let keyFile {
                    configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
                }
                return try NIOSSLContext(configuration: configuration)
            } catch {
                let files = [caCertificateFile, certificateFile, keyFile].compactMap { $0 }.joined(separator: ", ")
                throw RingcacheError(.connection, "TLS settings cannot be used (files: \(files)): \(error)")
            }
        }

        /// The name sent as SNI and checked: `serverName`, or `host` unless it is an IP address
        /// (then the certificate must list that address).
        func hostname(for host: String) -> String? {
            if let serverName { return serverName }
            return host.contains(":") || host.split(separator: ".").allSatisfy({ UInt8($0) != nil }) ? nil : host
        }
    }
}
