import CacheStore
import ClusterCore
import NIOCore
import RESP

/// One versioned entry as it travels between replicas (a tombstone when `value` is nil).
public struct BusEntry: Sendable, Hashable {
    public var key: ByteBuffer
    public var version: Version
    /// Absolute expiry in Unix milliseconds, 0 for none.
    public var expiry: Int64
    public var value: ByteBuffer?

    public init(key: ByteBuffer, version: Version, expiry: Int64, value: ByteBuffer?) {
        self.key = key
        self.version = version
        self.expiry = expiry
        self.value = value
    }
}

/// One chunk of a big value moving to a new owner (RC.XFERPART).
public struct BusChunk: Sendable, Hashable {
    public var sender: String
    public var key: ByteBuffer
    public var version: Version
    public var expiry: Int64
    public var offset: Int
    public var total: Int
    public var bytes: ByteBuffer

    public init(sender: String, key: ByteBuffer, version: Version, expiry: Int64, offset: Int, total: Int, bytes: ByteBuffer) {
        self.sender = sender
        self.key = key
        self.version = version
        self.expiry = expiry
        self.offset = offset
        self.total = total
        self.bytes = bytes
    }
}

/// Every request one node sends another on the cluster bus: one enum, one encoder, one
/// validating decoder. The wire form is a RESP array of bulk strings (`RC.GET key`, …), so
/// `redis-cli -p <bus port>` can still talk to a bus once it has done the handshake.
public enum BusRequest: Sendable, Hashable {
    /// `RC.HELLO cluster node nonce`: the first message of the handshake (``BusHandshake``).
    case hello(cluster: String, node: String, nonce: [UInt8])
    /// `RC.PROVE proof`: the connecting side's proof, the handshake's last message.
    case prove(proof: [UInt8])
    /// `RC.GET key` → ``BusReply/entry(_:)``.
    case get(key: ByteBuffer)
    /// `RC.PUT key timestamp node expiry value` → ``BusReply/flag(_:)`` (stored: newer).
    case put(BusEntry)
    /// `RC.DEL key timestamp node` (a tombstone) → flag: a live value was there.
    case delete(key: ByteBuffer, version: Version)
    /// `RC.VGET key` → ``BusReply/siblings(_:)``.
    case siblingGet(key: ByteBuffer)
    /// `RC.VPUT key siblings` → flag: a live value was there.
    case siblingPut(key: ByteBuffer, siblings: SiblingSet)
    /// `RC.COUNT down` → integer: keys this node is the first live replica of.
    case count(down: [String])
    /// `RC.KEYS pattern down` → keys.
    case keys(pattern: ByteBuffer, down: [String])
    /// `RC.SCAN cursor count pattern down` → scan step.
    case scan(cursor: UInt64, count: Int, pattern: ByteBuffer, down: [String])
    /// `RC.RANDOMKEY` → key or null.
    case randomKey
    /// `RC.FLUSH` → ok.
    case flush
    /// `RC.EXEC read write command key args…`: a read-modify-write command run at the key's
    /// first healthy replica → the command's own reply. Only ``BusRequest/execCommands``.
    case exec(read: Int, write: Int, command: [ByteBuffer])
    /// `RC.HINT owner key timestamp node expiry [value]`: keep a write for `owner` → flag.
    case hint(owner: String, entry: BusEntry)
    /// `RC.TREE requester bits` → digest.
    case tree(requester: String)
    /// `RC.BUCKET requester bits bucket…` → versions.
    case bucket(requester: String, buckets: [Int])
    /// `RC.JOIN name host port busport` → members.
    case join(RingMembership.Entry)
    /// `RC.MEMBERS list` (push-pull) → members.
    case members(MemberList)
    /// `RC.XFER sender [key timestamp node expiry has-value value]…` → integer applied.
    case transfer(sender: String, entries: [BusEntry])
    /// `RC.XFERPART sender key timestamp node expiry offset total chunk` → integer held.
    case transferPart(BusChunk)
    /// `RC.XFERDONE ring sender coverage` → ok.
    case transferDone(ring: UInt64, sender: String, coverage: Set<String>?)
    /// `PING` → ok (`+PONG`): keeps an idle link from timing out.
    case ping
    /// `RC.STAGE epoch settled` → ok: how far the sender's view of the ring has got, for the
    /// requests that follow. A replica whose epoch is ahead sends the sender its member list
    /// (``BusSession``); refusing those requests (fencing) is not built yet.
    case stage(RingStage)

