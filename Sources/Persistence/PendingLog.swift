import CXXHash
#if canImport(Glibc)
import Glibc
#endif

/// The batches the durable tier committed and has not merged into SQLite yet: a plain
/// append-only file next to the database (`<database>-pending`).
///
/// A commit is one `write` of `[length u32][xxh3 of the payload u64][payload]` at the end of
/// the file (and, under fsync always, an `fdatasync`); a merge maps the file, applies every
/// batch to the database in one transaction, makes that durable, and empties the file. A
/// batch goes to the disk once here and once more as part of the table, rather than through
/// SQLite's WAL and checkpoint twice. A crash between the merge and the emptying replays the
/// same batches on the next start, which changes nothing: applying a run of changes again
/// on top of itself gives the same rows. Commits go on during a merge: what they append
/// after the merged part is kept when the merged part goes (``removeMerged(upTo:sync:)``).
///
/// At open, a record cut short at the end (a write a crash interrupted: never acknowledged
/// under fsync always, within the last second under everysec) is cut off; a record that fails
/// its checksum before the end means damage, and the open fails without touching the file.
final class PendingLog {
    let path: String
    private var descriptor: Int32
    /// Where the next record goes: the end of the last whole record.
    private(set) var end: Int

    static let magic: [UInt8] = Array("RCPEND01".utf8)
    static let recordHeader = 12

    /// Bytes of records waiting.
    var size: Int { end - Self.magic.count }

    init(path: String) throws(PersistenceError) {
        self.path = path
        descriptor = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw PersistenceError(description: "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        end = 0
        do {
            end = try Self.validate(descriptor, path: path)
        } catch {
            _ = Glibc.close(descriptor)
            throw error
        }
    }

    deinit { close() }

    func close() {
        if descriptor >= 0 { _ = Glibc.close(descriptor) }
        descriptor = -1
    }

    /// The end of the last whole record; writes the magic into an empty file and cuts off a
    /// record a crash left unfinished.
    private static func validate(_ descriptor: Int32, path: String) throws(PersistenceError) -> Int {
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
            return magic.count
        }
        // Mapped, not read into a buffer: the log may hold hundreds of MiB.
        guard let mapped = mmap(nil, length, PROT_READ, MAP_SHARED, descriptor, 0), mapped != MAP_FAILED else {
            throw PersistenceError(description: "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        defer { munmap(mapped, length) }
        let contents = UnsafeRawBufferPointer(start: mapped, count: length)
        guard length >= magic.count, contents[0..<magic.count].elementsEqual(magic) else {
            throw PersistenceError(description: "\(path) is not a ringcache pending log; it was left untouched: move it away or set another `dir`")
        }
        enum Scan { case whole, cutAt(Int), damagedAt(Int) }
        let scan = { (bytes: UnsafeRawBufferPointer) -> Scan in
            var offset = magic.count
            while offset < length {
                guard offset + recordHeader <= length else { return .cutAt(offset) }
                let count = Int(bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self).littleEndian)
                let sum = bytes.loadUnaligned(fromByteOffset: offset + 4, as: UInt64.self).littleEndian
                let start = offset + recordHeader
                guard start + count <= length else { return .cutAt(offset) }
                guard ringcache_xxh3_64(bytes.baseAddress! + start, count) == sum else {
                    // The last record may be one a power loss left with garbage; any other is damage.
                    return start + count == length ? .cutAt(offset) : .damagedAt(offset)
                }
                offset = start + count
            }
            return .whole
        }(contents)
        switch scan {
        case .whole:
            return length
        case .damagedAt(let offset):
            throw PersistenceError(description: "\(path) is damaged (the batch at byte \(offset) fails its checksum); it was left untouched: move it away or set another `dir`")
        case .cutAt(let offset):
            guard ftruncate(descriptor, off_t(offset)) == 0 else {
                throw PersistenceError(description: "cannot cut the unfinished batch off \(path): \(String(cString: strerror(errno)))")
            }
            return offset
        }
    }

    /// Appends one batch; the error's text on failure (the file is cut back to how it was).
    func append(_ payload: UnsafeRawBufferPointer) -> String? {
        var header = [UInt8](repeating: 0, count: Self.recordHeader)
        header.withUnsafeMutableBytes {
            $0.storeBytes(of: UInt32(payload.count).littleEndian, toByteOffset: 0, as: UInt32.self)
            $0.storeBytes(of: ringcache_xxh3_64(payload.baseAddress, payload.count).littleEndian, toByteOffset: 4, as: UInt64.self)
        }
        let failed = header.withUnsafeBytes { header -> String? in
            var parts = [iovec(iov_base: UnsafeMutableRawPointer(mutating: header.baseAddress), iov_len: header.count),
                         iovec(iov_base: UnsafeMutableRawPointer(mutating: payload.baseAddress), iov_len: payload.count)]
            var offset = end
            var remaining = header.count + payload.count
            while remaining > 0 {
                let written = parts.withUnsafeMutableBufferPointer { pwritev(descriptor, $0.baseAddress, Int32($0.count), off_t(offset)) }
                if written < 0 {
                    if errno == EINTR { continue }
                    return String(cString: strerror(errno))
                }
                if written == 0 { return "short write" }
                offset += written
                remaining -= written
                // A short write: go on from where it stopped.
                var skip = written
                parts = parts.compactMap { part in
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
        if let failed {
            _ = ftruncate(descriptor, off_t(end))
            return failed
        }
        end += Self.recordHeader + payload.count
        return nil
    }

    /// Makes what was appended durable; the error's text on failure.
    func sync() -> String? {
        fdatasync(descriptor) == 0 ? nil : String(cString: strerror(errno))
    }

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
        var offset = Self.magic.count
        while offset + Self.recordHeader <= end {
            let count = Int(bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self).littleEndian)
            let start = offset + Self.recordHeader
            ranges.append(start..<min(end, start + count))
            offset = start + count
        }
        return try body(bytes, ranges)
    }

    /// Empties the log (after a merge made its batches durable in the database).
    func clear() -> String? {
        guard ftruncate(descriptor, off_t(Self.magic.count)) == 0 else { return String(cString: strerror(errno)) }
        end = Self.magic.count
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
        let target = Glibc.open(newPath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard target >= 0 else { return "cannot create \(newPath): \(String(cString: strerror(errno)))" }
        var buffer = [UInt8](repeating: 0, count: Self.magic.count + tail)
        let copied = buffer.withUnsafeMutableBytes { bytes -> Bool in
            Self.magic.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: bytes[..<Self.magic.count]).copyMemory(from: $0) }
            var done = 0
            while done < tail {
                let got = pread(descriptor, bytes.baseAddress! + Self.magic.count + done, tail - done, off_t(merged + done))
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
        guard copied, !sync || fdatasync(target) == 0, rename(newPath, path) == 0 else {
            let failure = String(cString: strerror(errno))
            _ = Glibc.close(target)
            unlink(newPath)
            return "cannot keep the batches written during a merge in \(path): \(failure)"
        }
        _ = Glibc.close(descriptor)
        descriptor = target
        end = Self.magic.count + tail
        // The rename itself is made durable too: later records go to the new file only.
        if sync {
            let directory = Glibc.open(Self.directory(of: path), O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if directory >= 0 {
                defer { _ = Glibc.close(directory) }
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
