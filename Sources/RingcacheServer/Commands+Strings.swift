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

/// Expiry options shared by SET and GETEX.
enum ExpiryOption: Equatable {
    case none
    case keep
    case persist
    /// An absolute Unix time in milliseconds.
    case at(Int64)
}

extension CommandProcessor {
    func get(_ args: RESPArguments, _ session: Session, _ out: inout ByteBuffer, _ now: Int64) {
        store.read(args[1], now: now) { entry in
            if let entry { out.writeRESPBulk(entry.value) } else { out.writeRESPNull(resp3: session.resp3) }
        }
    }

    /// Reads `EX s | PX ms | EXAT s | PXAT ms` at `args[index]`; writes the error and
    /// returns nil when the number is bad.
    private func parseExpiry(
        _ args: RESPArguments, _ index: Int, unit: Int64, absolute: Bool, now: Int64, name: String, _ out: inout ByteBuffer
    ) -> Int64? {
        guard let amount = args[index].asInteger else {
            out.writeNotInteger()
            return nil
        }
        guard amount > 0 else {
            out.writeRESPError("ERR invalid expire time in '\(name)' command")
            return nil
        }
        let (millis, overflow) = Int64(amount).multipliedReportingOverflow(by: unit)
        let (at, overflow2) = absolute ? (millis, false) : millis.addingReportingOverflow(now)
        guard !overflow, !overflow2 else {
            out.writeRESPError("ERR invalid expire time in '\(name)' command")
            return nil
        }
        return min(at, maximumExpiry)
    }

    func set(_ args: RESPArguments, _ session: Session, _ out: inout ByteBuffer, _ now: Int64) {
        var onlyIfAbsent = false
        var onlyIfPresent = false
        var returnOld = false
        var expiry = ExpiryOption.none
        var i = 3
        while i < args.count {
            let option = args[i]
            let hasNext = i + 1 < args.count
            if option.equalsIgnoringCase("nx") && !onlyIfPresent {
                onlyIfAbsent = true
            } else if option.equalsIgnoringCase("xx") && !onlyIfAbsent {
                onlyIfPresent = true
            } else if option.equalsIgnoringCase("get") {
                returnOld = true
            } else if option.equalsIgnoringCase("keepttl") && expiry == .none {
                expiry = .keep
            } else if expiry == .none && hasNext,
                let (unit, absolute) = Self.expiryUnit(option, allowPersist: false)
            {
                guard let at = parseExpiry(args, i + 1, unit: unit, absolute: absolute, now: now, name: "set", &out) else { return }
                expiry = .at(at)
                i += 1
            } else {
                out.writeSyntaxError()
                return
            }
            i += 1
        }
        var written = false
        let stored = store.update(args[1], now: now) { entry in
            if returnOld {
                if let entry { out.writeRESPBulk(entry.value) } else { out.writeRESPNull(resp3: session.resp3) }
            }
            if (onlyIfAbsent && entry != nil) || (onlyIfPresent && entry == nil) { return .none }
            written = true
            return .put(args[2], expiry: Self.resolve(expiry, entry))
        }
        if !stored && !returnOld {
            // Only a failed allocation gets here: makeRoom ran before the command.
            out.writeRESPError("OOM command not allowed when used memory > 'maxmemory'.")
        } else if !returnOld {
            if written { out.writeOK() } else { out.writeRESPNull(resp3: session.resp3) }
        }
    }

    /// (milliseconds per unit, absolute) for EX, PX, EXAT, PXAT.
    static func expiryUnit(_ option: UnsafeRawBufferPointer, allowPersist: Bool) -> (Int64, Bool)? {
        if option.equalsIgnoringCase("ex") { return (1000, false) }
        if option.equalsIgnoringCase("px") { return (1, false) }
        if option.equalsIgnoringCase("exat") { return (1000, true) }
        if option.equalsIgnoringCase("pxat") { return (1, true) }
        return nil
    }

