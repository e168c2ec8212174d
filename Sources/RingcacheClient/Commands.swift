import ClusterCore
import Foundation
import NIOCore
import RESP

/// What `SET` requires of the key's current state.
public enum SetCondition: Sendable, Hashable {
    case always
    /// Only if the key does not exist (`NX`).
    case ifAbsent
    /// Only if the key exists (`XX`).
    case ifPresent
}

/// A key's time to live, as `PTTL` reports it.
public enum KeyTTL: Sendable, Hashable {
    case noSuchKey
    case persistent
    case expires(in: Duration)
}

/// A causal context from ``RingcacheClient/vget(_:consistency:)``, to hand back to
/// ``RingcacheClient/vset(_:_:context:ttl:consistency:)`` so the write supersedes exactly the
/// values that were read. Opaque; `empty` for a key never read.
public struct CausalContext: Sendable, Hashable, CustomStringConvertible {
    /// The hex token VGET returned (empty for a key that had no value).
    public let token: String
    /// A context from its token, e.g. one kept between requests.
    public init(token: String) { self.token = token }
    /// The context of a key never read: a VSET with it supersedes nothing.
    public static let empty = CausalContext(token: "")
    /// The token, or `(empty)`.
    public var description: String { token.isEmpty ? "(empty)" : token }
}

/// A key's concurrent values (siblings) and the context that covers them all. Under
/// `reconcile lww` there is at most one value.
public struct Siblings: Sendable, Hashable {
    /// Covers every value below: hand it to VSET to replace them all.
    public var context: CausalContext
    /// A deleted sibling is nil.
    public var values: [[UInt8]?]
}

/// A reply to ``RingcacheClient/send(_:routingKey:idempotent:consistency:)``.
public enum RingcacheReply: Sendable, Hashable {
    case status(String)
    case integer(Int)
    case bulk([UInt8])
    case null
    case array([RingcacheReply])
    case double(Double)
    case boolean(Bool)
    /// Keys and values alternating.
    case map([RingcacheReply])

    init(_ value: RESPValue) {
        switch value {
        case .simpleString(let b): self = .status(String(buffer: b))
        case .integer(let i): self = .integer(i)
        case .bulkString(let b?), .verbatimString(let b), .bigNumber(let b): self = .bulk(Array(buffer: b))
        case .bulkString(nil), .array(nil), .null: self = .null
        case .array(let values?), .set(let values), .push(let values): self = .array(values.map(RingcacheReply.init))
        case .double(let d): self = .double(d)
        case .boolean(let b): self = .boolean(b)
        case .map(let keys, let values), .attribute(let keys, let values):
            self = .map(zip(keys, values).flatMap { [RingcacheReply($0), RingcacheReply($1)] })
        case .error(let b), .bulkError(let b): self = .status(String(buffer: b))
        }
    }

    /// The reply as text, where it is text.
    public var string: String? {
        switch self {
        case .status(let s): s
        case .bulk(let b): String(decoding: b, as: UTF8.self)
        case .integer(let i): String(i)
        default: nil
        }
    }
}

extension RingcacheClient {
    // MARK: Strings

    /// The value of `key`, or nil when it does not exist.
    public func get(_ key: some RingcacheBytes, consistency: Consistency? = nil) async throws -> [UInt8]? {
        let reply = try await execute(CommandEncoder.command("GET", [key]), route: Self.route(for: key), idempotent: true, consistency: consistency)
        return try Self.bytes(reply)
    }

    /// The value of `key` as UTF-8 text.
    public func getString(_ key: some RingcacheBytes, consistency: Consistency? = nil) async throws -> String? {
        try await get(key, consistency: consistency).map { String(decoding: $0, as: UTF8.self) }
    }

    /// The value of `key` decoded from JSON.
    public func get<Value: Decodable>(_ key: some RingcacheBytes, as type: Value.Type, consistency: Consistency? = nil) async throws -> Value? {
        guard let bytes = try await get(key, consistency: consistency) else { return nil }
        return try JSONDecoder().decode(Value.self, from: Data(bytes))
    }

