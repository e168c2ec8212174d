import CacheStore
import ClusterCore
import ClusterProtocol
import NIOCore
import Testing

@testable import RingcacheServer

/// The quorum hot path's table of operations, without sockets: answers in, replies and
/// effects out.
@Suite struct HotTableTests {
    let far = NIODeadline.now() + .seconds(60)
    let now: Int64 = 1_800_000_000_000

    static var noKey: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: nil, count: 0) }

    func version(_ n: UInt64) -> Version { Version(timestamp: HLCTimestamp(rawValue: n << 16), node: NodeID(rawValue: 1)) }

    func text(_ reply: PendingReply) -> String {
        var out = ByteBuffer()
        _ = reply.write(into: &out)
        return String(buffer: out)
    }

    @Test func aWriteSucceedsAtWAcknowledgementsAndIgnoresLateOnes() {
        var table = HotTable()
        let reply = PendingReply()
        var completions = 0
        var address = table.begin(.write(WriteQuorum(replicas: ReplicaList([0, 1, 2])!, required: 2)), .set, count: 3, required: 3, resp3: false,
                                  key: Self.noKey, reply: reply, completed: { completions += 1 }, deadline: far)
        address.position = 0
        table.answer(address, .flag(false), now: now).completed?()
        #expect(!reply.isReady)
        address.position = 2
        table.answer(address, .flag(false), now: now).completed?()
        #expect(text(reply) == "+OK\r\n")
        #expect(completions == 1)
        address.position = 1
        let late = table.answer(address, .flag(false), now: now)
        #expect(late.completed == nil, "the slot is free: a late answer is dropped")
    }

    @Test func aDeleteCountsWhetherAnyReplicaHeldTheKey() {
        var table = HotTable()
        let reply = PendingReply()
        var address = table.begin(.write(WriteQuorum(replicas: ReplicaList([0, 1])!, required: 2)), .del, count: 2, required: 2, resp3: false,
                                  key: Self.noKey, reply: reply, completed: {}, deadline: far)
        _ = table.answer(address, .flag(false), now: now)
        address.position = 1
        _ = table.answer(address, .flag(true), now: now)
        #expect(text(reply) == ":1\r\n")
    }

    @Test func errorsAndMalformedAnswersAreFailuresAndNoQuorumFollows() {
        var table = HotTable()
        let reply = PendingReply()
        var address = table.begin(.write(WriteQuorum(replicas: ReplicaList([0, 1, 2])!, required: 2)), .set, count: 3, required: 3, resp3: false,
                                  key: Self.noKey, reply: reply, completed: {}, deadline: far)
        let first = table.answer(address, .error, now: now)
        #expect(!first.peerReplyError, "an error is the replica's answer, not a bad reply")
        address.position = 1
        let second = table.answer(address, .malformed, now: now)
        #expect(second.peerReplyError && second.quorumFailed)
        #expect(text(reply).hasPrefix("-NOQUORUM write needed 2 of 3 replicas"))
    }

    @Test func aReadAnswersTheNewestAndPlansRepairsForStaleAndLateReplicas() {
        var table = HotTable()
        let reply = PendingReply()
        let key: [UInt8] = Array("k".utf8)
        var address = key.withUnsafeBytes {
            table.begin(.read(NewestRead(replicas: ReplicaList([5, 6, 7])!, required: 2)), .get, count: 3, required: 3, resp3: false, key: $0,
                        reply: reply, completed: {}, deadline: far)
        }
        address.position = 0
        var value = ByteBuffer(string: "new")
        _ = table.answer(address, .entry(version: version(9), expiry: 0, value: value), now: now)
        address.position = 1
        value = ByteBuffer(string: "old")
        let decided = table.answer(address, .entry(version: version(3), expiry: 0, value: value), now: now)
        #expect(text(reply) == "$3\r\nnew\r\n")
        #expect(decided.repairs == 0b010)
        #expect(decided.replicas[1] == 6)
        #expect(decided.repair?.value == Array("new".utf8))
        #expect(decided.key == key)
        address.position = 2
        let late = table.answer(address, .absent, now: now)
        #expect(late.repairs == 0b100, "a late replica without the key is repaired too")
    }

    @Test func readsSeeTombstonesAndExpiredValuesAsAbsent() {
        for (answer, expected) in [(DirectReply.entry(version: version(2), expiry: 0, value: nil), "_\r\n"),
                                   (.entry(version: version(2), expiry: now - 1, value: ByteBuffer(string: "x")), "_\r\n"),
                                   (.absent, "_\r\n")] {
            var table = HotTable()
            let reply = PendingReply()
            let address = table.begin(.read(NewestRead(replicas: ReplicaList([0])!, required: 1)), .get, count: 1, required: 1, resp3: true, key: Self.noKey,
                                      reply: reply, completed: {}, deadline: far)
            _ = table.answer(address, answer, now: now)
            #expect(text(reply) == expected)
        }
    }

    @Test func theTimeoutFailsWhatIsUndecidedAndFreesTheSlot() {
        var table = HotTable()
        let reply = PendingReply()
        let soon = NIODeadline.now()
        let address = table.begin(.read(NewestRead(replicas: ReplicaList([0, 1])!, required: 2)), .ttl, count: 2, required: 2, resp3: false, key: Self.noKey,
                                  reply: reply, completed: {}, deadline: soon)
        _ = table.answer(address, .absent, now: now)
        var effects: [HotTable.Effect] = []
        table.expire(before: soon, now: now, into: &effects)
        #expect(effects.count == 1 && effects[0].quorumFailed)
        #expect(text(reply).contains("the rest timed out"))
        // The slot is reused, under a new generation: the old address finds nothing.
        let next = table.begin(.write(WriteQuorum(replicas: ReplicaList([0])!, required: 1)), .set, count: 1, required: 1, resp3: false, key: Self.noKey,
                               reply: PendingReply(), completed: {}, deadline: far)
        #expect(next.index == address.index && next.generation != address.generation)
        var stale = address
        stale.position = 1
        #expect(table.answer(stale, .absent, now: now).completed == nil)
    }

    @Test func aWriteAReplicaFencedAndThatFailedGoesAgainWithItsKeyValueAndVersion() {
        var table = HotTable()
        let reply = PendingReply()
        var completions = 0
        let key: [UInt8] = Array("k".utf8), value: [UInt8] = Array("v".utf8)
        var address = key.withUnsafeBytes { k in
            value.withUnsafeBytes { v in
                table.begin(.write(WriteQuorum(replicas: ReplicaList([0, 1, 2])!, required: 2)), .set, count: 3, required: 2, resp3: false,
                            key: k, write: (version(5), v, 99), reply: reply, completed: { completions += 1 }, deadline: far)
            }
        }
        _ = table.answer(address, .staleView, now: now)
        address.position = 1
        let failed = table.answer(address, .error, now: now)
        #expect(failed.completed == nil && !failed.quorumFailed, "not answered: tried again")
        #expect(!reply.isReady)
        let retry = failed.retry
        #expect(retry != nil)
        #expect(retry?.key == key && retry?.required == 2 && retry?.command == .set)
        #expect(retry?.write == VersionedValue(version: version(5), value: value, expiry: 99), "the same version: the write is the same event")
        #expect(completions == 0)
        address.position = 2
        #expect(table.answer(address, .flag(false), now: now).retry == nil, "the slot is free")
    }

    @Test func aFencedReadThatFailedGoesAgainAndOneThatReachedItsQuorumDoesNot() {
        var table = HotTable()
        let key: [UInt8] = Array("k".utf8)
        let failing = PendingReply()
        var address = key.withUnsafeBytes {
            table.begin(.read(NewestRead(replicas: ReplicaList([0, 1])!, required: 2)), .ttl, count: 2, required: 2, resp3: true, key: $0,
                        reply: failing, completed: {}, deadline: far)
        }
        let effect = table.answer(address, .staleView, now: now)
        #expect(effect.retry?.key == key && effect.retry?.write == nil && effect.retry?.resp3 == true && effect.retry?.command == .ttl)
        #expect(!failing.isReady)

        let answered = PendingReply()
        address = key.withUnsafeBytes {
            table.begin(.read(NewestRead(replicas: ReplicaList([0, 1, 2])!, required: 2)), .get, count: 3, required: 2, resp3: false, key: $0,
                        reply: answered, completed: {}, deadline: far)
        }
        _ = table.answer(address, .staleView, now: now)
        address.position = 1
        _ = table.answer(address, .absent, now: now)
        address.position = 2
        let decided = table.answer(address, .absent, now: now)
        #expect(decided.retry == nil && text(answered) == "$-1\r\n", "R answers from replicas that admitted the view: no retry")
    }

    @Test func aDeleteTriedAgainIsATombstone() {
        var table = HotTable()
        let key: [UInt8] = Array("k".utf8)
        let address = key.withUnsafeBytes {
            table.begin(.write(WriteQuorum(replicas: ReplicaList([0])!, required: 1)), .del, count: 1, required: 1, resp3: false, key: $0,
                        write: (version(7), nil, 0), reply: PendingReply(), completed: {}, deadline: far)
        }
        #expect(table.answer(address, .staleView, now: now).retry?.write == VersionedValue(version: version(7), value: nil))
    }
}