    static func resolve(_ option: ExpiryOption, _ entry: CacheStore.Entry?) -> Int64 {
        switch option {
        case .none, .persist: return 0
        case .keep: return entry?.expiry ?? 0
        case .at(let at): return at
        }
    }

    func setnx(_ args: RESPArguments, _ out: inout ByteBuffer, _ now: Int64) {
        var written = false
        store.update(args[1], now: now) { entry in
            guard entry == nil else { return .none }
            written = true
            return .put(args[2], expiry: 0)
        }
        out.writeRESPInteger(written ? 1 : 0)
    }

    func setex(_ args: RESPArguments, _ out: inout ByteBuffer, _ now: Int64, unit: Int64, name: String) {
        guard let at = parseExpiry(args, 2, unit: unit, absolute: false, now: now, name: name, &out) else { return }
        store.set(args[1], args[3], expiry: at, now: now)
        out.writeOK()
    }

    func getset(_ args: RESPArguments, _ session: Session, _ out: inout ByteBuffer, _ now: Int64) {
        store.update(args[1], now: now) { entry in
            if let entry { out.writeRESPBulk(entry.value) } else { out.writeRESPNull(resp3: session.resp3) }
            return .put(args[2], expiry: 0)
        }
    }

    func getdel(_ args: RESPArguments, _ session: Session, _ out: inout ByteBuffer, _ now: Int64) {
        store.update(args[1], now: now) { entry in
            guard let entry else {
                out.writeRESPNull(resp3: session.resp3)
                return .none
            }
            out.writeRESPBulk(entry.value)
            return .delete
        }
    }

    func getex(_ args: RESPArguments, _ session: Session, _ out: inout ByteBuffer, _ now: Int64) {
        var expiry = ExpiryOption.none
        var i = 2
        while i < args.count {
            let option = args[i]
            if option.equalsIgnoringCase("persist") && expiry == .none {
                expiry = .persist
            } else if expiry == .none && i + 1 < args.count, let (unit, absolute) = Self.expiryUnit(option, allowPersist: true) {
                guard let at = parseExpiry(args, i + 1, unit: unit, absolute: absolute, now: now, name: "getex", &out) else { return }
                expiry = .at(at)
                i += 1
            } else {
                out.writeSyntaxError()
                return
            }
            i += 1
        }
        store.update(args[1], now: now) { entry in
            guard let entry else {
                out.writeRESPNull(resp3: session.resp3)
                return .none
            }
            out.writeRESPBulk(entry.value)
            switch expiry {
            case .none, .keep: return .none
            case .persist: return entry.expiry == 0 ? .none : .setExpiry(0)
            case .at(let at): return at <= now ? .delete : .setExpiry(at)
            }
        }
    }

    func mget(_ args: RESPArguments, _ session: Session, _ out: inout ByteBuffer, _ now: Int64) {
        out.writeRESPArrayHeader(args.count - 1)
        for i in 1..<args.count {
            store.read(args[i], now: now) { entry in
                if let entry { out.writeRESPBulk(entry.value) } else { out.writeRESPNull(resp3: session.resp3) }
            }
        }
    }

    func mset(_ args: RESPArguments, _ out: inout ByteBuffer, _ now: Int64, onlyIfNoneExist: Bool) {
        guard args.count % 2 == 1 else {
            out.writeRESPError("ERR wrong number of arguments for '\(onlyIfNoneExist ? "msetnx" : "mset")' command")
            return
        }
        if onlyIfNoneExist {
            for i in stride(from: 1, to: args.count, by: 2) where store.contains(args[i], now: now) {
                out.writeRESPInteger(0)
                return
            }
        }
        for i in stride(from: 1, to: args.count, by: 2) {
            store.set(args[i], args[i + 1], now: now)
        }
        if onlyIfNoneExist { out.writeRESPInteger(1) } else { out.writeOK() }
    }

