import CacheStore
import Foundation
import Synchronization
import Testing

@testable import Persistence

@Suite struct DurableTierTests {
    let directory: String = {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ringcache-tier-\(UUID().uuidString)").path
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }()

    func now() -> Int64 { DurableTier.wallMillis() }

    func withTier(_ fsync: FsyncPolicy = .always, maxMemory: Int = 0, _ body: (DurableTier, CacheStore) throws -> Void) throws {
        let tier = try DurableTier(path: directory + "/node.db", fsync: fsync)
        let store = CacheStore(configuration: .init(maxMemory: maxMemory, journal: tier))
        tier.start(loadingInto: store)
        defer { tier.stop() }
        try body(tier, store)
    }

    func waitForCommit(_ tier: DurableTier) {
        let done = DispatchSemaphore(value: 0)
        tier.whenCommitted(tier.queuedSequence) { _ in done.signal() }
        done.wait()
    }

    func value(_ store: CacheStore, _ key: String) -> String? {
        var result: String?
        Array(key.utf8).withUnsafeBytes { key in
            store.read(key, now: now()) { entry in result = entry.map { String(decoding: $0.value, as: UTF8.self) } }
        }
        return result
    }

    func set(_ store: CacheStore, _ key: String, _ value: String, expiry: Int64 = 0) {
        Array(key.utf8).withUnsafeBytes { k in Array(value.utf8).withUnsafeBytes { v in _ = store.set(k, v, expiry: expiry, now: now()) } }
    }

