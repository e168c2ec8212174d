import ClusterCore
import Crypto

/// SWIM messages as UDP datagrams: the one encoder and decoder of the gossip port.
///
/// Layout (big-endian): `RCG2`, cluster name (u8 length + bytes), sender (u8 + bytes), stamp
/// (u64: the sender's milliseconds << 16 plus a counter, rising with every packet it sends),
/// kind (u8: 1 ping, 2 ping-request, 3 ack), sequence (u64), target (u8 + bytes, empty for a
/// ping), update count (u8) and per update: name (u8 + bytes, not empty), incarnation (u64,
/// below 2^62), status (u8: 0 alive, 1 suspect, 2 dead); then a 32-byte HMAC-SHA256 of
/// everything before it, keyed by the cluster secret (by the cluster name when there is none).
/// The stamp is what ``GossipReplayGuard`` checks.
public enum GossipPacket {
    public enum Rejection: Error, Hashable, Sendable { case malformed, foreignCluster, badMAC }

    public static let magic: [UInt8] = Array("RCG2".utf8)
    public static let macLength = 32
    /// Largest datagram accepted.
    public static let maxLength = 65_507

    /// The keys a packet is signed with (the first) and checked against (any).
    public struct Keys: Sendable {
        let secrets: [[UInt8]]
        var keys: [SymmetricKey] { secrets.map { SymmetricKey(data: $0) } }
        public init(cluster: String, secrets: [String]) {
            self.secrets = (secrets.isEmpty ? [cluster] : secrets).map { Array($0.utf8) }
        }
    }

    public static func encode(_ message: SWIM.Message, from sender: String, stamp: UInt64, cluster: String, keys: Keys) -> [UInt8] {
        var bytes = magic
        func string(_ text: String) {
            let utf8 = Array(text.utf8.prefix(255))
            bytes.append(UInt8(utf8.count))
            bytes.append(contentsOf: utf8)
        }
        func integer<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) } }
        string(cluster)
        string(sender)
        integer(stamp)
        let (kind, sequence, target, updates): (UInt8, UInt64, String, [SWIM.Member])
        switch message {
        case .ping(let s, let u): (kind, sequence, target, updates) = (1, s, "", u)
        case .pingRequest(let s, let t, let u): (kind, sequence, target, updates) = (2, s, t, u)
        case .ack(let s, let t, let u): (kind, sequence, target, updates) = (3, s, t, u)
        }
        bytes.append(kind)
        integer(sequence)
        string(target)
        let carried = updates.prefix(255)
        bytes.append(UInt8(carried.count))
        for update in carried {
            string(update.name)
            integer(update.incarnation)
            bytes.append(update.status == .alive ? 0 : update.status == .suspect ? 1 : 2)
        }
        return sign(bytes, keys: keys)
    }

    /// `body` followed by its MAC under the first key.
    public static func sign(_ body: [UInt8], keys: Keys) -> [UInt8] {
        body + HMAC<SHA256>.authenticationCode(for: body, using: keys.keys[0])
    }

    /// Checks the MAC, then reads the packet. Throws for a foreign cluster, a bad MAC or any
    /// malformed field; never traps.
    public static func decode(_ packet: [UInt8], cluster: String, keys: Keys) throws(Rejection) -> (sender: String, stamp: UInt64, message: SWIM.Message) {
        guard packet.count > macLength + magic.count, packet.count <= maxLength else { throw .malformed }
        let body = packet[..<(packet.count - macLength)]
        let mac = packet[(packet.count - macLength)...]
        var reader = Reader(bytes: body)
        guard try reader.take(4).elementsEqual(magic) else { throw .malformed }
        guard try reader.string() == cluster else { throw .foreignCluster }
        guard keys.keys.contains(where: { HMAC<SHA256>.isValidAuthenticationCode(Array(mac), authenticating: Array(body), using: $0) }) else {
            throw .badMAC
        }
        let sender = try reader.string()
        let stamp = try reader.integer()
        let kind = try reader.byte()
        let sequence = try reader.integer()
        let target = try reader.string()
        let count = Int(try reader.byte())
        var updates: [SWIM.Member] = []
        updates.reserveCapacity(count)
        for _ in 0..<count {
            let name = try reader.string()
            let incarnation = try reader.integer()
            guard !name.isEmpty, incarnation < BusLimits.maxCounter else { throw .malformed }
            let status: SWIM.Status
            switch try reader.byte() {
            case 0: status = .alive
            case 1: status = .suspect
            case 2: status = .dead
            default: throw .malformed
            }
            updates.append(SWIM.Member(name: name, incarnation: incarnation, status: status))
        }
        guard reader.atEnd, !sender.isEmpty else { throw .malformed }
        switch kind {
        case 1: return (sender, stamp, .ping(sequence: sequence, updates: updates))
        case 2 where !target.isEmpty: return (sender, stamp, .pingRequest(sequence: sequence, target: target, updates: updates))
        case 3: return (sender, stamp, .ack(sequence: sequence, target: target, updates: updates))
        default: throw .malformed
        }
    }

    private struct Reader {
        let bytes: ArraySlice<UInt8>
        var at: Int
        init(bytes: ArraySlice<UInt8>) {
            self.bytes = bytes
            self.at = bytes.startIndex
        }
        var atEnd: Bool { at == bytes.endIndex }
        mutating func take(_ count: Int) throws(Rejection) -> ArraySlice<UInt8> {
            guard count >= 0, bytes.endIndex - at >= count else { throw .malformed }
            defer { at += count }
            return bytes[at..<(at + count)]
        }
        mutating func byte() throws(Rejection) -> UInt8 {
            guard at < bytes.endIndex else { throw .malformed }
            defer { at += 1 }
            return bytes[at]
        }
        mutating func string() throws(Rejection) -> String {
            let length = Int(try byte())
            let raw = try take(length)
            guard let text = String(validating: raw, as: UTF8.self) else { throw .malformed }
            return text
        }
        mutating func integer() throws(Rejection) -> UInt64 {
            try take(8).reduce(0) { $0 << 8 | UInt64($1) }
        }
    }
}

