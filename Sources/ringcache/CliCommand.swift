import ArgumentParser
import Foundation
import RESP
import RingcacheClient

#if canImport(Glibc)
import Glibc
private let systemRead = Glibc.read
private let systemWrite = Glibc.write
#elseif canImport(Musl)
import Musl
private let systemRead = Musl.read
private let systemWrite = Musl.write
#elseif canImport(Darwin)
import Darwin
private let systemRead = Darwin.read
private let systemWrite = Darwin.write
#endif

/// An interactive prompt, like redis-cli, that talks through RingcacheClient: each command goes
/// to a replica of its key.
struct Cli: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "An interactive prompt (like redis-cli) that sends each command through RingcacheClient.",
        discussion: """
            With a command after the options, runs it and exits; otherwise reads commands, one a line, \
            quoted as in redis-cli. On a terminal, the arrow keys edit the line and walk the history \
            (kept in ~/.ringcache_cli_history). Lines starting with ':' are the prompt's own: \
            :nodes (members, gossip states and breakers), :consistency <level>, :help.
            """
    )

    @Option(help: "Seed addresses, comma-separated host:port.")
    var seeds = "127.0.0.1:7001"

    @Option(help: "Password, if the nodes have requirepass.")
    var password: String?

    @Option(help: "ACL user to authenticate as (with --password).")
    var user: String?

    @Option(help: "DEFAULT, ONE, QUORUM, ALL or a replica count, for every command.")
    var consistency = "DEFAULT"

    @Flag(help: "Connect with TLS (as redis-cli --tls).")
    var tls = false

    @Option(help: "CA certificate file that the nodes' certificates chain to (implies --tls).")
    var cacert: String?

    @Option(help: "Client certificate file, for nodes with tls-auth-clients yes (implies --tls).")
    var cert: String?

    @Option(help: "Client private key file (implies --tls).")
    var key: String?

    @Option(help: "Name the nodes' certificates must give (default: the address connected to).")
    var sni: String?

    @Flag(help: "Check the certificate chain only, not the name.")
    var insecure = false

    @Argument(help: "A command to run instead of the prompt.")
    var command: [String] = []

    func run() async throws {
        var configuration = RingcacheClient.Configuration()
        configuration.password = password
        configuration.username = user
        if tls || cacert != nil || cert != nil || key != nil {
            configuration.tls = RingcacheClient.TLS(
                caCertificateFile: cacert, certificateFile: cert, keyFile: key, serverName: sni, verifyServerName: !insecure)
        }
        let client: RingcacheClient
        do {
            client = try await RingcacheClient.connect(seeds.split(separator: ",").map(String.init), configuration: configuration)
        } catch {
            FileHandle.standardError.write(Data("Could not connect to \(seeds): \(error)\n".utf8))
            throw ExitCode(1)
        }
        var level = Self.level(consistency) ?? .default
        if !command.isEmpty {
            let ok = await Self.execute(command.map { Array($0.utf8) }, client: client, consistency: level)
            await client.close()
            if !ok { throw ExitCode(1) }
            return
        }
        let home = ProcessInfo.processInfo.environment["HOME"] ?? FileManager.default.homeDirectoryForCurrentUser.path
        var editor = LineEditor(historyFile: home + "/.ringcache_cli_history")
        let prompt = "\(seeds.split(separator: ",").first ?? "ringcache")> "
        while let line = editor.readLine(prompt: prompt) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            editor.remember(line)
            if trimmed == "quit" || trimmed == "exit" { break }
            if trimmed.hasPrefix(":") {
                let words = trimmed.dropFirst().split(separator: " ")
                switch words.first {
                case "nodes":
                    for node in client.topology.nodes {
                        let breaker = client.breaker(of: node.name).map { b in b.isClosed ? "closed" : b.isOpen ? "open" : "half-open" } ?? "-"
                        print("\(node.name) \(node.host):\(node.port) \(node.state) breaker:\(breaker)")
                    }
                case "consistency" where words.count == 2:
                    if let new = Self.level(String(words[1])) { level = new; print("OK") } else { print("(error) unknown level \(words[1])") }
                default:
                    print(":nodes  members, gossip states and breakers\n:consistency DEFAULT|ONE|QUORUM|ALL|<n>\nquit")
                }
                continue
            }
            guard let arguments = RESPRequestParser.splitCommandLine(Array(line.utf8)) else {
                print("Invalid argument(s)")
                continue
            }
            _ = await Self.execute(arguments, client: client, consistency: level)
        }
        await client.close()
    }

    static func level(_ text: String) -> Consistency? {
        switch text.uppercased() {
        case "DEFAULT": .default
        case "ONE": .one
        case "QUORUM": .quorum
        case "ALL": .all
        default: Int(text).flatMap { $0 > 0 ? .replicas($0) : nil }
        }
    }

    /// Commands with no key: they go to any node.
    static let keyless: Set<String> = [
        "PING", "ECHO", "INFO", "DBSIZE", "KEYS", "SCAN", "FLUSHALL", "FLUSHDB", "RANDOMKEY", "CLUSTER", "CONFIG", "COMMAND",
        "CLIENT", "TIME", "HELLO", "AUTH", "SELECT", "CONSISTENCY", "DEBUG", "SAVE", "LASTSAVE", "MONITOR", "QUIT",
    ]

    /// Runs one command and prints its reply as redis-cli does; false on an error.
    static func execute(_ arguments: [[UInt8]], client: RingcacheClient, consistency: Consistency) async -> Bool {
        guard let first = arguments.first else { return true }
        let name = String(decoding: first, as: UTF8.self).uppercased()
        let routingKey: [UInt8]? = arguments.count > 1 && !keyless.contains(name) ? arguments[1] : nil
        do {
            let reply = try await client.send(arguments, routingKey: routingKey, consistency: consistency)
            print(render(reply, indent: ""))
            return true
        } catch {
            print("(error) \(error)")
            return false
        }
    }

    static func render(_ reply: RingcacheReply, indent: String) -> String {
        switch reply {
        case .status(let text): return text
        case .integer(let value): return "(integer) \(value)"
        case .double(let value): return "(double) \(value)"
        case .boolean(let value): return value ? "(true)" : "(false)"
        case .null: return "(nil)"
        case .bulk(let bytes): return quote(bytes)
        case .array(let items), .map(let items):
            if items.isEmpty { return "(empty array)" }
            let width = String(items.count).count
            return items.enumerated().map { index, item in
                let number = String(index + 1)
                let label = String(repeating: " ", count: width - number.count) + number + ") "
                let body = render(item, indent: indent + String(repeating: " ", count: label.count))
                return (index == 0 ? "" : indent) + label + body
            }.joined(separator: "\n")
        }
    }

    /// A bulk string as redis-cli shows it: quoted, with unprintable bytes escaped.
    static func quote(_ bytes: [UInt8]) -> String {
        var text = "\""
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "\\"): text += "\\\\"
            case UInt8(ascii: "\""): text += "\\\""
            case 0x0A: text += "\\n"
            case 0x0D: text += "\\r"
            case 0x09: text += "\\t"
            case 0x20...0x7E: text.unicodeScalars.append(Unicode.Scalar(byte))
            default: text += "\\x" + (byte < 16 ? "0" : "") + String(byte, radix: 16)
            }
        }
        return text + "\""
    }
}

