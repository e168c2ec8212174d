import HeapModule

/// The simulators' event queue: events by virtual time, and in scheduling order at equal
/// times, so a history replays exactly from its seed.
struct SimulationQueue<Event> {
    /// What the heap orders: two integers, cheap to move around (the events stay put).
    private struct Entry: Comparable {
        let time: Int64
        let sequence: Int
        // Not by tuples: comparing tuples looks their type up at run time in debug builds,
        // which made it most of a simulated history's time there.
        static func < (a: Entry, b: Entry) -> Bool { a.time != b.time ? a.time < b.time : a.sequence < b.sequence }
        static func == (a: Entry, b: Entry) -> Bool { a.time == b.time && a.sequence == b.sequence }
    }

    private var heap = Heap<Entry>()
    /// Events by sequence number; an event's slot is emptied when it is popped.
    private var events: [Event?] = []

    var isEmpty: Bool { heap.isEmpty }

    /// When the earliest event is due, if any.
    var nextTime: Int64? { heap.min?.time }

    mutating func schedule(_ event: Event, at time: Int64) {
        heap.insert(Entry(time: time, sequence: events.count))
        events.append(event)
    }

    mutating func popEarliest() -> (time: Int64, event: Event)? {
        guard let entry = heap.popMin(), let event = events[entry.sequence] else { return nil }
        events[entry.sequence] = nil
        return (entry.time, event)
    }
}
