import CacheStore
import ClusterCore
import ClusterProtocol
import NIOCore
import RESP

/// A reply that a cluster command gives later: its place in the connection's reply order is
/// taken when the command starts, and it is written once the quorum has answered. Common
/// replies are held as what they say, not as bytes: the quorum hot path fills them without
/// a buffer of their own.
final class PendingReply {
    enum Content {
        case waiting
        case bytes(ByteBuffer)
        case ok
        case integer(Int)
        /// Null (RESP3's `_`, or RESP2's null bulk string).
        case null(resp3: Bool)
        case bulk([UInt8])
        /// A bulk string of ``value`` (storage the reply keeps, and reuses when it is reused).
        case value
        /// A simple string such as `+string`.
        case simple(StaticString)
    }

    var content: Content
    var value: [UInt8] = []

    init(buffer: ByteBuffer? = nil) { content = buffer.map { .bytes($0) } ?? .waiting }

    /// The reply as bytes (set: the reply is ready).
    var buffer: ByteBuffer? {
        get {
            guard case .bytes(let bytes) = content else { return nil }
            return bytes
        }
        set { content = newValue.map { .bytes($0) } ?? .waiting }
    }

    var isReady: Bool {
        if case .waiting = content { return false }
        return true
    }

    /// Appends the reply to `out`; false while it is not ready.
    func write(into out: inout ByteBuffer) -> Bool {
        switch content {
        case .waiting: return false
        case .bytes(var bytes): out.writeBuffer(&bytes)
        case .ok: out.writeOK()
        case .integer(let n): out.writeRESPInteger(n)
        case .null(let resp3): out.writeRESPNull(resp3: resp3)
        case .bulk(let bytes): bytes.withUnsafeBytes { out.writeRESPBulk($0) }
        case .value: value.withUnsafeBytes { out.writeRESPBulk($0) }
        case .simple(let text): out.writeRESPRaw(text)
        }
        return true
    }
}

/// A connection's read and write consistency (CONSISTENCY), as a level or a count.
enum ConsistencyLevel: Equatable, Sendable, CustomStringConvertible {
    case configured
    case one
    case quorum
    case all
    case count(Int)

    /// Replicas to wait for, out of `replicas`, with `configured` as the default.
    func required(of replicas: Int, configured: Int) -> Int {
        switch self {
        case .configured: return min(configured, replicas)
        case .one: return 1
        case .quorum: return replicas / 2 + 1
        case .all: return replicas
        case .count(let n): return min(n, replicas)
        }
    }

    init?(_ bytes: UnsafeRawBufferPointer) {
        if bytes.equalsIgnoringCase("default") { self = .configured }
        else if bytes.equalsIgnoringCase("one") { self = .one }
        else if bytes.equalsIgnoringCase("quorum") { self = .quorum }
        else if bytes.equalsIgnoringCase("all") { self = .all }
        else if let n = bytes.asInteger, n >= 1 { self = .count(n) }
        else { return nil }
    }

    var description: String {
        switch self {
        case .configured: return "DEFAULT"
        case .one: return "ONE"
        case .quorum: return "QUORUM"
        case .all: return "ALL"
        case .count(let n): return String(n)
        }
    }
}

/// Runs the commands that touch keys across the cluster: single-key reads and writes go to
/// the key's replicas through the ``Coordinator``, multi-key commands fan out per key, and
/// keyspace-wide commands ask every node, each counting only the keys it is the first live
/// replica of. Confined to the connection's event loop.
struct ClusterRouter {
    let coordinator: Coordinator
    /// Called on the event loop when a pending reply has been filled.
    let completed: () -> Void

    var cluster: ClusterState { coordinator.cluster }

    static let allocator = ByteBufferAllocator()

    /// Commands whose keys live on other nodes and that the cluster runs.
    static func routes(_ name: CommandSpec.Name) -> Bool {
        switch name {
        case .get, .set, .setex, .psetex, .mget, .mset, .msetnx, .del, .unlink, .exists, .ttl, .pttl, .strlen, .type,
            .dbsize, .keys, .scan, .randomkey, .rename, .renamenx, .flushall, .flushdb, .vget, .vset:
            return true
        default:
            return isReadModifyWrite(name)
        }
    }