/// Reads lines with editing and history on a terminal (raw mode: arrows, backspace, ^A ^E ^U
/// ^C ^D), and plain lines otherwise.
struct LineEditor {
    private var history: [String] = []
    private let historyFile: String
    private let interactive = isatty(STDIN_FILENO) == 1 && isatty(STDOUT_FILENO) == 1
    static let historyLimit = 1000

    init(historyFile: String) {
        self.historyFile = historyFile
        if let text = try? String(contentsOfFile: historyFile, encoding: .utf8) {
            history = text.split(separator: "\n").suffix(Self.historyLimit).map(String.init)
        }
    }

    mutating func remember(_ line: String) {
        guard history.last != line else { return }
        history.append(line)
        if history.count > Self.historyLimit { history.removeFirst(history.count - Self.historyLimit) }
        if interactive { try? (history.joined(separator: "\n") + "\n").write(toFile: historyFile, atomically: true, encoding: .utf8) }
    }

    mutating func readLine(prompt: String) -> String? {
        guard interactive else { return Swift.readLine() }
        var original = termios()
        tcgetattr(STDIN_FILENO, &original)
        var raw = original
        raw.c_lflag &= ~tcflag_t(ECHO | ICANON | ISIG | IEXTEN)
        raw.c_iflag &= ~tcflag_t(IXON | ICRNL)
        tcsetattr(STDIN_FILENO, TCSANOW, &raw)
        defer { tcsetattr(STDIN_FILENO, TCSANOW, &original) }

        var line: [Character] = []
        var cursor = 0
        var browsing = history.count
        var draft: [Character] = []
        func redraw() {
            let text = String(line)
            let back = line.count - cursor
            write("\r\u{1B}[K" + prompt + text + (back > 0 ? "\u{1B}[\(back)D" : ""))
        }
        write(prompt)
        while true {
            guard let byte = readByte() else { return nil }
            switch byte {
            case 0x0D, 0x0A:
                write("\r\n")
                return String(line)
            case 0x04:  // ^D: end on an empty line
                if line.isEmpty { write("\r\n"); return nil }
            case 0x03:  // ^C: drop the line
                write("^C\r\n")
                line = []
                cursor = 0
                write(prompt)
            case 0x7F, 0x08:
                if cursor > 0 {
                    line.remove(at: cursor - 1)
                    cursor -= 1
                    redraw()
                }
            case 0x01: cursor = 0; redraw()
            case 0x05: cursor = line.count; redraw()
            case 0x15: line = []; cursor = 0; redraw()
            case 0x1B:
                guard readByte() == UInt8(ascii: "["), let code = readByte() else { continue }
                switch code {
                case UInt8(ascii: "A"), UInt8(ascii: "B"):
                    if browsing == history.count { draft = line }
                    browsing = code == UInt8(ascii: "A") ? max(0, browsing - 1) : min(history.count, browsing + 1)
                    line = browsing == history.count ? draft : Array(history[browsing])
                    cursor = line.count
                    redraw()
                case UInt8(ascii: "C"): cursor = min(line.count, cursor + 1); redraw()
                case UInt8(ascii: "D"): cursor = max(0, cursor - 1); redraw()
                default: break
                }
            default:
                guard byte >= 0x20 else { continue }
                // Gather a whole UTF-8 sequence.
                var bytes = [byte]
                let extra = byte >= 0xF0 ? 3 : byte >= 0xE0 ? 2 : byte >= 0xC0 ? 1 : 0
                for _ in 0..<extra { if let next = readByte() { bytes.append(next) } }
                for character in String(decoding: bytes, as: UTF8.self) {
                    line.insert(character, at: cursor)
                    cursor += 1
                }
                redraw()
            }
        }
    }

    private func readByte() -> UInt8? {
        var byte: UInt8 = 0
        return systemRead(STDIN_FILENO, &byte, 1) == 1 ? byte : nil
    }

    private func write(_ text: String) {
        var text = text
        text.withUTF8 { _ = systemWrite(STDOUT_FILENO, $0.baseAddress, $0.count) }
    }
}
