import CacheStore
import ClusterCore
import NIOCore

/// Checks a serialized sibling set (``SiblingSet/serialized``) against the bus's limits
/// before it is decoded: how many siblings, how long each clock, how far ahead each stamp.
enum SiblingCodec {
    static func decode(_ bytes: ByteBuffer, context: BusDecodingContext) throws(BusProtocolError) -> SiblingSet {
        let limits = context.limits
        var view = bytes
        var siblings = 0
        let latest = UInt64(max(0, context.now.addingReportingOverflow(limits.maxClockSkewMillis).partialValue))
        while view.readableBytes > 0 {
            siblings += 1
            guard siblings <= limits.maxSiblings else {
                throw BusProtocolError(.tooLarge, "more than \(limits.maxSiblings) siblings")
            }
            guard let clockLength = view.readInteger(as: UInt16.self) else { throw malformed }
            guard Int(clockLength) <= BusLimits.maxClockEntries * 12, Int(clockLength) % 12 == 0 else {
                throw BusProtocolError(.tooLarge, "a causal context of more than \(BusLimits.maxClockEntries) entries")
            }
            guard view.readSlice(length: Int(clockLength)) != nil, let timestamp = view.readInteger(as: UInt64.self),
                  view.readInteger(as: UInt32.self) != nil, let expiry = view.readInteger(as: Int64.self),
                  view.readInteger(as: UInt8.self) != nil, let length = view.readInteger(as: UInt32.self),
                  Int(length) <= limits.maxBulkLength, view.readSlice(length: Int(length)) != nil
            else { throw malformed }
            guard timestamp >> 16 <= latest else { throw BusProtocolError(.outOfRange, "a sibling's timestamp is ahead of this node's clock") }
            guard (0...BusLimits.maxExpiry).contains(expiry) else { throw BusProtocolError(.outOfRange, "a sibling's expiry is out of range") }
        }
        guard let set = SiblingSet(serialized: bytes.readableBytesView) else { throw malformed }
        return set
    }

    static var malformed: BusProtocolError { BusProtocolError(.malformed, "malformed sibling set") }
}