    /// Commands that run at the key's first healthy replica (see ``Coordinator/readModifyWrite``).
    static func isReadModifyWrite(_ name: CommandSpec.Name) -> Bool {
        switch name {
        case .setnx, .getset, .getdel, .getex, .incr, .decr, .incrby, .decrby, .incrbyfloat, .append, .getrange, .substr,
            .setrange, .expire, .pexpire, .expireat, .pexpireat, .expiretime, .pexpiretime, .persist:
            return true
        default:
            return false
        }
    }

    /// Commands that touch keys but are not coordinated yet; refused rather than run on one
    /// node's copy.
    static func refuses(_ name: CommandSpec.Name) -> Bool {
        switch name {
        default:
            return false
        }
    }

    private func readQuorum(_ session: Session) -> Int {
        session.readConsistency.required(of: cluster.replicas, configured: cluster.readQuorum)
    }

    private func writeQuorum(_ session: Session) -> Int {
        session.writeConsistency.required(of: cluster.replicas, configured: cluster.writeQuorum)
    }

    private func quorums(_ session: Session) -> (read: Int, write: Int) {
        (readQuorum(session), writeQuorum(session))
    }

    /// Starts `name`; the reply goes into `reply` when it is known. Returns false when the
    /// command must run locally after all (e.g. SET with options that need a read first).
    func start(_ name: CommandSpec.Name, _ args: RESPArguments, session: Session, now: Int64, reply: PendingReply, errors: inout ByteBuffer) -> Bool {
        if startHot(name, args, session: session, now: now, reply: reply) { return true }
        let keys = (1..<args.count).map { Array(args[$0]) }
        let done = completed
        let finish: Finish = { write in
            // Room for a typical reply up front, so writing it does not grow the buffer twice.
            var buffer = Self.allocator.buffer(capacity: 128)
            write(&buffer)
            reply.buffer = buffer
            done()
        }
        if Self.isReadModifyWrite(name) || (name == .set && Self.needsRead(args)) {
            readModifyWrite(keys, args: args, session: session, now: now, finish: finish)
            return true
        }
        switch name {
        case .get, .strlen, .ttl, .pttl, .type:
            readOne(name, keys, session: session, now: now, finish: finish)
        case .exists, .mget:
            readMany(name, keys, session: session, now: now, finish: finish)
        case .set, .setex, .psetex, .mset:
            return writeValues(name, args, keys, session: session, now: now, errors: &errors, finish: finish)
        case .msetnx:
            return setAllIfNoneExists(keys, session: session, now: now, errors: &errors, finish: finish)
        case .vget:
            return readSiblings(keys, session: session, now: now, finish: finish)
        case .vset:
            return writeSibling(args, keys, session: session, now: now, errors: &errors, finish: finish)
        case .randomkey:
            randomKey(session: session, finish: finish)
        case .del, .unlink:
            delete(keys, session: session, now: now, finish: finish)
        case .dbsize, .keys:
            countOrList(name, keys, finish: finish)
        case .flushall, .flushdb:
            flushAll(finish: finish)
        case .rename, .renamenx:
            rename(keys[0], to: keys[1], onlyIfAbsent: name == .renamenx, session: session, now: now, finish: finish)
        case .scan:
            guard scan(args, errors: &errors, finish: finish) != nil else { return false }
        default:
            preconditionFailure("\(name) is not routed through the cluster")
        }
        return true
    }

    /// Writes a reply into a fresh buffer and hands it to the connection.
    typealias Finish = ((inout ByteBuffer) -> Void) -> Void

