#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// One stored entry: a 40-byte header, the key and the value in a single allocation.
///
/// Header words (little-endian, 8-byte aligned):
/// - 0: previous record in the LRU list (48 bits) | second it last moved to the LRU front (16)
/// - 8: next record in the LRU list (48 bits) | low half of the writer's node id (16)
/// - 16: absolute expiry in Unix milliseconds, 0 for none (48 bits) | high half of node id (16)
/// - 24: HLC timestamp of the version
/// - 32: key length (31 bits) | tombstone flag (1 bit), value length (32 bits)
///
/// Every byte here is paid once per key, so links and ids share words with other fields.
struct Record: Equatable {
    let base: UnsafeMutableRawPointer

    static let headerSize = 40
    static let lowMask: UInt64 = (1 << 48) - 1
    static let highMask: UInt64 = ~lowMask

    init(_ base: UnsafeMutableRawPointer) { self.base = base }

    init?(bits: UInt64) {
        guard let pointer = UnsafeMutableRawPointer(bitPattern: UInt(bits & Record.lowMask)) else { return nil }
        self.base = pointer
    }

    var bits: UInt64 { UInt64(UInt(bitPattern: base)) }

    /// Allocates a record for `key` and `value`; nil if malloc fails.
    static func allocate(key: UnsafeRawBufferPointer, valueCount: Int) -> Record? {
        guard key.count < 0x8000_0000, valueCount <= UInt32.max else { return nil }
        // Ask for the whole chunk the allocator would hand out anyway, so a later value of
        // the same chunk size can be written in place on any allocator.
        guard let base = malloc(chunkSize(headerSize + key.count + valueCount) - 8) else { return nil }
        // Slots and LRU links keep 48 bits of a pointer: refuse memory above that.
        guard UInt64(UInt(bitPattern: base)) & highMask == 0 else {
            free(base)
            return nil
        }
        let record = Record(base)
        for offset in stride(from: 0, to: headerSize, by: 8) {
            base.storeBytes(of: 0 as UInt64, toByteOffset: offset, as: UInt64.self)
        }
        base.storeBytes(of: UInt32(key.count), toByteOffset: 32, as: UInt32.self)
        base.storeBytes(of: UInt32(valueCount), toByteOffset: 36, as: UInt32.self)
        if key.count > 0 {
            (base + headerSize).copyMemory(from: key.baseAddress!, byteCount: key.count)
        }
        return record
    }

    func deallocate() { free(base) }

    /// Bytes an allocation of `size` takes from a glibc-style allocator: its own 8-byte word
    /// added, rounded up to 16, at least 32.
    @inline(__always)
    static func chunkSize(_ size: Int) -> Int { max(32, (size + 8 + 15) & ~15) }

    /// Bytes this record takes from the allocator.
    var footprint: Int { Record.chunkSize(Record.headerSize + keyCount + valueCount) }

    /// True if a value of `count` bytes fits this allocation with the same footprint.
    func fitsInPlace(valueCount count: Int) -> Bool {
        Record.chunkSize(Record.headerSize + keyCount + count) == footprint
    }

    @inline(__always) private func word(_ offset: Int) -> UInt64 { base.load(fromByteOffset: offset, as: UInt64.self) }
    @inline(__always) private func setWord(_ offset: Int, _ value: UInt64) {
        base.storeBytes(of: value, toByteOffset: offset, as: UInt64.self)
    }
    @inline(__always) private func setLow(_ offset: Int, _ value: UInt64) {
        setWord(offset, (word(offset) & Record.highMask) | (value & Record.lowMask))
    }
    @inline(__always) private func setHigh(_ offset: Int, _ value: UInt16) {
        setWord(offset, (word(offset) & Record.lowMask) | UInt64(value) << 48)
    }

    var previous: Record? {
        get { Record(bits: word(0)) }
        nonmutating set { setLow(0, newValue?.bits ?? 0) }
    }

    var next: Record? {
        get { Record(bits: word(8)) }
        nonmutating set { setLow(8, newValue?.bits ?? 0) }
    }

    /// Unix seconds, modulo 2^16, when the record last moved to the front of the LRU list.
    var promotedAt: UInt16 {
        get { UInt16(truncatingIfNeeded: word(0) >> 48) }
        nonmutating set { setHigh(0, newValue) }
    }

    /// Absolute expiry in Unix milliseconds; 0 means the entry does not expire.
    var expiry: Int64 {
        get { Int64(word(16) & Record.lowMask) }
        // Past 2^48 ms (the year 10889) an expiry is as good as none: clamp, never wrap.
        nonmutating set { setLow(16, UInt64(min(max(0, newValue), Int64(Record.lowMask)))) }
    }

    var version: Version {
        get {
            let node = UInt32(truncatingIfNeeded: word(8) >> 48) | UInt32(truncatingIfNeeded: word(16) >> 48) << 16
            return Version(timestamp: HLCTimestamp(rawValue: word(24)), node: NodeID(rawValue: node))
        }
        nonmutating set {
            setWord(24, newValue.timestamp.rawValue)
            setHigh(8, UInt16(truncatingIfNeeded: newValue.node.rawValue))
            setHigh(16, UInt16(truncatingIfNeeded: newValue.node.rawValue >> 16))
        }
    }

    var keyCount: Int { Int(base.load(fromByteOffset: 32, as: UInt32.self) & 0x7FFF_FFFF) }

    /// A delete kept as a versioned marker, so replicas and repairs do not bring the key back.
    var isTombstone: Bool {
        get { base.load(fromByteOffset: 32, as: UInt32.self) & 0x8000_0000 != 0 }
        nonmutating set {
            let length = base.load(fromByteOffset: 32, as: UInt32.self) & 0x7FFF_FFFF
            base.storeBytes(of: length | (newValue ? 0x8000_0000 : 0), toByteOffset: 32, as: UInt32.self)
        }
    }

    var valueCount: Int {
        get { Int(base.load(fromByteOffset: 36, as: UInt32.self)) }
        nonmutating set { base.storeBytes(of: UInt32(newValue), toByteOffset: 36, as: UInt32.self) }
    }

    var key: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + Record.headerSize, count: keyCount)
    }

    var value: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + Record.headerSize + keyCount, count: valueCount)
    }

    /// Copies `bytes` into the value area; the caller has checked ``fitsInPlace(valueCount:)``.
    func storeValue(_ bytes: UnsafeRawBufferPointer) {
        valueCount = bytes.count
        if bytes.count > 0 {
            (base + Record.headerSize + keyCount).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        }
    }

    @inline(__always)
    func hasKey(_ other: UnsafeRawBufferPointer) -> Bool {
        let count = keyCount
        guard count == other.count else { return false }
        if count == 0 { return true }
        return memcmp(base + Record.headerSize, other.baseAddress!, count) == 0
    }

    @inline(__always)
    func isExpired(at now: Int64) -> Bool {
        let expiry = self.expiry
        return expiry != 0 && expiry <= now
    }
}
