import NIOCore

/// A task executor that runs jobs on one NIO event loop. Tasks that prefer it
/// (`withTaskExecutorPreference`) run on the thread that owns their connections, so a call and
/// its reply never cross threads: for a client on a one-thread event-loop group, the fastest
/// way to drive it.
public final class EventLoopTaskExecutor: TaskExecutor, @unchecked Sendable {
    /// The loop whose thread runs the jobs.
    public let eventLoop: any EventLoop

    /// An executor for `eventLoop`.
    public init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// Runs `job` on the event loop.
    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { [self] in job.runSynchronously(on: asUnownedTaskExecutor()) }
    }
}
