import CacheStore
import NIOCore
import RESP

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The Redis version whose command behaviour ringcache follows; clients read it from
/// HELLO and INFO to decide which features to use.
let compatibleRedisVersion = "7.0.15"
public let ringcacheVersion = "0.1.0"

extension CommandProcessor {
    func ping(_ args: RESPArguments, _ session: Session, _ out: inout ByteBuffer) {
        if args.count > 2 {
            out.writeRESPError("ERR wrong number of arguments for 'ping' command")
        } else if args.count == 2 {
            out.writeRESPBulk(args[1])
        } else {
            out.writeRESPRaw("+PONG\r\n")
        }
    }

    func hello(_ args: RESPArguments, _ session: inout Session, _ out: inout ByteBuffer) {
        var protocolVersion = session.resp3 ? 3 : 2
        var i = 1
        if args.count > 1 {
            guard let version = args[1].asInteger else {
                out.writeRESPError("ERR Protocol version is not an integer or out of range")
                return
            }
            guard version == 2 || version == 3 else {
                out.writeRESPError("NOPROTO unsupported protocol version")
                return
            }
            protocolVersion = version
            i = 2
        }
        var user: UnsafeRawBufferPointer?
        var password: UnsafeRawBufferPointer?
        var name: UnsafeRawBufferPointer?
        while i < args.count {
            if args[i].equalsIgnoringCase("auth") && i + 2 < args.count {
                user = args[i + 1]
                password = args[i + 2]
                i += 3
            } else if args[i].equalsIgnoringCase("setname") && i + 1 < args.count {
                name = args[i + 1]
                i += 2
            } else {
                out.writeRESPError("ERR Syntax error in HELLO option '\(args[i].asString)'")
                return
            }
        }
        if let user, let password {
            guard authenticate(user: user, password: password) else {
                out.writeRESPError("WRONGPASS invalid username-password pair or user is disabled.")
                return
            }
            session.authenticated = true
        }
        guard session.authenticated else {
            out.writeRESPError("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time")
            return
        }
        if let name {
            guard setClientName(name, &session, &out) else { return }
        }
        session.resp3 = protocolVersion == 3
        session.client.details.withLock { $0.resp = protocolVersion }
        let resp3 = session.resp3
        out.writeRESPMapHeader(7, resp3: resp3)
        out.writeRESPBulk("server")
        out.writeRESPBulk("redis")
        out.writeRESPBulk("version")
        out.writeRESPBulk(compatibleRedisVersion)
        out.writeRESPBulk("proto")
        out.writeRESPInteger(protocolVersion)
        out.writeRESPBulk("id")
        out.writeRESPInteger(session.client.id)
        out.writeRESPBulk("mode")
        out.writeRESPBulk("standalone")
        out.writeRESPBulk("role")
        out.writeRESPBulk("master")
        out.writeRESPBulk("modules")
        out.writeRESPArrayHeader(0)
    }

