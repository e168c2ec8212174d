import CacheStore
import ClusterCore
import NIOCore
import RESP

/// What a replica holds of a key (RC.GET's answer): its version, expiry and bytes (nil for a
/// tombstone).
public struct BusValue: Sendable, Hashable {
    public var version: Version
    public var expiry: Int64
    public var value: ByteBuffer?

    public init(version: Version, expiry: Int64, value: ByteBuffer?) {
        self.version = version
        self.expiry = expiry
        self.value = value
    }
}

/// A key and version as anti-entropy lists them (RC.BUCKET).
public struct BusVersionedKey: Sendable, Hashable {
    public var key: ByteBuffer
    public var version: Version

    public init(key: ByteBuffer, version: Version) {
        self.key = key
        self.version = version
    }
}

/// Every reply on the cluster bus, matched to its request by position: one enum, one
/// encoder, one decoder that knows which request the reply answers.
public enum BusReply: Sendable, Hashable {
    /// `+OK` (RC.FLUSH, RC.XFERDONE, RC.PROVE) and `+PONG`.
    case ok
    /// `:0`/`:1`: stored (RC.PUT), a live value was there (RC.DEL, RC.VPUT), kept (RC.HINT).
    case flag(Bool)
    /// `:n`: a count (RC.COUNT), entries applied (RC.XFER), bytes held (RC.XFERPART).
    case integer(Int)
    /// RC.GET: `*0` when absent, else `*4 :timestamp :node :expiry $value` (null: tombstone).
    case entry(BusValue?)
    /// RC.VGET: the serialized siblings, or null.
    case siblings(SiblingSet?)
    /// RC.KEYS.
    case keys([ByteBuffer])
    /// RC.SCAN: `*2 $next *n keys`.
    case scan(next: UInt64, keys: [ByteBuffer])
    /// RC.RANDOMKEY: a key or null.
    case key(ByteBuffer?)
    /// RC.EXEC: the command's own reply, passed through to the client.
    case command(RESPValue)
    /// RC.TREE: the Merkle bucket digests.
    case digest([UInt64])
    /// RC.BUCKET: keys and versions, flattened as key, timestamp, node.
    case versions([BusVersionedKey])
    /// RC.JOIN and RC.MEMBERS.
    case members(MemberList)
    /// RC.HELLO: the answering node's name, its nonce and its proof (``BusHandshake``).
    case challenge(node: String, nonce: [UInt8], proof: [UInt8])
    /// An error reply (`-ERR …`, `-OOM …`, `-NOAUTH …`).
    case error(String)

    // MARK: Encoding

    public func encode(into out: inout ByteBuffer) {
        switch self {
        case .ok: out.writeRESPRaw("+OK\r\n")
        case .flag(let flag): Self.encodeFlag(flag, into: &out)
        case .integer(let n): out.writeRESPInteger(n)
        case .entry(let entry):
            guard let entry else { return Self.encodeAbsent(into: &out) }
            if let value = entry.value {
                value.withUnsafeReadableBytes { Self.encodeEntry(version: entry.version, expiry: entry.expiry, value: $0, into: &out) }
            } else {
                Self.encodeEntry(version: entry.version, expiry: entry.expiry, value: nil, into: &out)
            }
        case .siblings(let set):
            if let set { out.writeRESPBulk(set.serialized) } else { out.writeRESPNull(resp3: false) }
        case .keys(let keys):
            out.writeRESPArrayHeader(keys.count)
            for key in keys { out.writeRESPBulk(key.readableBytesView) }
        case .scan(let next, let keys):
            out.writeRESPArrayHeader(2)
            out.writeRESPBulk(String(next))
            out.writeRESPArrayHeader(keys.count)
            for key in keys { out.writeRESPBulk(key.readableBytesView) }
        case .key(let key):
            if let key { out.writeRESPBulk(key.readableBytesView) } else { out.writeRESPNull(resp3: false) }
        case .command(let value): value.encode(into: &out)
        case .digest(let buckets):
            out.writeRESPArrayHeader(buckets.count)
            for bucket in buckets { out.writeRESPBulk(String(bucket)) }
        case .versions(let entries):
            out.writeRESPArrayHeader(entries.count * 3)
            for entry in entries {
                out.writeRESPBulk(entry.key.readableBytesView)
                out.writeRESPBulk(String(entry.version.timestamp.rawValue))
                out.writeRESPBulk(String(entry.version.node.rawValue))
            }
        case .members(let list): list.encode(into: &out)
        case .challenge(let node, let nonce, let proof):
            out.writeRESPArrayHeader(3)
            out.writeRESPBulk(node)
            out.writeRESPBulk(nonce)
            out.writeRESPBulk(proof)
        case .error(let message): out.writeRESPError(message)
        }
    }