    /// GET, STRLEN, TTL, PTTL, TYPE: one quorum read of the newest version.
    private func readOne(_ name: CommandSpec.Name, _ keys: [[UInt8]], session: Session, now: Int64, finish: @escaping Finish) {
        let resp3 = session.resp3
        coordinator.readWinner(keys[0], required: readQuorum(session), now: now) { result in
            finish { out in
                switch result {
                case .failure(let error): out.writeRESPError(error.message)
                case .success(let value):
                    Self.writeRead(name, value?.live(at: wallClockMillis()), resp3: resp3, out: &out)
                }
            }
        }
    }

    /// EXISTS, MGET: a quorum read per key, answered together.
    private func readMany(_ name: CommandSpec.Name, _ keys: [[UInt8]], session: Session, now: Int64, finish: @escaping Finish) {
        let resp3 = session.resp3
        let fanIn = FanIn<Result<VersionedValue?, NoQuorum>>(count: keys.count) { results in
            finish { out in
                if let failure = Self.firstFailure(results) { return out.writeRESPError(failure.message) }
                let now = wallClockMillis()
                let live = results.map { result -> VersionedValue? in
                    guard case .success(let value?)? = result, !value.isTombstone, value.expiry == 0 || value.expiry > now else { return nil }
                    return value
                }
                if name == .exists {
                    out.writeRESPInteger(live.filter { $0 != nil }.count)
                } else {
                    out.writeRESPArrayHeader(live.count)
                    for value in live {
                        if let bytes = value?.value { bytes.withUnsafeBytes { out.writeRESPBulk($0) } } else { out.writeRESPNull(resp3: resp3) }
                    }
                }
            }
        }
        for (index, key) in keys.enumerated() {
            coordinator.readWinner(key, required: readQuorum(session), now: now) { fanIn.answer(index, $0) }
        }
    }

    /// SET (without a read), SETEX, PSETEX, MSET: a quorum write per key. False when the
    /// arguments are wrong (the error is in `errors`).
    private func writeValues(_ name: CommandSpec.Name, _ args: RESPArguments, _ keys: [[UInt8]], session: Session, now: Int64,
                             errors: inout ByteBuffer, finish: @escaping Finish) -> Bool {
        var pairs: [(key: [UInt8], value: [UInt8], expiry: Int64)] = []
        switch name {
        case .set:
            guard let expiry = Self.plainSetExpiry(args, now: now, errors: &errors) else { return false }
            pairs = [(keys[0], keys[1], expiry)]
        case .setex, .psetex:
            guard let expiry = Self.expiry(args[2], unit: name == .setex ? 1000 : 1, absolute: false, now: now,
                                           command: name == .setex ? "setex" : "psetex", errors: &errors)
            else { return false }
            pairs = [(keys[0], keys[2], expiry)]
        default:
            guard keys.count % 2 == 0 else {
                errors.writeRESPError("ERR wrong number of arguments for 'mset' command")
                return false
            }
            pairs = stride(from: 0, to: keys.count, by: 2).map { (keys[$0], keys[$0 + 1], 0) }
        }
        let fanIn = FanIn<Result<Bool, NoQuorum>>(count: pairs.count) { results in
            finish { out in
                if let failure = Self.firstFailure(results) { out.writeRESPError(failure.message) } else { out.writeOK() }
            }
        }
        for (index, pair) in pairs.enumerated() {
            coordinator.writeValue(pair.key, pair.value, expiry: pair.expiry, required: quorums(session), now: now) { fanIn.answer(index, $0) }
        }
        return true
    }