    func auth(_ args: RESPArguments, _ session: inout Session, _ out: inout ByteBuffer) {
        guard args.count <= 3 else {
            out.writeSyntaxError()
            return
        }
        if args.count == 2 && !node.passwordRequired.load(ordering: .relaxed) {
            out.writeRESPError("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
            return
        }
        let user = args.count == 3 ? args[1] : nil
        if authenticate(user: user, password: args[args.count - 1]) {
            session.authenticated = true
            out.writeOK()
        } else {
            out.writeRESPError("WRONGPASS invalid username-password pair or user is disabled.")
        }
    }

    /// The only user is `default`; without `requirepass` it takes any password, as in Redis.
    private func authenticate(user: UnsafeRawBufferPointer?, password: UnsafeRawBufferPointer) -> Bool {
        if let user, !user.equalsIgnoringCase("default") { return false }
        guard node.passwordRequired.load(ordering: .relaxed) else { return true }
        return node.checkPassword(password)
    }

    func select(_ args: RESPArguments, _ out: inout ByteBuffer) {
        guard let index = args[1].asInteger else {
            out.writeNotInteger()
            return
        }
        if index == 0 { out.writeOK() } else { out.writeRESPError("ERR DB index is out of range") }
    }

    private func setClientName(_ name: UnsafeRawBufferPointer, _ session: inout Session, _ out: inout ByteBuffer) -> Bool {
        for byte in name where byte < 0x21 || byte > 0x7E {
            out.writeRESPError("ERR Client names cannot contain spaces, newlines or special characters.")
            return false
        }
        session.clientName = Array(name)
        session.client.details.withLock { $0.name = Array(name) }
        return true
    }

    func client(_ args: RESPArguments, _ session: inout Session, _ out: inout ByteBuffer, _ now: Int64) {
        let sub = args[1]
        if sub.equalsIgnoringCase("setname") && args.count == 3 {
            if setClientName(args[2], &session, &out) { out.writeOK() }
        } else if sub.equalsIgnoringCase("getname") && args.count == 2 {
            if session.clientName.isEmpty {
                out.writeRESPNull(resp3: session.resp3)
            } else {
                session.clientName.withUnsafeBytes { out.writeRESPBulk($0) }
            }
        } else if sub.equalsIgnoringCase("id") && args.count == 2 {
            out.writeRESPInteger(session.client.id)
        } else if sub.equalsIgnoringCase("list") {
            let lines = node.clients.all.map { $0.describe(now: now) + "\n" }.joined()
            out.writeRESPVerbatim(lines, resp3: session.resp3)
        } else if sub.equalsIgnoringCase("info") && args.count == 2 {
            out.writeRESPVerbatim(session.client.describe(now: now) + "\n", resp3: session.resp3)
        } else if sub.equalsIgnoringCase("setinfo") && args.count == 4 {
            let value = args[3].asString
            if args[2].equalsIgnoringCase("lib-name") {
                session.client.details.withLock { $0.libName = value }
                out.writeOK()
            } else if args[2].equalsIgnoringCase("lib-ver") {
                session.client.details.withLock { $0.libVersion = value }
                out.writeOK()
            } else {
                out.writeRESPError("ERR Unrecognized option '\(args[2].asString)'")
            }
        } else if sub.equalsIgnoringCase("help") {
            let lines = [
                "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GETNAME", "    Return the name of the current connection.",
                "ID", "    Return the ID of the current connection.",
                "INFO", "    Return information about the current client connection.",
                "LIST", "    Return information about client connections.",
                "SETNAME <name>", "    Assign the name <name> to the current connection.",
                "SETINFO <LIB-NAME|LIB-VER> <value>", "    Set client meta attributes.",
            ]
            out.writeRESPArrayHeader(lines.count)
            for line in lines { out.writeRESPSimpleString(line) }
        } else if ["setname", "getname", "id", "list", "info", "setinfo"].contains(sub.asString.lowercased()) {
            out.writeRESPError("ERR wrong number of arguments for 'client|\(sub.asString.lowercased())' command")
        } else {
            out.writeRESPError("ERR unknown subcommand '\(Self.printable(sub, limit: 128))'. Try CLIENT HELP.")
        }
    }

    func time(_ session: Session, _ out: inout ByteBuffer, _ now: Int64) {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        out.writeRESPArrayHeader(2)
        out.writeRESPBulk(String(spec.tv_sec))
        out.writeRESPBulk(String(spec.tv_nsec / 1000))
    }

    func config(_ args: RESPArguments, _ session: Session, _ out: inout ByteBuffer) {
        let sub = args[1]
        if sub.equalsIgnoringCase("get") && args.count >= 3 {
            let values = node.currentConfiguration.directiveValues()
            var matches: [(String, String)] = []
            for i in 2..<args.count {
                let pattern = Array(args[i].asString.lowercased().utf8)
                for (name, value) in values where GlobPattern.matches(pattern, Array(name.utf8)) {
                    if !matches.contains(where: { $0.0 == name }) { matches.append((name, value)) }
                }
            }
            out.writeRESPMapHeader(matches.count, resp3: session.resp3)
            for (name, value) in matches {
                out.writeRESPBulk(name)
                out.writeRESPBulk(value)
            }
        } else if sub.equalsIgnoringCase("set") && args.count >= 4 && args.count % 2 == 0 {
            var pairs: [(String, String)] = []
            for i in stride(from: 2, to: args.count, by: 2) { pairs.append((args[i].asString, args[i + 1].asString)) }
            do {
                try node.reconfigure(pairs)
                out.writeOK()
            } catch {
                out.writeRESPError("ERR \(error.message)")
            }
        } else if sub.equalsIgnoringCase("resetstat") && args.count == 2 {
            out.writeOK()
        } else if sub.equalsIgnoringCase("rewrite") && args.count == 2 {
            out.writeRESPError("ERR CONFIG REWRITE is not supported: edit cluster.conf")
        } else if ["get", "set", "resetstat", "rewrite"].contains(sub.asString.lowercased()) {
            out.writeRESPError("ERR wrong number of arguments for 'config|\(sub.asString.lowercased())' command")
        } else {
            out.writeRESPError("ERR unknown subcommand '\(Self.printable(sub, limit: 128))'. Try CONFIG HELP.")
        }
    }

    // MARK: COMMAND

    func command(_ args: RESPArguments, _ session: Session, _ out: inout ByteBuffer) {
        let specs = CommandTable.all
        if args.count == 1 {
            out.writeRESPArrayHeader(specs.count)
            for spec in specs { writeInfo(spec, &out, session) }
            return
        }
        let sub = args[1]
        if sub.equalsIgnoringCase("count") && args.count == 2 {
            out.writeRESPInteger(specs.count)
        } else if sub.equalsIgnoringCase("list") {
            out.writeRESPArrayHeader(specs.count)
            for spec in specs { out.writeRESPBulk(spec.text) }
        } else if sub.equalsIgnoringCase("info") {
            let wanted = args.count == 2 ? specs.map { Optional($0) } : (2..<args.count).map { CommandTable.lookup(args[$0])?.spec }
            out.writeRESPArrayHeader(wanted.count)
            for spec in wanted {
                if let spec { writeInfo(spec, &out, session) } else { out.writeRESPNullArray(resp3: session.resp3) }
            }
        } else if sub.equalsIgnoringCase("docs") {
            let wanted = args.count == 2 ? specs : (2..<args.count).compactMap { CommandTable.lookup(args[$0])?.spec }
            out.writeRESPMapHeader(wanted.count, resp3: session.resp3)
            for spec in wanted { writeDocs(spec, &out, session) }
        } else {
            out.writeRESPError("ERR unknown subcommand '\(Self.printable(sub, limit: 128))'. Try COMMAND HELP.")
        }
    }

    private func writeInfo(_ spec: CommandSpec, _ out: inout ByteBuffer, _ session: Session) {
        out.writeRESPArrayHeader(10)
        out.writeRESPBulk(spec.text)
        out.writeRESPInteger(spec.arity)
        let flags = spec.flags.names
        out.writeRESPSetHeader(flags.count, resp3: session.resp3)
        for flag in flags { out.writeRESPSimpleString(flag) }
        out.writeRESPInteger(spec.firstKey)
        out.writeRESPInteger(spec.lastKey)
        out.writeRESPInteger(spec.keyStep)
        out.writeRESPSetHeader(1, resp3: session.resp3)
        out.writeRESPSimpleString("@\(spec.group)")
        out.writeRESPArrayHeader(0)
        out.writeRESPArrayHeader(0)
        out.writeRESPArrayHeader(0)
    }

    private func writeDocs(_ spec: CommandSpec, _ out: inout ByteBuffer, _ session: Session) {
        let resp3 = session.resp3
        out.writeRESPBulk(spec.text)
        out.writeRESPMapHeader(4, resp3: resp3)
        out.writeRESPBulk("summary")
        out.writeRESPBulk(spec.summary)
        out.writeRESPBulk("since")
        out.writeRESPBulk(spec.since)
        out.writeRESPBulk("group")
        out.writeRESPBulk(spec.group)
        out.writeRESPBulk("arguments")
        out.writeRESPArrayHeader(spec.syntax.count)
        for argument in spec.syntax { writeArgumentDoc(argument, &out, resp3) }
    }

    /// One entry of COMMAND DOCS `arguments`, from the compact `?*name:type` syntax.
    private func writeArgumentDoc(_ syntax: String, _ out: inout ByteBuffer, _ resp3: Bool) {
        var text = Substring(syntax)
        var flags: [String] = []
        while let first = text.first, first == "?" || first == "*" {
            flags.append(first == "?" ? "optional" : "multiple")
            text = text.dropFirst()
        }
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        let name = parts[0]
        let kind = parts.count > 1 ? parts[1] : "string"
        let basicTypes: Set<String> = ["key", "string", "integer", "double", "pattern", "unix-time"]
        let isToken = kind == "token"
        let choices = !basicTypes.contains(kind) && !isToken ? kind.split(separator: "|").map(String.init) : []
        let fieldCount = 2 + (flags.isEmpty ? 0 : 1) + (isToken ? 1 : 0) + (choices.isEmpty ? 0 : 1)
        out.writeRESPMapHeader(fieldCount, resp3: resp3)
        out.writeRESPBulk("name")
        out.writeRESPBulk(name.lowercased())
        out.writeRESPBulk("type")
        out.writeRESPBulk(isToken ? "pure-token" : (choices.isEmpty ? kind : "oneof"))
        if isToken {
            out.writeRESPBulk("token")
            out.writeRESPBulk(name)
        }
        if !flags.isEmpty {
            out.writeRESPBulk("flags")
            out.writeRESPArrayHeader(flags.count)
            for flag in flags { out.writeRESPSimpleString(flag) }
        }
        if !choices.isEmpty {
            out.writeRESPBulk("arguments")
            out.writeRESPArrayHeader(choices.count)
            for choice in choices {
                let words = choice.split(separator: " ").map(String.init)
                let hasValue = words.count > 1
                out.writeRESPMapHeader(3, resp3: resp3)
                out.writeRESPBulk("name")
                out.writeRESPBulk(hasValue ? words[1] : words[0].lowercased())
                out.writeRESPBulk("type")
                out.writeRESPBulk(hasValue ? "integer" : "pure-token")
                out.writeRESPBulk("token")
                out.writeRESPBulk(words[0])
            }
        }
    }
}
