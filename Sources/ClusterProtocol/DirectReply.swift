import CacheStore
import NIOCore

/// A peer's answer on the quorum hot path (RC.PUT, RC.DEL, RC.GET), read straight from the
/// bytes of its frame into the few fields the quorum needs: no `RESPValue` tree, the value a
/// slice of the frame. Anything that is not a well-formed answer to the request is
/// `.malformed`, never a trap; it is held to the same limits as ``BusReply/decodeEntry(_:limits:now:)``.
public enum DirectReply: Sendable {
    /// What the request expects back.
    public enum Kind: UInt8, Sendable {
        /// `:0` or `:1` (RC.PUT, RC.DEL).
        case flag
        /// `*0`, or `*4` of timestamp, node, expiry and value or null (RC.GET).
        case entry
    }

    case flag(Bool)
    case absent
    case entry(version: Version, expiry: Int64, value: ByteBuffer?)
    /// The peer answered with an error (MISCONF, OOM, ...): it did not do it.
    case error
    /// The peer refused: this coordinator's view of the ring is behind its own (``BusSession/Verdict/fence(peer:message:)``).
    case staleView
    case malformed

    /// Reads the one whole frame in `frame` (as ``RESPFrameScanner`` delimited it).
    public static func read(_ kind: Kind, frame: inout ByteBuffer, limits: BusLimits, now: Int64) -> DirectReply {
        guard let first = frame.readInteger(as: UInt8.self) else { return .malformed }
        switch (first, kind) {
        case (UInt8(ascii: "-"), _):
            return isStaleView(frame) ? .staleView : .error
        case (UInt8(ascii: "!"), _):
            return .error
        case (UInt8(ascii: ":"), .flag):
            switch readNumber(&frame) {
            case 0?: return .flag(false)
            case 1?: return .flag(true)
            default: return .malformed
            }
        case (UInt8(ascii: "*"), .entry):
            return readEntry(&frame, limits: limits, now: now)
        default:
            return .malformed
        }
    }

    private static let staleViewBytes = Array(BusSession.staleViewPrefix.utf8)

    /// Whether the error line (after its `-`) is a fencing refusal.
    public static func isStaleView(_ frame: ByteBuffer) -> Bool {
        frame.readableBytesView.starts(with: staleViewBytes)
    }

    private static func readEntry(_ frame: inout ByteBuffer, limits: BusLimits, now: Int64) -> DirectReply {
        switch readNumber(&frame) {
        case 0?: return .absent
        case 4?: break
        default: return .malformed
        }
        guard let timestamp = readField(&frame), let node = readField(&frame), let expiry = readField(&frame),
              timestamp >= 0, (0...Int64(UInt32.max)).contains(node), (0...BusLimits.maxExpiry).contains(expiry)
        else { return .malformed }
        let latest = now.addingReportingOverflow(limits.maxClockSkewMillis).partialValue
        guard UInt64(timestamp) >> 16 <= UInt64(max(0, latest)) else { return .malformed }
        let version = Version(timestamp: HLCTimestamp(rawValue: UInt64(timestamp)), node: NodeID(rawValue: UInt32(node)))
        switch frame.readInteger(as: UInt8.self) {
        case UInt8(ascii: "_"):
            guard skipLineEnd(&frame) else { return .malformed }
            return .entry(version: version, expiry: expiry, value: nil)
        case UInt8(ascii: "$"):
            guard let length = readNumber(&frame) else { return .malformed }
            if length == -1 { return .entry(version: version, expiry: expiry, value: nil) }
            guard length >= 0, length <= limits.maxBulkLength, let bytes = frame.readSlice(length: Int(length)), skipLineEnd(&frame) else {
                return .malformed
            }
            return .entry(version: version, expiry: expiry, value: bytes)
        default:
            return .malformed
        }
    }

    /// `:<integer>\r\n`.
    private static func readField(_ frame: inout ByteBuffer) -> Int64? {
        guard frame.readInteger(as: UInt8.self) == UInt8(ascii: ":") else { return nil }
        return readNumber(&frame)
    }

    /// A signed decimal up to `\r\n` (consumed), checked for overflow; at most 20 digits, no
    /// leading zero.
    private static func readNumber(_ frame: inout ByteBuffer) -> Int64? {
        frame.withUnsafeReadableBytes { bytes -> (Int64, Int)? in
            var index = 0
            var negative = false
            if index < bytes.count, bytes[index] == UInt8(ascii: "-") {
                negative = true
                index += 1
            }
            var value: Int64 = 0
            let digitsStart = index
            while index < bytes.count, index - digitsStart < 20, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") {
                let (times, overflow) = value.multipliedReportingOverflow(by: 10)
                let (plus, overflow2) = times.addingReportingOverflow(Int64(bytes[index] - UInt8(ascii: "0")))
                guard !overflow, !overflow2 else { return nil }
                value = plus
                index += 1
            }
            // One canonical spelling, as the general parser wants: no leading zero, no -0.
            let digits = index - digitsStart
            guard digits > 0, bytes[digitsStart] != UInt8(ascii: "0") || (digits == 1 && !negative) else { return nil }
            guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\r"), bytes[index + 1] == UInt8(ascii: "\n") else {
                return nil
            }
            return (negative ? -value : value, index + 2)
        }.map { value, consumed in
            frame.moveReaderIndex(forwardBy: consumed)
            return value
        }
    }

    private static func skipLineEnd(_ frame: inout ByteBuffer) -> Bool {
        guard frame.readInteger(as: UInt16.self) == UInt16(UInt8(ascii: "\r")) << 8 | UInt16(UInt8(ascii: "\n")) else { return false }
        return true
    }
}