    /// What a request is, for matching its reply.
    public enum Kind: String, Sendable, Hashable, CaseIterable {
        case hello = "RC.HELLO", prove = "RC.PROVE", get = "RC.GET", put = "RC.PUT", delete = "RC.DEL"
        case siblingGet = "RC.VGET", siblingPut = "RC.VPUT", count = "RC.COUNT", keys = "RC.KEYS", scan = "RC.SCAN"
        case randomKey = "RC.RANDOMKEY", flush = "RC.FLUSH", exec = "RC.EXEC", hint = "RC.HINT", tree = "RC.TREE"
        case bucket = "RC.BUCKET", join = "RC.JOIN", members = "RC.MEMBERS", transfer = "RC.XFER"
        case transferPart = "RC.XFERPART", transferDone = "RC.XFERDONE", ping = "PING", stage = "RC.STAGE"
    }

    public var kind: Kind {
        switch self {
        case .hello: .hello
        case .prove: .prove
        case .get: .get
        case .put: .put
        case .delete: .delete
        case .siblingGet: .siblingGet
        case .siblingPut: .siblingPut
        case .count: .count
        case .keys: .keys
        case .scan: .scan
        case .randomKey: .randomKey
        case .flush: .flush
        case .exec: .exec
        case .hint: .hint
        case .tree: .tree
        case .bucket: .bucket
        case .join: .join
        case .members: .members
        case .transfer: .transfer
        case .transferPart: .transferPart
        case .transferDone: .transferDone
        case .ping: .ping
        case .stage: .stage
        }
    }

    /// Commands RC.EXEC runs: the read-modify-write commands a coordinator forwards to the
    /// key's first replica. Never CONFIG, FLUSHALL, CLUSTER or anything administrative.
    public static let execCommands: Set<String> = [
        "SET", "SETNX", "GETSET", "GETDEL", "GETEX", "INCR", "DECR", "INCRBY", "DECRBY", "INCRBYFLOAT", "APPEND", "GETRANGE",
        "SUBSTR", "SETRANGE", "EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT", "EXPIRETIME", "PEXPIRETIME", "PERSIST",
    ]
}

// MARK: - Encoding

