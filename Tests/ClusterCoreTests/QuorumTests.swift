import CacheStore
import Testing

@testable import ClusterCore

private func value(_ text: String?, _ millis: Int64, node: UInt32 = 1) -> VersionedValue {
    VersionedValue(version: Version(timestamp: HLCTimestamp(millis: millis), node: NodeID(rawValue: node)), value: text.map { Array($0.utf8) })
}

@Suite struct WriteQuorumTests {
    @Test func succeedsAtWAcknowledgementsOnce() {
        var quorum = WriteQuorum(replicas: [0, 1, 2], required: 2)
        #expect(quorum.onAck(from: 0) == nil)
        #expect(quorum.onAck(from: 0) == nil)  // duplicates count once
        #expect(quorum.onAck(from: 2) == .succeed)
        #expect(quorum.onAck(from: 1) == nil)
        #expect(quorum.onTimeout() == nil)
    }

    @Test func failsAsSoonAsWIsOutOfReach() {
        var quorum = WriteQuorum(replicas: [0, 1, 2], required: 2)
        #expect(quorum.onAck(from: 0) == nil)
        #expect(quorum.onFailure(from: 1) == nil)
        let action = quorum.onFailure(from: 2)
        guard case .fail(let error) = action else {
            Issue.record("expected a failure, got \(String(describing: action))")
            return
        }
        #expect(error.message == "NOQUORUM write needed 2 of 3 replicas, 1 answered, 2 failed")
        #expect(quorum.onAck(from: 2) == nil)
    }

    @Test func timeoutFailsAnUndecidedWrite() {
        var quorum = WriteQuorum(replicas: [0, 1, 2], required: 3)
        _ = quorum.onAck(from: 1)
        guard case .fail(let error) = quorum.onTimeout() else {
            Issue.record("expected a failure")
            return
        }
        #expect(error.message == "NOQUORUM write needed 3 of 3 replicas, 1 answered, 0 failed, the rest timed out")
        #expect(quorum.onAck(from: 0) == nil && quorum.onAck(from: 2) == nil)
    }

    @Test func ignoresStrangers() {
        var quorum = WriteQuorum(replicas: [0, 1], required: 1)
        #expect(quorum.onAck(from: 7) == nil)
        #expect(quorum.onAck(from: 1) == .succeed)
    }
}

@Suite struct ReadQuorumTests {
    @Test func repliesNewestAtRAndRepairsStaleReplicas() {
        var quorum = ReadQuorum<VersionedValue>(replicas: [0, 1, 2], required: 2)
        #expect(quorum.onResponse(from: 0, value("old", 10)).isEmpty)
        let actions = quorum.onResponse(from: 1, value("new", 20))
        #expect(actions == [.reply(value("new", 20)), .repair(replica: 0, value: value("new", 20))])
        // A late answer that is missing the key is repaired too.
        #expect(quorum.onResponse(from: 2, nil) == [.repair(replica: 2, value: value("new", 20))])
    }

    @Test func lateNewerAnswerRepairsEveryoneElse() {
        var quorum = ReadQuorum<VersionedValue>(replicas: [0, 1, 2], required: 2)
        _ = quorum.onResponse(from: 0, value("a", 10))
        #expect(quorum.onResponse(from: 1, value("a", 10)) == [.reply(value("a", 10))])
        let late = quorum.onResponse(from: 2, value("b", 30))
        #expect(Set(late) == [.repair(replica: 0, value: value("b", 30)), .repair(replica: 1, value: value("b", 30))])
    }

    @Test func tombstonesReadAsMissingButStillRepair() {
        var quorum = ReadQuorum<VersionedValue>(replicas: [0, 1, 2], required: 2)
        _ = quorum.onResponse(from: 0, value(nil, 50))
        let actions = quorum.onResponse(from: 1, value("x", 40))
        #expect(actions == [.reply(value(nil, 50)), .repair(replica: 1, value: value(nil, 50))])
    }

    @Test func equalVersionsTieBreakByNode() {
        #expect(VersionedValue.newest(value("a", 10, node: 1), value("b", 10, node: 2)) == value("b", 10, node: 2))
        #expect(VersionedValue.newest(value("b", 10, node: 2), value("a", 10, node: 1)) == value("b", 10, node: 2))
    }

    @Test func failsWhenRCannotBeMet() {
        var quorum = ReadQuorum<VersionedValue>(replicas: [0, 1, 2], required: 2)
        _ = quorum.onResponse(from: 0, nil)
        #expect(quorum.onFailure(from: 1).isEmpty)
        let actions = quorum.onFailure(from: 2)
        #expect(actions.count == 1)
        if case .fail(let error) = actions.first {
            #expect(error.message.hasPrefix("NOQUORUM read needed 2 of 3 replicas, 1 answered"))
        } else {
            Issue.record("expected a failure")
        }
    }
}
