import CSQLite

/// An SQLite error: the result code and SQLite's message.
public struct SQLiteError: Error, Sendable, CustomStringConvertible {
    public let code: Int32
    public let message: String

    /// The disk or the file system is full.
    public var isFull: Bool { code & 0xFF == SQLITE_FULL }
    /// The file is not a database, or is damaged.
    public var isCorrupt: Bool { code & 0xFF == SQLITE_NOTADB || code & 0xFF == SQLITE_CORRUPT }
    /// Another connection (another process) holds the database.
    public var isBusy: Bool { code & 0xFF == SQLITE_BUSY || code & 0xFF == SQLITE_LOCKED }

    public var description: String { "\(message) (SQLite error \(code))" }
}

/// One connection, used from one thread at a time (the durable tier's writer).
final class SQLiteDatabase {
    private(set) var handle: OpaquePointer?

    /// Opens `path`; `create` allows a new file.
    init(path: String, create: Bool) throws(SQLiteError) {
        var handle: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOMUTEX
        let result = sqlite3_open_v2(path, &handle, flags, nil)
        guard result == SQLITE_OK, let handle else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            sqlite3_close_v2(handle)
            throw SQLiteError(code: result, message: message)
        }
        self.handle = handle
        sqlite3_extended_result_codes(handle, 1)
    }

    deinit { close() }

    func close() {
        if let handle { sqlite3_close_v2(handle) }
        handle = nil
    }

    /// Inside a transaction (SQLite rolls some failures back by itself).
    var inTransaction: Bool { handle.map { sqlite3_get_autocommit($0) == 0 } ?? false }

    func error(_ code: Int32) -> SQLiteError {
        SQLiteError(code: code, message: handle.map { String(cString: sqlite3_errmsg($0)) } ?? "closed")
    }

    /// Runs statements that return nothing of interest.
    func execute(_ sql: String) throws(SQLiteError) {
        let result = sqlite3_exec(handle, sql, nil, nil, nil)
        guard result == SQLITE_OK else { throw error(result) }
    }

    /// The first column of the first row of `sql`, as an integer (0 if there is no row).
    func integer(_ sql: String) throws(SQLiteError) -> Int64 {
        let statement = try prepare(sql)
        return try statement.step() ? statement.int64(0) : 0
    }

    /// Appends the blob in `column` of the row `rowid` of `table` to `bytes`, read straight
    /// into it (no copy of the whole blob in between).
    func appendBlob(table: String, column: String, rowid: Int64, count: Int, to bytes: inout [UInt8]) throws(SQLiteError) {
        var blob: OpaquePointer?
        let opened = sqlite3_blob_open(handle, "main", table, column, rowid, 0, &blob)
        guard opened == SQLITE_OK, let blob else {
            sqlite3_blob_close(blob)
            throw error(opened)
        }
        defer { sqlite3_blob_close(blob) }
        let start = bytes.count
        bytes.append(contentsOf: repeatElement(0, count: count))
        let result = bytes.withUnsafeMutableBytes { sqlite3_blob_read(blob, $0.baseAddress! + start, Int32(count), 0) }
        guard result == SQLITE_OK else { throw error(result) }
    }

    func prepare(_ sql: String) throws(SQLiteError) -> Statement {
        var statement: OpaquePointer?
        let result = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard result == SQLITE_OK, let statement else { throw error(result) }
        return Statement(statement, database: self)
    }

    /// A prepared statement; reset after each use.
    final class Statement {
        let pointer: OpaquePointer
        unowned let database: SQLiteDatabase

        init(_ pointer: OpaquePointer, database: SQLiteDatabase) {
            self.pointer = pointer
            self.database = database
        }

        /// Finalized by ``finalize()`` (before the connection closes) rather than at deinit.
        private var finalized = false

        deinit { finalize() }

        /// Releases the statement; it must not be used again. A connection with live
        /// statements closes only once they are gone, and holds its lock until then.
        func finalize() {
            guard !finalized else { return }
            finalized = true
            sqlite3_finalize(pointer)
        }

        func bind(_ index: Int32, _ value: Int64) throws(SQLiteError) {
            try check(sqlite3_bind_int64(pointer, index, value))
        }

        /// Binds bytes that stay valid until the statement is stepped (no copy). Throws for
        /// bytes past SQLite's largest blob (``SQLiteDatabase/maxBlobLength``), which SQLite
        /// would otherwise leave unbound, that is NULL.
        func bind(_ index: Int32, _ bytes: UnsafeRawBufferPointer?) throws(SQLiteError) {
            guard let bytes else {
                try check(sqlite3_bind_null(pointer, index))
                return
            }
            // A zero-length blob needs a non-null pointer to read as empty, not NULL.
            try check(sqlite3_bind_blob64(pointer, index, bytes.baseAddress ?? UnsafeRawPointer(bitPattern: 1), UInt64(bytes.count), nil))
        }

        private func check(_ result: Int32) throws(SQLiteError) {
            guard result == SQLITE_OK else { throw database.error(result) }
        }

        /// Steps once: true while there is a row.
        func step() throws(SQLiteError) -> Bool {
            let result = sqlite3_step(pointer)
            switch result {
            case SQLITE_ROW: return true
            case SQLITE_DONE:
                sqlite3_reset(pointer)
                return false
            default:
                sqlite3_reset(pointer)
                throw database.error(result)
            }
        }

        func reset() {
            sqlite3_reset(pointer)
            sqlite3_clear_bindings(pointer)
        }

        func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(pointer, column) }

        func isNull(_ column: Int32) -> Bool { sqlite3_column_type(pointer, column) == SQLITE_NULL }

        /// The column's bytes, valid until the next step or reset.
        func blob(_ column: Int32) -> UnsafeRawBufferPointer {
            let count = Int(sqlite3_column_bytes(pointer, column))
            return UnsafeRawBufferPointer(start: sqlite3_column_blob(pointer, column), count: count)
        }
    }
}