extension BusRequest {
    /// Writes the request in its wire form.
    public func encode(into out: inout ByteBuffer) {
        switch self {
        case .hello(let cluster, let node, let nonce):
            out.writeRESPArrayHeader(4)
            out.writeRESPBulk(Kind.hello.rawValue)
            out.writeRESPBulk(cluster)
            out.writeRESPBulk(node)
            out.writeRESPBulk(nonce)
        case .prove(let proof):
            out.writeRESPArrayHeader(2)
            out.writeRESPBulk(Kind.prove.rawValue)
            out.writeRESPBulk(proof)
        case .get(let key):
            key.withUnsafeReadableBytes { Self.encodeGet(key: $0, into: &out) }
        case .put(let entry):
            entry.key.withUnsafeReadableBytes { key in
                (entry.value ?? ByteBuffer()).withUnsafeReadableBytes { value in
                    Self.encodePut(key: key, version: entry.version, expiry: entry.expiry, value: value, into: &out)
                }
            }
        case .delete(let key, let version):
            key.withUnsafeReadableBytes { Self.encodeDelete(key: $0, version: version, into: &out) }
        case .siblingGet(let key):
            out.writeRESPArrayHeader(2)
            out.writeRESPBulk(Kind.siblingGet.rawValue)
            out.writeRESPBulk(key.readableBytesView)
        case .siblingPut(let key, let siblings):
            out.writeRESPArrayHeader(3)
            out.writeRESPBulk(Kind.siblingPut.rawValue)
            out.writeRESPBulk(key.readableBytesView)
            out.writeRESPBulk(siblings.serialized)
        case .count(let down):
            out.writeRESPArrayHeader(2)
            out.writeRESPBulk(Kind.count.rawValue)
            out.writeRESPBulk(Self.joinNames(down))
        case .keys(let pattern, let down):
            out.writeRESPArrayHeader(3)
            out.writeRESPBulk(Kind.keys.rawValue)
            out.writeRESPBulk(pattern.readableBytesView)
            out.writeRESPBulk(Self.joinNames(down))
        case .scan(let cursor, let count, let pattern, let down):
            out.writeRESPArrayHeader(5)
            out.writeRESPBulk(Kind.scan.rawValue)
            out.writeRESPBulk(unsigned: cursor)
            out.writeRESPBulk(String(count))
            out.writeRESPBulk(pattern.readableBytesView)
            out.writeRESPBulk(Self.joinNames(down))
        case .randomKey, .flush, .ping:
            out.writeRESPArrayHeader(1)
            out.writeRESPBulk(kind.rawValue)
        case .exec(let read, let write, let command):
            out.writeRESPArrayHeader(3 + command.count)
            out.writeRESPBulk(Kind.exec.rawValue)
            out.writeRESPBulk(String(read))
            out.writeRESPBulk(String(write))
            for argument in command { out.writeRESPBulk(argument.readableBytesView) }
        case .hint(let owner, let entry):
            out.writeRESPArrayHeader(entry.value == nil ? 6 : 7)
            out.writeRESPBulk(Kind.hint.rawValue)
            out.writeRESPBulk(owner)
            out.writeRESPBulk(entry.key.readableBytesView)
            Self.writeVersion(entry.version, into: &out)
            out.writeRESPBulk(String(entry.expiry))
            if let value = entry.value { out.writeRESPBulk(value.readableBytesView) }
        case .tree(let requester):
            out.writeRESPArrayHeader(3)
            out.writeRESPBulk(Kind.tree.rawValue)
            out.writeRESPBulk(requester)
            out.writeRESPBulk(String(BusLimits.antiEntropyBits))
        case .bucket(let requester, let buckets):
            out.writeRESPArrayHeader(3 + buckets.count)
            out.writeRESPBulk(Kind.bucket.rawValue)
            out.writeRESPBulk(requester)
            out.writeRESPBulk(String(BusLimits.antiEntropyBits))
            for bucket in buckets { out.writeRESPBulk(String(bucket)) }
        case .join(let entry):
            out.writeRESPArrayHeader(5)
            out.writeRESPBulk(Kind.join.rawValue)
            out.writeRESPBulk(entry.name)
            out.writeRESPBulk(entry.host)
            out.writeRESPBulk(String(entry.port))
            out.writeRESPBulk(String(entry.busPort))
        case .members(let list):
            var payload = ByteBuffer()
            list.encode(into: &payload)
            out.writeRESPArrayHeader(2)
            out.writeRESPBulk(Kind.members.rawValue)
            out.writeRESPBulk(payload.readableBytesView)
        case .transfer(let sender, let entries):
            out.writeRESPArrayHeader(2 + entries.count * 6)
            out.writeRESPBulk(Kind.transfer.rawValue)
            out.writeRESPBulk(sender)
            for entry in entries {
                out.writeRESPBulk(entry.key.readableBytesView)
                Self.writeVersion(entry.version, into: &out)
                out.writeRESPBulk(String(entry.expiry))
                out.writeRESPBulk(entry.value == nil ? "0" : "1")
                out.writeRESPBulk((entry.value ?? ByteBuffer()).readableBytesView)
            }
        case .transferPart(let chunk):
            out.writeRESPArrayHeader(9)
            out.writeRESPBulk(Kind.transferPart.rawValue)
            out.writeRESPBulk(chunk.sender)
            out.writeRESPBulk(chunk.key.readableBytesView)
            Self.writeVersion(chunk.version, into: &out)
            out.writeRESPBulk(String(chunk.expiry))
            out.writeRESPBulk(String(chunk.offset))
            out.writeRESPBulk(String(chunk.total))
            out.writeRESPBulk(chunk.bytes.readableBytesView)
        case .transferDone(let ring, let sender, let coverage):
            out.writeRESPArrayHeader(4)
            out.writeRESPBulk(Kind.transferDone.rawValue)
            out.writeRESPBulk(unsigned: ring)
            out.writeRESPBulk(sender)
            out.writeRESPBulk(Self.encodeCoverage(coverage))
        case .stage(let stage):
            out.writeRESPArrayHeader(3)
            out.writeRESPBulk(Kind.stage.rawValue)
            out.writeRESPBulk(unsigned: stage.epoch)
            out.writeRESPBulk(stage.settled ? "1" : "0")
        }
    }

