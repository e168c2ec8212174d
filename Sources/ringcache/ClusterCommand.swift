import ArgumentParser
import NIOSSL
import RingcacheServer

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

struct Cluster: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start or stop every node of a cluster.conf on this machine.",
        subcommands: [Up.self, Down.self, Status.self, Leave.self]
    )

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the members as a table: state, incarnation, address, share of the ring, keys, memory, hints, transfer.",
            discussion: "States are those gossip reports at the first node that answers; keys and memory come from each node's INFO."
        )

        @Option(help: "The cluster configuration.")
        var config = "cluster.conf"

        func run() throws {
            guard let text = Serve.readFile(config) else { throw ValidationError("cannot read configuration file '\(config)'") }
            let configuration: NodeConfiguration
            do {
                configuration = try NodeConfiguration.parse(text, file: config)
            } catch {
                throw ValidationError(error.message)
            }
            let password = configuration.requirePass
            let tls = try TLSExchange.context(for: configuration)
            // Each member's state and share as the first answering node sees them; members
            // that joined with `seeds` are listed too, with the address they gave.
            var views: [String: (state: String, share: String, incarnation: String)] = [:]
            var members = configuration.nodes.map { (name: $0.name, host: $0.host, port: $0.port) }
            for node in configuration.nodes {
                guard let nodes = ProcessControl.command(host: node.host, port: node.port, ["CLUSTER", "NODES"], password: password, tls: tls) else { continue }
                for line in nodes.split(whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
                    let fields = line.split(separator: " ").map(String.init)
                    guard fields.count >= 6 else { continue }
                    views[fields[0]] = (String(fields[3].split(separator: ",").last ?? ""), fields[5], fields.count > 6 ? fields[6] : "-")
                    if !members.contains(where: { $0.name == fields[0] }), let colon = fields[1].lastIndex(of: ":"),
                       let port = Int(fields[1][fields[1].index(after: colon)...]) {
                        members.append((fields[0], String(fields[1][..<colon]), port))
                    }
                }
                break
            }
            var rows = [["member", "address", "state", "incarnation", "ring share", "keys", "memory", "hints", "transfer"]]
            for node in members {
                let info = ProcessControl.command(host: node.host, port: node.port, ["INFO"], password: password, tls: tls)
                let fields = info.map(Self.fields) ?? [:]
                let keys = fields["db0"].flatMap { $0.split(separator: ",").first?.split(separator: "=").last.map(String.init) } ?? (info == nil ? "-" : "0")
                let view = views[node.name]
                // A member the ring no longer lists (it left) shows as such.
                let state = (view?.state ?? (views.isEmpty ? "?" : "left")) + (info == nil ? " (no answer)" : "")
                let share = view.map { String(format2(Double($0.share) ?? 0)) } ?? "-"
                // Hints this node keeps for others (sloppy quorum).
                let hints = fields["hints_pending"] ?? "-"
                // Data this node sends after a join or leave: a bar while it runs.
                let transfer: String
                switch fields["rebalance_state"] {
                case "sending"?, "leaving"?:
                    let progress = Int(fields["rebalance_progress"] ?? "0") ?? 0
                    transfer = "\(Leave.bar(progress, width: 10)) \(progress)% (\(fields["rebalance_keys_sent"] ?? "0") keys)"
                case "idle"?: transfer = "done (\(fields["rebalance_keys_sent"] ?? "0") sent, \(fields["rebalance_keys_received"] ?? "0") received)"
                default: transfer = "-"
                }
                rows.append([node.name, "\(node.host):\(node.port)", state, view?.incarnation ?? "-", share, keys,
                             fields["used_memory_human"] ?? "-", hints, transfer])
            }
            let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
            for row in rows {
                print(row.enumerated().map { $1 + String(repeating: " ", count: widths[$0] - $1.count) }.joined(separator: "  "))
            }
        }

        static func fields(_ info: String) -> [String: String] {
            var fields: [String: String] = [:]
            // "\r\n" is one Character in Swift, so it has to be named as such.
            for line in info.split(whereSeparator: { $0 == "\r\n" || $0 == "\n" || $0 == "\r" }) where line.contains(":") && !line.hasPrefix("#") {
                let parts = line.split(separator: ":", maxSplits: 1).map(String.init)
                fields[parts[0]] = parts.count > 1 ? parts[1] : ""
            }
            return fields
        }

        private func format2(_ share: Double) -> String {
            "\(Double(Int(share * 1000)) / 10)%"
        }
    }

    struct Leave: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a node leave the ring: it hands its data to the members that gain it, then stops.",
            discussion: """
                Sends CLUSTER LEAVE to the node, then shows its transfer as a progress bar until it has stopped. \
                Choose the node by name from --config (--node), or by --host and --port.
                """
        )

        @Option(help: "The cluster configuration.")
        var config = "cluster.conf"

        @Option(help: "The node to leave, by its `node` line in --config.")
        var node: String?

        @Option(help: "The node's host (instead of --node).")
        var host = "127.0.0.1"

        @Option(help: "The node's client port (instead of --node).")
        var port: Int?

        @Option(help: "Seconds to wait for the node to stop.")
        var wait = 600

        func run() throws {
            var host = self.host
            var port = self.port
            var name = "\(host):\(port ?? 0)"
            var password: String?
            var tls: NIOSSLContext?
            if let node {
                guard let text = Serve.readFile(config) else { throw ValidationError("cannot read configuration file '\(config)'") }
                let configuration: NodeConfiguration
                do {
                    configuration = try NodeConfiguration.parse(text, file: config)
                } catch {
                    throw ValidationError(error.message)
                }
                guard let member = configuration.nodes.first(where: { $0.name == node }) else {
                    throw ValidationError("no node named '\(node)' in \(config)")
                }
                (host, port, name, password) = (member.host, member.port, member.name, configuration.requirePass)
                tls = try TLSExchange.context(for: configuration)
            }
            guard let port else { throw ValidationError("choose the node with --node or --port") }
            var request = ""
            if let password { request += "*2\r\n$4\r\nAUTH\r\n$\(password.utf8.count)\r\n\(password)\r\n" }
            request += "*2\r\n$7\r\nCLUSTER\r\n$5\r\nLEAVE\r\n"
            let lines = password == nil ? 1 : 2
            guard let reply = ProcessControl.exchange(host: host, port: port, request, tls: tls, until: { bytes in
                bytes.filter { $0 == 10 }.count >= lines
            }) else {
                throw ValidationError("\(name) does not answer on \(host):\(port)")
            }
            let answer = password == nil ? reply : ProcessControl.afterFirstLine(reply)
            guard answer.hasPrefix("+OK") else {
                throw ValidationError("\(name) refused: \(String(answer.drop { $0 == "-" }.prefix { $0 != "\r" && $0 != "\n" && $0 != "\r\n" }))")
            }
            print("\(name) is leaving the ring")
            let deadline = ProcessControl.monotonicSeconds() + Double(wait)
            var last = ""
            while ProcessControl.monotonicSeconds() < deadline {
                guard let info = ProcessControl.command(host: host, port: port, ["INFO", "cluster"], password: password, tls: tls) else {
                    // It stopped answering: it has handed its data out and stopped.
                    print("\r\(Self.bar(100)) 100%  \(last)")
                    print("\(name) has left the ring")
                    return
                }
                let fields = Status.fields(info)
                let progress = Int(fields["rebalance_progress"] ?? "0") ?? 0
                let sent = fields["rebalance_keys_sent"] ?? "0"
                let bytes = Int(fields["rebalance_bytes_sent"] ?? "0") ?? 0
                last = "\(sent) keys sent (\(bytes / 1024) KiB)"
                print("\r\(Self.bar(progress)) \(String(format: "%3d", progress))%  \(last)", terminator: "")
                fflush(nil)
                usleep(200_000)
            }
            print("")
            throw ValidationError("\(name) did not finish leaving within \(wait) s")
        }

        static func bar(_ percent: Int, width: Int = 30) -> String {
            let filled = max(0, min(width, percent * width / 100))
            return "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "]"
        }
    }

    struct Up: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start every node of the file in the background; return once all answer PING.",
            discussion: "Logs go to RUNDIR/<node>.log and process ids to RUNDIR/<node>.pid. Nodes already running are left alone."
        )

        @Option(help: "The cluster configuration.")
        var config = "cluster.conf"

        @Option(help: "Where logs and pid files go.")
        var dir = "run"

        @Option(help: "Seconds to wait for each node to answer.")
        var wait = 30

        func run() throws {
            guard let text = Serve.readFile(config) else { throw ValidationError("cannot read configuration file '\(config)'") }
            let configuration: NodeConfiguration
            do {
                configuration = try NodeConfiguration.parse(text, file: config)
                try configuration.validate()
            } catch {
                throw ValidationError(error.message)
            }
            guard !configuration.nodes.isEmpty else { throw ValidationError("\(config) declares no `node` lines") }
            let tls = try TLSExchange.context(for: configuration)
            try ProcessControl.makeDirectory(dir)
            let configPath = ProcessControl.absolute(config)
            let executable = ProcessControl.currentExecutable()
            for node in configuration.nodes {
                let pidFile = "\(dir)/\(node.name).pid"
                if let pid = ProcessControl.readPID(pidFile), kill(pid, 0) == 0 {
                    print("node \(node.name) already running (pid \(pid))")
                    continue
                }
                let pid = try ProcessControl.spawnDetached(
                    executable, ["serve", "--config", configPath, "--node", node.name], log: "\(dir)/\(node.name).log")
                try ProcessControl.writeFile(pidFile, "\(pid)\n")
            }
            for node in configuration.nodes {
                let deadline = ProcessControl.monotonicSeconds() + Double(wait)
                while !ProcessControl.answersPing(host: node.host, port: node.port, tls: tls) {
                    if let pid = ProcessControl.readPID("\(dir)/\(node.name).pid"), kill(pid, 0) != 0 {
                        throw ValidationError("node \(node.name) exited; see \(dir)/\(node.name).log")
                    }
                    guard ProcessControl.monotonicSeconds() < deadline else {
                        throw ValidationError("node \(node.name) does not answer on \(node.host):\(node.port); see \(dir)/\(node.name).log")
                    }
                    usleep(50_000)
                }
                print("node \(node.name) up on \(node.host):\(node.port) (bus \(node.busPort), log \(dir)/\(node.name).log)")
            }
            // Ready once every node has its bus links to every peer.
            if configuration.isClustered {
                let deadline = ProcessControl.monotonicSeconds() + Double(wait)
                for node in configuration.nodes {
                    while !(ProcessControl.ask(host: node.host, port: node.port, "CLUSTER INFO", tls: tls)?.contains("cluster_state:ok") ?? false) {
                        guard ProcessControl.monotonicSeconds() < deadline else {
                            throw ValidationError("node \(node.name) has not reached every peer; see \(dir)/\(node.name).log")
                        }
                        usleep(50_000)
                    }
                }
                print("cluster '\(configuration.clusterName)' ready: \(configuration.nodes.count) nodes, N=\(configuration.replicas) R=\(configuration.readQuorum) W=\(configuration.writeQuorum)")
            }
        }
    }

    struct Down: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop the nodes that `cluster up` started, gracefully (SIGTERM).")

        @Option(help: "Where `cluster up` put its pid files.")
        var dir = "run"

        @Option(help: "Seconds to wait before a node is killed.")
        var wait = 10

        func run() throws {
            let files = ProcessControl.list(dir).filter { $0.hasSuffix(".pid") }.sorted()
            var stopped = 0
            for file in files {
                let name = String(file.dropLast(4))
                guard let pid = ProcessControl.readPID("\(dir)/\(file)") else { continue }
                if kill(pid, 0) == 0 {
                    kill(pid, SIGTERM)
                    let deadline = ProcessControl.monotonicSeconds() + Double(wait)
                    while kill(pid, 0) == 0 && ProcessControl.monotonicSeconds() < deadline { usleep(50_000) }
                    if kill(pid, 0) == 0 {
                        kill(pid, SIGKILL)
                        print("node \(name) (pid \(pid)) did not stop in \(wait) s: killed")
                    } else {
                        print("node \(name) stopped")
                    }
                    stopped += 1
                }
                unlink("\(dir)/\(file)")
            }
            if stopped == 0 { print("no running nodes in \(dir)") }
        }
    }
}

