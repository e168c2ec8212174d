import CSQLite

/// The database's layout, and everything that opens, checks or upgrades it: one place that
/// knows the tables, the format number and the statements the writer uses.
///
/// Rows are keyed by (ring position, key): a key is found by its hash, and a range of the
/// ring (what rebalancing and anti-entropy hand over) is one range scan of the table.
/// Format 5 keeps committed batches in the pending log beside the database; format 4 kept
/// them in a `pending` table (moved into the log on upgrade), format 3 had neither.
struct DurableSchema {
    static let applicationID: Int64 = 0x5243_4348  // "RCCH"
    static let formatVersion: Int64 = 5
    /// The oldest format this build opens (and upgrades).
    static let oldestFormat: Int64 = 3

    /// What an opened database holds and the statements prepared on it. Touched by the
    /// writer thread only once it runs.
    let database: SQLiteDatabase
    let pendingLog: PendingLog
    let upsert: SQLiteDatabase.Statement
    let delete: SQLiteDatabase.Statement
    let lookup: SQLiteDatabase.Statement
    let scanFirst: SQLiteDatabase.Statement
    let scanNext: SQLiteDatabase.Statement
    let metaDelete: SQLiteDatabase.Statement
    let metaStore: SQLiteDatabase.Statement
    /// The named values of the `meta` table.
    let metas: [[UInt8]: [UInt8]]
    /// The largest `written` stamp in `entries` (the next row gets one more).
    let lastWritten: Int64
    let rowCount: Int64

    /// Opens (or creates) the database at `path`. Refuses, without changing it, a file that
    /// is not a ringcache database, is damaged, unreadable, of an unknown format, or in use
    /// by another process.
    static func open(path: String, fsync: FsyncPolicy) throws(PersistenceError) -> DurableSchema {
        let exists = SystemCall.exists(path)
        let database: SQLiteDatabase
        do {
            database = try SQLiteDatabase(path: path, create: !exists)
        } catch {
            throw PersistenceError(description: "cannot open the database \(path): \(error.message)")
        }
        do {
            return try open(database, path: path, fsync: fsync)
        } catch let error as PersistenceError {
            database.close()
            throw error
        } catch let error as SQLiteError {
            database.close()
            if error.isBusy {
                throw PersistenceError(description: "\(path) is in use by another process (\(error.message)); is another node running on it?")
            }
            if error.isCorrupt {
                throw PersistenceError(description: "\(path) is damaged or not a database (\(error.message)); it was left untouched: move it away or set another `dir`")
            }
            throw PersistenceError(description: "cannot use the database \(path): \(error.message)")
        } catch {
            database.close()
            throw PersistenceError(description: "cannot use the database \(path): \(error)")
        }
    }