    /// Sets `key` to `value`, with a time to live and a condition. Returns false when the
    /// condition kept the value from being set.
    @discardableResult
    public func set(
        _ key: some RingcacheBytes, _ value: some RingcacheBytes, ttl: Duration? = nil, condition: SetCondition = .always,
        consistency: Consistency? = nil
    ) async throws -> Bool {
        var count = 3
        if ttl != nil { count += 2 }
        if condition != .always { count += 1 }
        var command = CommandEncoder(count: count, capacity: 32 + value.withBytes { $0.count })
        command.append("SET")
        command.append(key)
        command.append(value)
        if let ttl {
            command.append("PX")
            command.append(Self.milliseconds(ttl))
        }
        switch condition {
        case .always: break
        case .ifAbsent: command.append("NX")
        case .ifPresent: command.append("XX")
        }
        let reply = try await execute(command.buffer, route: Self.route(for: key, serialized: condition != .always),
                                      idempotent: condition == .always, consistency: consistency)
        if case .bulkString(nil) = reply { return false }
        if case .null = reply { return false }
        return true
    }

    /// Sets `key` to `value` encoded as JSON.
    @discardableResult
    public func set<Value: Encodable>(
        _ key: some RingcacheBytes, encoding value: Value, ttl: Duration? = nil, condition: SetCondition = .always,
        consistency: Consistency? = nil
    ) async throws -> Bool {
        try await set(key, Array(JSONEncoder().encode(value)), ttl: ttl, condition: condition, consistency: consistency)
    }

    /// Adds `amount` to the integer at `key` (0 if absent) and returns the result. Never
    /// retried once sent: a retry could count twice.
    public func incr(_ key: some RingcacheBytes, by amount: Int64 = 1, consistency: Consistency? = nil) async throws -> Int64 {
        let payload = amount == 1 ? CommandEncoder.command("INCR", [key]) : CommandEncoder.command("INCRBY", [key, String(amount)])
        return try Self.integer(await execute(payload, route: Self.route(for: key, serialized: true), idempotent: false, consistency: consistency))
    }

    /// Subtracts `amount` from the integer at `key` (0 if absent) and returns the result; never retried once sent.
    public func decr(_ key: some RingcacheBytes, by amount: Int64 = 1, consistency: Consistency? = nil) async throws -> Int64 {
        let payload = amount == 1 ? CommandEncoder.command("DECR", [key]) : CommandEncoder.command("DECRBY", [key, String(amount)])
        return try Self.integer(await execute(payload, route: Self.route(for: key, serialized: true), idempotent: false, consistency: consistency))
    }

    // MARK: Keys

    /// Deletes the keys; returns how many existed.
    @discardableResult
    public func delete(_ keys: [some RingcacheBytes], consistency: Consistency? = nil) async throws -> Int {
        try await sumPerOwner("DEL", keys, consistency: consistency)
    }

    @discardableResult
    public func delete(_ key: some RingcacheBytes, consistency: Consistency? = nil) async throws -> Int {
        try await delete([key], consistency: consistency)
    }

    /// How many of the keys exist (a key named twice counts twice, as in Redis).
    public func exists(_ keys: [some RingcacheBytes], consistency: Consistency? = nil) async throws -> Int {
        try await sumPerOwner("EXISTS", keys, consistency: consistency)
    }

    /// Whether `key` exists.
    public func exists(_ key: some RingcacheBytes, consistency: Consistency? = nil) async throws -> Bool {
        try await exists([key], consistency: consistency) > 0
    }