/// Small process and file helpers for `cluster up` and `cluster down`, on POSIX calls.
enum ProcessControl {
    static func currentExecutable() -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        if count > 0 { return String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self) }
        return CommandLine.arguments[0]
    }

    static func absolute(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        var buffer = [CChar](repeating: 0, count: 4096)
        guard getcwd(&buffer, buffer.count) != nil else { return path }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) + "/" + path
    }

    static func makeDirectory(_ path: String) throws {
        if mkdir(path, 0o755) != 0 && errno != EEXIST {
            throw ValidationError("cannot create directory '\(path)': \(String(cString: strerror(errno)))")
        }
    }

    static func writeFile(_ path: String, _ text: String) throws {
        guard let file = fopen(path, "w") else { throw ValidationError("cannot write '\(path)'") }
        fputs(text, file)
        fclose(file)
    }

    static func readPID(_ path: String) -> pid_t? {
        guard let text = Serve.readFile(path) else { return nil }
        return pid_t(text.split(separator: "\n").first.map(String.init) ?? "")
    }

    static func list(_ directory: String) -> [String] {
        guard let handle = opendir(directory) else { return [] }
        defer { closedir(handle) }
        var names: [String] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Starts `executable` in its own session with output appended to `log`; returns its pid.
    static func spawnDetached(_ executable: String, _ arguments: [String], log: String) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // POSIX_SPAWN_SETSID (glibc 2.26+; the header hides it without _GNU_SOURCE): the node
        // gets its own session, so it outlives this command and a Ctrl-C in its terminal.
        posix_spawnattr_setflags(&attributes, 0x80)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let status = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard status == 0 else { throw ValidationError("cannot start \(executable): \(String(cString: strerror(status)))") }
        return pid
    }

    static func monotonicSeconds() -> Double {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
    }

    /// True if something on host:port answers `PING` with `+PONG` (or asks for AUTH).
    static func answersPing(host: String, port: Int, tls: NIOSSLContext? = nil) -> Bool {
        guard let reply = ask(host: host, port: port, "PING", tls: tls) else { return false }
        return reply.hasPrefix("+PONG") || reply.hasPrefix("-NOAUTH")
    }

    /// Sends a command (after AUTH when a password is given) and returns a bulk or simple
    /// string reply, or nil if the node does not answer or answers with an error.
    static func command(host: String, port: Int, _ words: [String], password: String?, tls: NIOSSLContext? = nil) -> String? {
        var request = ""
        if let password { request += "*2\r\n$4\r\nAUTH\r\n$\(password.utf8.count)\r\n\(password)\r\n" }
        request += "*\(words.count)\r\n" + words.map { "$\($0.utf8.count)\r\n\($0)\r\n" }.joined()
        guard var reply = exchange(host: host, port: port, request, tls: tls, until: { bytes in
            // Complete once the last reply (a bulk string here) has all its bytes.
            let text = String(decoding: bytes, as: UTF8.self)
            let replies = password == nil ? text : afterFirstLine(text)
            guard let header = replies.split(separator: "\r\n", maxSplits: 1).first else { return false }
            if header.hasPrefix("$"), let length = Int(header.dropFirst()) {
                return replies.utf8.count >= header.utf8.count + 2 + max(0, length) + 2
            }
            return replies.contains("\r\n")
        }) else { return nil }
        if password != nil { reply = afterFirstLine(reply) }
        guard let first = reply.utf8.first, first == UInt8(ascii: "$") || first == UInt8(ascii: "+") else { return nil }
        let body = afterFirstLine(reply)
        if first == UInt8(ascii: "+") {
            return String(decoding: reply.utf8.dropFirst().prefix { $0 != 13 }, as: UTF8.self)
        }
        return String(decoding: body.utf8.dropLast(2), as: UTF8.self)
    }

    /// The text after the first CRLF (working on bytes: "\r\n" is a single Character).
    static func afterFirstLine(_ text: String) -> String {
        guard let newline = text.utf8.firstIndex(of: 10) else { return "" }
        return String(decoding: text.utf8[text.utf8.index(after: newline)...], as: UTF8.self)
    }

    static func exchange(host: String, port: Int, _ request: String, tls: NIOSSLContext? = nil, until complete: ([UInt8]) -> Bool) -> String? {
        if let tls { return TLSExchange.exchange(host: host, port: port, request, context: tls, until: complete) }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &result) == 0, let info = result else { return nil }
        defer { freeaddrinfo(result) }
        let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        guard connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0,
            write(fd, request, request.utf8.count) == request.utf8.count
        else { return nil }
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while !complete(received) {
            let count = read(fd, &chunk, chunk.count)
            guard count > 0 else { return nil }
            received += chunk.prefix(count)
        }
        return String(decoding: received, as: UTF8.self)
    }

    /// Sends one inline command and returns what the first read brings back.
    static func ask(host: String, port: Int, _ command: String, tls: NIOSSLContext? = nil) -> String? {
        exchange(host: host, port: port, command + "\r\n", tls: tls) { !$0.isEmpty }
    }
}