/// The stamps a node puts on its gossip packets: its wall clock in milliseconds << 16, plus
/// one per packet within a millisecond, so they rise across restarts as the clock does.
public struct GossipStamper: Sendable {
    private var last: UInt64 = 0
    public init() {}

    public mutating func next(now: Int64) -> UInt64 {
        let wall = UInt64(max(0, now)) << 16
        last = max(wall, last &+ 1)
        return last
    }
}

/// Drops replayed and stale gossip: per sender, the highest stamp seen and which of the 64
/// below it arrived (the anti-replay window of IPsec, RFC 4303 §3.4.3), and no stamp more
/// than ``maxAgeMillis`` from the receiver's clock either way, which covers a receiver that
/// restarted and remembers nothing.
public struct GossipReplayGuard: Sendable {
    public enum Verdict: Sendable, Equatable { case accept, replay, stale }

    public static let maxAgeMillis: Int64 = 60_000
    static let window: UInt64 = 64

    private var highest: [String: (stamp: UInt64, seen: UInt64)] = [:]

    public init() {}

    /// Checks and records a stamp from `sender`, whose MAC has been checked already.
    public mutating func admit(_ stamp: UInt64, from sender: String, now: Int64) -> Verdict {
        let millis = Int64(truncatingIfNeeded: stamp >> 16)
        guard millis >= now.subtractingReportingOverflow(Self.maxAgeMillis).partialValue,
              millis <= now.addingReportingOverflow(Self.maxAgeMillis).partialValue else { return .stale }
        guard let known = highest[sender] else {
            highest[sender] = (stamp, 1)
            return .accept
        }
        if stamp > known.stamp {
            let shift = stamp - known.stamp
            let seen = shift >= Self.window ? 1 : known.seen << shift | 1
            highest[sender] = (stamp, seen)
            return .accept
        }
        let behind = known.stamp - stamp
        guard behind < Self.window else { return .stale }
        let bit: UInt64 = 1 << behind
        guard known.seen & bit == 0 else { return .replay }
        highest[sender] = (known.stamp, known.seen | bit)
        return .accept
    }

    /// Forgets a member that left.
    public mutating func forget(_ sender: String) { highest[sender] = nil }
}
