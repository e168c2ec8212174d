import HeapModule

/// The simulators' event queue: events by virtual time, and in scheduling order at equal
/// times, so a history replays exactly from its seed.
struct SimulationQueue<Event> {
    private struct Entry: Comparable {
        let time: Int64
        let sequence: Int
        let event: Event
        static func < (a: Entry, b: Entry) -> Bool { (a.time, a.sequence) < (b.time, b.sequence) }
        static func == (a: Entry, b: Entry) -> Bool { (a.time, a.sequence) == (b.time, b.sequence) }
    }

    private var heap = Heap<Entry>()
    private var sequence = 0

    var isEmpty: Bool { heap.isEmpty }

    /// When the earliest event is due, if any.
    var nextTime: Int64? { heap.min?.time }

    mutating func schedule(_ event: Event, at time: Int64) {
        sequence += 1
        heap.insert(Entry(time: time, sequence: sequence, event: event))
    }

    mutating func popEarliest() -> (time: Int64, event: Event)? {
        heap.popMin().map { ($0.time, $0.event) }
    }
}
