import CXXHash
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The batches the durable tier committed and has not merged into SQLite yet: a plain
/// append-only file next to the database (`<database>-pending`).
///
/// A commit is one `write` of `[length u32][check u32][xxh3 of the payload u64][payload]` at
/// the end of the file (and, under fsync always, an `fdatasync`), where the check is xxh3 of
/// the length and the payload's sum, so a damaged length is told from a torn tail; a merge maps the file, applies every
/// batch to the database in one transaction, makes that durable, and empties the file. A
/// batch goes to the disk once here and once more as part of the table, rather than through
/// SQLite's WAL and checkpoint twice. A crash between the merge and the emptying replays the
/// same batches on the next start, which changes nothing: applying a run of changes again
/// on top of itself gives the same rows. Commits go on during a merge: what they append
/// after the merged part is kept when the merged part goes (``removeMerged(upTo:sync:)``).
///
/// At open, a record cut short at the end (a write a crash interrupted: never acknowledged
/// under fsync always, within the last second under everysec) is cut off; a record whose
/// header or payload fails its checksum before the end means damage, and the open fails,
/// naming the offset and the reason, without touching the file. Files of the first format
/// (`RCPEND01`, a 12-byte header without the check) are read and appended to as they are,
/// until the log is next emptied.
///
/// A failed `fdatasync` is not forgotten: the pages it was to write may be lost from the page
/// cache and later ones reported clean, so the records appended since the last good sync are
/// kept in memory (unless nothing is ever synced) and written again before the next sync.
final class PendingLog {
    let path: String
    private var descriptor: Int32
    /// Where the next record goes: the end of the last whole record.
    private(set) var end: Int
    /// The file's format: its magic, and the header length each record has.
    private var magic: [UInt8]
    private var recordHeader: Int
    /// Whether records appended since the last good sync are kept for a retry (false under
    /// `persistence-fsync no`, which never syncs).
    private let keepsUnsynced: Bool
    /// The records appended since the last good sync, from `syncedEnd` on.
    private var unsynced: [UInt8] = []
    private var syncedEnd: Int
    /// A sync failed: the unsynced records are written again before the next one.
    private var rewriteBeforeSync = false

    static let magic: [UInt8] = Array("RCPEND02".utf8)
    static let legacyMagic: [UInt8] = Array("RCPEND01".utf8)
    static let headerLength = 16
    static let legacyHeaderLength = 12
    /// A record's length is a u32.
    static let maxRecord = Int(UInt32.max)

    /// Bytes of records waiting.
    var size: Int { end - magic.count }

