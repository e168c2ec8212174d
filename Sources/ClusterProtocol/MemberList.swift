import ClusterCore
import NIOCore
import RESP

/// The whole member list one node pushes to another (RC.MEMBERS, and the answer to RC.JOIN):
/// ring entries with their gossip states, and the claims the sender knows of members that
/// finished sending for its ring (``TransferCoverage``).
///
/// Wire form: `[sender, ring, [[name, host, port, bus port, version, left, incarnation,
/// status], …], [[finished member, coverage], …]]`, coverage comma-separated, `*` for all.
public struct MemberList: Sendable, Hashable {
    public struct Member: Sendable, Hashable {
        public var entry: RingMembership.Entry
        /// What gossip says of it, if the sender's gossip knows it.
        public var gossip: SWIM.Member?

        public init(entry: RingMembership.Entry, gossip: SWIM.Member?) {
            self.entry = entry
            self.gossip = gossip
        }
    }

    public var sender: String
    /// The digest of the sender's ring (``RingMembership/digest``).
    public var ring: UInt64
    public var members: [Member]
    /// Finished members and the old owners each covered (nil: all).
    public var finished: [String: Set<String>?]

    public init(sender: String, ring: UInt64, members: [Member], finished: [String: Set<String>?]) {
        self.sender = sender
        self.ring = ring
        self.members = members
        self.finished = finished
    }

    /// A member list of a cluster this code is meant for fits in far less.
    public static let maxEncodedBytes = 16 * 1024 * 1024

    public func encode(into out: inout ByteBuffer) {
        out.writeRESPArrayHeader(4)
        out.writeRESPBulk(sender)
        out.writeRESPBulk(String(ring))
        out.writeRESPArrayHeader(members.count)
        for member in members {
            let entry = member.entry
            out.writeRESPArrayHeader(8)
            out.writeRESPBulk(entry.name)
            out.writeRESPBulk(entry.host)
            out.writeRESPBulk(String(entry.port))
            out.writeRESPBulk(String(entry.busPort))
            out.writeRESPBulk(String(entry.version))
            out.writeRESPBulk(entry.left ? "1" : "0")
            out.writeRESPBulk(String(member.gossip?.incarnation ?? 0))
            out.writeRESPBulk(member.gossip.map { "\($0.status)" } ?? "-")
        }
        let claims = finished.sorted { $0.key < $1.key }
        out.writeRESPArrayHeader(claims.count)
        for (name, coverage) in claims {
            out.writeRESPArrayHeader(2)
            out.writeRESPBulk(name)
            out.writeRESPBulk(BusRequest.encodeCoverage(coverage))
        }
    }

    /// Reads a member list from its wire form; throws if any field is malformed or out of range.
    public static func decode(_ bytes: inout ByteBuffer) throws(BusProtocolError) -> MemberList {
        let parser = RESPValueParser(limits: RESPLimits(maxBulkLength: 64 * 1024, maxMultibulkLength: maxMembers * 8), maxDepth: 3)
        let value: RESPValue?
        do { value = try parser.parse(&bytes) } catch { throw malformed("not a RESP value") }
        guard let value else { throw malformed("truncated") }
        return try decode(value)
    }

    static var maxMembers: Int { BusLimits.maxMembers }

    public static func decode(_ value: RESPValue) throws(BusProtocolError) -> MemberList {
        guard case .array(let parts?) = value, parts.count == 4, case .array(let items?) = parts[2], case .array(let claims?) = parts[3] else {
            throw malformed("expected [sender, ring, members, finished]")
        }
        let sender = try name(parts[0], "sender")
        guard let ringText = parts[1].string, let ring = UInt64(ringText) else { throw malformed("ring is not a number") }
        guard items.count <= maxMembers, claims.count <= maxMembers else { throw BusProtocolError(.tooLarge, "more than \(maxMembers) members") }
        var members: [Member] = []
        members.reserveCapacity(items.count)
        for item in items { members.append(try member(item)) }
        var finished: [String: Set<String>?] = [:]
        for claim in claims {
            guard case .array(let fields?) = claim, fields.count == 2, let coverage = fields[1].string else { throw malformed("bad claim") }
            let covering = BusRequest.decodeCoverage(coverage)
            guard (covering?.count ?? 0) <= maxMembers else { throw BusProtocolError(.tooLarge, "coverage too long") }
            finished[try name(fields[0], "finished member")] = .some(covering)
        }
        return MemberList(sender: sender, ring: ring, members: members, finished: finished)
    }

    private static func member(_ item: RESPValue) throws(BusProtocolError) -> Member {
        guard case .array(let fields?) = item, fields.count == 8 else { throw malformed("a member needs 8 fields") }
        let text = fields.map { $0.string ?? "" }
        let name = try name(fields[0], "member name")
        guard !text[1].isEmpty, text[1].utf8.count <= BusLimits.maxNameLength else { throw malformed("bad host") }
        guard let port = Int(text[2]), (1...65535).contains(port), let bus = Int(text[3]), (1...65535).contains(bus) else {
            throw BusProtocolError(.outOfRange, "ports must be in 1...65535")
        }
        guard let version = UInt64(text[4]), version < BusLimits.maxCounter, let incarnation = UInt64(text[6]),
              incarnation < BusLimits.maxCounter else {
            throw BusProtocolError(.outOfRange, "member version and incarnation must be below 2^62")
        }
        guard text[5] == "0" || text[5] == "1" else { throw malformed("left flag must be 0 or 1") }
        let status: SWIM.Status? = switch text[7] {
        case "alive": .alive
        case "suspect": .suspect
        case "dead": .dead
        case "-": nil
        default: throw malformed("unknown gossip status")
        }
        let entry = RingMembership.Entry(name: name, host: text[1], port: port, busPort: bus, version: version, left: text[5] == "1")
        return Member(entry: entry, gossip: status.map { SWIM.Member(name: name, incarnation: incarnation, status: $0) })
    }

    private static func name(_ value: RESPValue, _ field: String) throws(BusProtocolError) -> String {
        guard let text = value.string, (1...BusLimits.maxNameLength).contains(text.utf8.count) else {
            throw malformed("\(field) must be 1 to \(BusLimits.maxNameLength) bytes")
        }
        return text
    }

    private static func malformed(_ why: String) -> BusProtocolError { BusProtocolError(.malformed, "malformed member list: \(why)") }
}
