import Testing

@testable import ClusterCore

@Suite struct StaleViewRetryTests {
    @Test func aFencedOperationGoesAgainThreeTimesWithGrowingPauses() {
        #expect((0..<5).map { StaleViewRetry.pause(afterAttempt: $0, refused: true) } == [20, 60, 180, nil, nil])
    }

    @Test func anOperationNoReplicaRefusedFailsAtOnce() {
        #expect(StaleViewRetry.pause(afterAttempt: 0, refused: false) == nil)
        #expect(StaleViewRetry.pause(afterAttempt: -1, refused: true) == nil)
    }
}
