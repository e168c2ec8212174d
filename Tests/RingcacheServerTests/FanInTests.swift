import Testing

@testable import RingcacheServer

@Suite struct FanInTests {
    @Test func handsOnEveryAnswerInIndexOrderOnceTheLastComes() {
        var delivered: [[String?]] = []
        let fanIn = FanIn<String>(count: 3) { delivered.append($0) }
        fanIn.answer(2, "c")
        fanIn.answer(0, "a")
        #expect(delivered.isEmpty)
        fanIn.answer(0, "again")
        #expect(delivered.isEmpty, "a second answer from the same party does not count")
        fanIn.answer(1, "b")
        #expect(delivered == [["a", "b", "c"]])
        fanIn.answer(1, "late")
        fanIn.finish()
        #expect(delivered.count == 1, "handed on exactly once")
    }

    @Test func finishingEarlyHandsOnWhatCame() {
        var delivered: [[Int?]] = []
        let fanIn = FanIn<Int>(count: 3) { delivered.append($0) }
        fanIn.answer(1, 7)
        fanIn.finish()
        #expect(delivered == [[nil, 7, nil]])
        fanIn.answer(0, 1)
        #expect(delivered.count == 1)
    }

    @Test func noPartiesMeansDoneAtOnce() {
        var calls = 0
        let fanIn = FanIn<Void>(count: 0) { _ in calls += 1 }
        #expect(calls == 1)
        #expect(fanIn.isFinished)
    }

    @Test func optionalAnswersCountEvenWhenNil() {
        var delivered: [[String??]] = []
        let fanIn = FanIn<String?>(count: 2) { delivered.append($0) }
        fanIn.answer(0, nil)
        fanIn.answer(0, "second")
        #expect(delivered.isEmpty)
        fanIn.answer(1, "b")
        #expect(delivered.count == 1)
        #expect(delivered[0][0] == .some(nil))
    }
}
