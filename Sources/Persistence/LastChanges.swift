#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The last change of each key in a run of changes: an open-addressing table keyed by the
/// key's ring position (a hash already, so its low bits pick the slot). A slot holds the
/// position's high half and the index into `changes`, so a probe reads one slot, not the
/// change, until the halves match. A later change of a key takes its earlier one's place.
struct LastChanges {
    let bytes: UnsafeRawBufferPointer
    var changes: [Change] = []
    /// `high 32 bits of the position << 32 | index into changes + 1`; 0 is an empty slot.
    private var slots: [UInt64]
    private var mask: Int

    init(bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
        slots = [UInt64](repeating: 0, count: 1 << 16)
        mask = slots.count - 1
    }

    private static func tag(_ position: Int64) -> UInt64 { UInt64(bitPattern: position) & 0xFFFF_FFFF_0000_0000 }

    mutating func add(_ change: Change) {
        let tag = Self.tag(change.position)
        var slot = Int(truncatingIfNeeded: change.position) & mask
        while slots[slot] != 0 {
            let entry = slots[slot]
            if entry & 0xFFFF_FFFF_0000_0000 == tag {
                let index = Int(truncatingIfNeeded: entry & 0xFFFF_FFFF) - 1
                let held = changes[index]
                if held.position == change.position, held.key.count == change.key.count,
                   memcmp(bytes.baseAddress! + held.key.lowerBound, bytes.baseAddress! + change.key.lowerBound, held.key.count) == 0 {
                    changes[index] = change
                    return
                }
            }
            slot = (slot + 1) & mask
        }
        changes.append(change)
        slots[slot] = tag | UInt64(changes.count)
        if changes.count * 2 > slots.count { grow() }
    }

    /// Twice the slots, every change placed again (keys are distinct: no comparing).
    private mutating func grow() {
        slots = [UInt64](repeating: 0, count: slots.count * 2)
        mask = slots.count - 1
        for (index, change) in changes.enumerated() {
            var slot = Int(truncatingIfNeeded: change.position) & mask
            while slots[slot] != 0 { slot = (slot + 1) & mask }
            slots[slot] = Self.tag(change.position) | UInt64(index + 1)
        }
    }

    mutating func removeAll() {
        changes.removeAll(keepingCapacity: true)
        for index in slots.indices { slots[index] = 0 }
    }
}
