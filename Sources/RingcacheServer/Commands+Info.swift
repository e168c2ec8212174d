import CacheStore
import NIOCore
import RESP
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension CommandProcessor {
    func info(_ args: RESPArguments, _ session: Session, _ out: inout ByteBuffer, _ now: Int64) {
        let known = ["server", "clients", "memory", "persistence", "stats", "keyspace", "cluster", "replication"]
        var wanted: [String] = []
        for i in 1..<args.count {
            let section = args[i].asString.lowercased()
            if ["all", "everything", "default"].contains(section) { wanted = known; break }
            if known.contains(section) && !wanted.contains(section) { wanted.append(section) }
        }
        if args.count == 1 { wanted = known }
        let text = wanted.map { section(named: $0, now: now) }.joined(separator: "\r\n")
        out.writeRESPVerbatim(text, resp3: session.resp3)
    }

    private func section(named name: String, now: Int64) -> String {
        let configuration = node.currentConfiguration
        var lines: [String]
        switch name {
        case "server":
            let uptime = (now - node.startedAt) / 1000
            lines = [
                "# Server",
                "redis_version:\(compatibleRedisVersion)",
                "ringcache_version:\(ringcacheVersion)",
                "redis_mode:standalone",
                "os:\(Self.operatingSystem)",
                "arch_bits:\(MemoryLayout<Int>.size * 8)",
                "process_id:\(getpid())",
                "run_id:\(node.runID)",
                "node_name:\(configuration.nodeName)",
                "tcp_port:\(configuration.port)",
                "uptime_in_seconds:\(uptime)",
                "uptime_in_days:\(uptime / 86400)",
                "hz:\(configuration.hz)",
                "io_threads_active:\(configuration.threads)",
            ]
        case "clients":
            lines = [
                "# Clients",
                "connected_clients:\(node.clients.count)",
                "maxclients:\(configuration.maxClients)",
                "blocked_clients:0",
            ]
        case "memory":
            let used = store.usedMemory
            let rss = Self.residentSetSize()
            lines = [
                "# Memory",
                "used_memory:\(used)",
                "used_memory_human:\(Self.human(used))",
                "used_memory_rss:\(rss)",
                "used_memory_rss_human:\(Self.human(rss))",
                "maxmemory:\(configuration.maxMemory)",
                "maxmemory_human:\(Self.human(configuration.maxMemory))",
                "maxmemory_policy:\(configuration.evictionPolicy.rawValue)",
                "mem_fragmentation_ratio:\(used > 0 ? Double(Int(Double(rss) / Double(used) * 100)) / 100 : 0)",
                "mem_allocator:libc",
            ]
        case "stats":
            lines = [
                "# Stats",
                "total_connections_received:\(node.connectionsReceived.load(ordering: .relaxed))",
                "total_commands_processed:\(node.commandsProcessed.load(ordering: .relaxed))",
                "rejected_connections:\(node.rejectedConnections.load(ordering: .relaxed))",
                "expired_keys:\(store.expiredKeys)",
                "evicted_keys:\(store.evictedKeys)",
                "keyspace_hits:\(store.keyspaceHits)",
                "keyspace_misses:\(store.keyspaceMisses)",
                "total_protocol_errors:\(node.protocolErrors.load(ordering: .relaxed))",
                "client_output_buffer_limit_disconnections:\(node.clientsClosedForOutput.load(ordering: .relaxed))",
            ]
        case "cluster":
            lines = [
                "# Cluster",
                "cluster_enabled:\(cluster == nil ? 0 : 1)",
                "cluster_members:\(cluster?.topology.owners.count ?? 1)",
                "ring_epoch:\(cluster?.ring.epoch ?? 0)",
                "ring_transition:\(cluster?.topology.previous == nil ? 0 : 1)",
                "replicas:\(cluster?.replicas ?? 1)",
                "read_quorum:\(cluster?.readQuorum ?? 1)",
                "write_quorum:\(cluster?.writeQuorum ?? 1)",
                "tombstones:\(store.tombstoneCount)",
                "keys_coordinated_as_replica:\(node.keysCoordinatedAsReplica.load(ordering: .relaxed))",
                "keys_coordinated_not_replica:\(node.keysCoordinatedNotReplica.load(ordering: .relaxed))",
                "read_modify_writes_forwarded:\(node.readModifyWritesForwarded.load(ordering: .relaxed))",
                "sloppy_quorum:\(cluster?.sloppyQuorum == true ? "yes" : "no")",
                "hints_pending:\(cluster?.hints.pending ?? 0)",
                "hints_pending_bytes:\(cluster?.hints.pendingBytes ?? 0)",
                "hints_delivered:\(cluster?.hints.delivered ?? 0)",
                "hints_dropped:\(cluster?.hints.dropped ?? 0)",
                "anti_entropy_rounds:\(node.antiEntropyRounds.load(ordering: .relaxed))",
                "anti_entropy_pulled:\(node.antiEntropyPulled.load(ordering: .relaxed))",
                "anti_entropy_pushed:\(node.antiEntropyPushed.load(ordering: .relaxed))",
            ]
            if let cluster { lines += cluster.busGuard.infoLines }
            if let rebalance = cluster?.rebalance {
                lines += [
                    "rebalance_state:\(rebalance.leaving.load(ordering: .relaxed) ? "leaving" : rebalance.sending.load(ordering: .relaxed) ? "sending" : "idle")",
                    "rebalance_epoch:\(rebalance.epoch.load(ordering: .relaxed))",
                    "rebalance_progress:\(rebalance.progress)",
                    "rebalance_keys_total:\(rebalance.keysTotal.load(ordering: .relaxed))",
                    "rebalance_keys_scanned:\(rebalance.keysScanned.load(ordering: .relaxed))",
                    "rebalance_keys_sent:\(rebalance.keysSent.load(ordering: .relaxed))",
                    "rebalance_bytes_sent:\(rebalance.bytesSent.load(ordering: .relaxed))",
                    "rebalance_keys_received:\(rebalance.keysReceived.load(ordering: .relaxed))",
                    "rebalance_bytes_received:\(rebalance.bytesReceived.load(ordering: .relaxed))",
                    "rebalance_transfers_started:\(rebalance.transfersStarted.load(ordering: .relaxed))",
                    "rebalance_transfers_finished:\(rebalance.transfersFinished.load(ordering: .relaxed))",
                    "rebalance_retries:\(rebalance.retries.load(ordering: .relaxed))",
                    "rebalance_takeovers:\(rebalance.takeovers.load(ordering: .relaxed))",
                    "rebalance_resumed:\(rebalance.resumed.load(ordering: .relaxed))",
                    "rebalance_chunks_sent:\(rebalance.chunksSent.load(ordering: .relaxed))",
                    "rebalance_chunks_received:\(rebalance.chunksReceived.load(ordering: .relaxed))",
                    "rebalance_keys_dropped:\(rebalance.keysDropped.load(ordering: .relaxed))",
                    "rebalance_max_bytes_per_sec:\(rebalance.maxBytesPerSecond)",
                ]
            }
        case "persistence":
            lines = ["# Persistence", "persistence:\(node.durable == nil ? "off" : "sqlite")", "loading:\(node.durable?.isLoading == true ? 1 : 0)"]
            if let durable = node.durable {
                lines += [
                    "persistence_fsync:\(durable.fsync.rawValue)",
                    "db_path:\(durable.path)",
                    "db_rows:\(durable.rows.load(ordering: .relaxed))",
                    "db_bytes_on_disk:\(durable.diskBytes.load(ordering: .relaxed))",
                    "db_queue_bytes:\(durable.queueDepth)",
                    "db_queued_changes:\(durable.queuedSequence - durable.committedSequence.load(ordering: .relaxed))",
                    "db_commits:\(durable.commits.load(ordering: .relaxed))",
                    "db_last_commit_time:\(durable.lastCommitMillis.load(ordering: .relaxed) / 1000)",
                    "db_last_commit_latency_usec:\(durable.lastCommitMicros.load(ordering: .relaxed))",
                    "db_unmerged_bytes:\(durable.unmergedBytes.load(ordering: .relaxed))",
                    "db_merges:\(durable.merges.load(ordering: .relaxed))",
                    "db_last_merge_latency_usec:\(durable.lastMergeMicros.load(ordering: .relaxed))",
                    "db_loaded_rows:\(durable.loadedRows.load(ordering: .relaxed))",
                    "db_more_on_disk:\(durable.hasMoreOnDisk ? 1 : 0)",
                    "db_read_throughs:\(durable.readThroughs.load(ordering: .relaxed))",
                    "db_purged_rows:\(durable.purgedRows.load(ordering: .relaxed))",
                    "db_write_errors:\(durable.writeErrors.load(ordering: .relaxed))",
                    "db_last_write_status:\(durable.failureReason == nil ? "ok" : "err")",
                    "db_read_errors:\(durable.readErrors.load(ordering: .relaxed))",
                    "db_backpressure_pauses:\(node.diskPauses.load(ordering: .relaxed))",
                ]
            }
        case "replication":
            lines = [
                "# Replication",
                "role:master",
                "read_repairs:\(node.readRepairs.load(ordering: .relaxed))",
                "quorum_failures:\(node.quorumFailures.load(ordering: .relaxed))",
                "reconcile:\(cluster?.reconcile.rawValue ?? "lww")",
                "keys_with_siblings:\(cluster?.siblings.keysWithSiblings ?? 0)",
                "sibling_overflows:\(cluster?.siblings.overflows.load(ordering: .relaxed) ?? 0)",
            ]
        default:
            lines = ["# Keyspace"]
            let keys = store.count
            if keys > 0 { lines.append("db0:keys=\(keys),expires=\(store.volatileCount),avg_ttl=0") }
        }
        return lines.joined(separator: "\r\n") + "\r\n"
    }

    static var operatingSystem: String {
        var name = utsname()
        uname(&name)
        func field<T>(_ value: T) -> String {
            withUnsafeBytes(of: value) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        }
        return "\(field(name.sysname)) \(field(name.release)) \(field(name.machine))"
    }

    static func human(_ bytes: Int) -> String {
        let units = ["B", "K", "M", "G", "T"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(bytes)B" : "\(Double(Int(value * 100)) / 100)\(units[unit])"
    }

    /// The process's resident set size from /proc, in bytes (0 where /proc is missing).
    static func residentSetSize() -> Int {
        guard let file = fopen("/proc/self/statm", "r") else { return 0 }
        defer { fclose(file) }
        var size = 0
        var resident = 0
        guard withUnsafeMutablePointer(to: &size, { s in
            withUnsafeMutablePointer(to: &resident) { r in
                withVaList([s, r]) { vfscanf(file, "%ld %ld", $0) }
            }
        }) == 2 else { return 0 }
        return resident * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}