    private static func open(_ database: SQLiteDatabase, path: String, fsync: FsyncPolicy) throws -> DurableSchema {
        try database.execute("PRAGMA locking_mode=EXCLUSIVE")
        let application = try database.integer("PRAGMA application_id")
        let objects = try database.integer("SELECT count(*) FROM sqlite_master")
        if application != applicationID && !(application == 0 && objects == 0) {
            throw PersistenceError(description: "\(path) is not a ringcache database (application_id \(application), \(objects) schema objects); it was left untouched: move it away or set another `dir`")
        }
        // Takes the exclusive lock now: another process holding the file fails here.
        // A new file gets 16 KiB pages: a row holds a value, and large values span fewer pages.
        if application == 0 { try database.execute("PRAGMA page_size=16384") }
        try database.execute("BEGIN EXCLUSIVE; COMMIT")
        try database.execute("PRAGMA journal_mode=WAL")
        let synchronous = switch fsync {
        case .always: "FULL"
        case .everysec: "NORMAL"
        case .no: "OFF"
        }
        try database.execute("PRAGMA synchronous=\(synchronous)")
        // A 64 MiB page cache and memory-mapped reads: the table's pages stay in memory
        // instead of being read again for every merge.
        try database.execute("PRAGMA cache_size=-65536; PRAGMA mmap_size=268435456")
        // Checkpoints copy each changed page into the database once, however many merges
        // changed it: a larger WAL between them (64 MiB) means fewer copies.
        let pageSize = try database.integer("PRAGMA page_size")
        try database.execute("PRAGMA wal_autocheckpoint=\(Int64(64 << 20) / max(pageSize, 512))")
        if application == 0 {
            try database.execute("""
                CREATE TABLE entries(
                    position INTEGER NOT NULL, key BLOB NOT NULL, value BLOB, version INTEGER NOT NULL, node INTEGER NOT NULL,
                    expiry INTEGER NOT NULL, tombstone INTEGER NOT NULL, written INTEGER NOT NULL,
                    PRIMARY KEY (position, key)
                ) WITHOUT ROWID;
                CREATE INDEX entries_expiry ON entries(expiry) WHERE expiry != 0;
                PRAGMA application_id=\(applicationID);
                PRAGMA user_version=\(formatVersion);
                """)
        } else {
            let format = try database.integer("PRAGMA user_version")
            guard (oldestFormat...formatVersion).contains(format) else {
                throw PersistenceError(description: "\(path) has format \(format); this ringcache reads formats \(oldestFormat) to \(formatVersion); left untouched")
            }
        }
        // Opened once the database's lock is held: only its holder touches the log.
        let pendingLog = try PendingLog(path: path + "-pending", keepsUnsynced: fsync != .no)
        do {
            if application != 0, try database.integer("PRAGMA user_version") < formatVersion {
                try upgrade(database, log: pendingLog)
            }
            // Small named values that outlive a restart (where rebalancing's walk stands).
            try database.execute("CREATE TABLE IF NOT EXISTS meta(name BLOB PRIMARY KEY, value BLOB NOT NULL)")
            var metas: [[UInt8]: [UInt8]] = [:]
            let select = try database.prepare("SELECT name, value FROM meta")
            while try select.step() { metas[Array(select.blob(0))] = Array(select.blob(1)) }
            return DurableSchema(
                database: database,
                pendingLog: pendingLog,
                upsert: try database.prepare(
                    """
                    INSERT INTO entries(key, value, version, node, expiry, tombstone, position, written) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT(position, key) DO UPDATE SET value = excluded.value, version = excluded.version, node = excluded.node,
                        expiry = excluded.expiry, tombstone = excluded.tombstone, written = excluded.written
                    """),
                delete: try database.prepare("DELETE FROM entries WHERE position = ? AND key = ?"),
                lookup: try database.prepare("SELECT value, version, node, expiry, tombstone FROM entries WHERE position = ? AND key = ?"),
                // The primary key's order: rows by ring position, what rebalancing walks.
                scanFirst: try database.prepare(
                    "SELECT key, value, version, node, expiry, tombstone, position FROM entries ORDER BY position, key LIMIT ?"),
                scanNext: try database.prepare(
                    "SELECT key, value, version, node, expiry, tombstone, position FROM entries WHERE (position, key) > (?, ?) ORDER BY position, key LIMIT ?"),
                metaDelete: try database.prepare("DELETE FROM meta WHERE name = ?"),
                metaStore: try database.prepare("INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)"),
                metas: metas,
                lastWritten: try database.integer("SELECT coalesce(max(written), 0) FROM entries"),
                rowCount: try database.integer("SELECT count(*) FROM entries"))
        } catch {
            pendingLog.close()
            throw error
        }
    }

    /// Finalizes the statements, closes the pending log and the database (the writer's last
    /// act: nothing is used after it).
    func close() {
        for statement in [upsert, delete, lookup, scanFirst, scanNext, metaDelete, metaStore] { statement.finalize() }
        pendingLog.close()
        database.close()
    }

    /// Moves what a format 4 file's `pending` table holds into the log (synced), then drops
    /// the table. A crash in between moves it again next time, which replays the same
    /// batches twice in a row: the same rows.
    private static func upgrade(_ database: SQLiteDatabase, log: PendingLog) throws {
        if try database.integer("SELECT count(*) FROM sqlite_master WHERE name = 'pending'") > 0 {
            let statement = try database.prepare("SELECT id, length(changes) FROM pending ORDER BY id")
            var bytes: [UInt8] = []
            while try statement.step() {
                try database.appendBlob(table: "pending", column: "changes", rowid: statement.int64(0), count: Int(statement.int64(1)), to: &bytes)
            }
            if !bytes.isEmpty, let failed = bytes.withUnsafeBytes({ log.append($0) }) ?? log.sync() {
                throw PersistenceError(description: "cannot move the pending batches of \(log.path): \(failed)")
            }
        }
        try database.execute("BEGIN IMMEDIATE; DROP TABLE IF EXISTS pending; PRAGMA user_version=\(formatVersion); COMMIT")
    }
}
