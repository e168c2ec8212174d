import Testing

@testable import Persistence

/// The writer's decisions, driven by a manual clock: no thread, no file, no sleep.
@Suite struct WriterPolicyTests {
    typealias Queue = WriterPolicy.Queue

    func policy(_ fsync: FsyncPolicy = .everysec, unmerged: Int = 0, loaded: Bool = true) -> WriterPolicy {
        var policy = WriterPolicy(settings: .init(fsync: fsync, queueLimit: 1 << 20), now: .zero, unmergedBytes: unmerged)
        if loaded { policy.finishedLoading() }
        return policy
    }

    func ms(_ value: Int) -> Duration { .milliseconds(value) }

    @Test func anIdleWriterSleepsUntilHousekeeping() {
        let policy = policy()
        #expect(policy.next(Queue(), now: ms(300)) == .sleep(ms(700)))
        #expect(policy.next(Queue(), now: ms(1000)) == .turn(.init(housekeeping: true)))
    }

    @Test func theLoadRunsWithoutGathering() {
        let policy = policy(loaded: false)
        #expect(policy.next(Queue(), now: ms(10)) == .turn(.init(loadChunk: true)))
        #expect(policy.next(Queue(bytes: 10), now: ms(10)) == .turn(.init(commit: true, loadChunk: true)))
    }

    @Test func aBatchGathersUnderEverysecButNotUnderAlways() {
        var everysec = policy(.everysec)
        everysec.committing(now: ms(1000))
        #expect(everysec.next(Queue(bytes: 100), now: ms(1020)) == .gather(ms(5)))
        #expect(everysec.next(Queue(bytes: 100), now: ms(1098)) == .gather(ms(2)))
        #expect(everysec.next(Queue(bytes: 100), now: ms(1100)) == .turn(.init(commit: true, housekeeping: true)))
        var always = policy(.always)
        always.committing(now: ms(1000))
        always.housekept(now: ms(1000))
        #expect(always.next(Queue(bytes: 100), now: ms(1001)) == .turn(.init(commit: true)))
    }

    @Test func aReadAFullQueueOrTheStopEndsTheGathering() {
        var policy = policy()
        policy.committing(now: ms(500))
        policy.housekept(now: ms(500))
        let now = ms(510)
        #expect(policy.next(Queue(bytes: 100), now: now) == .gather(ms(5)))
        #expect(policy.next(Queue(bytes: 100, reads: 1), now: now) == .turn(.init(commit: true)))
        #expect(policy.next(Queue(bytes: 100, scans: 1), now: now) == .turn(.init(commit: true)))
        #expect(policy.next(Queue(bytes: 512 << 10), now: now) == .turn(.init(commit: true)))
        #expect(policy.next(Queue(bytes: 100, stopping: true), now: now) == .turn(.init(commit: true)))
    }

    @Test func aFailedCommitIsRetriedAfterAPauseWhileNewChangesWait() {
        var policy = policy()
        policy.housekept(now: ms(1000))
        policy.committing(now: ms(1000))
        let kept = policy.committed(.notWritten, unmergedBytes: 0, now: ms(1000))
        #expect(kept)
        #expect(policy.retrying)
        // New changes wait in the queue (they count toward back-pressure there).
        #expect(policy.next(Queue(bytes: 100), now: ms(1100)) == .sleep(ms(100)))
        #expect(policy.next(Queue(bytes: 100), now: ms(1200)) == .turn(.init(commit: true)))
        // A retry does not gather: it is the failed batch first.
        #expect(policy.next(Queue(), now: ms(1200)) == .turn(.init(commit: true)))
        let result1 = policy.committed(.committed, unmergedBytes: 50, now: ms(1201))
        #expect(result1)
        #expect(!policy.retrying)
    }

    @Test func aFailedSyncIsNeverForgottenAndIsRetried() {
        var policy = policy(.always)
        policy.housekept(now: ms(0))
        let result2 = policy.committed(.writtenNotSynced, unmergedBytes: 10, now: ms(100))
        #expect(result2)
        #expect(policy.unsynced)
        #expect(!policy.retrying)
        #expect(policy.next(Queue(), now: ms(300)) == .sleep(ms(300)))
        #expect(policy.next(Queue(), now: ms(600)) == .turn(.init(syncAgain: true)))
        // A commit that wrote but could not sync again keeps the failure.
        let result3 = policy.committed(.writtenNotSynced, unmergedBytes: 20, now: ms(650))
        #expect(result3)
        #expect(policy.unsynced)
        policy.synced(now: ms(1150))
        #expect(!policy.unsynced)
    }