    func incrby(_ args: RESPArguments, negate: Bool, _ out: inout ByteBuffer, _ now: Int64) {
        guard let amount = args[2].asInteger else {
            out.writeNotInteger()
            return
        }
        if negate && amount == Int.min {
            out.writeRESPError("ERR decrement would overflow")
            return
        }
        incrementBy(args[1], negate ? -amount : amount, &out, now)
    }

    func incrementBy(_ key: UnsafeRawBufferPointer, _ amount: Int, _ out: inout ByteBuffer, _ now: Int64) {
        enum Outcome { case value(Int), notInteger, overflow }
        var outcome = Outcome.notInteger
        store.update(key, now: now) { entry in
            var current = 0
            if let entry {
                guard let parsed = entry.value.asInteger else { return .none }
                current = parsed
            }
            let (sum, overflow) = current.addingReportingOverflow(amount)
            guard !overflow else {
                outcome = .overflow
                return .none
            }
            outcome = .value(sum)
            return .putBytes(Array(String(sum).utf8), expiry: entry?.expiry ?? 0)
        }
        switch outcome {
        case .value(let value): out.writeRESPInteger(value)
        case .notInteger: out.writeNotInteger()
        case .overflow: out.writeRESPError("ERR increment or decrement would overflow")
        }
    }

    func incrbyfloat(_ args: RESPArguments, _ session: Session, _ out: inout ByteBuffer, _ now: Int64) {
        guard let increment = LongDouble.parse(args[2]) else {
            out.writeRESPError("ERR value is not a valid float")
            return
        }
        enum Outcome { case value([UInt8]), notFloat, nonFinite }
        var outcome = Outcome.notFloat
        store.update(args[1], now: now) { entry in
            var current = LongDouble.zero
            if let entry {
                guard let parsed = LongDouble.parse(entry.value) else { return .none }
                current = parsed
            }
            let sum = current + increment
            guard sum.isFinite else {
                outcome = .nonFinite
                return .none
            }
            let text = LongDouble.format(sum)
            outcome = .value(text)
            return .putBytes(text, expiry: entry?.expiry ?? 0)
        }
        switch outcome {
        case .value(let text): text.withUnsafeBytes { out.writeRESPBulk($0) }
        case .notFloat: out.writeRESPError("ERR value is not a valid float")
        case .nonFinite: out.writeRESPError("ERR increment would produce NaN or Infinity")
        }
    }