    /// MSETNX: not atomic across nodes: every key is checked at the read quorum, then all are
    /// written.
    private func setAllIfNoneExists(_ keys: [[UInt8]], session: Session, now: Int64, errors: inout ByteBuffer, finish: @escaping Finish) -> Bool {
        guard keys.count % 2 == 0 else {
            errors.writeRESPError("ERR wrong number of arguments for 'msetnx' command")
            return false
        }
        let pairs = stride(from: 0, to: keys.count, by: 2).map { (keys[$0], keys[$0 + 1]) }
        let required = quorums(session)
        let coordinator = self.coordinator
        let reads = FanIn<Result<VersionedValue?, NoQuorum>>(count: pairs.count) { results in
            if let failure = Self.firstFailure(results) { return finish { $0.writeRESPError(failure.message) } }
            let taken = results.contains { result in
                if case .success(let value?)? = result { return !value.isTombstone }
                return false
            }
            if taken { return finish { $0.writeRESPInteger(0) } }
            let writes = FanIn<Result<Bool, NoQuorum>>(count: pairs.count) { results in
                finish { out in
                    if let failure = Self.firstFailure(results) { out.writeRESPError(failure.message) } else { out.writeRESPInteger(1) }
                }
            }
            for (index, (key, value)) in pairs.enumerated() {
                coordinator.writeValue(key, value, expiry: 0, required: required, now: wallClockMillis()) { writes.answer(index, $0) }
            }
        }
        for (index, (key, _)) in pairs.enumerated() {
            coordinator.readWinner(key, required: readQuorum(session), now: now) { reads.answer(index, $0) }
        }
        return true
    }

    /// VGET: the siblings at the read quorum (under last-write-wins, the one value).
    private func readSiblings(_ keys: [[UInt8]], session: Session, now: Int64, finish: @escaping Finish) -> Bool {
        let resp3 = session.resp3
        guard cluster.usesVectorClocks else { return startLWWVGet(keys[0], session: session, now: now, finish: finish) }
        coordinator.readSiblings(keys[0], required: readQuorum(session), now: now) { result in
            finish { out in
                switch result {
                case .failure(let error): out.writeRESPError(error.message)
                case .success(let set): Self.writeSiblings(set ?? SiblingSet(), resp3: resp3, into: &out)
                }
            }
        }
        return true
    }

    /// VSET: a sibling written under its causal context (under last-write-wins, a plain write).
    private func writeSibling(_ args: RESPArguments, _ keys: [[UInt8]], session: Session, now: Int64, errors: inout ByteBuffer,
                              finish: @escaping Finish) -> Bool {
        guard let context = VectorClock(hex: args[2]) else {
            errors.writeRESPError("ERR invalid causal context: pass the context VGET returned (at most \(VectorClock.maxEntries) entries), or an empty string")
            return false
        }
        guard let expiry = Self.vsetExpiry(args, now: now, errors: &errors) else { return false }
        let reply: (Result<Bool, NoQuorum>) -> Void = { result in
            finish { out in
                if case .failure(let error) = result { out.writeRESPError(error.message) } else { out.writeOK() }
            }
        }
        if cluster.usesVectorClocks {
            coordinator.writeSibling(keys[0], keys[2], expiry: expiry, context: context, required: writeQuorum(session), completion: reply)
        } else {
            coordinator.writeValue(keys[0], keys[2], expiry: expiry, required: quorums(session), now: now, completion: reply)
        }
        return true
    }

    /// RANDOMKEY: one random key from every member, and one of those.
    private func randomKey(session: Session, finish: @escaping Finish) {
        let resp3 = session.resp3
        coordinator.fanOut(.randomKey, local: {
            .key(cluster.node.store.randomKey(now: wallClockMillis()).map { ByteBuffer(bytes: $0) })
        }) { replies in
            let keys = replies.compactMap { reply -> ByteBuffer? in
                if case .key(let key?)? = reply { return key }
                return nil
            }
            finish { out in
                if let key = keys.randomElement() { out.writeRESPBulk(Array(buffer: key)) } else { out.writeRESPNull(resp3: resp3) }
            }
        }
    }

    /// DEL, UNLINK: a quorum write of a tombstone per key.
    private func delete(_ keys: [[UInt8]], session: Session, now: Int64, finish: @escaping Finish) {
        let fanIn = FanIn<Result<Bool, NoQuorum>>(count: keys.count) { results in
            finish { out in
                if let failure = Self.firstFailure(results) { return out.writeRESPError(failure.message) }
                out.writeRESPInteger(results.filter { if case .success(true)? = $0 { return true } else { return false } }.count)
            }
        }
        for (index, key) in keys.enumerated() {
            coordinator.writeValue(key, nil, expiry: 0, required: quorums(session), now: now) { fanIn.answer(index, $0) }
        }
    }