    /// `RC.GET key`, written from the key's bytes (the hot path's encoder).
    public static func encodeGet(key: UnsafeRawBufferPointer, into out: inout ByteBuffer) {
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: 16 + key.count + BulkWriter.bulkOverhead) { raw in
            var at = BulkWriter.copy("*2\r\n$6\r\nRC.GET\r\n", to: raw, at: 0)
            at = BulkWriter.bulk(key, to: raw, at: at)
            return at
        }
    }

    /// `RC.VGET key`, written from the key's bytes.
    public static func encodeSiblingGet(key: UnsafeRawBufferPointer, into out: inout ByteBuffer) {
        out.writeRESPArrayHeader(2)
        out.writeRESPBulk(Kind.siblingGet.rawValue)
        out.writeRESPBulk(key)
    }

    /// `RC.PUT key timestamp node expiry value`, written from the bytes (the hot path's encoder).
    /// The whole request in one pass over the buffer: no String, one capacity check.
    public static func encodePut(key: UnsafeRawBufferPointer, version: Version, expiry: Int64, value: UnsafeRawBufferPointer,
                                 into out: inout ByteBuffer) {
        let capacity = 16 + key.count + value.count + 5 * BulkWriter.bulkOverhead
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: capacity) { raw in
            var at = BulkWriter.copy("*6\r\n$6\r\nRC.PUT\r\n", to: raw, at: 0)
            at = BulkWriter.bulk(key, to: raw, at: at)
            at = BulkWriter.number(version.timestamp.rawValue, to: raw, at: at)
            at = BulkWriter.number(UInt64(version.node.rawValue), to: raw, at: at)
            at = BulkWriter.number(expiry, to: raw, at: at)
            at = BulkWriter.bulk(value, to: raw, at: at)
            return at
        }
    }

    /// `RC.DEL key timestamp node`, written from the key's bytes.
    public static func encodeDelete(key: UnsafeRawBufferPointer, version: Version, into out: inout ByteBuffer) {
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: 16 + key.count + 3 * BulkWriter.bulkOverhead) { raw in
            var at = BulkWriter.copy("*4\r\n$6\r\nRC.DEL\r\n", to: raw, at: 0)
            at = BulkWriter.bulk(key, to: raw, at: at)
            at = BulkWriter.number(version.timestamp.rawValue, to: raw, at: at)
            at = BulkWriter.number(UInt64(version.node.rawValue), to: raw, at: at)
            return at
        }
    }

    private static func writeVersion(_ version: Version, into out: inout ByteBuffer) {
        out.writeRESPBulk(unsigned: version.timestamp.rawValue)
        out.writeRESPBulk(unsigned: UInt64(version.node.rawValue))
    }

    static func joinNames(_ names: [String]) -> String { names.joined(separator: ",") }

    /// Coverage of a finished transfer: comma-separated names, `*` for everyone.
    public static func encodeCoverage(_ covering: Set<String>?) -> String {
        covering.map { $0.sorted().joined(separator: ",") } ?? "*"
    }
}