    init(path: String, keepsUnsynced: Bool = true) throws(PersistenceError) {
        self.path = path
        self.keepsUnsynced = keepsUnsynced
        descriptor = SystemCall.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw PersistenceError(description: "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        end = 0
        magic = Self.magic
        recordHeader = Self.headerLength
        syncedEnd = 0
        do {
            (end, magic) = try Self.validate(descriptor, path: path)
            recordHeader = magic == Self.legacyMagic ? Self.legacyHeaderLength : Self.headerLength
            syncedEnd = end
        } catch {
            _ = SystemCall.close(descriptor)
            throw error
        }
    }

    deinit { close() }

    func close() {
        if descriptor >= 0 { _ = SystemCall.close(descriptor) }
        descriptor = -1
    }

    /// The end of the last whole record and the file's magic; writes the magic into an empty
    /// file and cuts off a record a crash left unfinished.
    private static func validate(_ descriptor: Int32, path: String) throws(PersistenceError) -> (Int, [UInt8]) {
        var info = stat()
        guard fstat(descriptor, &info) == 0 else {
            throw PersistenceError(description: "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        let length = Int(info.st_size)
        if length == 0 {
            let written = magic.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, 0) }
            guard written == magic.count else {
                throw PersistenceError(description: "cannot write \(path): \(String(cString: strerror(errno)))")
            }
            return (magic.count, magic)
        }
        // Mapped, not read into a buffer: the log may hold hundreds of MiB.
        guard let mapped = mmap(nil, length, PROT_READ, MAP_SHARED, descriptor, 0), mapped != MAP_FAILED else {
            throw PersistenceError(description: "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        defer { munmap(mapped, length) }
        let contents = UnsafeRawBufferPointer(start: mapped, count: length)
        guard length >= magic.count else {
            throw PersistenceError(description: "\(path) is not a ringcache pending log; it was left untouched: move it away or set another `dir`")
        }
        let found = Array(contents[0..<magic.count])
        guard found == magic || found == legacyMagic else {
            throw PersistenceError(description: "\(path) is not a ringcache pending log; it was left untouched: move it away or set another `dir`")
        }
        switch scan(contents, legacy: found == legacyMagic) {
        case .whole:
            return (length, found)
        case .damaged(let offset, let reason):
            throw PersistenceError(description: "\(path) is damaged at byte \(offset) (\(reason)); it was left untouched: move it away or set another `dir`")
        case .cutAt(let offset):
            guard ftruncate(descriptor, off_t(offset)) == 0 else {
                throw PersistenceError(description: "cannot cut the unfinished batch off \(path): \(String(cString: strerror(errno)))")
            }
            return (offset, found)
        }
    }

    enum Scan: Equatable { case whole, cutAt(Int), damaged(Int, String) }

    /// Walks the records of a whole file's bytes: all whole, a torn tail to cut at an offset,
    /// or damage at an offset (with the reason). Never reads outside `bytes`.
    static func scan(_ bytes: UnsafeRawBufferPointer, legacy: Bool) -> Scan {
        let length = bytes.count
        let header = legacy ? legacyHeaderLength : headerLength
        var offset = magic.count
        while offset < length {
            guard length - offset >= header else { return .cutAt(offset) }
            let count = Int(bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self).littleEndian)
            let sum = bytes.loadUnaligned(fromByteOffset: offset + header - 8, as: UInt64.self).littleEndian
            if !legacy {
                let check = bytes.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self).littleEndian
                guard check == headerCheck(count: UInt32(truncatingIfNeeded: count), sum: sum) else {
                    // A header a crash left half written (zeros, or bytes past the end) is a torn
                    // tail; a bad header with records behind it is damage.
                    let rest = UnsafeRawBufferPointer(rebasing: bytes[offset...])
                    return rest.allSatisfy { $0 == 0 } ? .cutAt(offset) : .damaged(offset, "a record header fails its checksum")
                }
            }
            let start = offset + header
            // With a checked header the length is trusted: a record past the end is torn. In
            // the first format a damaged length looks the same (the reason for the check).
            guard count <= length - start else { return .cutAt(offset) }
            guard ringcache_xxh3_64(bytes.baseAddress! + start, count) == sum else {
                // The last record may be one a power loss left with garbage; any other is damage.
                return start + count == length ? .cutAt(offset) : .damaged(offset, "a batch fails its checksum")
            }
            offset = start + count
        }
        return .whole
    }

    /// xxh3 of the length and the payload's sum as they are written (12 bytes, no padding).
    static func headerCheck(count: UInt32, sum: UInt64) -> UInt32 {
        var fields = [UInt8](repeating: 0, count: 12)
        fields.withUnsafeMutableBytes {
            $0.storeBytes(of: count.littleEndian, toByteOffset: 0, as: UInt32.self)
            $0.storeBytes(of: sum.littleEndian, toByteOffset: 4, as: UInt64.self)
        }
        return fields.withUnsafeBytes { UInt32(truncatingIfNeeded: ringcache_xxh3_64($0.baseAddress, $0.count)) }
    }

    /// Appends one batch; the error's text on failure (the file is cut back to how it was).
    func append(_ payload: UnsafeRawBufferPointer) -> String? {
        guard payload.count <= Self.maxRecord else { return "a batch of \(payload.count) bytes is past the log's limit of \(Self.maxRecord)" }
        let sum = ringcache_xxh3_64(payload.baseAddress, payload.count)
        var header = [UInt8](repeating: 0, count: recordHeader)
        header.withUnsafeMutableBytes {
            $0.storeBytes(of: UInt32(payload.count).littleEndian, toByteOffset: 0, as: UInt32.self)
            if recordHeader == Self.headerLength {
                $0.storeBytes(of: Self.headerCheck(count: UInt32(payload.count), sum: sum).littleEndian, toByteOffset: 4, as: UInt32.self)
            }
            $0.storeBytes(of: sum.littleEndian, toByteOffset: recordHeader - 8, as: UInt64.self)
        }
        let failed = header.withUnsafeBytes { header in
            Self.write([header, payload], to: descriptor, at: end)
        }
        if let failed {
            _ = ftruncate(descriptor, off_t(end))
            return failed
        }
        end += recordHeader + payload.count
        if keepsUnsynced {
            unsynced.append(contentsOf: header)
            unsynced.append(contentsOf: payload)
        }
        return nil
    }

    /// Writes `parts` one after the other at `offset`, going on after short writes.
    private static func write(_ parts: [UnsafeRawBufferPointer], to descriptor: Int32, at offset: Int) -> String? {
        var vectors = parts.map { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) }
        var offset = offset
        var remaining = parts.reduce(0) { $0 + $1.count }
        while remaining > 0 {
            let written = vectors.withUnsafeMutableBufferPointer { pwritev(descriptor, $0.baseAddress, Int32($0.count), off_t(offset)) }
            if written < 0 {
                if errno == EINTR { continue }
                return String(cString: strerror(errno))
            }
            if written == 0 { return "short write" }
            offset += written
            remaining -= written
            // A short write: go on from where it stopped.
            var skip = written
            vectors = vectors.compactMap { part in
                guard skip > 0 else { return part }
                if skip >= part.iov_len {
                    skip -= part.iov_len
                    return nil
                }
                defer { skip = 0 }
                return iovec(iov_base: part.iov_base! + skip, iov_len: part.iov_len - skip)
            }
        }
        return nil
    }