    public static func encodeFlag(_ flag: Bool, into out: inout ByteBuffer) {
        out.writeRESPRaw(flag ? ":1\r\n" : ":0\r\n")
    }

    public static func encodeAbsent(into out: inout ByteBuffer) {
        out.writeRESPRaw("*0\r\n")
    }

    /// RC.GET's answer for a held entry, written from the store's bytes (the hot path).
    public static func encodeEntry(version: Version, expiry: Int64, value: UnsafeRawBufferPointer?, into out: inout ByteBuffer) {
        out.writeRESPArrayHeader(4)
        // Validated timestamps stay below 2^63 (their milliseconds are near now).
        out.writeRESPInteger(Int(truncatingIfNeeded: min(version.timestamp.rawValue, UInt64(Int.max))))
        out.writeRESPInteger(Int(version.node.rawValue))
        out.writeRESPInteger(Int(expiry))
        if let value { out.writeRESPBulk(value) } else { out.writeRESPNull(resp3: false) }
    }

    // MARK: Decoding

    /// Decodes the reply to a request of `kind`. An error reply is `.error` whatever the kind;
    /// anything else of the wrong shape throws.
    public static func decode(_ value: RESPValue, answering kind: BusRequest.Kind, context: BusDecodingContext) throws(BusProtocolError) -> BusReply {
        switch value {
        case .error(let message), .bulkError(let message): return .error(String(buffer: message))
        default: break
        }
        switch kind {
        case .flush, .transferDone, .prove, .ping, .stage:
            guard case .simpleString = value else { throw unexpected(kind) }
            return .ok
        case .put, .delete, .siblingPut, .hint:
            return .flag(try decodeFlag(value, kind))
        case .count, .transfer, .transferPart:
            guard case .integer(let n) = value, n >= 0 else { throw unexpected(kind) }
            return .integer(n)
        case .get:
            return .entry(try decodeEntry(value, context: context))
        case .siblingGet:
            switch value {
            case .bulkString(nil), .null: return .siblings(nil)
            case .bulkString(let bytes?): return .siblings(try SiblingCodec.decode(bytes, context: context))
            default: throw unexpected(kind)
            }
        case .keys:
            return .keys(try keyList(value, kind))
        case .scan:
            guard case .array(let parts?) = value, parts.count == 2, let next = parts[0].bytes.flatMap({ BusFrame.parseUnsigned($0) }) else {
                throw unexpected(kind)
            }
            return .scan(next: next, keys: try keyList(parts[1], kind))
        case .randomKey:
            switch value {
            case .bulkString(let key): return .key(key)
            case .null: return .key(nil)
            default: throw unexpected(kind)
            }
        case .exec:
            return .command(value)
        case .tree:
            guard case .array(let items?) = value, items.count == 1 << BusLimits.antiEntropyBits else { throw unexpected(kind) }
            var buckets: [UInt64] = []
            buckets.reserveCapacity(items.count)
            for item in items {
                guard let digest = item.bytes.flatMap({ BusFrame.parseUnsigned($0) }) else { throw unexpected(kind) }
                buckets.append(digest)
            }
            return .digest(buckets)
        case .bucket:
            guard case .array(let items?) = value, items.count % 3 == 0 else { throw unexpected(kind) }
            var entries: [BusVersionedKey] = []
            for at in stride(from: 0, to: items.count, by: 3) {
                guard case .bulkString(let key?) = items[at], let timestamp = items[at + 1].bytes.flatMap({ BusFrame.parseUnsigned($0) }),
                      let node = items[at + 2].bytes.flatMap({ BusFrame.parseUnsigned($0) }), node <= UInt64(UInt32.max) else {
                    throw unexpected(kind)
                }
                entries.append(BusVersionedKey(key: key, version: Version(timestamp: HLCTimestamp(rawValue: timestamp), node: NodeID(rawValue: UInt32(node)))))
            }
            return .versions(entries)
        case .join, .members:
            return .members(try MemberList.decode(value))
        case .hello:
            guard case .array(let parts?) = value, parts.count == 3, let node = parts[0].string,
                  (1...BusLimits.maxNameLength).contains(node.utf8.count),
                  let nonce = parts[1].bytes, nonce.readableBytes == BusHandshake.nonceLength,
                  let proof = parts[2].bytes, proof.readableBytes == BusHandshake.proofLength else {
                throw unexpected(kind)
            }
            return .challenge(node: node, nonce: Array(nonce.readableBytesView), proof: Array(proof.readableBytesView))
        }
    }