    @Test func changesSurviveAReopenWithTheirVersions() throws {
        var versions: [Version] = []
        try withTier { tier, store in
            for i in 0..<1000 { set(store, "k\(i)", "v\(i)") }
            set(store, "gone", "x")
            Array("gone".utf8).withUnsafeBytes { _ = store.remove($0, now: now()) }
            set(store, "short", "x", expiry: now() + 50)
            set(store, "long", "y", expiry: now() + 3_600_000)
            Array("k1".utf8).withUnsafeBytes { key in store.readVersioned(key, now: now()) { versions.append($0!.version) } }
            waitForCommit(tier)
            let committed = tier.committedSequence.load(ordering: .relaxed)
            #expect(committed == tier.queuedSequence)
        }
        Thread.sleep(forTimeInterval: 0.1)
        try withTier { tier, store in
            while tier.isLoading { Thread.sleep(forTimeInterval: 0.01) }
            #expect(value(store, "k999") == "v999")
            #expect(value(store, "gone") == nil)
            #expect(value(store, "short") == nil, "an expired row is not loaded")
            #expect(value(store, "long") == "y")
            #expect(store.count == 1001)
            Array("k1".utf8).withUnsafeBytes { key in store.readVersioned(key, now: now()) { #expect($0?.version == versions[0]) } }
            #expect(!tier.hasMoreOnDisk)
        }
    }

    @Test func committedBatchesStayPendingUntilAMergeAndAReadSeesThemMerged() throws {
        try withTier(.everysec) { tier, store in
            for round in 0..<3 {
                for i in 0..<500 { set(store, "k\(i)", "v\(i).\(round)") }
            }
            Array("k7".utf8).withUnsafeBytes { _ = store.remove($0, now: now()) }
            waitForCommit(tier)
            // Committed, not merged: the batches wait in `pending` (a merge comes after seconds).
            #expect(tier.unmergedBytes.load(ordering: .relaxed) > 0)
            #expect(tier.merges.load(ordering: .relaxed) == 0)
            let done = DispatchSemaphore(value: 0)
            let found = Mutex<[String?]>([])
            for key in ["k3", "k7"] {
                tier.read(Array(key.utf8)) { result in
                    let entry = try? result.get()
                    found.withLock { $0.append(entry.flatMap { $0.value.map { String(decoding: $0, as: UTF8.self) } }) }
                    done.signal()
                }
            }
            done.wait()
            done.wait()
            // A read merges first: it finds the last of the three writes, and the delete.
            #expect(found.withLock { $0 } == ["v3.2", nil])
            #expect(tier.unmergedBytes.load(ordering: .relaxed) == 0)
            #expect(tier.merges.load(ordering: .relaxed) == 1)
        }
        try withTier { tier, store in
            while tier.isLoading { Thread.sleep(forTimeInterval: 0.01) }
            #expect(store.count == 499)
            #expect(value(store, "k499") == "v499.2")
        }
    }

    @Test func loadingStopsAtTheMemoryBudgetAndTheRestReadsThrough() throws {
        try withTier(.everysec) { tier, store in
            for i in 0..<20_000 { set(store, "key:\(i)", String(repeating: "x", count: 100)) }
            waitForCommit(tier)
        }
        try withTier(.everysec, maxMemory: 1 << 20) { tier, store in
            while tier.isLoading { Thread.sleep(forTimeInterval: 0.01) }
            #expect(tier.hasMoreOnDisk)
            #expect(store.count > 1000 && store.count < 20_000)
            #expect(value(store, "key:19999") != nil, "the newest rows are loaded first")
            let done = DispatchSemaphore(value: 0)
            let found = Mutex<DiskEntry?>(nil)
            tier.read(Array("key:0".utf8)) { result in
                found.withLock { $0 = try? result.get() }
                done.signal()
            }
            done.wait()
            #expect(found.withLock { $0?.value?.count } == 100)
        }
    }

    /// The tier's files as a kill -9 would leave them now: copied while it runs, nothing merged.
    func crashCopy(_ name: String) throws -> String {
        let copy = directory + "/" + name
        for suffix in ["", "-wal", "-pending"] where FileManager.default.fileExists(atPath: directory + "/node.db" + suffix) {
            try FileManager.default.copyItem(atPath: directory + "/node.db" + suffix, toPath: copy + suffix)
        }
        return copy
    }

    func contents(_ path: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }

    @Test func aCrashLeavesBatchesTheNextStartMergesAndATornLastBatchIsCutOff() throws {
        var crashed = ""
        try withTier(.everysec) { tier, store in
            for i in 0..<300 { set(store, "k\(i)", "v\(i)") }
            waitForCommit(tier)
            for i in 0..<300 { set(store, "k\(i)", "w\(i)") }
            waitForCommit(tier)
            #expect(tier.merges.load(ordering: .relaxed) == 0)
            crashed = try crashCopy("crashed.db")
        }
        // A write the crash cut short: a header that promises more than the file holds.
        let whole = try contents(crashed + "-pending")
        var torn = whole
        torn += [200, 0, 0, 0] + [UInt8](repeating: 7, count: 8) + [1, 2, 3]
        try Data(torn).write(to: URL(fileURLWithPath: crashed + "-pending"))
        let tier = try DurableTier(path: crashed, fsync: .everysec)
        #expect(try contents(crashed + "-pending") == whole, "the torn batch is cut off, the whole ones kept")
        let store = CacheStore(configuration: .init(maxMemory: 0, journal: tier))
        tier.start(loadingInto: store)
        defer { tier.stop() }
        while tier.isLoading { Thread.sleep(forTimeInterval: 0.01) }
        #expect(tier.merges.load(ordering: .relaxed) == 1, "what the crash left pending was merged at start")
        #expect(store.count == 300)
        #expect(value(store, "k299") == "w299")
        #expect(tier.unmergedBytes.load(ordering: .relaxed) == 0)
    }

    @Test func writesAreCommittedWhileAMergeRunsAndStayPendingAfterIt() throws {
        try withTier(.always) { tier, store in
            for i in 0..<60_000 { set(store, "k\(i)", "v\(i)") }
            waitForCommit(tier)
            // A read merges first: 60,000 rows take the writer a while.
            let events = Mutex<[String]>([])
            let readDone = DispatchSemaphore(value: 0)
            tier.read(Array("k1".utf8)) { _ in
                events.withLock { $0.append("read") }
                readDone.signal()
            }
            Thread.sleep(forTimeInterval: 0.02)
            set(store, "during", "merge")
            let committed = DispatchSemaphore(value: 0)
            tier.whenCommitted(tier.queuedSequence) { ok in
                events.withLock { $0.append(ok ? "commit" : "failed") }
                committed.signal()
            }
            committed.wait()
            readDone.wait()
            #expect(events.withLock { $0 } == ["commit", "read"], "the write was acknowledged before the merge ended")
            #expect(tier.merges.load(ordering: .relaxed) == 1)
            #expect(tier.unmergedBytes.load(ordering: .relaxed) > 0, "what was committed during the merge is still pending")
        }
        try withTier { tier, store in
            while tier.isLoading { Thread.sleep(forTimeInterval: 0.01) }
            #expect(store.count == 60_001)
            #expect(value(store, "during") == "merge")
        }
    }

    @Test func removingTheMergedPartOfThePendingLogKeepsWhatCameAfter() throws {
        let path = directory + "/log-pending"
        let log = try PendingLog(path: path)
        for payload in [[1, 2, 3], [4, 5]] as [[UInt8]] { #expect(payload.withUnsafeBytes { log.append($0) } == nil) }
        let merged = try log.withBatches { bytes, batches in
            #expect(batches.count == 2)
            // Appended while the view is held: not in it.
            #expect([UInt8]([6, 7, 8, 9]).withUnsafeBytes { log.append($0) } == nil)
            return bytes.count
        }
        #expect(log.removeMerged(upTo: merged, sync: true) == nil)
        let left = try log.withBatches { bytes, batches in batches.map { Array(bytes[$0]) } }
        #expect(left == [[6, 7, 8, 9]])
        log.close()
        let reopened = try PendingLog(path: path)
        #expect(try reopened.withBatches { bytes, batches in batches.map { Array(bytes[$0]) } } == [[6, 7, 8, 9]])
        #expect(reopened.removeMerged(upTo: reopened.end, sync: false) == nil)
        #expect(reopened.size == 0)
        #expect(PendingLog.directory(of: "/a/b-pending") == "/a" && PendingLog.directory(of: "/b") == "/" && PendingLog.directory(of: "b") == ".")
    }

    @Test func aPendingLogDamagedBeforeItsEndStopsTheStartAndIsLeftUntouched() throws {
        var crashed = ""
        try withTier(.everysec) { tier, store in
            for round in 0..<2 {
                for i in 0..<100 { set(store, "k\(i)", "v\(i).\(round)") }
                waitForCommit(tier)
            }
            crashed = try crashCopy("damaged.db")
        }
        var bytes = try contents(crashed + "-pending")
        bytes[PendingLog.magic.count + PendingLog.headerLength + 5] ^= 0xFF   // inside the first of two batches
        try Data(bytes).write(to: URL(fileURLWithPath: crashed + "-pending"))
        #expect {
            try DurableTier(path: crashed, fsync: .everysec)
        } throws: { error in
            "\(error)".contains("damaged") && "\(error)".contains("-pending")
        }
        #expect(try contents(crashed + "-pending") == bytes)
    }

    @Test func aFormat4DatabaseHasItsPendingTableMovedIntoTheLog() throws {
        try withTier { _, store in set(store, "merged", "m") }
        // Format 4 kept committed batches in a table: one batch that sets `waiting`.
        var batch: [UInt8] = [1]
        func integer<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { batch += $0 } }
        integer(UInt32(7))
        batch += Array("waiting".utf8)
        batch.append(1)
        integer(UInt32(2))
        batch += Array("ok".utf8)
        integer(Int64(0))
        integer(UInt64(1) << 20)
        integer(UInt32(9))
        let database = try SQLiteDatabase(path: directory + "/node.db", create: false)
        try database.execute("CREATE TABLE pending(id INTEGER PRIMARY KEY, changes BLOB NOT NULL); PRAGMA user_version=4")
        do {
            // Statements first: the connection closes (and lets go of its lock) once they are gone.
            let insert = try database.prepare("INSERT INTO pending(changes) VALUES (?)")
            try batch.withUnsafeBytes { bytes in
                try insert.bind(1, bytes)
                _ = try insert.step()
            }
            insert.reset()
        }
        database.close()
        try withTier { tier, store in
            while tier.isLoading { Thread.sleep(forTimeInterval: 0.01) }
            #expect(value(store, "waiting") == "ok")
            #expect(value(store, "merged") == "m")
        }
        let reopened = try SQLiteDatabase(path: directory + "/node.db", create: false)
        defer { reopened.close() }
        #expect(try reopened.integer("PRAGMA user_version") == DurableSchema.formatVersion)
        #expect(try reopened.integer("SELECT count(*) FROM sqlite_master WHERE name = 'pending'") == 0)
    }

    @Test func refusesAFileThatIsNotARingcacheDatabase() throws {
        let path = directory + "/node.db"
        let garbage = Array(repeating: UInt8(0x41), count: 8192)
        _ = FileManager.default.createFile(atPath: path, contents: Data(garbage))
        #expect(throws: PersistenceError.self) { try DurableTier(path: path, fsync: .always) }
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == Data(garbage), "the file was changed")
    }