    /// Sets a time to live on `key`; false when the key does not exist.
    @discardableResult
    public func expire(_ key: some RingcacheBytes, ttl: Duration, consistency: Consistency? = nil) async throws -> Bool {
        // PEXPIREAT with an absolute time, so that a retry sets the same deadline: idempotent.
        let deadline = Int64(Date().timeIntervalSince1970 * 1000) + Int64(Self.milliseconds(ttl))!
        let reply = try await execute(CommandEncoder.command("PEXPIREAT", [key, String(deadline)]), route: Self.route(for: key, serialized: true),
                                      idempotent: true, consistency: consistency)
        return try Self.integer(reply) == 1
    }

    /// The time `key` has left.
    public func ttl(_ key: some RingcacheBytes, consistency: Consistency? = nil) async throws -> KeyTTL {
        let reply = try await execute(CommandEncoder.command("PTTL", [key]), route: Self.route(for: key), idempotent: true, consistency: consistency)
        switch try Self.integer(reply) {
        case -2: return .noSuchKey
        case -1: return .persistent
        case let ms: return .expires(in: .milliseconds(ms))
        }
    }

    // MARK: Many keys

    /// The values of the keys, in their order (nil where a key does not exist). The keys are
    /// split by owner, asked of each owner in one request, and put back in order.
    public func mget(_ keys: [some RingcacheBytes], consistency: Consistency? = nil) async throws -> [[UInt8]?] {
        var results = [[UInt8]?](repeating: nil, count: keys.count)
        for (indices, reply) in try await perOwner("MGET", keys, consistency: consistency, idempotent: true) {
            guard case .array(let values?) = reply, values.count == indices.count else {
                throw RingcacheError(.protocol, "MGET answered \(reply)")
            }
            for (index, value) in zip(indices, values) { results[index] = try Self.bytes(value) }
        }
        return results
    }

