/// The commands a node knows: names, arity, flags and key positions as COMMAND reports
/// them, and the lookup the dispatcher does per request without allocating.
struct CommandSpec: Sendable {
    /// Raw values let a connection publish its last command in an atomic (CLIENT LIST).
    enum Name: UInt8, Sendable {
        case ping, echo, hello, auth, quit, select, client, command, info, config, time, dbsize, flushall, flushdb
        case get, set, setnx, setex, psetex, getset, getdel, getex, mget, mset, msetnx
        case incr, decr, incrby, decrby, incrbyfloat, append, strlen, getrange, setrange, substr
        case del, unlink, exists, expire, pexpire, expireat, pexpireat, expiretime, pexpiretime, ttl, pttl, persist
        case type, keys, scan, randomkey, rename, renamenx
        case consistency, cluster, vget, vset
    }

    struct Flags: OptionSet, Sendable {
        let rawValue: UInt16
        static let write = Flags(rawValue: 1 << 0)
        static let readonly = Flags(rawValue: 1 << 1)
        static let denyOOM = Flags(rawValue: 1 << 2)
        static let fast = Flags(rawValue: 1 << 3)
        /// Runs before the client has authenticated.
        static let noAuth = Flags(rawValue: 1 << 4)
        static let admin = Flags(rawValue: 1 << 5)
        static let loading = Flags(rawValue: 1 << 6)
        static let stale = Flags(rawValue: 1 << 7)

        var names: [String] {
            var names: [String] = []
            if contains(.write) { names.append("write") }
            if contains(.readonly) { names.append("readonly") }
            if contains(.denyOOM) { names.append("denyoom") }
            if contains(.admin) { names.append("admin") }
            if contains(.noAuth) { names.append("no_auth") }
            if contains(.fast) { names.append("fast") }
            return names
        }
    }

    let name: Name
    let text: String
    /// Redis's convention: N exactly, -N at least N (the command name counts).
    let arity: Int
    let flags: Flags
    let firstKey: Int
    let lastKey: Int
    let keyStep: Int
    let group: String
    let since: String
    let summary: String
    /// Argument syntax for COMMAND DOCS (and so redis-cli's hints): `name:type`, with `?`
    /// for optional and `*` for repeated, e.g. `?condition:NX|XX`.
    let syntax: [String]
}