    /// DBSIZE, KEYS: every member counts or lists the keys it is the first live replica of.
    private func countOrList(_ name: CommandSpec.Name, _ keys: [[UInt8]], finish: @escaping Finish) {
        let down = coordinator.unreachable
        let downList = cluster.memberNames(down)
        let pattern = name == .keys ? keys[0] : []
        let request: BusRequest = name == .keys ? .keys(pattern: ByteBuffer(bytes: pattern), down: downList) : .count(down: downList)
        let cluster = self.cluster
        coordinator.fanOut(request, local: {
            let now = wallClockMillis()
            if name == .keys {
                let owned = pattern.withUnsafeBytes { cluster.ownedKeys(matching: $0, down: down, now: now) }
                return .keys(owned.map { ByteBuffer(bytes: $0) })
            }
            return .integer(cluster.countOwnedKeys(down: down, now: now))
        }) { replies in
            finish { out in
                // A member counted as up that did not answer would make the figure silently
                // short: say so instead.
                let silent = replies.indices.filter { replies[$0] == nil && !down.contains($0) }
                guard silent.isEmpty else {
                    return out.writeRESPError("NOQUORUM \(name) did not reach \(silent.map { cluster.members[$0].name }.joined(separator: ", "))")
                }
                if name == .dbsize {
                    out.writeRESPInteger(replies.reduce(0) { total, reply in
                        if case .integer(let n)? = reply { return total.addingReportingOverflow(n).partialValue }
                        return total
                    })
                } else {
                    var all: [ByteBuffer] = []
                    for case .keys(let items)? in replies { all += items }
                    out.writeRESPArrayHeader(all.count)
                    for key in all { out.writeRESPBulk(Array(buffer: key)) }
                }
            }
        }
    }

    /// FLUSHALL, FLUSHDB: every participant empties its store.
    private func flushAll(finish: @escaping Finish) {
        coordinator.fanOut(.flush, local: {
            cluster.node.store.removeAll()
            cluster.siblings.removeAll()
            return .ok
        }) { replies in
            finish { out in
                let participants = cluster.topology.participants
                let missed = replies.enumerated().filter { reply in
                    if case .ok? = reply.element { return false }
                    if !participants.contains(reply.offset) { return false }
                    return true
                }.map { cluster.members[$0.offset].name }
                if missed.isEmpty { out.writeOK() } else { out.writeRESPError("NOQUORUM flush did not reach \(missed.joined(separator: ", "))") }
            }
        }
    }

    /// The quorum hot path (``Coordinator/hotRead(_:key:required:resp3:reply:completed:now:)``):
    /// single-key reads, plain SET, SETEX, PSETEX and single-key DEL, with nothing allocated
    /// per request here. False when the command takes the general path.
    private func startHot(_ name: CommandSpec.Name, _ args: RESPArguments, session: Session, now: Int64, reply: PendingReply) -> Bool {
        let read: HotCommand
        switch name {
        case .get: read = .get
        case .strlen: read = .strlen
        case .ttl: read = .ttl
        case .pttl: read = .pttl
        case .type: read = .type
        case .set where args.count == 3:
            return coordinator.hotWrite(.set, key: args[1], value: args[2], expiry: 0, required: writeQuorum(session), reply: reply,
                                        completed: completed, now: now)
        case .setex, .psetex:
            guard args.count == 4, let amount = args[2].asInteger, amount > 0 else { return false }
            let (millis, overflow) = Int64(amount).multipliedReportingOverflow(by: name == .setex ? 1000 : 1)
            let (at, overflow2) = millis.addingReportingOverflow(now)
            guard !overflow, !overflow2 else { return false }
            return coordinator.hotWrite(.set, key: args[1], value: args[3], expiry: min(at, maximumExpiry), required: writeQuorum(session),
                                        reply: reply, completed: completed, now: now)
        case .del, .unlink:
            guard args.count == 2 else { return false }
            return coordinator.hotWrite(.del, key: args[1], value: nil, expiry: 0, required: writeQuorum(session), reply: reply,
                                        completed: completed, now: now)
        default:
            return false
        }
        guard args.count == 2 else { return false }
        return coordinator.hotRead(read, key: args[1], required: readQuorum(session), resp3: session.resp3, reply: reply,
                                   completed: completed, now: now)
    }