    /// Makes what was appended durable; the error's text on failure. After a failure the
    /// records since the last good sync are written again from memory before syncing, so a
    /// later success means they are on disk, not only that newer pages were.
    func sync() -> String? {
        if rewriteBeforeSync, !unsynced.isEmpty {
            if let failed = unsynced.withUnsafeBytes({ Self.write([$0], to: descriptor, at: syncedEnd) }) {
                return "writing again what a failed sync may have lost: \(failed)"
            }
        }
        guard SystemCall.dataSync(descriptor) == 0 else {
            let failure = String(cString: strerror(errno))
            rewriteBeforeSync = keepsUnsynced
            return failure
        }
        markSynced()
        return nil
    }

    /// Everything up to `end` is durable.
    private func markSynced() {
        syncedEnd = end
        unsynced.removeAll(keepingCapacity: unsynced.capacity <= 16 << 20)
        rewriteBeforeSync = false
    }

    /// True while a failed sync has not been made good by a later one.
    var hasUnsyncedFailure: Bool { rewriteBeforeSync }

    /// Calls `body` with the file mapped and the byte range of each batch in it, oldest first.
    /// Batches appended while `body` runs are not in the view (the mapping ends where the log
    /// ended when it was called): the view's length is where ``removeMerged(upTo:)`` cuts.
    func withBatches<T>(_ body: (UnsafeRawBufferPointer, [Range<Int>]) throws -> T) throws -> T {
        guard size > 0 else { return try body(UnsafeRawBufferPointer(start: nil, count: 0), []) }
        let length = end
        guard let mapped = mmap(nil, length, PROT_READ, MAP_SHARED, descriptor, 0), mapped != MAP_FAILED else {
            throw PersistenceError(description: "cannot map \(path): \(String(cString: strerror(errno)))")
        }
        defer { munmap(mapped, length) }
        let bytes = UnsafeRawBufferPointer(start: mapped, count: length)
        let end = length
        var ranges: [Range<Int>] = []
        var offset = magic.count
        while offset + recordHeader <= end {
            let count = Int(bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self).littleEndian)
            let start = offset + recordHeader
            ranges.append(start..<min(end, start + count))
            offset = start + count
        }
        return try body(bytes, ranges)
    }

    /// Empties the log (after a merge made its batches durable in the database).
    func clear() -> String? {
        // An emptied log of the first format starts over in the current one.
        if magic != Self.magic {
            guard ftruncate(descriptor, 0) == 0, Self.magic.withUnsafeBytes({ Self.write([$0], to: descriptor, at: 0) }) == nil else {
                return String(cString: strerror(errno))
            }
            magic = Self.magic
            recordHeader = Self.headerLength
        } else {
            guard ftruncate(descriptor, off_t(magic.count)) == 0 else { return String(cString: strerror(errno)) }
        }
        end = magic.count
        markSynced()
        return nil
    }

    /// Drops the records before `merged` (the end of what a merge applied, made durable in the
    /// database). Records appended since then stay: they are copied into a new file, synced
    /// (with `sync`), which then takes the log's name in one rename, so a crash leaves either
    /// the old log (whose merged records replay to the same rows) or the new one.
    func removeMerged(upTo merged: Int, sync: Bool) -> String? {
        guard merged < end else { return clear() }
        let tail = end - merged
        let newPath = path + ".new"
        let target = SystemCall.open(newPath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard target >= 0 else { return "cannot create \(newPath): \(String(cString: strerror(errno)))" }
        let magic = self.magic
        var buffer = [UInt8](repeating: 0, count: magic.count + tail)
        let copied = buffer.withUnsafeMutableBytes { bytes -> Bool in
            magic.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: bytes[..<magic.count]).copyMemory(from: $0) }
            var done = 0
            while done < tail {
                let got = pread(descriptor, bytes.baseAddress! + magic.count + done, tail - done, off_t(merged + done))
                if got < 0 && errno == EINTR { continue }
                guard got > 0 else { return false }
                done += got
            }
            var written = 0
            while written < bytes.count {
                let put = pwrite(target, bytes.baseAddress! + written, bytes.count - written, off_t(written))
                if put < 0 && errno == EINTR { continue }
                guard put > 0 else { return false }
                written += put
            }
            return true
        }
        guard copied, !sync || SystemCall.dataSync(target) == 0, rename(newPath, path) == 0 else {
            let failure = String(cString: strerror(errno))
            _ = SystemCall.close(target)
            unlink(newPath)
            return "cannot keep the batches written during a merge in \(path): \(failure)"
        }
        _ = SystemCall.close(descriptor)
        descriptor = target
        end = magic.count + tail
        // The copy was synced (when anything is): what remains is durable, or kept as unsynced.
        if sync {
            markSynced()
        } else {
            syncedEnd = magic.count
            unsynced.removeAll()
        }
        // The rename itself is made durable too: later records go to the new file only.
        if sync {
            let directory = SystemCall.open(Self.directory(of: path), O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if directory >= 0 {
                defer { _ = SystemCall.close(directory) }
                guard fsync(directory) == 0 else { return "cannot sync the directory of \(path): \(String(cString: strerror(errno)))" }
            }
        }
        return nil
    }

    /// The directory part of `path` ("." for a bare name).
    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }
}
