import CacheStore
import ClusterCore
import ClusterProtocol
import NIOCore
import RESP

/// Commands that read a key and write what they computed (INCR, APPEND, SET NX, EXPIRE, …).
///
/// They run at the key's first healthy replica, which serialises them: it first brings its
/// own copy up to date with a quorum read (repairing itself), then runs the command on its
/// local store, where the shard lock makes it atomic, and replicates the resulting entry as a
/// new version to a write quorum before answering. Any other node forwards the command there
/// over the bus (`RC.EXEC`). Two nodes that both believe they are first (a partition) can
/// still race; last write wins then, as in Dynamo.
extension Coordinator {
    /// The replica that runs read-modify-write commands for `key`: the first of its preference
    /// list that this loop can reach (this node counts as reachable).
    func serializingReplica(of key: [UInt8]) -> Int? {
        let down = unreachable
        return replicas(of: key).first { !down.contains($0) }
    }

    /// Runs a read-modify-write command for a client: here if this node is the key's first
    /// healthy replica, else forwarded to it. `completion` gets the reply as a value.
    func readModifyWrite(_ args: [[UInt8]], required: (read: Int, write: Int), now: Int64, completion: @escaping (RESPValue) -> Void) {
        let key = args[1]
        guard let primary = serializingReplica(of: key) else {
            completion(.error(ByteBuffer(string: "NOQUORUM no replica of the key is reachable")))
            return
        }
        if primary == cluster.selfIndex {
            runHere(args, required: required, now: now, completion: completion)
            return
        }
        cluster.node.readModifyWritesForwarded.add(1, ordering: .relaxed)
        let request = BusRequest.exec(read: required.read, write: required.write, command: args.map { ByteBuffer(bytes: $0) })
        let noAnswer = RESPValue.error(ByteBuffer(string: "NOQUORUM the key's first replica \(cluster.members[primary].name) did not answer"))
        guard let link = execLink(to: primary) else { return completion(noAnswer) }
        link.send(request) { reply in
            switch reply {
            case .command(let value)?: completion(value)
            case .error(let message)?: completion(.error(ByteBuffer(string: message)))
            default: completion(noAnswer)
            }
        }
    }

    /// The part the first healthy replica does: catch up, run locally, replicate.
    func runHere(_ args: [[UInt8]], required: (read: Int, write: Int), now: Int64, completion: @escaping (RESPValue) -> Void) {
        let key = args[1]
        if cluster.usesVectorClocks {
            readSiblings(key, required: required.read, now: now) { [self] result in
                switch result {
                case .failure(let error): completion(.error(ByteBuffer(string: error.message)))
                case .success(let siblings):
                    // Bring this replica up to date before the command reads it (the read's own
                    // repairs of this node may come after its reply).
                    if let siblings {
                        cluster.siblings.apply(key, siblings, limit: cluster.maxSiblings, store: store, now: wallClockMillis(),
                                               tombstoneTTL: cluster.tombstoneTTL)
                    }
                    // The command sees the LWW winner; its result supersedes every sibling read.
                    applyAndReplicate(args, before: siblings?.winner, required: required.write, completion: completion) { value, done in
                        writeSibling(key, value.value, expiry: value.expiry, context: siblings?.context ?? VectorClock(),
                                     required: required.write, completion: done)
                    }
                }
            }
            return
        }
        read(key, required: required.read, now: now) { [self] result in
            switch result {
            case .failure(let error): completion(.error(ByteBuffer(string: error.message)))
            case .success(let before):
                if let before { cluster.applyLocally(key, before, now: wallClockMillis()) }
                applyAndReplicate(args, before: before, required: required.write, completion: completion) { value, done in
                    write(key, value, required: required.write, now: wallClockMillis(), completion: done)
                }
            }
        }
    }

    /// Runs the command on the local store (now up to date), then replicates what it left —
    /// the entry, or a tombstone if it deleted a key that was there — before answering.
    private func applyAndReplicate(
        _ args: [[UInt8]], before: VersionedValue?, required: Int, completion: @escaping (RESPValue) -> Void,
        replicate: (VersionedValue, @escaping (Result<Bool, NoQuorum>) -> Void) -> Void
    ) {
        let key = args[1]
        let now = wallClockMillis()
        let reply = Self.executeLocally(args, node: cluster.node, now: now)
        var after: VersionedValue?
        key.withUnsafeBytes { k in
            store.readVersioned(k, now: now) { entry in
                after = entry.map { VersionedValue(version: $0.version, value: $0.value.map(Array.init), expiry: $0.expiry) }
            }
        }
        if after == nil, let before, !before.isTombstone {
            after = VersionedValue(version: store.nextVersion(now: now), value: nil)
        }
        guard let after, after != before else { return completion(reply) }
        replicate(after) { outcome in
            switch outcome {
            case .success: completion(reply)
            case .failure(let error): completion(.error(ByteBuffer(string: error.message)))
            }
        }
    }

    /// Runs a command on this node's store alone, as a standalone node would, and returns its reply.
    static func executeLocally(_ args: [[UInt8]], node: NodeState, now: Int64) -> RESPValue {
        var request = ByteBuffer()
        RESPValue.array(args.map { .bulkString(ByteBuffer(bytes: $0)) }).encode(into: &request)
        var parser = RESPRequestParser()
        var out = ByteBuffer()
        let processor = CommandProcessor(node: node)
        var session = Session(authenticated: true, client: node.internalClient)
        request.withUnsafeReadableBytes { bytes in
            guard case .request = parser.next(bytes) else { return }
            parser.withArguments(in: bytes) { arguments in
                processor.execute(arguments, session: &session, out: &out, now: now)
            }
        }
        return (try? RESPValueParser().parse(&out)) ?? .error(ByteBuffer(string: "ERR internal error"))
    }
}
