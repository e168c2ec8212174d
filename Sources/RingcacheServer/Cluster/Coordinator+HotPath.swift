import CacheStore
import ClusterCore
import ClusterProtocol
import NIOCore
import RESP

/// The commands the quorum hot path runs.
enum HotCommand: Sendable {
    case get, strlen, ttl, pttl, type
    case set
    case del

    /// The command it runs (SETEX and PSETEX run as SET with an expiry).
    var name: CommandSpec.Name {
        switch self {
        case .get: .get
        case .strlen: .strlen
        case .ttl: .ttl
        case .pttl: .pttl
        case .type: .type
        case .set: .set
        case .del: .del
        }
    }
}

/// One quorum operation of the hot path, in a reused slot: no object, no closure, no reply
/// buffer per request. A slot is addressed by its index and a generation that changes each
/// time it is freed, so a late answer for an earlier operation is told apart and dropped.
struct HotSlot {
    enum Operation {
        case free
        case write(WriteQuorum)
        case read(NewestRead)
    }

    var generation: UInt32 = 0
    var operation = Operation.free
    var command = HotCommand.get
    var resp3 = false
    var reply: PendingReply?
    var completed: (() -> Void)?
    /// Answers still to come (the slot of a read is kept for its late answers' repairs).
    var outstanding = 0
    var decided = false
    /// DEL: a replica held a live value.
    var existed = false
    /// A replica refused: this coordinator's view of the ring was behind its own. An
    /// operation that fails with such a refusal is tried again (``HotTable/Retry``).
    var staleView = false
    /// What the operation needs to be tried again: the key (reads: also for repairs), and
    /// a write's version, value (nil: DEL) and expiry.
    var key: [UInt8] = []
    var required = 0
    var writeVersion: Version?
    var writeValue: [UInt8] = []
    var writeExpiry: Int64 = 0
    var newestValue: [UInt8] = []
    var newestIsTombstone = false
    var newestExpiry: Int64 = 0
    var newestVersion: Version?
}

/// The hot path's operations in flight on one event loop: a value the coordinator holds in
/// one property and changes with one call per event, so the slots are touched without a
/// dynamic exclusivity check per field. Each call returns what it set off (``Effect``), which
/// the coordinator carries out once the table is no longer being changed.
struct HotTable {
    private(set) var slots: [HotSlot] = []
    private var free: [Int32] = []
    /// Deadlines, oldest first (every operation has the same timeout).
    private var deadlines = CircularBuffer<(deadline: NIODeadline, slot: Int32, generation: UInt32)>()
    /// A local read's value, copied out under the store's lock (reused: no allocation).
    var scratch: [UInt8] = []

    /// An operation that failed because a replica's view of the ring was ahead of this
    /// coordinator's: it goes again (on the general path) once the view caught up.
    struct Retry {
        var command: HotCommand
        var key: [UInt8]
        var required: Int
        var resp3: Bool
        /// A write's version and value (nil: DEL); nil for reads.
        var write: VersionedValue?
        var reply: PendingReply
        var completed: () -> Void
    }

    /// What an event set off: a reply to hand on, counters, read repairs, a retry.
    struct Effect {
        var completed: (() -> Void)?
        var retry: Retry?
        var quorumFailed = false
        var peerReplyError = false
        /// Read repairs: the replicas (bit i: position i of `replicas`) to send `repair` to.
        var repairs: UInt64 = 0
        var replicas = ReplicaList()
        var repair: VersionedValue?
        var key: [UInt8] = []
    }

    /// Takes a slot for an operation over `count` replicas; its address, position 0.
    mutating func begin(_ operation: HotSlot.Operation, _ command: HotCommand, count: Int, required: Int, resp3: Bool, key: UnsafeRawBufferPointer,
                        write: (version: Version, value: UnsafeRawBufferPointer?, expiry: Int64)? = nil,
                        reply: PendingReply, completed: @escaping () -> Void, deadline: NIODeadline) -> PeerLink.SlotAddress {
        let index: Int
        if let reused = free.popLast() {
            index = Int(reused)
        } else {
            slots.append(HotSlot())
            index = slots.count - 1
        }
        slots[index].operation = operation
        slots[index].command = command
        slots[index].resp3 = resp3
        slots[index].reply = reply
        slots[index].completed = completed
        slots[index].outstanding = count
        slots[index].decided = false
        slots[index].existed = false
        slots[index].newestVersion = nil
        slots[index].staleView = false
        slots[index].required = required
        slots[index].key.removeAll(keepingCapacity: true)
        slots[index].key.append(contentsOf: key)
        slots[index].writeVersion = write?.version
        slots[index].writeExpiry = write?.expiry ?? 0
        // Reuses the slot's storage: a copy, no allocation once the slot has held a value as long.
        slots[index].writeValue.removeAll(keepingCapacity: true)
        if let value = write?.value { slots[index].writeValue.append(contentsOf: value) }
        deadlines.append((deadline, Int32(index), slots[index].generation))
        return PeerLink.SlotAddress(index: Int32(index), generation: slots[index].generation, position: 0)
    }

