import CacheStore

/// What one journaled change does.
enum ChangeKind: UInt8, Sendable {
    /// A key's value (or tombstone), expiry and version.
    case stored = 1
    /// A key is gone.
    case removed = 2
    /// Every key is gone (FLUSHALL).
    case removedAll = 3
}

/// One decoded change of a batch; the byte ranges point into the batch's bytes.
struct Change: Sendable {
    var kind: ChangeKind
    /// The key's ring position (``DurableTier/position(of:)``); 0 for `removedAll`.
    var position: Int64
    var key: Range<Int>
    /// nil for a delete; `tombstone` for a delete marker with an expiry.
    var value: Range<Int>?
    var tombstone: Bool
    var expiry: Int64
    var timestamp: UInt64
    var node: UInt32
}

/// The change log's one codec: how the journal writes a change into a batch (little-endian),
/// and how a merge, a read of pending changes and the fuzzer read it back.
///
/// `stored`: kind, key (u32 length + bytes), has-value (u8), [value (u32 + bytes)], expiry
/// (i64), timestamp (u64), node (u32). `removed`: kind, key. `removedAll`: kind.
enum ChangeLog {
    static func appendStored(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer?, expiry: Int64, version: Version, to log: inout [UInt8]) {
        log.append(ChangeKind.stored.rawValue)
        appendBytes(key, to: &log)
        if let value {
            log.append(1)
            appendBytes(value, to: &log)
        } else {
            log.append(0)
        }
        append(expiry, to: &log)
        append(version.timestamp.rawValue, to: &log)
        append(version.node.rawValue, to: &log)
    }

    static func appendRemoved(key: UnsafeRawBufferPointer, to log: inout [UInt8]) {
        log.append(ChangeKind.removed.rawValue)
        appendBytes(key, to: &log)
    }

    static func appendRemovedAll(to log: inout [UInt8]) {
        log.append(ChangeKind.removedAll.rawValue)
    }

    private static func append<T: FixedWidthInteger>(_ value: T, to log: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { log.append(contentsOf: $0) }
    }

    private static func appendBytes(_ bytes: UnsafeRawBufferPointer, to log: inout [UInt8]) {
        append(UInt32(truncatingIfNeeded: bytes.count), to: &log)
        log.append(contentsOf: bytes)
    }

    /// Where and why a batch does not decode.
    struct Malformed: Error, Sendable, CustomStringConvertible {
        var offset: Int
        var reason: String
        var description: String { "a change at byte \(offset) is malformed (\(reason))" }
    }

    /// Calls `body` with each change in `batch` of `bytes`, in order. Throws ``Malformed`` (via
    /// `malformed`, in the caller's error type) for a batch that runs past its end or names an
    /// unknown kind; never reads outside `batch`.
    static func decode<E: Error>(_ bytes: UnsafeRawBufferPointer, _ batch: Range<Int>, malformed: (Malformed) -> E,
                                 _ body: (Change) throws(E) -> Void) throws(E) {
        var reader = Reader(bytes: bytes, end: min(batch.upperBound, bytes.count), offset: max(0, batch.lowerBound))
        while reader.offset < reader.end {
            let start = reader.offset
            let change: Change
            do throws(Malformed) {
                change = try reader.change()
            } catch {
                throw malformed(Malformed(offset: start, reason: error.reason))
            }
            try body(change)
        }
    }

    private struct Reader {
        let bytes: UnsafeRawBufferPointer
        let end: Int
        var offset: Int

        mutating func integer<T: FixedWidthInteger>(_ type: T.Type) throws(Malformed) -> T {
            let size = MemoryLayout<T>.size
            guard end - offset >= size else { throw Malformed(offset: offset, reason: "cut short") }
            defer { offset += size }
            return T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
        }

        mutating func range() throws(Malformed) -> Range<Int> {
            let count = Int(try integer(UInt32.self))
            guard end - offset >= count else { throw Malformed(offset: offset, reason: "a length past the batch's end") }
            defer { offset += count }
            return offset..<(offset + count)
        }

        mutating func change() throws(Malformed) -> Change {
            guard let kind = ChangeKind(rawValue: try integer(UInt8.self)) else { throw Malformed(offset: offset, reason: "an unknown kind") }
            switch kind {
            case .stored:
                let key = try range()
                let hasValue = try integer(UInt8.self)
                guard hasValue <= 1 else { throw Malformed(offset: offset, reason: "a has-value flag that is not 0 or 1") }
                let value = hasValue == 1 ? try range() : nil
                let expiry = try integer(Int64.self)
                let timestamp = try integer(UInt64.self)
                let node = try integer(UInt32.self)
                return Change(kind: kind, position: position(key), key: key, value: value, tombstone: hasValue == 0, expiry: expiry,
                              timestamp: timestamp, node: node)
            case .removed:
                let key = try range()
                return Change(kind: kind, position: position(key), key: key, value: nil, tombstone: false, expiry: 0, timestamp: 0, node: 0)
            case .removedAll:
                return Change(kind: kind, position: 0, key: 0..<0, value: nil, tombstone: false, expiry: 0, timestamp: 0, node: 0)
            }
        }

        func position(_ key: Range<Int>) -> Int64 {
            DurableTier.position(of: UnsafeRawBufferPointer(rebasing: bytes[key]))
        }
    }
}

/// Checks for tools and fuzzers: the pending log's framing and every batch's changes.
public enum PendingLogCheck {
    /// Nil if `bytes` (a whole pending-log file) is whole, or ends in a torn record that would
    /// be cut off; else why it is damaged. Never traps, whatever the bytes.
    public static func problem(in bytes: UnsafeRawBufferPointer) -> String? {
        guard bytes.count >= PendingLog.magic.count else { return "shorter than the magic" }
        let found = Array(bytes[0..<PendingLog.magic.count])
        guard found == PendingLog.magic || found == PendingLog.legacyMagic else { return "not a pending log" }
        let legacy = found == PendingLog.legacyMagic
        let whole: Int
        switch PendingLog.scan(bytes, legacy: legacy) {
        case .damaged(let offset, let reason): return "damaged at byte \(offset): \(reason)"
        case .cutAt(let offset): whole = offset
        case .whole: whole = bytes.count
        }
        let header = legacy ? PendingLog.legacyHeaderLength : PendingLog.headerLength
        var offset = PendingLog.magic.count
        while offset + header <= whole {
            let count = Int(bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self).littleEndian)
            let batch = (offset + header)..<min(whole, offset + header + count)
            do throws(ChangeLog.Malformed) {
                try ChangeLog.decode(bytes, batch, malformed: { $0 }) { (_: Change) throws(ChangeLog.Malformed) in }
            } catch {
                return error.description
            }
            offset = batch.upperBound
        }
        return nil
    }
}