    /// The first failure among the answers of a fan-out (a missing answer counts as none).
    private static func firstFailure<Value>(_ results: [Result<Value, NoQuorum>?]) -> NoQuorum? {
        for case .failure(let error)? in results { return error }
        return nil
    }

    /// RENAME and RENAMENX across nodes: read the source, (for NX) check the target, write
    /// the target as a new version, then delete the source. Not atomic: a reader in between
    /// can see both keys or, if the delete fails, the source stays.
    private func rename(_ source: [UInt8], to target: [UInt8], onlyIfAbsent: Bool, session: Session, now: Int64,
                        finish: @escaping Finish) {
        let coordinator = self.coordinator
        let required = quorums(session)
        let read = required.read
        coordinator.readWinner(source, required: read, now: now) { result in
            let value: VersionedValue?
            switch result {
            case .failure(let error): return finish { $0.writeRESPError(error.message) }
            case .success(let found): value = found.flatMap { $0.isTombstone ? nil : $0 }
            }
            guard let value else { return finish { $0.writeRESPError("ERR no such key") } }
            if source == target { return finish { out in onlyIfAbsent ? out.writeRESPInteger(0) : out.writeOK() } }
            let move = {
                coordinator.writeValue(target, value.value, expiry: value.expiry, required: required, now: wallClockMillis()) { result in
                    if case .failure(let error) = result { return finish { $0.writeRESPError(error.message) } }
                    coordinator.writeValue(source, nil, expiry: 0, required: required, now: wallClockMillis()) { result in
                        finish { out in
                            if case .failure(let error) = result { return out.writeRESPError(error.message) }
                            if onlyIfAbsent { out.writeRESPInteger(1) } else { out.writeOK() }
                        }
                    }
                }
            }
            guard onlyIfAbsent else { return move() }
            coordinator.readWinner(target, required: read, now: wallClockMillis()) { result in
                switch result {
                case .failure(let error): finish { $0.writeRESPError(error.message) }
                case .success(let existing):
                    if let existing, !existing.isTombstone { finish { $0.writeRESPInteger(0) } } else { move() }
                }
            }
        }
    }