    /// A replica's answer to the operation at `address` (late and stale answers are dropped).
    mutating func answer(_ address: PeerLink.SlotAddress, _ answer: DirectReply, now: Int64) -> Effect {
        var effect = Effect()
        guard let index = live(address) else { return effect }
        slots[index].outstanding -= 1
        let position = Int(address.position)
        switch slots[index].operation {
        case .write(var quorum):
            let action: WriteQuorum.Action?
            switch answer {
            case .flag(let flag):
                if flag && slots[index].command == .del { slots[index].existed = true }
                action = quorum.onAck(at: position)
            case .error:
                action = quorum.onFailure(at: position)
            case .staleView:
                slots[index].staleView = true
                action = quorum.onFailure(at: position)
            case .absent, .entry, .malformed:
                effect.peerReplyError = true
                action = quorum.onFailure(at: position)
            }
            slots[index].operation = .write(quorum)
            if let action { finishWrite(index, action, &effect) }
        case .read:
            switch answer {
            case .absent:
                read(index, position: position, version: nil, expiry: 0, value: nil, now: now, &effect)
            case .entry(let version, let expiry, let value):
                if let value {
                    value.withUnsafeReadableBytes { read(index, position: position, version: version, expiry: expiry, value: $0, now: now, &effect) }
                } else {
                    read(index, position: position, version: version, expiry: expiry, value: nil, now: now, &effect)
                }
            case .error, .staleView, .flag, .malformed:
                switch answer {
                case .error: break
                case .staleView: slots[index].staleView = true
                default: effect.peerReplyError = true
                }
                failRead(index, position: position, now: now, &effect)
            }
        case .free:
            break
        }
        releaseIfDone(index)
        return effect
    }

    /// This node's own answer to a read, from ``scratch`` (nil `found`: no such key).
    mutating func answerLocally(_ address: PeerLink.SlotAddress, found: (version: Version, expiry: Int64, hasValue: Bool)?, now: Int64) -> Effect {
        var effect = Effect()
        guard let index = live(address) else { return effect }
        slots[index].outstanding -= 1
        let scratch = self.scratch
        scratch.withUnsafeBytes { bytes in
            read(index, position: Int(address.position), version: found?.version, expiry: found?.expiry ?? 0,
                 value: found?.hasValue == true ? bytes : nil, now: now, &effect)
        }
        releaseIfDone(index)
        return effect
    }

    /// A replica that could not be asked, or whose link went down before it answered.
    mutating func fail(_ address: PeerLink.SlotAddress, now: Int64) -> Effect {
        var effect = Effect()
        guard let index = live(address) else { return effect }
        slots[index].outstanding -= 1
        switch slots[index].operation {
        case .write(var quorum):
            let action = quorum.onFailure(at: Int(address.position))
            slots[index].operation = .write(quorum)
            if let action { finishWrite(index, action, &effect) }
        case .read:
            failRead(index, position: Int(address.position), now: now, &effect)
        case .free:
            break
        }
        releaseIfDone(index)
        return effect
    }

    /// The request timeout: undecided operations fail, decided reads stop waiting for late
    /// answers. Appends what that set off to `effects`.
    mutating func expire(before deadline: NIODeadline, now: Int64, into effects: inout [Effect]) {
        while let first = deadlines.first, first.deadline <= deadline {
            _ = deadlines.removeFirst()
            let index = Int(first.slot)
            guard index < slots.count, slots[index].generation == first.generation else { continue }
            var effect = Effect()
            switch slots[index].operation {
            case .write(var quorum):
                if let action = quorum.onTimeout() { finishWrite(index, action, &effect) }
            case .read(var read):
                let decision = read.onTimeout()
                slots[index].operation = .read(read)
                if let decision { finishRead(index, decision, now: now, &effect) }
            case .free:
                continue
            }
            release(index)
            effects.append(effect)
        }
    }

    // MARK: Reads

