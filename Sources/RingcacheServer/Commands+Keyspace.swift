import CacheStore
import NIOCore
import RESP

extension CommandProcessor {
    func delete(_ args: RESPArguments, _ out: inout ByteBuffer, _ now: Int64) {
        var removed = 0
        for i in 1..<args.count where store.remove(args[i], now: now) { removed += 1 }
        out.writeRESPInteger(removed)
    }

    func exists(_ args: RESPArguments, _ out: inout ByteBuffer, _ now: Int64) {
        var found = 0
        for i in 1..<args.count where store.contains(args[i], now: now) { found += 1 }
        out.writeRESPInteger(found)
    }

    /// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT with NX, XX, GT, LT.
    func expire(_ args: RESPArguments, _ out: inout ByteBuffer, _ now: Int64, unit: Int64, absolute: Bool, name: String) {
        var nx = false, xx = false, gt = false, lt = false
        for i in 3..<args.count {
            let option = args[i]
            if option.equalsIgnoringCase("nx") { nx = true }
            else if option.equalsIgnoringCase("xx") { xx = true }
            else if option.equalsIgnoringCase("gt") { gt = true }
            else if option.equalsIgnoringCase("lt") { lt = true }
            else {
                out.writeRESPError("ERR Unsupported option \(option.asString)")
                return
            }
        }
        if nx && (xx || gt || lt) {
            out.writeRESPError("ERR NX and XX, GT or LT options at the same time are not compatible")
            return
        }
        if gt && lt {
            out.writeRESPError("ERR GT and LT options at the same time are not compatible")
            return
        }
        guard let amount = args[2].asInteger else {
            out.writeNotInteger()
            return
        }
        let (millis, overflow) = Int64(amount).multipliedReportingOverflow(by: unit)
        let (at, overflow2) = absolute ? (millis, false) : millis.addingReportingOverflow(now)
        guard !overflow, !overflow2 else {
            out.writeRESPError("ERR invalid expire time in '\(name)' command")
            return
        }
        var changed = false
        store.update(args[1], now: now) { entry in
            guard let entry else { return .none }
            let current = entry.expiry
            if nx && current != 0 { return .none }
            if xx && current == 0 { return .none }
            // A key without expiry counts as an infinite TTL for GT and LT.
            if gt && (current == 0 || at <= current) { return .none }
            if lt && current != 0 && at >= current { return .none }
            changed = true
            return at <= now ? .delete : .setExpiry(min(at, maximumExpiry))
        }
        out.writeRESPInteger(changed ? 1 : 0)
    }

    /// TTL, PTTL, EXPIRETIME, PEXPIRETIME: -2 for no key, -1 for no expiry, else `map`.
    func expiryInfo(_ args: RESPArguments, _ out: inout ByteBuffer, _ now: Int64, _ map: (Int64, Int64) -> Int64) {
        var result: Int64 = -2
        store.read(args[1], now: now) { entry in
            guard let entry else { return }
            result = entry.expiry == 0 ? -1 : max(0, map(entry.expiry, now))
        }
        out.writeRESPInteger(Int(result))
    }

    func persist(_ args: RESPArguments, _ out: inout ByteBuffer, _ now: Int64) {
        var changed = false
        store.update(args[1], now: now) { entry in
            guard let entry, entry.expiry != 0 else { return .none }
            changed = true
            return .setExpiry(0)
        }
        out.writeRESPInteger(changed ? 1 : 0)
    }

    func type(_ args: RESPArguments, _ out: inout ByteBuffer, _ now: Int64) {
        if store.contains(args[1], now: now) { out.writeRESPRaw("+string\r\n") } else { out.writeRESPRaw("+none\r\n") }
    }

    func keys(_ args: RESPArguments, _ out: inout ByteBuffer, _ now: Int64) {
        let pattern = args[1]
        let everything = GlobPattern.matchesEverything(pattern)
        var replies = ByteBuffer()
        var count = 0
        store.forEachKey(now: now) { key in
            guard everything || GlobPattern.matches(pattern, key) else { return }
            replies.writeRESPBulk(key)
            count += 1
        }
        out.writeRESPArrayHeader(count)
        out.writeBuffer(&replies)
    }

    func scan(_ args: RESPArguments, _ session: Session, _ out: inout ByteBuffer, _ now: Int64) {
        guard let cursor = UInt64(args[1].asString) else {
            out.writeRESPError("ERR invalid cursor")
            return
        }
        var count = 10
        var pattern: UnsafeRawBufferPointer?
        var onlyStrings = true
        var i = 2
        while i < args.count {
            let option = args[i]
            guard i + 1 < args.count else {
                out.writeSyntaxError()
                return
            }
            if option.equalsIgnoringCase("count") {
                guard let value = args[i + 1].asInteger else {
                    out.writeNotInteger()
                    return
                }
                guard value >= 1 else {
                    out.writeSyntaxError()
                    return
                }
                count = value
            } else if option.equalsIgnoringCase("match") {
                pattern = args[i + 1]
                if let p = pattern, GlobPattern.matchesEverything(p) { pattern = nil }
            } else if option.equalsIgnoringCase("type") {
                onlyStrings = args[i + 1].equalsIgnoringCase("string")
            } else {
                out.writeSyntaxError()
                return
            }
            i += 2
        }
        var replies = ByteBuffer()
        var found = 0
        let next = store.scan(cursor: cursor, count: count, now: now) { key in
            guard onlyStrings else { return }
            if let pattern, !GlobPattern.matches(pattern, key) { return }
            replies.writeRESPBulk(key)
            found += 1
        }
        out.writeRESPArrayHeader(2)
        out.writeRESPBulk(String(next))
        out.writeRESPArrayHeader(found)
        out.writeBuffer(&replies)
    }

    func randomkey(_ session: Session, _ out: inout ByteBuffer, _ now: Int64) {
        if let key = store.randomKey(now: now) {
            key.withUnsafeBytes { out.writeRESPBulk($0) }
        } else {
            out.writeRESPNull(resp3: session.resp3)
        }
    }

    func rename(_ args: RESPArguments, _ out: inout ByteBuffer, _ now: Int64, onlyIfAbsent: Bool) {
        switch store.rename(args[1], to: args[2], onlyIfAbsent: onlyIfAbsent, now: now) {
        case .noSuchKey: out.writeRESPError("ERR no such key")
        case .renamed: if onlyIfAbsent { out.writeRESPInteger(1) } else { out.writeOK() }
        case .targetExists: out.writeRESPInteger(0)
        case .outOfMemory: out.writeRESPError("OOM command not allowed when used memory > 'maxmemory'.")
        }
    }

    func flush(_ args: RESPArguments, _ out: inout ByteBuffer) {
        if args.count > 2 || (args.count == 2 && !args[1].equalsIgnoringCase("async") && !args[1].equalsIgnoringCase("sync")) {
            out.writeSyntaxError()
            return
        }
        store.removeAll()
        out.writeOK()
    }
}
