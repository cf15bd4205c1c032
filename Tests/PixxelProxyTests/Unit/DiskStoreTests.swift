import CacheInvalidation
import CSQLite
import Foundation
import Synchronization
import Testing
@testable import JobCache

@Suite struct DiskStoreTests {
    func record(_ key: String, workflow: String = "w", job: String? = nil, size: Int = 100, storedAt: Double = 1000,
                updatedAt: Double? = nil) -> DiskRecord {
        DiskRecord(key: key, kind: job == nil ? .list : .detail, workflowID: workflow, jobID: job,
                   body: Array(repeating: UInt8(ascii: "x"), count: size), headers: ["Content-Type:application/json"],
                   storedAt: storedAt, lifetime: 10, updatedAt: updatedAt)
    }

    func load(_ store: DiskStore, _ key: String) async -> DiskRecord? {
        await withCheckedContinuation { continuation in store.load(key) { continuation.resume(returning: $0) } }
    }

    func statistics(_ store: DiskStore) async -> (Int, Int) {
        await withCheckedContinuation { continuation in store.statistics { continuation.resume(returning: ($0, $1)) } }
    }

    /// Each connection's page cache is kept small (SQLite's default is 2 MB per connection,
    /// resident once a large store has been read and written): the memory tier is the cache.
    @Test func connectionsKeepASmallPageCache() throws {
        let directory = TemporaryDirectory()
        let connection = try SQLiteConnection(path: directory.path + "/store.sqlite")
        #expect(try connection.scalarInt("PRAGMA cache_size") == -SQLiteConnection.pageCacheKiB)
        #expect(SQLiteConnection.pageCacheKiB <= 1024)
    }

    /// A full disk was visible only as /readyz failing: now each failed write is counted by
    /// reason, the owner is told once when writes start failing and once when they work again,
    /// and the store recovers by itself when space returns.
    @Test func aFullDiskIsCountedByReasonToldOncePerChangeAndRecovers() async throws {
        let directory = TemporaryDirectory()
        let store = try DiskStore(directory: directory.path, budgetBytes: 1 << 30, recoverySeconds: 0)
        let changes = Mutex<[String]>([])
        store.onWriteStateChange { failure in changes.withLock { $0.append(failure?.reason ?? "working") } }
        store.save(record("first", size: 100))
        store.flush()
        store.limitPages(1)  // no page beyond those the file has: SQLITE_FULL, as on a full disk
        for index in 0..<3 { store.save(record("big \(index)", size: 256 << 10)) }
        store.flush()
        #expect(store.writeErrors == ["disk_full": 3])
        #expect(!store.isHealthy)
        store.limitPages(1 << 30)
        store.save(record("after", size: 100))
        store.flush()
        #expect(store.isHealthy)
        #expect(changes.withLock { $0 } == ["disk_full", "working"])
        #expect(await load(store, "after") != nil)
    }

    /// A store nobody writes to after its writes failed (an instance its load balancer took out
    /// of rotation for the 503, one answering every hit from memory) still recovers when space
    /// returns: found by review, /readyz stayed 503 for good once the traffic stopped.
    @Test func aStoreNobodyWritesToRecoversByItselfWhenSpaceReturns() async throws {
        let directory = TemporaryDirectory()
        let store = try DiskStore(directory: directory.path, budgetBytes: 1 << 30, recoverySeconds: 0.2)
        let changes = Mutex<[String]>([])
        store.onWriteStateChange { failure in changes.withLock { $0.append(failure?.reason ?? "working") } }
        store.save(record("first", size: 100))
        store.flush()
        store.limitPages(1)
        store.save(record("big", size: 256 << 10))
        store.flush()
        #expect(!store.isHealthy)
        store.limitPages(1 << 30)
        #expect(eventually { store.isHealthy }, "no write asked for, and the store is well again")
        #expect(changes.withLock { $0 } == ["disk_full", "working"])
        #expect(store.writeErrors == ["disk_full": 1], "its own probes are not counted as writes")
    }

    /// On a nearly full disk the writes that grow the file fail while page rewrites work: the
    /// store stays unwell until writes have worked for its recovery time, so readiness and the
    /// log do not flap with every write.
    @Test func aWriteThatWorksBetweenFailuresDoesNotMakeTheStoreWellAgain() async throws {
        let directory = TemporaryDirectory()
        let store = try DiskStore(directory: directory.path, budgetBytes: 1 << 30, recoverySeconds: 3600)
        let changes = Mutex<[String]>([])
        store.onWriteStateChange { failure in changes.withLock { $0.append(failure?.reason ?? "working") } }
        store.save(record("small", size: 100))
        store.flush()
        store.limitPages(1)
        for round in 0..<3 {
            store.save(record("big \(round)", size: 256 << 10))
            store.save(record("small", size: 100))  // fits in the page it had: works
            store.flush()
        }
        #expect(!store.isHealthy)
        #expect(changes.withLock { $0 } == ["disk_full"], "told once, not once per flip")
    }

