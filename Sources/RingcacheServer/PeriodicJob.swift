import NIOCore
import ServiceLifecycle

/// A background job of a node (membership rounds, hint replay, anti-entropy, active expiry)
/// as a `Service` of the node's `ServiceGroup`: it runs `work` on its event loop every
/// `interval` (counted from the end of the previous run, so runs never overlap) until the
/// group shuts down gracefully or is cancelled.
struct PeriodicJob: Service {
    let name: String
    let eventLoop: any EventLoop
    let initialDelay: Duration
    let interval: Duration
    let work: @Sendable () -> Void

    init(_ name: String, on eventLoop: any EventLoop, every interval: Duration, after initialDelay: Duration? = nil,
         _ work: @escaping @Sendable () -> Void) {
        self.name = name
        self.eventLoop = eventLoop
        self.interval = interval
        self.initialDelay = initialDelay ?? interval
        self.work = work
    }

    func run() async throws {
        // A sleep cut short by the shutdown ends the job; the run under way finishes first.
        try? await cancelWhenGracefulShutdown {
            try await Task.sleep(for: initialDelay)
            while !Task.isCancelled {
                try await eventLoop.submit(work).get()
                try await Task.sleep(for: interval)
            }
        }
    }
}

extension PeriodicJob: CustomStringConvertible {
    var description: String { "PeriodicJob(\(name))" }
}