    @Test func pendingBatchesMergeWhenLargeOldOrNeeded() {
        var policy = policy()
        #expect(!policy.mergeDue(Queue(), now: ms(10)))
        let result4 = policy.committed(.committed, unmergedBytes: 1000, now: ms(10))
        #expect(result4)
        #expect(!policy.mergeDue(Queue(), now: ms(20)))
        #expect(policy.mergeDue(Queue(reads: 1), now: ms(20)))
        #expect(policy.mergeDue(Queue(scans: 1), now: ms(20)))
        #expect(policy.mergeDue(Queue(stopping: true), now: ms(20)))
        #expect(policy.mergeDue(Queue(), now: ms(10) + .seconds(60)))
        let result5 = policy.committed(.committed, unmergedBytes: 256 << 20, now: ms(30))
        #expect(result5)
        #expect(policy.mergeDue(Queue(), now: ms(30)))
        // An idle writer wakes for the merge that comes due.
        policy.housekept(now: ms(59_900))
        let result6 = policy.committed(.committed, unmergedBytes: 1000, now: ms(59_900))
        #expect(result6 == true)
        policy.merged(true, unmergedBytes: 0, started: ms(59_950), now: ms(59_960))
        #expect(!policy.mergeDue(Queue(reads: 1), now: ms(59_970)))
    }

    @Test func aFailedMergeWaitsBeforeTheNextTryExceptAtTheStop() {
        var policy = policy(unmerged: 500)
        policy.housekept(now: ms(100))
        #expect(policy.mergeDue(Queue(reads: 1), now: ms(100)))
        policy.merged(false, unmergedBytes: 500, started: ms(100), now: ms(150))
        #expect(!policy.mergeDue(Queue(reads: 1), now: ms(200)))
        #expect(policy.mergeDue(Queue(stopping: true), now: ms(200)))
        #expect(policy.mergeDue(Queue(reads: 1), now: ms(350)))
        // Scans wait for a merge that succeeds: they are no reason to wake before the retry.
        #expect(policy.next(Queue(scans: 1), now: ms(200)) == .sleep(ms(150)))
        #expect(policy.next(Queue(scans: 1), now: ms(350)) == .turn(.init()))
    }

    @Test func whatWasCommittedDuringAMergeWaitsFromTheMergesStart() {
        var policy = policy(unmerged: 100)
        policy.merged(true, unmergedBytes: 40, started: ms(1000), now: ms(5000))
        #expect(!policy.mergeDue(Queue(), now: ms(1000) + .seconds(59)))
        #expect(policy.mergeDue(Queue(), now: ms(1000) + .seconds(60)))
    }

    @Test func commitsDuringAMergeComeEveryGatheringTime() {
        var policy = policy()
        policy.committing(now: ms(0))
        let answers = [50, 100, 150, 200].map { policy.commitDuringMerge(now: ms($0)) }
        #expect(answers == [false, true, false, true])
        let kept = policy.committed(.notWritten, unmergedBytes: 0, now: ms(200))
        #expect(kept)
        let whileFailing = policy.commitDuringMerge(now: ms(400))
        #expect(!whileFailing, "no commit during a merge while a failed batch waits")
    }

    @Test func theStopWaitsForTheQueueAndDropsABatchAfterTwoFailedTries() {
        var policy = policy(.always)
        #expect(!policy.finishes(Queue(stopping: false)))
        #expect(!policy.finishes(Queue(bytes: 1, stopping: true)))
        #expect(!policy.finishes(Queue(reads: 1, stopping: true)))
        #expect(policy.finishes(Queue(scans: 3, stopping: true)))
        let result7 = policy.committed(.notWritten, unmergedBytes: 0, now: ms(10), stopping: true)
        #expect(result7)
        #expect(!policy.finishes(Queue(stopping: true)))
        #expect(policy.next(Queue(stopping: true), now: ms(11)) == .turn(.init(commit: true)))
        let result8 = policy.committed(.notWritten, unmergedBytes: 0, now: ms(12), stopping: true)
        #expect(!result8)
        #expect(policy.finishes(Queue(stopping: true)))
    }
}
