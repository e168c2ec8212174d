import ArgumentParser
import Crypto
import Foundation
import SwiftASN1
import X509

/// `ringcache tls`: certificates for trying a TLS cluster.
struct TLS: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Certificates for a TLS cluster.",
        subcommands: [Generate.self]
    )

    /// Makes a CA, a certificate per node (named for the node, so `tls-cluster` can match a
    /// peer's certificate to the member it claims to be) and one for clients.
    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a CA, one certificate per node and one for clients (ECDSA P-256, PEM).",
            discussion: """
                Writes ca.crt and ca.key, <node>.crt and <node>.key for each node, client.crt and client.key.
                A node's certificate names the node (its SAN and CN), localhost and 127.0.0.1, and any --hosts.
                Point cluster.conf at them with tls-cert-file DIR/{node}.crt, tls-key-file DIR/{node}.key
                and tls-ca-cert-file DIR/ca.crt.
                """
        )

        @Option(help: "Directory to write the files to (made if missing).")
        var dir: String

        @Option(help: "Node names, comma-separated, e.g. n1,n2,n3.")
        var nodes: String

        @Option(help: "More names or IP addresses for every node certificate, comma-separated (e.g. the machines' DNS names).")
        var hosts: String = ""

        @Option(help: "Days the certificates are valid.")
        var days: Int = 365

        @Flag(help: "Replace files that are already there.")
        var force = false

        func validate() throws {
            guard (1...36_500).contains(days) else { throw ValidationError("--days must be in 1...36500") }
            guard !names.isEmpty else { throw ValidationError("--nodes needs at least one name") }
            for name in names + ["ca", "client"] where names.filter({ $0 == name }).count > 1 {
                throw ValidationError("node '\(name)' is named twice")
            }
            if let bad = names.first(where: { $0 == "ca" || $0 == "client" || $0.contains("/") }) {
                throw ValidationError("'\(bad)' cannot be a node name here (ca and client are taken; no '/')")
            }
        }

        private var names: [String] { nodes.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }

        func run() throws {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let files = ["ca"] + names + ["client"]
            if !force, let existing = files.flatMap({ ["\($0).crt", "\($0).key"] }).first(where: { FileManager.default.fileExists(atPath: path($0)) }) {
                throw ValidationError("\(path(existing)) exists; use --force to replace the files")
            }
            let now = Date()
            let start = now.addingTimeInterval(-300)
            let end = now.addingTimeInterval(Double(days) * 86_400)
            let caKey = Certificate.PrivateKey(P256.Signing.PrivateKey())
            let caName = try DistinguishedName {
                OrganizationName("ringcache")
                CommonName("ringcache CA")
            }
            let ca = try Certificate(
                version: .v3, serialNumber: .init(), publicKey: caKey.publicKey, notValidBefore: start, notValidAfter: end,
                issuer: caName, subject: caName, signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                    Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                    SubjectKeyIdentifier(hash: caKey.publicKey)
                },
                issuerPrivateKey: caKey)
            try write(ca, key: caKey, as: "ca")
            let extra = hosts.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            for name in names {
                try issue(name: name, alternatives: [name, "localhost", "127.0.0.1"] + extra, ca: ca, caKey: caKey, start: start, end: end)
            }
            try issue(name: "client", alternatives: [], ca: ca, caKey: caKey, start: start, end: end)
            print("Wrote \(files.count * 2) files to \(dir): ca.crt, \(names.map { "\($0).crt" }.joined(separator: ", ")), client.crt and their keys.")
            print("""
                In cluster.conf:
                    port 0
                    tls-cluster yes
                    tls-cert-file \(dir)/{node}.crt
                    tls-key-file \(dir)/{node}.key
                    tls-ca-cert-file \(dir)/ca.crt
                Then: redis-cli --tls --cacert \(dir)/ca.crt --cert \(dir)/client.crt --key \(dir)/client.key -p PORT
                """)
        }

        private func issue(
            name: String, alternatives: [String], ca: Certificate, caKey: Certificate.PrivateKey, start: Date, end: Date
        ) throws {
            let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
            let subject = try DistinguishedName {
                OrganizationName("ringcache")
                CommonName(name)
            }
            let general: [GeneralName] = alternatives.map { text in
                if let address = Self.ipv4(text) { return .ipAddress(ASN1OctetString(contentBytes: address[...])) }
                return .dnsName(text)
            }
            let certificate = try Certificate(
                version: .v3, serialNumber: .init(), publicKey: key.publicKey, notValidBefore: start, notValidAfter: end,
                issuer: ca.subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true))
                    try ExtendedKeyUsage([.serverAuth, .clientAuth])
                    SubjectKeyIdentifier(hash: key.publicKey)
                    AuthorityKeyIdentifier(keyIdentifier: SubjectKeyIdentifier(hash: caKey.publicKey).keyIdentifier)
                    if !general.isEmpty { SubjectAlternativeNames(general) }
                },
                issuerPrivateKey: caKey)
            try write(certificate, key: key, as: name)
        }

        private func write(_ certificate: Certificate, key: Certificate.PrivateKey, as name: String) throws {
            try (certificate.serializeAsPEM().pemString + "\n").write(toFile: path("\(name).crt"), atomically: true, encoding: .utf8)
            let keyPath = path("\(name).key")
            try (key.serializeAsPEM().pemString + "\n").write(toFile: keyPath, atomically: true, encoding: .utf8)
            try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: keyPath)
        }

        private func path(_ file: String) -> String { (dir.hasSuffix("/") ? dir : dir + "/") + file }

        static func ipv4(_ text: String) -> [UInt8]? {
            let parts = text.split(separator: ".", omittingEmptySubsequences: false)
            guard parts.count == 4 else { return nil }
            let bytes = parts.compactMap { UInt8($0) }
            return bytes.count == 4 ? bytes : nil
        }
    }
}
