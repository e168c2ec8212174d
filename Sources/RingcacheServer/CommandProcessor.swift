import CacheStore
import NIOCore
import Persistence
import RESP

/// Per-connection state that commands read and change (HELLO, AUTH, CLIENT SETNAME, QUIT).
struct Session {
    var resp3 = false
    var authenticated: Bool
    /// Set by QUIT and protocol errors: close once the pending replies are written.
    var closeAfterWrite = false
    let client: ClientInfo
    var lastCommand: CommandSpec.Name?
    /// Commands run since the last read batch ended, added to the node's total then.
    var commandsProcessed = 0
    var clientName: [UInt8] = []
    /// CONSISTENCY READ/WRITE for this connection.
    var readConsistency = ConsistencyLevel.configured
    var writeConsistency = ConsistencyLevel.configured
    /// A reply the connection's later requests must wait for (a read through to disk), so
    /// that they run after it.
    var barrier: PendingReply?
}

/// Runs parsed requests against a node and writes each reply into the outbound buffer.
///
/// Replies follow Redis's types and error wording, so clients map them as they would
/// Redis's. Nothing here touches a socket: the handler owns those. A class, so that the
/// handler hands it to each read batch with one retain rather than a copy of every field.
final class CommandProcessor {
    let node: NodeState
    /// The cluster this node belongs to, or nil for a standalone node.
    let cluster: ClusterState?
    /// Runs key commands across the cluster; nil for a standalone node.
    let router: ClusterRouter?
    var store: CacheStore { node.store }
    /// For replies that wait on the durable tier: the connection's event loop, and what to
    /// call once such a reply is ready (set by the handler on a node with persistence).
    var loop: (any EventLoop)?
    var completed: (@Sendable () -> Void)?

    static let emptyBuffer = ByteBuffer()

    init(node: NodeState, cluster: ClusterState? = nil, router: ClusterRouter? = nil) {
        self.node = node
        self.cluster = cluster
        self.router = router
    }

    /// Executes one request. `now` is the batch's wall-clock time in Unix milliseconds.
    ///
    /// A command that answers later (one that goes through the cluster) calls `deferReply`
    /// for its place in the reply order and writes nothing to `out`.
    func execute(
        _ args: RESPArguments, session: inout Session, out: inout ByteBuffer, now: Int64,
        deferReply: () -> PendingReply = { preconditionFailure("no asynchronous replies on this connection") }
    ) {
        guard let command = CommandTable.lookup(args[0]) else {
            writeUnknownCommand(args, out: &out)
            return
        }
        guard command.arityMatches(args.count) else {
            out.writeRESPError("ERR wrong number of arguments for '\(command.spec.text)' command")
            return
        }
        if !session.authenticated && !command.flags.contains(.noAuth) {
            out.writeRESPError("NOAUTH Authentication required.")
            return
        }
        session.lastCommand = command.name
        session.commandsProcessed += 1
        // A node whose disk fails takes no write, alone or in a cluster: it could not keep it.
        if command.flags.contains(.write), let reason = node.durable?.failureReason {
            out.writeRESPError(DurableTier.misconf(reason))
            return
        }
        if let durable = node.durable, router == nil {
            // Memory may lack rows the disk holds while loading, after a partial load or once
            // anything was evicted; then a key missing from memory is looked up on disk first
            // (except by writes that replace it whole).
            if durable.mayHoldMore || store.evictedKeys > 0, !Self.replacesWhole(command.name, args.count),
               readThrough(command, args, durable, &session, now: now, deferReply: deferReply) {
                return
            }
        }
        if command.flags.contains(.denyOOM) && !store.makeRoom(now: now) {
            out.writeRESPError("OOM command not allowed when used memory > 'maxmemory'.")
            return
        }
        if let durable = node.durable, durable.fsync == .always, router == nil, command.flags.contains(.write) {
            acknowledgeWhenDurable(command, args, durable, &session, out: &out, now: now, deferReply: deferReply)
            return
        }
        if let router {
            if ClusterRouter.routes(command.name) {
                let reply = deferReply()
                // A copy of a shared empty buffer: no allocation unless an error is written.
                var errors = Self.emptyBuffer
                if !router.start(command.name, args, session: session, now: now, reply: reply, errors: &errors) {
                    reply.buffer = errors
                    router.completed()
                }
                return
            }
            if ClusterRouter.refuses(command.name) {
                out.writeRESPError("ERR '\(command.spec.text)' is not supported in cluster mode yet")
                return
            }
        }
        dispatch(command, args, &session, &out, now)
    }

    /// Writes that set their keys whatever they held, so need no read-through first.
    static func replacesWhole(_ name: CommandSpec.Name, _ count: Int) -> Bool {
        switch name {
        case .set: count == 3
        case .setex, .psetex, .mset: true
        default: false
        }
    }

