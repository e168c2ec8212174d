import CacheStore
import Testing

@testable import ClusterCore

@Suite struct RebalanceRunTests {
    typealias Run = RebalanceRun<Int>
    let old = HashRing(members: ["a", "b", "c", "d"], vnodes: 16, replicas: 2, excluded: [3])
    let new = HashRing(members: ["a", "b", "c", "d"], vnodes: 16, replicas: 2)

    func run(sender: Int = 0, pace: Int = 0, resume: Int? = nil) -> Run {
        Run(old: old, new: new, sender: sender, settings: .init(maxBytesPerSecond: pace, batchBytes: 1000), resumeAfter: resume)
    }

    @Test func walksStepByStepSavingItsPlaceAndFinishes() {
        var run = run(pace: 1_000_000)
        #expect(run.onStep() == [.scan(after: nil, limit: 256)])
        #expect(run.onPlanned(scanned: 10, bytes: 500, targets: [3], bigValues: false, next: 7, last: false) == [.send(targets: [3])])
        #expect(run.onBatch(step: 1, target: 3, ok: true) == [.saveCursor(7), .next(afterMicroseconds: 500)])
        #expect(run.cursor == 7 && run.scanned == 10)
        #expect(run.onStep() == [.scan(after: 7, limit: 256)], "the scan grows back only when a step is small")
        #expect(run.onPlanned(scanned: 3, bytes: 0, targets: [], bigValues: false, next: nil, last: true) == [.finish])
        #expect(run.isFinished && run.scanned == 13)
        #expect(run.onStep().isEmpty)
        var resumed = self.run(resume: 41)
        #expect(resumed.onStep() == [.scan(after: 41, limit: 256)], "a walk goes on after a restart")
    }

    @Test func aFailedTargetRetriesTheSameStepAfterEveryTargetAnswered() {
        var run = run()
        _ = run.onStep()
        #expect(run.onPlanned(scanned: 5, bytes: 100, targets: [1, 3], bigValues: false, next: 9, last: false) == [.send(targets: [1, 3])])
        #expect(run.onBatch(step: 1, target: 1, ok: false).isEmpty, "waits for the other target")
        #expect(run.onBatch(step: 1, target: 1, ok: true).isEmpty, "a second answer from one target is ignored")
        #expect(run.onBatch(step: 1, target: 3, ok: true) == [.retry(afterMilliseconds: 1000)])
        #expect(run.cursor == nil && run.retries == 1)
        #expect(run.onStep() == [.scan(after: nil, limit: 512)], "the same keys again")
        #expect(run.onBatch(step: 1, target: 3, ok: true).isEmpty, "answers to an earlier step are ignored")
    }

    @Test func bigValuesGoAfterTheBatchesAndTheirFailureRetries() {
        var run = run()
        _ = run.onStep()
        #expect(run.onPlanned(scanned: 1, bytes: 5000, targets: [], bigValues: true, next: 1, last: false) == [.sendBigValues])
        #expect(run.scanCount == 128, "big steps shrink the scan")
        #expect(run.onBigValues(step: 1, ok: false) == [.retry(afterMilliseconds: 1000)])
        _ = run.onStep()
        _ = run.onPlanned(scanned: 1, bytes: 5000, targets: [2], bigValues: true, next: 1, last: true)
        #expect(run.onBigValues(step: 2, ok: true).isEmpty, "not before the batches")
        #expect(run.onBatch(step: 2, target: 2, ok: true) == [.sendBigValues])
        #expect(run.onBigValues(step: 2, ok: true) == [.finish])
    }

    @Test func everyOldReplicaSendsToEveryGainer() {
        var runs = (0..<3).map { run(sender: $0) }
        for index in runs.indices { _ = runs[index].onStep() }
        var moved = 0
        for position in stride(from: UInt64(0), to: UInt64.max - UInt64.max / 200, by: Int(UInt64.max / 200)) {
            let before = old.preferenceList(forPosition: position).members
            let gainers = new.preferenceList(forPosition: position).members.filter { !before.contains($0) }
            for sender in 0..<3 {
                let targets = runs[sender].targets(forPosition: position)
                #expect(targets == (before.contains(sender) ? gainers : []), "every old replica sends, and only they")
            }
            moved += gainers.count
        }
        #expect(moved > 0)
    }

    @Test func aCancelledRunDoesNothing() {
        var run = run()
        _ = run.onStep()
        run.cancel()
        #expect(run.onPlanned(scanned: 1, bytes: 1, targets: [1], bigValues: false, next: 1, last: true).isEmpty)
        #expect(run.onStep().isEmpty)
    }

    @Test func chunkedSendsResumeWhereTheReceiverStands() {
        var send = ChunkedSend(total: 250, chunkBytes: 100)
        #expect(send.current == .send(offset: 0, end: 100))
        #expect(send.onReply(received: 100) == .send(offset: 100, end: 200))
        #expect(send.onReply(received: 0) == .send(offset: 0, end: 100), "the receiver lost the value: from its start")
        #expect(send.onReply(received: 100) == .send(offset: 100, end: 200))
        #expect(send.onReply(received: 100) == .fail, "no progress")
        #expect(send.onReply(received: nil) == .fail)
        var resumed = ChunkedSend(total: 250, chunkBytes: 100, resumeAt: 200)
        #expect(resumed.onReply(received: 250) == .done)
        var bad = ChunkedSend(total: 250, chunkBytes: 100)
        #expect(bad.onReply(received: -5) == .fail)
        #expect(bad.onReply(received: Int.max) == .fail)
        #expect(ChunkedSend(total: 10, chunkBytes: 0, resumeAt: 99).current == .done)
    }
}