    /// `:0` or `:1`.
    public static func decodeFlag(_ value: RESPValue, _ kind: BusRequest.Kind) throws(BusProtocolError) -> Bool {
        guard case .integer(let n) = value, n == 0 || n == 1 else { throw unexpected(kind) }
        return n == 1
    }

    /// RC.GET's answer: nil for none, else the entry (a nil value is a tombstone). Its
    /// timestamp is held to the same skew as a request's.
    public static func decodeEntry(_ value: RESPValue, context: BusDecodingContext) throws(BusProtocolError) -> BusValue? {
        try decodeEntry(value, limits: context.limits, now: context.now)
    }

    /// ``decodeEntry(_:context:)`` without a member table (the coordinator's hot path).
    public static func decodeEntry(_ value: RESPValue, limits: BusLimits, now: Int64) throws(BusProtocolError) -> BusValue? {
        guard case .array(let items?) = value else { throw unexpected(.get) }
        if items.isEmpty { return nil }
        guard items.count == 4, case .integer(let timestamp) = items[0], case .integer(let node) = items[1],
              case .integer(let expiry) = items[2], timestamp >= 0, (0...Int(UInt32.max)).contains(node),
              (0...Int(BusLimits.maxExpiry)).contains(expiry) else { throw unexpected(.get) }
        let latest = now.addingReportingOverflow(limits.maxClockSkewMillis).partialValue
        guard UInt64(timestamp) >> 16 <= UInt64(max(0, latest)) else {
            throw BusProtocolError(.outOfRange, "a replica's timestamp is ahead of this node's clock")
        }
        let version = Version(timestamp: HLCTimestamp(rawValue: UInt64(timestamp)), node: NodeID(rawValue: UInt32(node)))
        switch items[3] {
        case .bulkString(let bytes?): return BusValue(version: version, expiry: Int64(expiry), value: bytes)
        case .bulkString(nil), .null: return BusValue(version: version, expiry: Int64(expiry), value: nil)
        default: throw unexpected(.get)
        }
    }

    private static func keyList(_ value: RESPValue, _ kind: BusRequest.Kind) throws(BusProtocolError) -> [ByteBuffer] {
        guard case .array(let items?) = value else { throw unexpected(kind) }
        var keys: [ByteBuffer] = []
        keys.reserveCapacity(items.count)
        for item in items {
            guard case .bulkString(let key?) = item else { throw unexpected(kind) }
            keys.append(key)
        }
        return keys
    }

    static func unexpected(_ kind: BusRequest.Kind) -> BusProtocolError {
        BusProtocolError(.unexpectedReply, "unexpected reply to \(kind.rawValue)")
    }
}