    @Test func refusesADatabaseThatAnotherConnectionHolds() throws {
        try withTier { _, _ in
            #expect {
                try DurableTier(path: directory + "/node.db", fsync: .always)
            } throws: { error in
                "\(error)".contains("in use by another process")
            }
        }
    }
}

import Synchronization

@Suite struct PendingLogScanTests {
    /// A log of three batches, as bytes.
    func log() throws -> [UInt8] {
        let path = NSTemporaryDirectory() + "scan-\(UUID().uuidString)-pending"
        defer { unlink(path) }
        let log = try PendingLog(path: path)
        for batch in [[UInt8](repeating: 1, count: 40), [UInt8](repeating: 2, count: 30), [UInt8](repeating: 3, count: 20)] {
            #expect(batch.withUnsafeBytes { log.append($0) } == nil)
        }
        log.close()
        return Array(try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    @Test func aDamagedLengthBeforeTheEndIsDamageNotATornTail() throws {
        var bytes = try log()
        #expect(bytes.withUnsafeBytes { PendingLog.scan($0, legacy: false) } == .whole)
        // The second record's length, made to run past the end of the file.
        let second = PendingLog.magic.count + PendingLog.headerLength + 40
        bytes[second + 2] = 0x7F
        guard case .damaged(let offset, let reason) = bytes.withUnsafeBytes({ PendingLog.scan($0, legacy: false) }) else {
            Issue.record("a damaged length was taken for a torn tail")
            return
        }
        #expect(offset == second && reason.contains("header"))
    }

    @Test func aTornLastRecordIsCutOffWhereItStarts() throws {
        let bytes = try log()
        let third = bytes.count - PendingLog.headerLength - 20
        for cut in [bytes.count - 1, bytes.count - 15, third + 3] {
            #expect(Array(bytes[..<cut]).withUnsafeBytes { PendingLog.scan($0, legacy: false) } == .cutAt(third))
        }
        // A header a crash left as zeros is torn too.
        var zeroed = Array(bytes[..<third]) + [UInt8](repeating: 0, count: 30)
        #expect(zeroed.withUnsafeBytes { PendingLog.scan($0, legacy: false) } == .cutAt(third))
        zeroed[third + 20] = 1
        guard case .damaged = zeroed.withUnsafeBytes({ PendingLog.scan($0, legacy: false) }) else {
            Issue.record("a bad header with bytes behind it was cut off")
            return
        }
    }

    @Test func seededGarbageIsScannedWithoutATrap() throws {
        let bytes = try log()
        var state: UInt64 = 42
        func next() -> UInt64 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return state >> 11
        }
        for _ in 0..<5000 {
            var mutated = bytes
            for _ in 0..<(1 + Int(next() % 4)) { mutated[Int(next() % UInt64(mutated.count))] = UInt8(truncatingIfNeeded: next()) }
            let cut = Int(next() % UInt64(mutated.count + 1))
            for legacy in [false, true] {
                _ = Array(mutated[..<cut]).withUnsafeBytes { PendingLog.scan($0, legacy: legacy) }
            }
        }
    }
}

@Suite struct ChangeLogTests {
    @Test func changesRoundTripAndMalformedBatchesAreRefused() throws {
        var log: [UInt8] = []
        let version = Version(timestamp: HLCTimestamp(rawValue: 99), node: NodeID(rawValue: 7))
        Array("key".utf8).withUnsafeBytes { key in
            Array("value".utf8).withUnsafeBytes { ChangeLog.appendStored(key: key, value: $0, expiry: 5, version: version, to: &log) }
            ChangeLog.appendStored(key: key, value: nil, expiry: 6, version: version, to: &log)
            ChangeLog.appendRemoved(key: key, to: &log)
        }
        ChangeLog.appendRemovedAll(to: &log)
        var kinds: [ChangeKind] = []
        try log.withUnsafeBytes { bytes in
            try ChangeLog.decode(bytes, 0..<bytes.count, malformed: { $0 }) { (change: Change) throws(ChangeLog.Malformed) in
                kinds.append(change.kind)
                if change.kind == .stored, let value = change.value {
                    #expect(Array(bytes[value]) == Array("value".utf8) && change.expiry == 5 && change.timestamp == 99 && change.node == 7)
                }
            }
        }
        #expect(kinds == [.stored, .stored, .removed, .removedAll])
        // Every cut of the batch short of a change's end, and an unknown kind, are refused.
        for cut in [1, 4, 10, log.count - 2] {
            #expect(throws: ChangeLog.Malformed.self) {
                try Array(log[..<cut]).withUnsafeBytes { bytes in
                    try ChangeLog.decode(bytes, 0..<bytes.count, malformed: { $0 }) { (_: Change) throws(ChangeLog.Malformed) in }
                }
            }
        }
        #expect(throws: ChangeLog.Malformed.self) {
            try [UInt8(9)].withUnsafeBytes { bytes in
                try ChangeLog.decode(bytes, 0..<1, malformed: { $0 }) { (_: Change) throws(ChangeLog.Malformed) in }
            }
        }
    }
}