    private mutating func read(_ index: Int, position: Int, version: Version?, expiry: Int64, value: UnsafeRawBufferPointer?, now: Int64,
                               _ effect: inout Effect) {
        guard case .read(var read) = slots[index].operation else { return }
        let step = read.onAnswer(at: position, version: version)
        slots[index].operation = .read(read)
        if step.isNewest {
            slots[index].newestVersion = version
            slots[index].newestExpiry = expiry
            slots[index].newestIsTombstone = value == nil
            slots[index].newestValue.removeAll(keepingCapacity: true)
            if let value { slots[index].newestValue.append(contentsOf: value) }
        }
        if let decision = step.decision { finishRead(index, decision, now: now, &effect) }
        if step.repairs != 0, let newest = slots[index].newestVersion {
            effect.repairs = step.repairs
            effect.replicas = read.replicas
            effect.repair = VersionedValue(version: newest, value: slots[index].newestIsTombstone ? nil : slots[index].newestValue,
                                           expiry: slots[index].newestExpiry)
            effect.key = slots[index].key
        }
    }

    private mutating func failRead(_ index: Int, position: Int, now: Int64, _ effect: inout Effect) {
        guard case .read(var read) = slots[index].operation else { return }
        let decision = read.onFailure(at: position)
        slots[index].operation = .read(read)
        if let decision { finishRead(index, decision, now: now, &effect) }
    }

    // MARK: Outcomes

    private mutating func finishWrite(_ index: Int, _ action: WriteQuorum.Action, _ effect: inout Effect) {
        guard !slots[index].decided else { return }
        slots[index].decided = true
        switch action {
        case .succeed:
            slots[index].reply?.content = Self.writeContent(slots[index].command, existed: slots[index].existed)
        case .fail(let error):
            if retry(index, &effect) { return }
            effect.quorumFailed = true
            slots[index].reply?.content = .bytes(Self.errorReply(error.message))
        }
        complete(index, &effect)
    }

    /// Hands a failed operation that a replica fenced to the coordinator to try again; false
    /// when no replica did.
    private mutating func retry(_ index: Int, _ effect: inout Effect) -> Bool {
        let slot = slots[index]
        guard slot.staleView, let reply = slot.reply, let completed = slot.completed else { return false }
        let write = slot.writeVersion.map {
            VersionedValue(version: $0, value: slot.command == .del ? nil : slot.writeValue, expiry: slot.writeExpiry)
        }
        effect.retry = Retry(command: slot.command, key: slot.key, required: slot.required, resp3: slot.resp3, write: write,
                             reply: reply, completed: completed)
        slots[index].reply = nil
        slots[index].completed = nil
        return true
    }

    private mutating func finishRead(_ index: Int, _ decision: NewestRead.Decision, now: Int64, _ effect: inout Effect) {
        guard !slots[index].decided else { return }
        slots[index].decided = true
        switch decision {
        case .fail(let error):
            if retry(index, &effect) { return }
            effect.quorumFailed = true
            slots[index].reply?.content = .bytes(Self.errorReply(error.message))
        case .reply(let newest):
            let slot = slots[index]
            let live = newest != nil && !slot.newestIsTombstone && (slot.newestExpiry == 0 || slot.newestExpiry > now)
            if slot.command == .get, live, let reply = slot.reply {
                // Into the reply's own storage: no array per GET once replies are reused.
                reply.value.removeAll(keepingCapacity: true)
                reply.value.append(contentsOf: slot.newestValue)
                reply.content = .value
            } else {
                slots[index].reply?.content = Self.readContent(slot.command, live ? slot.newestValue : nil, expiry: slot.newestExpiry,
                                                               resp3: slot.resp3, now: now)
            }
        }
        complete(index, &effect)
    }

    /// A write's reply once it succeeded: DEL counts whether a replica held the key.
    static func writeContent(_ command: HotCommand, existed: Bool) -> PendingReply.Content {
        command == .del ? .integer(existed ? 1 : 0) : .ok
    }

    /// A read command's reply from the newest value (nil: none, a tombstone, or expired).
    private static func readContent(_ command: HotCommand, _ value: [UInt8]?, expiry: Int64, resp3: Bool, now: Int64) -> PendingReply.Content {
        switch command {
        case .get: return value.map { .bulk($0) } ?? .null(resp3: resp3)
        case .strlen: return .integer(value?.count ?? 0)
        case .type: return .simple(value != nil ? "+string\r\n" : "+none\r\n")
        case .ttl, .pttl:
            guard value != nil else { return .integer(-2) }
            guard expiry != 0 else { return .integer(-1) }
            let left = max(0, expiry - now)
            return .integer(Int(command == .ttl ? (left + 500) / 1000 : left))
        case .set, .del: preconditionFailure("not a read")
        }
    }

    private mutating func complete(_ index: Int, _ effect: inout Effect) {
        effect.completed = slots[index].completed
        slots[index].reply = nil
        slots[index].completed = nil
    }