    /// Runs a command on this node's store.
    func dispatch(_ command: CommandTable.Entry, _ args: RESPArguments, _ session: inout Session, _ out: inout ByteBuffer, _ now: Int64) {
        switch command.name {
        case .get: get(args, session, &out, now)
        case .set: set(args, session, &out, now)
        case .ping: ping(args, session, &out)
        case .echo: out.writeRESPBulk(args[1])
        case .hello: hello(args, &session, &out)
        case .auth: auth(args, &session, &out)
        case .quit:
            out.writeRESPRaw("+OK\r\n")
            session.closeAfterWrite = true
        case .select: select(args, &out)
        case .client: client(args, &session, &out, now)
        case .command: self.command(args, session, &out)
        case .info: info(args, session, &out, now)
        case .config: config(args, session, &out)
        case .time: time(session, &out, now)
        case .dbsize: out.writeRESPInteger(store.count)
        case .flushall, .flushdb: flush(args, &out)
        case .setnx: setnx(args, &out, now)
        case .setex: setex(args, &out, now, unit: 1000, name: "setex")
        case .psetex: setex(args, &out, now, unit: 1, name: "psetex")
        case .getset: getset(args, session, &out, now)
        case .getdel: getdel(args, session, &out, now)
        case .getex: getex(args, session, &out, now)
        case .mget: mget(args, session, &out, now)
        case .mset: mset(args, &out, now, onlyIfNoneExist: false)
        case .msetnx: mset(args, &out, now, onlyIfNoneExist: true)
        case .incr: incrementBy(args[1], 1, &out, now)
        case .decr: incrementBy(args[1], -1, &out, now)
        case .incrby, .decrby: incrby(args, negate: command.name == .decrby, &out, now)
        case .incrbyfloat: incrbyfloat(args, session, &out, now)
        case .append: append(args, &out, now)
        case .strlen: strlen(args, &out, now)
        case .getrange, .substr: getrange(args, &out, now)
        case .setrange: setrange(args, &out, now)
        case .del, .unlink: delete(args, &out, now)
        case .exists: exists(args, &out, now)
        case .expire: expire(args, &out, now, unit: 1000, absolute: false, name: "expire")
        case .pexpire: expire(args, &out, now, unit: 1, absolute: false, name: "pexpire")
        case .expireat: expire(args, &out, now, unit: 1000, absolute: true, name: "expireat")
        case .pexpireat: expire(args, &out, now, unit: 1, absolute: true, name: "pexpireat")
        case .expiretime: expiryInfo(args, &out, now) { expiry, _ in (expiry + 500) / 1000 }
        case .pexpiretime: expiryInfo(args, &out, now) { expiry, _ in expiry }
        case .ttl: expiryInfo(args, &out, now) { expiry, now in (expiry - now + 500) / 1000 }
        case .pttl: expiryInfo(args, &out, now) { expiry, now in expiry - now }
        case .persist: persist(args, &out, now)
        case .type: type(args, &out, now)
        case .keys: keys(args, &out, now)
        case .scan: scan(args, session, &out, now)
        case .randomkey: randomkey(session, &out, now)
        case .vget: vget(args, session, &out, now)
        case .vset: vset(args, &out, now)
        case .consistency: consistency(args, &session, &out)
        case .cluster: clusterCommand(args, session, &out)
        case .rename: rename(args, &out, now, onlyIfAbsent: false)
        case .renamenx: rename(args, &out, now, onlyIfAbsent: true)
        }
    }

    private func writeUnknownCommand(_ args: RESPArguments, out: inout ByteBuffer) {
        // As Redis: the quoted arguments share a budget of 128 characters.
        var quoted = ""
        var i = 1
        while i < args.count && quoted.utf8.count < 128 {
            quoted += "'\(Self.printable(args[i], limit: 128 - quoted.utf8.count))' "
            i += 1
        }
        let message = "ERR unknown command '\(Self.printable(args[0], limit: 128))', with args beginning with: \(quoted)"
        out.writeRESPError(message)
    }

    /// Bytes as text for an error message: at most `limit` bytes, control bytes replaced.
    static func printable(_ bytes: UnsafeRawBufferPointer, limit: Int) -> String {
        let clipped = UnsafeRawBufferPointer(rebasing: bytes.prefix(limit))
        return String(decoding: clipped.map { $0 < 0x20 || $0 == 0x7F ? UInt8(ascii: " ") : $0 }, as: UTF8.self)
    }
}

// MARK: - Argument helpers

extension UnsafeRawBufferPointer {
    /// Compares with an ASCII word in any letter case; `lowercase` must be lowercase.
    @inline(__always)
    func equalsIgnoringCase(_ lowercase: StaticString) -> Bool {
        guard count == lowercase.utf8CodeUnitCount else { return false }
        let expected = lowercase.utf8Start
        for i in 0..<count {
            var c = self[i]
            if c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z") { c |= 0x20 }
            if c != expected[i] { return false }
        }
        return true
    }

    var asString: String { String(decoding: self, as: UTF8.self) }

    /// A strict decimal integer, as Redis's `string2ll`.
    var asInteger: Int? { RESPInteger.parse(self) }
}

extension ByteBuffer {
    mutating func writeNotInteger() { writeRESPError("ERR value is not an integer or out of range") }
    mutating func writeSyntaxError() { writeRESPError("ERR syntax error") }
    mutating func writeOK() { writeRESPRaw("+OK\r\n") }
}

/// The largest expiry a record holds (48 bits of milliseconds, past the year 10000).
let maximumExpiry: Int64 = (1 << 48) - 1
