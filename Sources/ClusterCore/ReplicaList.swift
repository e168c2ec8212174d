/// The replicas of one key, held inline (up to ``capacity``, no allocation): what the hot
/// path of a quorum operation carries. Positions in the list are what the quorum cores count
/// by; the elements are member indices.
public struct ReplicaList: Sendable, Hashable, RandomAccessCollection, CustomStringConvertible {
    /// N is at most 16; while data moves a write goes to the old replicas and the new ones.
    public static let capacity = 32
    private var lanes = SIMD32<UInt16>()
    public private(set) var count = 0

    public init() {}

    /// nil when there are more members than ``capacity`` or a member past `UInt16.max`.
    public init?<S: Sequence>(_ members: S) where S.Element: BinaryInteger {
        for member in members {
            guard append(Int(member)) else { return nil }
        }
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { count }

    public subscript(position: Int) -> Int {
        precondition(position >= 0 && position < count, "replica position out of range")
        return Int(lanes[position])
    }

    /// Adds `member`; false (nothing added) when the list is full or the index too large.
    public mutating func append(_ member: Int) -> Bool {
        guard count < Self.capacity, let lane = UInt16(exactly: member) else { return false }
        lanes[count] = lane
        count += 1
        return true
    }

    /// Where `member` is in the list.
    public func position(of member: Int) -> Int? {
        guard let lane = UInt16(exactly: member) else { return nil }
        for position in 0..<count where lanes[position] == lane { return position }
        return nil
    }

    public static func == (a: ReplicaList, b: ReplicaList) -> Bool {
        a.count == b.count && a.elementsEqual(b)
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(count)
        for member in self { hasher.combine(member) }
    }

    public var description: String { "\(Array(self))" }
}

extension HashRing {
    /// The replicas of the key at `position`, without allocating.
    public func replicaList(forPosition position: UInt64) -> ReplicaList {
        withPreferenceList(forPosition: position) { members in
            var list = ReplicaList()
            for member in members { _ = list.append(Int(member)) }
            return list
        }
    }
}