    @Test func savesAndLoadsRecordsAcrossReopening() async throws {
        let directory = TemporaryDirectory()
        do {
            let store = try DiskStore(directory: directory.path, budgetBytes: 1 << 20)
            store.save(record("job w j1", job: "j1"))
            store.flush()
        }
        let reopened = try DiskStore(directory: directory.path, budgetBytes: 1 << 20)
        #expect(await load(reopened, "job w j1") == record("job w j1", job: "j1"))
        #expect(await load(reopened, "job w nope") == nil)
    }

    @Test func anOlderUpdatedAtNeverReplacesANewerOne() async throws {
        let directory = TemporaryDirectory()
        let store = try DiskStore(directory: directory.path, budgetBytes: 1 << 20)
        store.save(record("k", job: "k", size: 10, storedAt: 1000, updatedAt: 2000))
        store.save(record("k", job: "k", size: 20, storedAt: 3000, updatedAt: 1500))  // answered later, but older
        store.flush()
        #expect(await load(store, "k")?.body.count == 10)
        store.save(record("k", job: "k", size: 30, storedAt: 4000, updatedAt: 2000))  // same version: replaces
        store.flush()
        #expect(await load(store, "k")?.body.count == 30)
    }

    @Test func listSightingsRenewInvalidateAndCatchVanishedJobs() async throws {
        let directory = TemporaryDirectory()
        let store = try DiskStore(directory: directory.path, budgetBytes: 1 << 20)
        store.save(record("job w same", job: "same", updatedAt: 100))
        store.save(record("job w newer", job: "newer", updatedAt: 100))
        store.save(record("job w older", job: "older", updatedAt: 100))
        store.save(record("job w gone", job: "gone", updatedAt: 100))
        store.applyListSightings(workflowID: "w", ListSightings(updatedAt: ["same": 100, "newer": 200, "older": 50], answeredAt: 5000))
        store.flush()
        #expect(await load(store, "job w same")?.validatedAt == 5000)
        #expect(await load(store, "job w same")?.invalidated == false)
        #expect(await load(store, "job w newer")?.invalidated == true)
        #expect(await load(store, "job w newer")?.newestSeen == 200, "what the list showed is kept")
        #expect(await load(store, "job w older")?.invalidated == false)
        #expect(await load(store, "job w older")?.validatedAt == 1000)
        #expect(await load(store, "job w gone")?.invalidated == true)
    }

    @Test func anAnswerOlderThanTheNewestSightingNeverReplacesTheDetail() async throws {
        let directory = TemporaryDirectory()
        let store = try DiskStore(directory: directory.path, budgetBytes: 1 << 20)
        store.save(record("d", job: "d", size: 10, updatedAt: 100))
        store.applyListSightings(workflowID: "w", ListSightings(updatedAt: ["d": 300], answeredAt: 5000))
        store.save(record("d", job: "d", size: 20, updatedAt: 200))  // newer than the detail, older than the list showed
        store.flush()
        #expect(await load(store, "d")?.body.count == 10)
        store.save(record("d", job: "d", size: 30, updatedAt: 300))
        store.flush()
        #expect(await load(store, "d")?.body.count == 30)
        #expect(await load(store, "d")?.newestSeen == nil)
    }

