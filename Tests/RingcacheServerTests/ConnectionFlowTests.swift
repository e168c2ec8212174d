import Testing

@testable import RingcacheServer

/// The client connection's states and transitions, without a socket.
@Suite struct ConnectionFlowTests {
    @Test func aReadAskedForWhilePausedIsHeldAndIssuedOnResume() {
        var flow = ConnectionFlow()
        let answer1 = flow.readRequested()
        #expect(answer1)
        flow.pause(.pausedForOutput)
        let answer2 = flow.readRequested()
        #expect(!answer2)
        #expect(flow.readHeld)
        #expect(flow.resumesWhenWritable())
        flow.resume()
        #expect(flow.isReading)
        let answer3 = flow.takeHeldRead()
        #expect(answer3)
        let answer4 = flow.takeHeldRead()
        #expect(!answer4, "a held read is issued once")
    }

    @Test func aHeldReadWaitsWhenResumingPausesAgain() {
        var flow = ConnectionFlow()
        flow.pause(.pausedForReplies)
        _ = flow.readRequested()
        flow.resume()
        // What resuming processed filled the reply queue again.
        flow.pause(.pausedForReplies)
        let answer5 = flow.takeHeldRead()
        #expect(!answer5)
        #expect(flow.readHeld)
    }

    @Test func onlyAnOutputPauseEndsWhenTheSocketIsWritable() {
        for phase in [ConnectionFlow.Phase.pausedForDisk, .pausedForReplies] {
            var flow = ConnectionFlow()
            flow.pause(phase)
            #expect(!flow.resumesWhenWritable(), "\(phase)")
        }
    }

    @Test func aDiskPauseEndsOnceTheWriterCatchesUpAndTheSocketTakesReplies() {
        var flow = ConnectionFlow()
        #expect(flow.afterDiskCheck(congested: false, writable: true) == nil, "not paused for the disk")
        flow.pause(.pausedForDisk)
        #expect(flow.afterDiskCheck(congested: true, writable: true) == .pausedForDisk)
        #expect(flow.afterDiskCheck(congested: false, writable: false) == .pausedForOutput)
        #expect(flow.afterDiskCheck(congested: false, writable: true) == .reading)
    }

    @Test func repliesEndAReplyPauseAtHalfTheLimitUnlessAReadThroughHoldsIt() {
        var flow = ConnectionFlow()
        flow.pause(.pausedForReplies)
        #expect(flow.afterReply(waiting: 3000, maximumWaiting: 4096, held: false, writable: true) == nil)
        #expect(flow.afterReply(waiting: 10, maximumWaiting: 4096, held: true, writable: true) == nil)
        #expect(flow.afterReply(waiting: 10, maximumWaiting: 4096, held: false, writable: false) == .pausedForOutput)
        #expect(flow.afterReply(waiting: 10, maximumWaiting: 4096, held: false, writable: true) == .reading)
    }

    @Test func aDrainingConnectionClosesOnceItsRepliesAreWritten() {
        var flow = ConnectionFlow()
        flow.pause(.pausedForReplies)
        flow.drain()
        #expect(flow.isClosing)
        let answer6 = flow.readRequested()
        #expect(!answer6)
        flow.pause(.pausedForOutput)
        #expect(flow.phase == .draining, "a closing connection does not pause")
        #expect(flow.afterReply(waiting: 2, maximumWaiting: 4096, held: false, writable: true) == nil)
        #expect(flow.afterReply(waiting: 0, maximumWaiting: 4096, held: false, writable: true) == .closed)
        let answer7 = flow.close()
        #expect(answer7)
        let answer8 = flow.close()
        #expect(!answer8, "closed once")
        flow.drain()
        #expect(flow.phase == .closed, "a closed connection stays closed")
    }
}