    /// Sets every pair, split by owner (not atomic across owners).
    public func mset(_ pairs: [(key: some RingcacheBytes, value: some RingcacheBytes)], consistency: Consistency? = nil) async throws {
        let groups = groupByOwner(pairs.map(\.key))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for (route, indices) in groups {
                var command = CommandEncoder(count: 1 + 2 * indices.count)
                command.append("MSET")
                for index in indices {
                    command.append(pairs[index].key)
                    command.append(pairs[index].value)
                }
                let payload = command.buffer
                tasks.addTask { _ = try await self.execute(payload, route: route, idempotent: true, consistency: consistency) }
            }
            try await tasks.waitForAll()
        }
    }

    // MARK: Siblings

    /// The key's values and their causal context (the Riak get-context cycle).
    public func vget(_ key: some RingcacheBytes, consistency: Consistency? = nil) async throws -> Siblings {
        let reply = try await execute(CommandEncoder.command("VGET", [key]), route: Self.route(for: key), idempotent: true, consistency: consistency)
        guard case .array(let parts?) = reply, parts.count == 2, let token = parts[0].string, case .array(let values?) = parts[1] else {
            throw RingcacheError(.protocol, "VGET answered \(reply)")
        }
        return Siblings(context: CausalContext(token: token), values: try values.map(Self.bytes))
    }

    /// Writes a value that supersedes the siblings `context` covers.
    public func vset(
        _ key: some RingcacheBytes, _ value: some RingcacheBytes, context: CausalContext, ttl: Duration? = nil,
        consistency: Consistency? = nil
    ) async throws {
        var arguments: [any RingcacheBytes] = [key, context.token, value]
        if let ttl { arguments += ["PX", Self.milliseconds(ttl)] }
        _ = try await execute(CommandEncoder.command("VSET", arguments), route: Self.route(for: key), idempotent: true, consistency: consistency)
    }

    // MARK: Any command

    /// Sends any command. With `routingKey` it goes to that key's replica, otherwise to any
    /// node. `idempotent` says whether it may be retried after it was sent.
    public func send(
        _ command: [any RingcacheBytes], routingKey: (any RingcacheBytes)? = nil, idempotent: Bool = false,
        consistency: Consistency? = nil
    ) async throws -> RingcacheReply {
        guard !command.isEmpty else { throw RingcacheError(.server, "ERR empty command") }
        var encoder = CommandEncoder(count: command.count)
        for part in command { encoder.append(part) }
        let name = command[0].withBytes { String(decoding: $0, as: UTF8.self) }.uppercased()
        let serialized = Self.readModifyWrite.contains(name)
            || (name == "SET" && command.dropFirst(3).contains { $0.withBytes { ["NX", "XX", "GET", "KEEPTTL"].contains(String(decoding: $0, as: UTF8.self).uppercased()) } })
        let route = routingKey.map { key in Route.position(key.withBytes { HashRing.position(of: $0) }, serialized: serialized) } ?? .any
        return RingcacheReply(try await execute(encoder.buffer, route: route, idempotent: idempotent, consistency: consistency))
    }

    // MARK: Helpers

    /// Commands the cluster runs at the key's first replica.
    static let readModifyWrite: Set<String> = [
        "SETNX", "GETSET", "GETDEL", "GETEX", "INCR", "DECR", "INCRBY", "DECRBY", "INCRBYFLOAT", "APPEND", "GETRANGE", "SUBSTR",
        "SETRANGE", "EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT", "EXPIRETIME", "PEXPIRETIME", "PERSIST",
    ]

    /// Groups key indices by the node each key goes to (the favoured node where it holds the
    /// key, else the key's first replica), keeping their order; each group is routed by its
    /// first key, which picks that same node.
    private func groupByOwner(_ keys: [some RingcacheBytes]) -> [(Route, [Int])] {
        var groups: [Int32: (Route, [Int])] = [:]
        var order: [Int32] = []
        let (topology, home) = placement
        for (index, key) in keys.enumerated() {
            let position = key.withBytes { HashRing.position(of: $0) }
            let target = configuration.routing == .firstSeed ? 0 : topology.withOwners(ofPosition: position) { owners in
                home.flatMap { owners.contains($0) ? $0 : nil } ?? owners.first ?? 0
            }
            if groups[target] == nil {
                groups[target] = (.position(position, serialized: false), [])
                order.append(target)
            }
            groups[target]!.1.append(index)
        }
        return order.map { groups[$0]! }
    }

    private func perOwner(
        _ name: StaticString, _ keys: [some RingcacheBytes], consistency: Consistency?, idempotent: Bool
    ) async throws -> [([Int], RESPValue)] {
        let groups = groupByOwner(keys)
        return try await withThrowingTaskGroup(of: ([Int], RESPValue).self) { tasks in
            for (route, indices) in groups {
                var command = CommandEncoder(count: 1 + indices.count)
                command.append(name)
                for index in indices { command.append(keys[index]) }
                let payload = command.buffer
                tasks.addTask { (indices, try await self.execute(payload, route: route, idempotent: idempotent, consistency: consistency)) }
            }
            var replies: [([Int], RESPValue)] = []
            for try await reply in tasks { replies.append(reply) }
            return replies
        }
    }

    private func sumPerOwner(_ name: StaticString, _ keys: [some RingcacheBytes], consistency: Consistency?) async throws -> Int {
        var total = 0
        for (_, reply) in try await perOwner(name, keys, consistency: consistency, idempotent: true) {
            total += Int(try Self.integer(reply))
        }
        return total
    }

    static func bytes(_ reply: RESPValue) throws(RingcacheError) -> [UInt8]? {
        switch reply {
        case .bulkString(let bytes?), .simpleString(let bytes), .verbatimString(let bytes): return Array(buffer: bytes)
        case .bulkString(nil), .null: return nil
        default: throw RingcacheError(.protocol, "expected a string, got \(reply)")
        }
    }

    static func integer(_ reply: RESPValue) throws(RingcacheError) -> Int64 {
        guard case .integer(let value) = reply else { throw RingcacheError(.protocol, "expected an integer, got \(reply)") }
        return Int64(value)
    }

    static func milliseconds(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        return String(max(1, seconds * 1000 + attoseconds / 1_000_000_000_000_000))
    }
}
