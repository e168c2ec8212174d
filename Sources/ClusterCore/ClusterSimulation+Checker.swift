extension ClusterSimulation {
    /// The guarantee: a read that starts after a write was acknowledged returns that write or
    /// a newer version of the key (LWW order; a tombstone counts as a version).
    ///
    /// A memory-only cache cannot keep a copy through a crash, so a read is let off for a
    /// write when a crash took a copy of it: when some node, at the moment it crashed, held a
    /// version of the key at least as new as the write's (in its store, however it got there:
    /// as a replica, by transfer, by hint replay or by read repair; or as a hint it kept for
    /// another node, when hints count toward W), and that crash came after the write started
    /// and before the read ended.
    /// Under sloppy quorum with hints counted toward W (Dynamo's rule, `sloppy-quorum yes`), a
    /// write acknowledged through a stand-in is held by W nodes, not W of its replicas: a read
    /// may miss it until the hint reaches the replica. Such reads are let off and counted
    /// (``Report/readsOfSloppyWrites``); what the rule promises is checked for every other write.
    /// Nothing else is let off: copies that moved to nodes which never acknowledged count as
    /// copies, and copies dropped by the protocol (a member that left and stopped, a node
    /// that removed the keys it no longer replicates) are not crash losses.
    mutating func check() {
        var lost: [Int: [LostCopy]] = [:]
        for copy in lostCopies { lost[copy.key, default: []].append(copy) }
        var writesByKey: [Int: [AcknowledgedWrite]] = [:]
        for write in writes { writesByKey[write.key, default: []].append(write) }
        for read in reads {
            var exempted = false
            var sloppy = false
            for write in writesByKey[read.key] ?? [] where write.at < read.startedAt {
                if let result = read.result, result.version >= write.version { continue }
                if write.throughHints {
                    sloppy = true
                    continue
                }
                let crashed = (lost[read.key] ?? []).contains { copy in
                    copy.version >= write.version && copy.at >= write.startedAt && copy.at <= read.endedAt
                }
                if crashed {
                    exempted = true
                    continue
                }
                report.violations.append(describe(read, missing: write))
            }
            if exempted { report.readsExempted += 1 }
            if sloppy { report.readsOfSloppyWrites += 1 }
        }
    }

    func describe(_ read: AnsweredRead, missing write: AcknowledgedWrite) -> String {
        let name = { (node: Int) in nodes[node].name }
        return "read of key\(read.key) by \(name(read.coordinator)) at stage \(read.stage) asking \(read.asked.map(name)) "
            + "from \(read.startedAt) to \(read.endedAt) returned \(read.result.map(\.description) ?? "nothing"), but the write "
            + "\(write.version) by \(name(write.coordinator)) at stage \(write.stage) was acknowledged at \(write.at) by "
            + "\(write.by.sorted().map(name))"
    }
}