enum CommandTable {
    static let all: [CommandSpec] = {
        func spec(
            _ name: CommandSpec.Name, _ arity: Int, _ flags: CommandSpec.Flags, keys: (Int, Int, Int) = (0, 0, 0),
            _ group: String, _ since: String, _ summary: String, _ syntax: [String] = []
        ) -> CommandSpec {
            CommandSpec(
                name: name, text: "\(name)", arity: arity, flags: flags, firstKey: keys.0, lastKey: keys.1, keyStep: keys.2,
                group: group, since: since, summary: summary, syntax: syntax)
        }
        let one = (1, 1, 1)
        let all = (1, -1, 1)
        return [
            spec(.ping, -1, [.fast, .stale], "connection", "1.0.0", "Returns the server's liveliness response.", ["?message:string"]),
            spec(.echo, 2, [.fast], "connection", "1.0.0", "Returns the given string.", ["message:string"]),
            spec(.hello, -1, [.noAuth, .fast], "connection", "6.0.0", "Handshakes with the server.",
                 ["?protover:integer", "?AUTH:token", "?username:string", "?password:string", "?SETNAME:token", "?clientname:string"]),
            spec(.auth, -2, [.noAuth, .fast], "connection", "1.0.0", "Authenticates the connection.", ["?username:string", "password:string"]),
            spec(.quit, -1, [.noAuth, .fast], "connection", "1.0.0", "Closes the connection."),
            spec(.select, 2, [.fast], "connection", "1.0.0", "Changes the selected database (0 only).", ["index:integer"]),
            spec(.client, -2, [.admin], "connection", "2.4.0", "A container for client connection commands.",
                 ["subcommand:SETNAME|GETNAME|ID|LIST|INFO|SETINFO"]),
            spec(.command, -1, [.loading, .stale], "server", "2.8.13", "Returns detailed information about all commands.",
                 ["?subcommand:COUNT|DOCS|INFO|LIST"]),
            spec(.info, -1, [.loading, .stale], "server", "1.0.0", "Returns information and statistics about the server.", ["*?section:string"]),
            spec(.config, -2, [.admin], "server", "2.0.0", "A container for server configuration commands.", ["subcommand:GET|SET|RESETSTAT"]),
            spec(.time, 1, [.fast, .loading, .stale], "server", "2.6.0", "Returns the server time."),
            spec(.dbsize, 1, [.readonly, .fast], "server", "1.0.0", "Returns the number of keys in the database."),
            spec(.flushall, -1, [.write], "server", "1.0.0", "Removes all keys.", ["?flush-type:ASYNC|SYNC"]),
            spec(.flushdb, -1, [.write], "server", "1.0.0", "Removes all keys of the current database.", ["?flush-type:ASYNC|SYNC"]),
            spec(.get, 2, [.readonly, .fast], keys: one, "string", "1.0.0", "Returns the string value of a key.", ["key:key"]),
            spec(.set, -3, [.write, .denyOOM], keys: one, "string", "1.0.0", "Sets the string value of a key, ignoring its type.",
                 ["key:key", "value:string", "?condition:NX|XX", "?GET:token", "?expiration:EX seconds|PX milliseconds|EXAT unix-time-seconds|PXAT unix-time-milliseconds|KEEPTTL"]),
            spec(.setnx, 3, [.write, .denyOOM, .fast], keys: one, "string", "1.0.0", "Sets the value of a key only when it does not exist.", ["key:key", "value:string"]),
            spec(.setex, 4, [.write, .denyOOM], keys: one, "string", "2.0.0", "Sets the value and expiry in seconds of a key.", ["key:key", "seconds:integer", "value:string"]),
            spec(.psetex, 4, [.write, .denyOOM], keys: one, "string", "2.6.0", "Sets the value and expiry in milliseconds of a key.", ["key:key", "milliseconds:integer", "value:string"]),
            spec(.getset, 3, [.write, .denyOOM, .fast], keys: one, "string", "1.0.0", "Returns the previous value of a key after setting it.", ["key:key", "value:string"]),
            spec(.getdel, 2, [.write, .fast], keys: one, "string", "6.2.0", "Returns the value of a key after deleting it.", ["key:key"]),
            spec(.getex, -2, [.write, .fast], keys: one, "string", "6.2.0", "Returns the value of a key after changing its expiry.",
                 ["key:key", "?expiration:EX seconds|PX milliseconds|EXAT unix-time-seconds|PXAT unix-time-milliseconds|PERSIST"]),
            spec(.mget, -2, [.readonly, .fast], keys: all, "string", "1.0.0", "Returns the values of one or more keys.", ["*key:key"]),
            spec(.mset, -3, [.write, .denyOOM], keys: (1, -1, 2), "string", "1.0.1", "Sets the values of one or more keys.", ["*data:key value"]),
            spec(.msetnx, -3, [.write, .denyOOM], keys: (1, -1, 2), "string", "1.0.1", "Sets keys only when none of them exist.", ["*data:key value"]),
            spec(.incr, 2, [.write, .denyOOM, .fast], keys: one, "string", "1.0.0", "Increments the integer value of a key by one.", ["key:key"]),
            spec(.decr, 2, [.write, .denyOOM, .fast], keys: one, "string", "1.0.0", "Decrements the integer value of a key by one.", ["key:key"]),
            spec(.incrby, 3, [.write, .denyOOM, .fast], keys: one, "string", "1.0.0", "Increments the integer value of a key by a number.", ["key:key", "increment:integer"]),
            spec(.decrby, 3, [.write, .denyOOM, .fast], keys: one, "string", "1.0.0", "Decrements the integer value of a key by a number.", ["key:key", "decrement:integer"]),
            spec(.incrbyfloat, 3, [.write, .denyOOM, .fast], keys: one, "string", "2.6.0", "Increments the floating point value of a key by a number.", ["key:key", "increment:double"]),
            spec(.append, 3, [.write, .denyOOM, .fast], keys: one, "string", "2.0.0", "Appends a string to the value of a key.", ["key:key", "value:string"]),
            spec(.strlen, 2, [.readonly, .fast], keys: one, "string", "2.2.0", "Returns the length of a string value.", ["key:key"]),
            spec(.getrange, 4, [.readonly], keys: one, "string", "2.4.0", "Returns a substring of the string stored at a key.", ["key:key", "start:integer", "end:integer"]),
            spec(.substr, 4, [.readonly], keys: one, "string", "1.0.0", "Returns a substring (deprecated alias of GETRANGE).", ["key:key", "start:integer", "end:integer"]),
            spec(.setrange, 4, [.write, .denyOOM], keys: one, "string", "2.2.0", "Overwrites part of a string value from an offset.", ["key:key", "offset:integer", "value:string"]),
            spec(.del, -2, [.write], keys: all, "generic", "1.0.0", "Deletes one or more keys.", ["*key:key"]),
            spec(.unlink, -2, [.write, .fast], keys: all, "generic", "4.0.0", "Deletes one or more keys.", ["*key:key"]),
            spec(.exists, -2, [.readonly, .fast], keys: all, "generic", "1.0.0", "Counts how many of the given keys exist.", ["*key:key"]),
            spec(.expire, -3, [.write, .fast], keys: one, "generic", "1.0.0", "Sets the expiry of a key in seconds.", ["key:key", "seconds:integer", "?condition:NX|XX|GT|LT"]),
            spec(.pexpire, -3, [.write, .fast], keys: one, "generic", "2.6.0", "Sets the expiry of a key in milliseconds.", ["key:key", "milliseconds:integer", "?condition:NX|XX|GT|LT"]),
            spec(.expireat, -3, [.write, .fast], keys: one, "generic", "1.2.0", "Sets the expiry of a key to a Unix time in seconds.", ["key:key", "unix-time-seconds:unix-time", "?condition:NX|XX|GT|LT"]),
            spec(.pexpireat, -3, [.write, .fast], keys: one, "generic", "2.6.0", "Sets the expiry of a key to a Unix time in milliseconds.", ["key:key", "unix-time-milliseconds:unix-time", "?condition:NX|XX|GT|LT"]),
            spec(.expiretime, 2, [.readonly, .fast], keys: one, "generic", "7.0.0", "Returns the expiry of a key as a Unix time in seconds.", ["key:key"]),
            spec(.pexpiretime, 2, [.readonly, .fast], keys: one, "generic", "7.0.0", "Returns the expiry of a key as a Unix time in milliseconds.", ["key:key"]),
            spec(.ttl, 2, [.readonly, .fast], keys: one, "generic", "1.0.0", "Returns the time to live of a key in seconds.", ["key:key"]),
            spec(.pttl, 2, [.readonly, .fast], keys: one, "generic", "2.6.0", "Returns the time to live of a key in milliseconds.", ["key:key"]),
            spec(.persist, 2, [.write, .fast], keys: one, "generic", "2.2.0", "Removes the expiry of a key.", ["key:key"]),
            spec(.type, 2, [.readonly, .fast], keys: one, "generic", "1.0.0", "Returns the type of the value stored at a key.", ["key:key"]),
            spec(.keys, 2, [.readonly], "generic", "1.0.0", "Returns all key names that match a pattern.", ["pattern:pattern"]),
            spec(.scan, -2, [.readonly], "generic", "2.8.0", "Iterates over the key names in the database.",
                 ["cursor:integer", "?MATCH pattern:pattern", "?COUNT count:integer", "?TYPE type:string"]),
            spec(.randomkey, 1, [.readonly], "generic", "1.0.0", "Returns a random key name from the database."),
            spec(.rename, 3, [.write], keys: (1, 2, 1), "generic", "1.0.0", "Renames a key and overwrites the destination.", ["key:key", "newkey:key"]),
            spec(.renamenx, 3, [.write, .fast], keys: (1, 2, 1), "generic", "1.0.0", "Renames a key only when the target key name does not exist.", ["key:key", "newkey:key"]),
            spec(.consistency, -1, [.fast], "cluster", "0.1.0", "Sets or shows this connection's read and write consistency.",
                 ["?READ level:DEFAULT|ONE|QUORUM|ALL", "?WRITE level:DEFAULT|ONE|QUORUM|ALL"]),
            spec(.cluster, -2, [.stale], "cluster", "0.1.0", "Shows the cluster (INFO, NODES, RING [SHAPE], KEYNODES key) or leaves it (LEAVE).", ["subcommand:INFO|NODES|RING|KEYNODES|LEAVE", "?SHAPE|key"]),
            spec(.vget, 2, [.readonly], keys: (1, 1, 1), "cluster", "0.1.0", "Returns a key's causal context and every sibling value.", ["key:key"]),
            spec(.vset, -4, [.write, .denyOOM], keys: (1, 1, 1), "cluster", "0.1.0",
                 "Writes a value that supersedes the siblings named by a causal context.",
                 ["key:key", "context:string", "value:string", "?expiration:EX seconds|PX milliseconds"]),
        ]
    }()