    /// A store written by the build before schema versions (its exact layout): the cache
    /// table is dropped and made anew, the audit table kept, and writes work.
    @Test func aStoreOfThePreviousLayoutIsRebuiltKeepingTheAudit() async throws {
        let directory = TemporaryDirectory()
        let path = directory.path + "/" + DiskStore.fileName
        var db: OpaquePointer?
        #expect(sqlite3_open(path, &db) == SQLITE_OK)
        let old = """
            CREATE TABLE entries (
                key TEXT PRIMARY KEY, kind INTEGER NOT NULL, workflow_id TEXT NOT NULL, job_id TEXT,
                body BLOB NOT NULL, headers TEXT NOT NULL, stored_at REAL NOT NULL, lifetime REAL NOT NULL,
                last_used REAL NOT NULL, size INTEGER NOT NULL,
                updated_at REAL, validated_at REAL NOT NULL, invalidated INTEGER NOT NULL DEFAULT 0);
            INSERT INTO entries VALUES ('job w j', 2, 'w', 'j', x'7B7D', '', 1, 10, 1, 130, NULL, 1, 0);
            """
        #expect(sqlite3_exec(db, old, nil, nil, nil) == SQLITE_OK)
        sqlite3_close(db)
        let audit = try AuditLog(directory: directory.path)
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, Error>) in
            audit.record(AuditEntry(time: 1, client: "c", workflowID: "w", projectID: "p", jobID: "j", upstreamStatus: 200, requestID: "r")) {
                if let error = $0 { c.resume(throwing: error) } else { c.resume() }
            }
        }

        let store = try DiskStore(directory: directory.path, budgetBytes: 1 << 20)
        #expect(store.openNotes.contains { $0.contains("layout version 1") }, "\(store.openNotes)")
        #expect(await load(store, "job w j") == nil, "old entries are gone")
        store.save(record("detail/w/j", job: "j"))
        store.flush()
        #expect(store.isHealthy)
        #expect(await load(store, "detail/w/j") != nil)
        #expect(try AuditLog(directory: directory.path).entries(since: 0, client: nil).count == 1, "the audit is kept")
        let again = try DiskStore(directory: directory.path, budgetBytes: 1 << 20)
        #expect(again.openNotes.isEmpty, "the current layout opens without a word")
    }

    @Test func aCorruptStoreIsMovedAsideAndAFreshOneMade() async throws {
        let directory = TemporaryDirectory()
        let path = directory.path + "/" + DiskStore.fileName
        FileManager.default.createFile(atPath: path, contents: Data((0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }))
        let store = try DiskStore(directory: directory.path, budgetBytes: 1 << 20)
        #expect(store.openNotes.contains { $0.contains("moved to") }, "\(store.openNotes)")
        let aside = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.contains(".corrupt-") }
        #expect(aside.count == 1)
        store.save(record("list/w"))
        store.flush()
        let loaded = await load(store, "list/w")
        #expect(store.isHealthy && loaded != nil)
    }

    /// A file that opens but whose pages are corrupt: the first read that finds it marks the
    /// store, which the next start moves aside.
    @Test func corruptionFoundWhileRunningIsMovedAsideAtTheNextStart() async throws {
        let directory = TemporaryDirectory()
        let path = directory.path + "/" + DiskStore.fileName
        do {
            let store = try DiskStore(directory: directory.path, budgetBytes: 64 << 20)
            for index in 0..<400 { store.save(record("detail/w/j\(index)", job: "j\(index)", size: 2000)) }
            store.flush()
        }
        let handle = try #require(FileHandle(forWritingAtPath: path))
        try handle.seek(toOffset: 8192)
        try handle.write(contentsOf: Data((0..<(600 * 1024)).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ 17) }))
        try handle.close()

        let store = try DiskStore(directory: directory.path, budgetBytes: 64 << 20)
        for index in 0..<400 { _ = await load(store, "detail/w/j\(index)") }
        #expect(store.corruption != nil, "a read found the corruption")
        #expect(!store.isHealthy)
        let reopened = try DiskStore(directory: directory.path, budgetBytes: 64 << 20)
        #expect(reopened.openNotes.contains { $0.contains("moved to") }, "\(reopened.openNotes)")
        reopened.save(record("list/w"))
        reopened.flush()
        let loaded = await load(reopened, "list/w")
        #expect(reopened.isHealthy && loaded != nil)
    }

    @Test func staysWithinItsBudgetEvictingLeastRecentlyUsed() async throws {
        let directory = TemporaryDirectory()
        let store = try DiskStore(directory: directory.path, budgetBytes: 10_000)
        for index in 0..<100 { store.save(record("job w j\(index)", job: "j\(index)", size: 500)) }
        store.flush()
        let (entries, bytes) = await statistics(store)
        #expect(bytes <= 10_000)
        #expect(entries > 0 && entries < 100)
        #expect(await load(store, "job w j99") != nil, "the newest survive")
        #expect(await load(store, "job w j0") == nil, "the oldest go first")
    }

    @Test func purgesAWorkflowOrOneJob() async throws {
        let directory = TemporaryDirectory()
        let store = try DiskStore(directory: directory.path, budgetBytes: 1 << 20)
        store.save(record("list a", workflow: "a"))
        store.save(record("job a 1", workflow: "a", job: "1"))
        store.save(record("job a 2", workflow: "a", job: "2"))
        store.save(record("list b", workflow: "b"))
        let one = await withCheckedContinuation { c in store.purge(workflowID: "a", jobID: "1") { c.resume(returning: $0) } }
        #expect(one == 1)
        let rest = await withCheckedContinuation { c in store.purge(workflowID: "a", jobID: nil) { c.resume(returning: $0) } }
        #expect(rest == 2)
        #expect(await statistics(store).0 == 1)
    }
}