    static func errorReply(_ message: String) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeRESPError(message)
        return buffer
    }

    // MARK: Slots

    private func live(_ address: PeerLink.SlotAddress) -> Int? {
        let index = Int(address.index)
        guard index >= 0, index < slots.count, slots[index].generation == address.generation else { return nil }
        if case .free = slots[index].operation { return nil }
        return index
    }

    /// Frees a decided operation once no answer is to come: a write at once (late answers
    /// change nothing), a read after its last answer (late answers plan repairs).
    private mutating func releaseIfDone(_ index: Int) {
        guard slots[index].decided else { return }
        if case .read = slots[index].operation, slots[index].outstanding > 0 { return }
        release(index)
    }

    private mutating func release(_ index: Int) {
        guard !isFree(index) else { return }
        slots[index].operation = .free
        slots[index].generation &+= 1
        slots[index].reply = nil
        slots[index].completed = nil
        free.append(Int32(index))
    }

    private func isFree(_ index: Int) -> Bool {
        if case .free = slots[index].operation { return true }
        return false
    }
}

/// The quorum hot path: single-key GET, STRLEN, TTL, PTTL, TYPE, plain SET (SETEX, PSETEX)
/// and single-key DEL under last-write-wins, while the ring is settled and every replica's
/// link is up. Decisions come from the pure ``WriteQuorum`` and ``NewestRead``; requests to
/// the peers are written straight into this turn's batch of each link, and their answers read
/// straight from the bytes (``DirectReply``) into the operation's slot (``HotTable``).
/// Everything else (and this, when a condition does not hold) takes the general path, which
/// decides the same way.
extension Coordinator {
    /// The replicas of `key` when the hot path can run for it now; nil when it cannot.
    private func hotReplicas(_ key: UnsafeRawBufferPointer, writing: Bool, now: Int64) -> ReplicaList? {
        refreshLinks()
        guard topology.previous == nil, !cluster.usesVectorClocks else { return nil }
        if let durable = cluster.node.durable {
            // fsync always acknowledges after the commit, a failing disk answers for itself,
            // and a key that may be on disk only is read through first: the general path.
            if writing, durable.fsync == .always || durable.failureReason != nil { return nil }
            if !writing, cluster.node.needsReadThrough(key, now: now) { return nil }
        }
        let replicas = topology.ring.replicaList(forPosition: HashRing.position(of: key))
        guard replicas.count > 0 else { return nil }
        for member in replicas where member != cluster.selfIndex {
            guard member < links.count, let link = links[member], link.isConnected else { return nil }
        }
        if cluster.sloppyQuorum, !cluster.deadMembers.isEmpty { return nil }
        return replicas
    }

    /// Starts a hot-path write (SET with `value`, DEL with nil); false when it must take the
    /// general path. `reply` is filled, and `completed` called, once the quorum decides.
    func hotWrite(_ command: HotCommand, key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer?, expiry: Int64, required: Int,
                  reply: PendingReply, completed: @escaping () -> Void, now: Int64) -> Bool {
        guard let replicas = hotReplicas(key, writing: true, now: now) else { return false }
        countCoordinated(replicas)
        let version = store.nextVersion(now: now)
        var address = hot.begin(.write(WriteQuorum(replicas: replicas, required: min(required, replicas.count))), command, count: replicas.count,
                                required: required, resp3: false, key: key, write: (version, value, expiry),
                                reply: reply, completed: completed, deadline: .now() + cluster.requestTimeout)
        let local = askPeers(replicas, address, expecting: .flag, now: now) { out in
            if let value {
                BusRequest.encodePut(key: key, version: version, expiry: expiry, value: value, into: &out)
            } else {
                BusRequest.encodeDelete(key: key, version: version, into: &out)
            }
        }
        // This replica last: every request is written before the quorum can decide.
        if let local {
            address.position = local
            let existed = value == nil && store.contains(key, now: now)
            store.applyVersioned(key, value: value, expiry: expiry, version: version, now: now, tombstoneTTL: cluster.tombstoneTTL)
            carryOut(hot.answer(address, .flag(existed), now: now))
        }
        return true
    }