// MARK: - Decoding

/// What a decoder checks received fields against.
public struct BusDecodingContext: Sendable {
    public var limits: BusLimits
    /// The receiver's wall clock (Unix milliseconds): timestamps may not run ahead of it by
    /// more than ``BusLimits/maxClockSkewMillis``.
    public var now: Int64
    /// The members the receiver knows, by name.
    public var members: [String: Int]

    public init(limits: BusLimits, now: Int64, members: [String: Int]) {
        self.limits = limits
        self.now = now
        self.members = members
    }
}

extension BusRequest {
    /// Decodes and validates one request. Throws for anything malformed or out of range;
    /// never traps, whatever the frame holds.
    public static func decode(_ frame: BusFrame, context: BusDecodingContext) throws(BusProtocolError) -> BusRequest {
        guard frame.count >= 1 else { throw BusProtocolError(.malformed, "empty request") }
        guard let kind = Self.kind(of: frame) else {
            let name = frame[0]
            let shown = String(decoding: name.readableBytesView.prefix(64), as: UTF8.self)
            throw BusProtocolError(.unknownCommand, "unknown cluster bus command '\(shown)'")
        }
        let reader = FieldReader(frame: frame, context: context, kind: kind)
        return try reader.decode()
    }

    /// The kind named by the first argument (any case), found without allocating.
    static func kind(of frame: BusFrame) -> Kind? {
        frame.withArgumentBytes(0) { name in
            for (bytes, kind) in kindsByName where bytes.count == name.count {
                var equal = true
                for i in 0..<name.count {
                    let byte = name[i]
                    if (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z") ? byte - 32 : byte) != bytes[i] {
                        equal = false
                        break
                    }
                }
                if equal { return kind }
            }
            return nil
        }
    }

    /// Each kind's name as bytes, the replica path's kinds first.
    private static let kindsByName: [([UInt8], Kind)] = {
        let first: [Kind] = [.put, .get, .delete, .siblingPut, .siblingGet]
        return (first + Kind.allCases.filter { !first.contains($0) }).map { (Array($0.rawValue.utf8), $0) }
    }()

    static func decodeCoverage(_ text: String) -> Set<String>? {
        text == "*" ? nil : Set(text.split(separator: ",").map(String.init))
    }
}

/// Reads the fields of one request of a known kind.
private struct FieldReader {
    let frame: BusFrame
    let context: BusDecodingContext
    let kind: BusRequest.Kind

    var limits: BusLimits { context.limits }

    /// The request has `count` parts (or `alternative`, for requests with an optional last one).
    func arity(_ count: Int, or alternative: Int? = nil) throws(BusProtocolError) {
        guard frame.count == count || frame.count == alternative else {
            let expected = alternative.map { "\(count - 1) or \($0 - 1)" } ?? "\(count - 1)"
            throw BusProtocolError(.malformed, "\(kind.rawValue) takes \(expected) arguments, got \(frame.count - 1)")
        }
    }

    func key(_ index: Int) throws(BusProtocolError) -> ByteBuffer {
        try frame.bulk(index, "key", max: limits.maxBulkLength)
    }

    func value(_ index: Int) throws(BusProtocolError) -> ByteBuffer {
        try frame.bulk(index, "value", max: limits.maxBulkLength)
    }

    /// A version whose timestamp is not ahead of the receiver's clock by more than the skew.
    func version(_ timestamp: Int, _ node: Int) throws(BusProtocolError) -> Version {
        let raw = try frame.unsigned(timestamp, "timestamp")
        let latest = context.now.addingReportingOverflow(limits.maxClockSkewMillis).partialValue
        guard raw >> 16 <= UInt64(max(0, latest)) else {
            throw BusProtocolError(.outOfRange, "timestamp \(raw >> 16) ms is more than \(limits.maxClockSkewMillis) ms ahead of this node's clock")
        }
        let id = try frame.integer(node, "node id", in: 0...Int(UInt32.max))
        return Version(timestamp: HLCTimestamp(rawValue: raw), node: NodeID(rawValue: UInt32(id)))
    }