    /// SCAN across the cluster. The cursor carries the node in its top 6 bits and that node's
    /// own cursor (rounded down to 58 bits, which can only repeat keys, never skip them) in
    /// the rest; each call scans one node, counting only the keys it is the first live replica of.
    private func scan(_ args: RESPArguments, errors: inout ByteBuffer,
                      finish: @escaping Finish) -> Void? {
        guard let cursor = UInt64(args[1].asString) else {
            errors.writeRESPError("ERR invalid cursor")
            return nil
        }
        var count = 10
        var pattern: [UInt8] = Array("*".utf8)
        var onlyStrings = true
        var i = 2
        while i < args.count {
            guard i + 1 < args.count else {
                errors.writeSyntaxError()
                return nil
            }
            if args[i].equalsIgnoringCase("count") {
                guard let value = args[i + 1].asInteger else {
                    errors.writeNotInteger()
                    return nil
                }
                guard value >= 1 else {
                    errors.writeSyntaxError()
                    return nil
                }
                // A step asks one node for at most what a bus message may carry.
                count = min(value, BusLimits.maxScanCount)
            } else if args[i].equalsIgnoringCase("match") {
                pattern = Array(args[i + 1])
            } else if args[i].equalsIgnoringCase("type") {
                onlyStrings = args[i + 1].equalsIgnoringCase("string")
            } else {
                errors.writeSyntaxError()
                return nil
            }
            i += 2
        }
        let member = Int(cursor >> 58)
        guard member < cluster.members.count else {
            errors.writeRESPError("ERR invalid cursor")
            return nil
        }
        let local = (cursor & ((1 << 58) - 1)) << 6
        let down = coordinator.unreachable
        let members = cluster.members.count
        let respond: (UInt64, [ByteBuffer]) -> Void = { next, keys in
            let global: UInt64 = next != 0
                ? UInt64(member) << 58 | next >> 6
                : (member + 1 < members ? UInt64(member + 1) << 58 : 0)
            finish { out in
                out.writeRESPArrayHeader(2)
                out.writeRESPBulk(String(global))
                let shown = onlyStrings ? keys : []
                out.writeRESPArrayHeader(shown.count)
                for key in shown { out.writeRESPBulk(Array(buffer: key)) }
            }
        }
        if member == cluster.selfIndex {
            let (next, keys) = pattern.withUnsafeBytes { p in
                cluster.scanOwned(cursor: local, count: count, pattern: GlobPattern.matchesEverything(p) ? nil : p, down: down, now: wallClockMillis())
            }
            respond(next, keys.map { ByteBuffer(bytes: $0) })
            return ()
        }
        let request = BusRequest.scan(cursor: local, count: count, pattern: ByteBuffer(bytes: pattern), down: cluster.memberNames(down))
        guard !down.contains(member), let link = coordinator.link(to: member) else {
            // That node is down: the next replicas of its keys count them on their turn.
            respond(0, [])
            return ()
        }
        link.send(request) { reply in
            guard case .scan(let next, let keys)? = reply else {
                return finish { $0.writeRESPError("NOQUORUM scan did not reach \(self.cluster.members[member].name)") }
            }
            respond(next, keys)
        }
        return ()
    }

    /// VGET under last-write-wins: no context, the one value.
    private func startLWWVGet(_ key: [UInt8], session: Session, now: Int64, finish: @escaping Finish) -> Bool {
        let resp3 = session.resp3
        coordinator.read(key, required: readQuorum(session), now: now) { result in
            finish { out in
                switch result {
                case .failure(let error): out.writeRESPError(error.message)
                case .success(let value):
                    let live = value.flatMap { $0.isTombstone ? nil : $0 }
                    Self.writeSiblings(SiblingSet(live.map { [Sibling(clock: VectorClock(), value: $0)] } ?? []), resp3: resp3, into: &out)
                }
            }
        }
        return true
    }

    /// VGET's reply: `[context, [value, ...]]`, a deleted sibling as null; the context is the
    /// token VSET takes back (hex of the merged vector clock, empty when the key is new).
    static func writeSiblings(_ set: SiblingSet, resp3: Bool, into out: inout ByteBuffer) {
        out.writeRESPArrayHeader(2)
        out.writeRESPBulk(set.context.hex)
        let now = wallClockMillis()
        let live = set.siblings.filter { $0.value.expiry == 0 || $0.value.expiry > now }
        out.writeRESPArrayHeader(live.count)
        for sibling in live {
            if let bytes = sibling.value.value { bytes.withUnsafeBytes { out.writeRESPBulk($0) } } else { out.writeRESPNull(resp3: resp3) }
        }
    }

    /// `VSET key context value [EX seconds | PX milliseconds]`.
    static func vsetExpiry(_ args: RESPArguments, now: Int64, errors: inout ByteBuffer) -> Int64? {
        guard args.count == 4 || args.count == 6 else {
            errors.writeSyntaxError()
            return nil
        }
        guard args.count == 6 else { return 0 }
        let unit: Int64
        if args[4].equalsIgnoringCase("ex") {
            unit = 1000
        } else if args[4].equalsIgnoringCase("px") {
            unit = 1
        } else {
            errors.writeSyntaxError()
            return nil
        }
        return expiry(args[5], unit: unit, absolute: false, now: now, command: "vset", errors: &errors)
    }