    /// Starts a hot-path read; false when it must take the general path.
    func hotRead(_ command: HotCommand, key: UnsafeRawBufferPointer, required: Int, resp3: Bool,
                 reply: PendingReply, completed: @escaping () -> Void, now: Int64) -> Bool {
        guard let replicas = hotReplicas(key, writing: false, now: now) else { return false }
        countCoordinated(replicas)
        var address = hot.begin(.read(NewestRead(replicas: replicas, required: min(required, replicas.count))), command, count: replicas.count,
                                required: required, resp3: resp3, key: key, reply: reply, completed: completed, deadline: .now() + cluster.requestTimeout)
        let local = askPeers(replicas, address, expecting: .entry, now: now) { BusRequest.encodeGet(key: key, into: &$0) }
        if let local {
            address.position = local
            // Copied out under the store's lock, answered after it: an answer may complete
            // the operation, and nothing that follows may run under a shard's lock.
            var found: (version: Version, expiry: Int64, hasValue: Bool)?
            store.readVersioned(key, now: now) { entry in
                guard let entry else { return }
                found = (entry.version, entry.expiry, entry.value != nil)
                hot.scratch.removeAll(keepingCapacity: true)
                if let value = entry.value { hot.scratch.append(contentsOf: value) }
            }
            carryOut(hot.answerLocally(address, found: found, now: now))
        }
        return true
    }

    /// Writes the request `encode` makes into the batch of every replica's link but this
    /// node's; a replica that cannot be asked counts as failed at once. Returns this node's
    /// position among the replicas, if it is one.
    private func askPeers(_ replicas: ReplicaList, _ operation: PeerLink.SlotAddress, expecting kind: DirectReply.Kind, now: Int64,
                          _ encode: (inout ByteBuffer) -> Void) -> UInt8? {
        var address = operation
        var local: UInt8?
        for (position, member) in replicas.enumerated() {
            address.position = UInt8(position)
            guard member != cluster.selfIndex else {
                local = address.position
                continue
            }
            if !(links[member]?.sendDirect(to: address, expecting: kind, encode) ?? false) { carryOut(hot.fail(address, now: now)) }
        }
        return local
    }

    /// A peer's answer for the hot path (``PeerLink``).
    func slotAnswered(_ address: PeerLink.SlotAddress, from member: Int, _ answer: DirectReply) {
        // Versions seen from peers move this node's clock on, so its next write orders after them.
        if case .entry(let version, _, _) = answer { store.observe(version.timestamp) }
        carryOut(hot.answer(address, answer, now: wallClockMillis()))
    }

    /// A request of the hot path that failed on its link (``PeerLink``).
    func slotFailed(_ address: PeerLink.SlotAddress, from member: Int) {
        carryOut(hot.fail(address, now: wallClockMillis()))
    }

    func expireHotSlots(now: NIODeadline) {
        var effects: [HotTable.Effect] = []
        hot.expire(before: now, now: wallClockMillis(), into: &effects)
        for effect in effects { carryOut(effect) }
    }

    /// Does what an event of the table set off, once the table is no longer being changed.
    private func carryOut(_ effect: HotTable.Effect) {
        if effect.peerReplyError { cluster.busGuard.count(.peerReplyError) }
        if effect.quorumFailed { cluster.node.quorumFailures.add(1, ordering: .relaxed) }
        if effect.repairs != 0, let repair = effect.repair {
            for position in effect.replicas.indices where effect.repairs & (1 << position) != 0 {
                readRepairs += 1
                cluster.node.readRepairs.add(1, ordering: .relaxed)
                replicate(effect.key, repair, to: effect.replicas[position], now: wallClockMillis()) { _ in }
            }
        }
        if let retry = effect.retry { self.retry(retry) }
        effect.completed?()
    }

    /// Tries a hot-path operation that a replica fenced again, on the general path, once
    /// this node's view of the ring had time to catch up (the replica sent its member list
    /// with the refusal); the general path retries again if it must (``StaleViewRetry``).
    private func retry(_ retry: HotTable.Retry) {
        _ = retryingStaleView(afterAttempt: 0, refused: true) { [self] in
            let now = wallClockMillis()
            if let write = retry.write {
                self.write(retry.key, write, required: retry.required, now: now, attempt: 1) { result in
                    switch result {
                    case .success(let existed): retry.reply.content = HotTable.writeContent(retry.command, existed: existed)
                    case .failure(let error): retry.reply.content = .bytes(HotTable.errorReply(error.message))
                    }
                    retry.completed()
                }
            } else {
                read(retry.key, required: retry.required, now: now, attempt: 1) { result in
                    // As the general path answers the command (ClusterRouter's reads).
                    var out = ByteBuffer()
                    switch result {
                    case .success(let newest):
                        ClusterRouter.writeRead(retry.command.name, newest?.live(at: wallClockMillis()), resp3: retry.resp3, out: &out)
                    case .failure(let error):
                        out.writeRESPError(error.message)
                    }
                    retry.reply.content = .bytes(out)
                    retry.completed()
                }
            }
        }
    }
}