    func expiry(_ index: Int) throws(BusProtocolError) -> Int64 {
        Int64(try frame.integer(index, "expiry", in: 0...Int(BusLimits.maxExpiry)))
    }

    /// A name that must belong to a member the receiver knows.
    func member(_ index: Int, _ field: String) throws(BusProtocolError) -> String {
        let name = try frame.name(index, field)
        guard context.members[name] != nil else { throw BusProtocolError(.unknownMember, "\(field) '\(name)' is not a known member") }
        return name
    }

    /// A comma-separated list of member names (unknown ones are kept: the receiver ignores them).
    func names(_ index: Int) throws(BusProtocolError) -> [String] {
        let bytes = try frame.bulk(index, "member list", max: BusLimits.maxMembers * (BusLimits.maxNameLength + 1))
        let text = String(decoding: bytes.readableBytesView, as: UTF8.self)
        let names = text.split(separator: ",").map(String.init)
        guard names.count <= BusLimits.maxMembers, names.allSatisfy({ $0.utf8.count <= BusLimits.maxNameLength }) else {
            throw BusProtocolError(.tooLarge, "member list too long")
        }
        return names
    }

    func bits(_ index: Int) throws(BusProtocolError) {
        _ = try frame.integer(index, "bits", in: BusLimits.antiEntropyBits...BusLimits.antiEntropyBits)
    }