    /// What dispatch needs of a command, as a trivial value: copying it out of the table
    /// costs no reference counting.
    struct Entry: Sendable {
        let name: CommandSpec.Name
        let arity: Int
        let flags: CommandSpec.Flags
        /// Position in ``all``, for the rest of the spec.
        let index: Int

        var spec: CommandSpec { CommandTable.all[index] }

        func arityMatches(_ count: Int) -> Bool {
            arity >= 0 ? count == arity : count >= -arity
        }
    }

    /// Open addressing over packed names with a multiplicative hash: a lookup is a few
    /// integer operations, where a `Dictionary` would run SipHash per request.
    private static let slotBits = 8
    private static let slots: [(key: UInt128, entry: Entry)?] = {
        var slots = [(key: UInt128, entry: Entry)?](repeating: nil, count: 1 << slotBits)
        for (index, spec) in all.enumerated() {
            var name = spec.text
            let key = name.withUTF8 { packedName(UnsafeRawBufferPointer($0)) }!
            var slot = home(key)
            while slots[slot] != nil { slot = (slot + 1) & ((1 << slotBits) - 1) }
            slots[slot] = (key, Entry(name: spec.name, arity: spec.arity, flags: spec.flags, index: index))
        }
        return slots
    }()

    @inline(__always)
    private static func home(_ key: UInt128) -> Int {
        let mixed = (UInt64(truncatingIfNeeded: key) ^ UInt64(truncatingIfNeeded: key >> 64)) &* 0x9E37_79B9_7F4A_7C15
        return Int(truncatingIfNeeded: mixed >> UInt64(64 - slotBits))
    }

    /// The command's name as COMMAND and CLIENT LIST show it.
    static func name(of command: CommandSpec.Name) -> String {
        all.first { $0.name == command }?.text ?? "unknown"
    }

    /// The command named by `name`, in any letter case.
    @inline(__always)
    static func lookup(_ name: UnsafeRawBufferPointer) -> Entry? {
        guard let key = packedName(name) else { return nil }
        var slot = home(key)
        while let candidate = slots[slot] {
            if candidate.key == key { return candidate.entry }
            slot = (slot + 1) & ((1 << slotBits) - 1)
        }
        return nil
    }

    /// Up to 16 bytes of a name, lowercased, packed into one integer.
    @inline(__always)
    static func packedName(_ name: UnsafeRawBufferPointer) -> UInt128? {
        guard name.count > 0, name.count <= 16 else { return nil }
        var packed: UInt128 = 0
        for i in 0..<name.count {
            var c = name[i]
            if c == 0 { return nil }
            if c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z") { c |= 0x20 }
            packed |= UInt128(c) << UInt128(i * 8)
        }
        return packed
    }
}
