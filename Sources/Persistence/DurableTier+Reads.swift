import CSQLite
import CacheStore

/// What the writer thread reads: read-throughs, the walk in ring order, the start-up load.
/// A failed read is never taken for an absent row: it is reported (read-throughs), retried
/// (scans), or leaves read-throughs on (the load).
extension DurableTier {
    /// The rows of one walk step; nil if the read failed (tried again at the next turn).
    func scanRows(_ request: Scan) -> [DiskRow]? {
        let statement = request.after == nil ? schema.scanFirst : schema.scanNext
        defer { statement.reset() }
        // The cursor's key is bound without a copy: it stays alive while the statement steps.
        let afterKey = request.after?.key ?? []
        do {
            return try afterKey.withUnsafeBytes { (afterBytes) throws(SQLiteError) -> [DiskRow] in
                if let after = request.after {
                    try statement.bind(1, after.position)
                    try statement.bind(2, afterBytes)
                    try statement.bind(3, Int64(request.limit))
                } else {
                    try statement.bind(1, Int64(request.limit))
                }
                var rows: [DiskRow] = []
                let now = wallClock()
                var last: DiskCursor?
                while try statement.step() {
                    let key = Array(statement.blob(0))
                    let entry = row(statement, value: 1, version: 2, node: 3, expiry: 4, tombstone: 5)
                    let cursor = DiskCursor(position: statement.int64(6), key: key)
                    last = cursor
                    if entry.value != nil, entry.expiry != 0, entry.expiry <= now { continue }
                    rows.append(DiskRow(key: key, entry: entry, cursor: cursor))
                }
                // A page of nothing but expired rows still moves the walk on.
                if rows.isEmpty, let last { rows.append(DiskRow(key: [], entry: nil, cursor: last)) }
                return rows
            }
        } catch {
            recordReadFailure("cannot walk the table: \(Self.describe(error))")
            return nil
        }
    }

    /// The last pending change of `key`: .some(nil) when it was deleted, nil when no pending
    /// batch names it. Only needed while merges fail (a full disk): reads see pending changes.
    private func pendingEntry(for key: [UInt8]) throws(PersistenceError) -> DiskEntry?? {
        guard pendingLog.size > 0 else { return nil }
        do {
            return try pendingLog.withBatches { bytes, batches -> DiskEntry?? in
                var found: DiskEntry??
                for batch in batches {
                    try Self.decode(bytes, batch) { change in
                        guard let change else { return found = .some(nil) }
                        guard UnsafeRawBufferPointer(rebasing: bytes[change.key]).elementsEqual(key) else { return }
                        if change.value == nil && !change.tombstone { return found = .some(nil) }
                        found = .some(DiskEntry(value: change.value.map { Array(bytes[$0]) }, expiry: change.expiry,
                                                version: Version(timestamp: HLCTimestamp(rawValue: change.timestamp), node: NodeID(rawValue: change.node))))
                    }
                }
                return found
            }
        } catch let error as PersistenceError {
            throw error
        } catch {
            throw PersistenceError(description: "cannot read the pending log: \(Self.describe(error))")
        }
    }

    /// A read-through: the key's entry (nil when the disk holds none, or an expired one).
    func lookUp(_ key: [UInt8]) -> Result<DiskEntry?, PersistenceError> {
        readThroughs.add(1, ordering: .relaxed)
        let lookup = schema.lookup
        defer { lookup.reset() }
        do {
            let found: DiskEntry? = try pendingEntry(for: key) ?? key.withUnsafeBytes { (bytes) throws(SQLiteError) -> DiskEntry? in
                try lookup.bind(1, Self.position(of: bytes))
                try lookup.bind(2, bytes)
                guard try lookup.step() else { return nil }
                return row(lookup, value: 0, version: 1, node: 2, expiry: 3, tombstone: 4)
            }
            guard let found, found.expiry == 0 || found.expiry > wallClock() else { return .success(nil) }
            return .success(found)
        } catch {
            let message = Self.describe(error)
            recordReadFailure("cannot read a key: \(message)")
            return .failure(PersistenceError(description: message))
        }
    }

    func row(_ statement: SQLiteDatabase.Statement, value: Int32, version: Int32, node: Int32, expiry: Int32, tombstone: Int32) -> DiskEntry {
        DiskEntry(
            value: statement.int64(tombstone) != 0 ? nil : Array(statement.blob(value)),
            expiry: statement.int64(expiry),
            version: Version(timestamp: HLCTimestamp(rawValue: UInt64(bitPattern: statement.int64(version))),
                             node: NodeID(rawValue: UInt32(truncatingIfNeeded: statement.int64(node)))))
    }

    /// Loads the next 5,000 rows into `store`: all of them in table order when memory has no
    /// limit, else newest first (one sort of the table) until memory reaches 95% of the limit.
    /// Ends the load when the rows run out or the budget is reached; a read that fails ends
    /// it too, with read-throughs left on (memory may lack what the disk holds).
    func loadChunk(into store: CacheStore) {
        let budget = store.maxMemory
        do {
            if loader == nil {
                let order = budget > 0 ? " ORDER BY written DESC" : ""
                loader = try database.prepare("SELECT key, value, version, node, expiry, tombstone FROM entries" + order)
            }
            guard let statement = loader else { return }
            let now = wallClock()
            for _ in 0..<5000 {
                guard try statement.step() else {
                    finishLoading(complete: true)
                    return
                }
                let entry = row(statement, value: 1, version: 2, node: 3, expiry: 4, tombstone: 5)
                if entry.expiry != 0 && entry.expiry <= now { continue }
                entry.load(key: statement.blob(0), into: store, now: now)
                loadedRows.add(1, ordering: .relaxed)
                if budget > 0 && store.usedMemory >= budget / 100 * 95 {
                    finishLoading(complete: false)
                    return
                }
            }
        } catch {
            recordReadFailure("the start-up load stopped: \(error.message); keys not loaded are read from disk when asked for")
            finishLoading(complete: false)
        }
    }

    private func finishLoading(complete: Bool) {
        loader = nil
        if !complete { diskHasMore.store(true, ordering: .relaxed) }
        loading.store(false, ordering: .relaxed)
    }
}