    func decode() throws(BusProtocolError) -> BusRequest {
        switch kind {
        case .hello:
            try arity(4)
            let nonce = try frame.bulk(3, "nonce", max: BusHandshake.nonceLength)
            guard nonce.readableBytes == BusHandshake.nonceLength else { throw BusProtocolError(.malformed, "nonce must be \(BusHandshake.nonceLength) bytes") }
            return .hello(cluster: try frame.name(1, "cluster name"), node: try frame.name(2, "node name"), nonce: Array(nonce.readableBytesView))
        case .prove:
            try arity(2)
            let proof = try frame.bulk(1, "proof", max: BusHandshake.proofLength)
            guard proof.readableBytes == BusHandshake.proofLength else { throw BusProtocolError(.malformed, "proof must be \(BusHandshake.proofLength) bytes") }
            return .prove(proof: Array(proof.readableBytesView))
        case .get:
            try arity(2)
            return .get(key: try key(1))
        case .put:
            try arity(6)
            return .put(BusEntry(key: try key(1), version: try version(2, 3), expiry: try expiry(4), value: try value(5)))
        case .delete:
            try arity(4)
            return .delete(key: try key(1), version: try version(2, 3))
        case .siblingGet:
            try arity(2)
            return .siblingGet(key: try key(1))
        case .siblingPut:
            try arity(3)
            let bytes = try frame.bulk(2, "siblings", max: limits.maxBulkLength)
            return .siblingPut(key: try key(1), siblings: try SiblingCodec.decode(bytes, context: context))
        case .count:
            try arity(2)
            return .count(down: try names(1))
        case .keys:
            try arity(3)
            return .keys(pattern: try key(1), down: try names(2))
        case .scan:
            try arity(5)
            return .scan(cursor: try frame.unsigned(1, "cursor"), count: try frame.integer(2, "count", in: 1...BusLimits.maxScanCount),
                         pattern: try key(3), down: try names(4))
        case .randomKey:
            try arity(1)
            return .randomKey
        case .flush:
            try arity(1)
            return .flush
        case .ping:
            try arity(1, or: 2)
            return .ping
        case .exec:
            guard frame.count >= 5 else { throw BusProtocolError(.malformed, "RC.EXEC needs quorums, a command and a key") }
            let replicas = max(1, limits.replicas)
            let read = try frame.integer(1, "read quorum", in: 1...replicas)
            let write = try frame.integer(2, "write quorum", in: 1...replicas)
            let name = String(decoding: frame[3].readableBytesView.prefix(32), as: UTF8.self).uppercased()
            guard BusRequest.execCommands.contains(name) else {
                throw BusProtocolError(.notAllowed, "RC.EXEC runs read-modify-write commands only, not '\(name)'")
            }
            var command: [ByteBuffer] = []
            for index in 3..<frame.count { command.append(try frame.bulk(index, "argument", max: limits.maxBulkLength)) }
            return .exec(read: read, write: write, command: command)
        case .hint:
            try arity(6, or: 7)
            let owner = try member(1, "owner")
            let value = frame.count == 7 ? try self.value(6) : nil
            return .hint(owner: owner, entry: BusEntry(key: try key(2), version: try version(3, 4), expiry: try expiry(5), value: value))
        case .tree:
            try arity(3)
            try bits(2)
            return .tree(requester: try member(1, "requester"))
        case .bucket:
            let buckets = 1 << BusLimits.antiEntropyBits
            guard frame.count >= 4, frame.count - 3 <= buckets else { throw BusProtocolError(.malformed, "RC.BUCKET takes 1 to \(buckets) buckets") }
            try bits(2)
            var list: [Int] = []
            for index in 3..<frame.count { list.append(try frame.integer(index, "bucket", in: 0...(buckets - 1))) }
            return .bucket(requester: try member(1, "requester"), buckets: list)
        case .join:
            try arity(5)
            let host = try frame.name(2, "host")
            return .join(RingMembership.Entry(name: try frame.name(1, "name"), host: host, port: try frame.integer(3, "port", in: 1...65535),
                                              busPort: try frame.integer(4, "bus port", in: 1...65535)))
        case .members:
            try arity(2)
            var payload = try frame.bulk(1, "member list", max: MemberList.maxEncodedBytes)
            return .members(try MemberList.decode(&payload))
        case .transfer:
            guard frame.count >= 2, (frame.count - 2) % 6 == 0, (frame.count - 2) / 6 <= BusLimits.maxTransferEntries else {
                throw BusProtocolError(.malformed, "RC.XFER takes a sender and groups of six fields")
            }
            let sender = try member(1, "sender")
            var entries: [BusEntry] = []
            var at = 2
            while at < frame.count {
                let hasValue = try frame.integer(at + 4, "has-value flag", in: 0...1) == 1
                let value = try self.value(at + 5)
                entries.append(BusEntry(key: try key(at), version: try version(at + 1, at + 2), expiry: try expiry(at + 3),
                                        value: hasValue ? value : nil))
                at += 6
            }
            return .transfer(sender: sender, entries: entries)
        case .transferPart:
            try arity(9)
            let total = try frame.integer(7, "total", in: 1...limits.maxBulkLength)
            let offset = try frame.integer(6, "offset", in: 0...(total - 1))
            let bytes = try frame.bulk(8, "chunk", max: BusLimits.maxChunkLength)
            guard bytes.readableBytes <= total - offset else { throw BusProtocolError(.outOfRange, "chunk runs past the value's total") }
            return .transferPart(BusChunk(sender: try member(1, "sender"), key: try key(2), version: try version(3, 4), expiry: try expiry(5),
                                          offset: offset, total: total, bytes: bytes))
        case .transferDone:
            try arity(4)
            let coverage = try names(3)
            let text = String(decoding: frame[3].readableBytesView, as: UTF8.self)
            return .transferDone(ring: try frame.unsigned(1, "ring"), sender: try member(2, "sender"),
                                 coverage: text == "*" ? nil : Set(coverage))
        case .stage:
            try arity(3)
            return .stage(RingStage(epoch: try frame.unsigned(1, "epoch"), settled: try frame.integer(2, "settled", in: 0...1) == 1))
        }
    }
}