    func append(_ args: RESPArguments, _ out: inout ByteBuffer, _ now: Int64) {
        let maxLength = node.maxBulkLength.load(ordering: .relaxed)
        var length = -1
        store.update(args[1], now: now) { entry in
            let oldCount = entry?.value.count ?? 0
            guard oldCount + args[2].count <= maxLength else { return .none }
            length = oldCount + args[2].count
            guard let entry else { return .put(args[2], expiry: 0) }
            var bytes = [UInt8]()
            bytes.reserveCapacity(length)
            bytes.append(contentsOf: entry.value)
            bytes.append(contentsOf: args[2])
            return .putBytes(bytes, expiry: entry.expiry)
        }
        if length < 0 {
            out.writeRESPError("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
        } else {
            out.writeRESPInteger(length)
        }
    }

    func strlen(_ args: RESPArguments, _ out: inout ByteBuffer, _ now: Int64) {
        var length = 0
        store.read(args[1], now: now) { length = $0?.value.count ?? 0 }
        out.writeRESPInteger(length)
    }

    func getrange(_ args: RESPArguments, _ out: inout ByteBuffer, _ now: Int64) {
        guard var start = args[2].asInteger, var end = args[3].asInteger else {
            out.writeNotInteger()
            return
        }
        store.read(args[1], now: now) { entry in
            let value = entry?.value ?? UnsafeRawBufferPointer(start: nil, count: 0)
            let length = value.count
            if start < 0 && end < 0 && start > end {
                out.writeRESPRaw("$0\r\n\r\n")
                return
            }
            if start < 0 { start += length }
            if end < 0 { end += length }
            start = max(start, 0)
            end = max(end, 0)
            if end >= length { end = length - 1 }
            if start > end || length == 0 {
                out.writeRESPRaw("$0\r\n\r\n")
                return
            }
            out.writeRESPBulk(UnsafeRawBufferPointer(rebasing: value[start...end]))
        }
    }

    func setrange(_ args: RESPArguments, _ out: inout ByteBuffer, _ now: Int64) {
        guard let offset = args[2].asInteger else {
            out.writeNotInteger()
            return
        }
        guard offset >= 0 else {
            out.writeRESPError("ERR offset is out of range")
            return
        }
        let patch = args[3]
        let maxLength = node.maxBulkLength.load(ordering: .relaxed)
        var length = -1
        store.update(args[1], now: now) { entry in
            let oldCount = entry?.value.count ?? 0
            if patch.count == 0 {
                length = oldCount
                return .none
            }
            guard offset <= maxLength - patch.count else { return .none }
            var bytes = [UInt8](entry?.value ?? UnsafeRawBufferPointer(start: nil, count: 0))
            if bytes.count < offset + patch.count {
                bytes.append(contentsOf: repeatElement(0, count: offset + patch.count - bytes.count))
            }
            bytes.withUnsafeMutableBytes { UnsafeMutableRawBufferPointer(rebasing: $0[offset..<(offset + patch.count)]).copyMemory(from: patch) }
            length = bytes.count
            return .putBytes(bytes, expiry: entry?.expiry ?? 0)
        }
        if length < 0 {
            out.writeRESPError("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
        } else {
            out.writeRESPInteger(length)
        }
    }
}

/// INCRBYFLOAT's arithmetic, in long double where the platform has it, as Redis does, and
/// its human-readable formatting (`%.17Lf` with trailing zeros cut).
enum LongDouble {
    #if arch(x86_64) || arch(i386)
    typealias Value = Float80
    #else
    typealias Value = Double
    #endif

    static let zero: Value = 0

    static func parse(_ bytes: UnsafeRawBufferPointer) -> Value? {
        guard bytes.count > 0, bytes.count <= 5120 else { return nil }
        let first = bytes[0]
        let last = bytes[bytes.count - 1]
        // strtold accepts leading spaces and hex; Redis rejects spaces.
        if first == 0x20 || first == 0x09 || last == 0x20 || last == 0x09 { return nil }
        var text = Array(bytes)
        text.append(0)
        return text.withUnsafeBufferPointer { buffer -> Value? in
            var end: UnsafeMutablePointer<CChar>?
            let base = UnsafeRawPointer(buffer.baseAddress!).assumingMemoryBound(to: CChar.self)
            #if arch(x86_64) || arch(i386)
            let value = strtold(base, &end)
            #else
            let value = strtod(base, &end)
            #endif
            guard let end, end - UnsafeMutablePointer(mutating: base) == bytes.count, !value.isNaN else { return nil }
            return value
        }
    }

    static func format(_ value: Value) -> [UInt8] {
        var buffer = [CChar](repeating: 0, count: 5200)
        #if arch(x86_64) || arch(i386)
        let format = "%.17Lf"
        #else
        let format = "%.17f"
        #endif
        let written: Int32 = buffer.withUnsafeMutableBufferPointer { pointer in
            withVaList([value]) { arguments in vsnprintf(pointer.baseAddress, pointer.count, format, arguments) }
        }
        var bytes = buffer.prefix(Int(written)).map { UInt8(bitPattern: $0) }
        if bytes.contains(UInt8(ascii: ".")) {
            while bytes.last == UInt8(ascii: "0") { bytes.removeLast() }
            if bytes.last == UInt8(ascii: ".") { bytes.removeLast() }
        }
        if bytes == Array("-0".utf8) { bytes = Array("0".utf8) }
        return bytes
    }
}