    /// True for a SET whose outcome depends on the current value (NX, XX, GET, KEEPTTL).
    private static func needsRead(_ args: RESPArguments) -> Bool {
        (3..<args.count).contains { i in
            let option = args[i]
            return option.equalsIgnoringCase("nx") || option.equalsIgnoringCase("xx") || option.equalsIgnoringCase("get")
                || option.equalsIgnoringCase("keepttl")
        }
    }

    private func readModifyWrite(_ keys: [[UInt8]], args: RESPArguments, session: Session, now: Int64, finish: @escaping Finish) {
        let command = [Array(args[0])] + keys
        let resp3 = session.resp3
        coordinator.readModifyWrite(command, required: (readQuorum(session), writeQuorum(session)), now: now) { reply in
            finish { out in Self.write(reply, resp3: resp3, into: &out) }
        }
    }

    /// Writes a reply that came back as a value, with RESP3's null where the client speaks it.
    static func write(_ reply: RESPValue, resp3: Bool, into out: inout ByteBuffer) {
        switch reply {
        case .bulkString(nil), .null: out.writeRESPNull(resp3: resp3)
        case .array(nil): out.writeRESPNullArray(resp3: resp3)
        default: reply.encode(into: &out)
        }
    }

    /// The expiry of a SET without NX, XX, GET or KEEPTTL; nil (with the error written, or
    /// nothing written for options that are not coordinated yet) otherwise.
    private static func plainSetExpiry(_ args: RESPArguments, now: Int64, errors: inout ByteBuffer) -> Int64? {
        var expiry: Int64 = 0
        var i = 3
        while i < args.count {
            guard i + 1 < args.count, let (unit, absolute) = CommandProcessor.expiryUnit(args[i], allowPersist: false), expiry == 0 else {
                let option = args[i]
                if option.equalsIgnoringCase("nx") || option.equalsIgnoringCase("xx") || option.equalsIgnoringCase("get")
                    || option.equalsIgnoringCase("keepttl")
                {
                    errors.writeRESPError("ERR SET \(option.asString.uppercased()) is not supported in cluster mode yet")
                } else {
                    errors.writeSyntaxError()
                }
                return nil
            }
            guard let at = Self.expiry(args[i + 1], unit: unit, absolute: absolute, now: now, command: "set", errors: &errors) else {
                return nil
            }
            expiry = at
            i += 2
        }
        return expiry
    }

    /// A positive amount of `unit` milliseconds as an absolute expiry, checked for overflow
    /// and clamped to what a record holds; nil with Redis's error written otherwise.
    static func expiry(_ text: UnsafeRawBufferPointer, unit: Int64, absolute: Bool, now: Int64, command: String,
                       errors: inout ByteBuffer) -> Int64? {
        guard let amount = text.asInteger else {
            errors.writeNotInteger()
            return nil
        }
        let (millis, overflow) = Int64(amount).multipliedReportingOverflow(by: unit)
        let (at, overflow2) = absolute ? (millis, false) : millis.addingReportingOverflow(now)
        guard amount > 0, !overflow, !overflow2 else {
            errors.writeRESPError("ERR invalid expire time in '\(command)' command")
            return nil
        }
        return min(at, maximumExpiry)
    }

    static func writeRead(_ name: CommandSpec.Name, _ value: VersionedValue?, resp3: Bool, out: inout ByteBuffer) {
        let now = wallClockMillis()
        switch name {
        case .get:
            if let bytes = value?.value { bytes.withUnsafeBytes { out.writeRESPBulk($0) } } else { out.writeRESPNull(resp3: resp3) }
        case .strlen:
            out.writeRESPInteger(value?.value?.count ?? 0)
        case .type:
            out.writeRESPRaw(value == nil ? "+none\r\n" : "+string\r\n")
        case .ttl, .pttl:
            guard let value else { return out.writeRESPInteger(-2) }
            guard value.expiry != 0 else { return out.writeRESPInteger(-1) }
            let left = max(0, value.expiry - now)
            out.writeRESPInteger(Int(name == .ttl ? (left + 500) / 1000 : left))
        default:
            preconditionFailure("\(name) is not a read")
        }
    }
}
