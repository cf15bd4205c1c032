import CacheInvalidation
import CSQLite
import Foundation
import Synchronization

/// One cached answer as the disk tier keeps it.
public struct DiskRecord: Sendable, Equatable {
    /// `route`: a `cache.routes` answer, whose `workflowID` column holds its path.
    public enum Kind: Int32, Sendable { case list = 1, detail = 2, route = 3 }
    /// The cache key in its disk form, and the resource's ids as they go upstream
    /// (percent-encoded): purges and list sightings select by them.
    public var key: String
    public var kind: Kind
    public var workflowID: String
    public var jobID: String?
    public var body: [UInt8]
    /// Upstream end-to-end headers.
    public var headers: [String]
    public var storedAt: Double
    public var lifetime: Double
    /// The job's `updated_at` as an instant (details only).
    public var updatedAt: Double?
    /// When the upstream last confirmed this answer (its answer, or a list showing the same
    /// `updated_at`); freshness counts from here.
    public var validatedAt: Double
    /// Marked stale by a newer `updated_at` seen elsewhere.
    public var invalidated: Bool
    /// The newest `updated_at` a list showed for the job, when newer than this detail's.
    public var newestSeen: Double?

    public init(key: String, kind: Kind, workflowID: String, jobID: String?, body: [UInt8], headers: [String], storedAt: Double,
                lifetime: Double, updatedAt: Double? = nil, validatedAt: Double? = nil, invalidated: Bool = false,
                newestSeen: Double? = nil) {
        self.key = key
        self.kind = kind
        self.workflowID = workflowID
        self.jobID = jobID
        self.body = body
        self.headers = headers
        self.storedAt = storedAt
        self.lifetime = lifetime
        self.updatedAt = updatedAt
        self.validatedAt = validatedAt ?? storedAt
        self.invalidated = invalidated
        self.newestSeen = newestSeen
    }

    public var freshness: DetailFreshness {
        DetailFreshness(validatedAt: validatedAt, invalidated: invalidated, newestSeen: newestSeen)
    }
}

/// The disk tier: SQLite under `cache.directory`, bounded by bytes, least recently used
/// evicted first. Writes run on a writer queue and reads on a reader queue (a read waits only
/// while a batch commits), never on the event loop; completions run on those queues and the
/// caller hops back to its loop. SQLite's rollback journal keeps the file consistent across
/// `kill -9`. Not WAL: its index is a shared memory map of a file, and a write to that map
/// once the file cannot be written (made immutable, a file system shut down) kills the
/// process with SIGBUS, where a journal's writes fail with an error the store reports.
///
/// Unchecked Sendable: each SQLite connection is used from its own serial queue only, the
/// counters and health flag are behind Mutexes, and everything else is constant after init.
public final class DiskStore: @unchecked Sendable {
    public static let fileName = "pixxel-proxy-cache.sqlite3"
    public let path: String
    public let budgetBytes: Int
    private let writer: SQLiteConnection
    private let reader: SQLiteConnection
    private let writeQueue = DispatchQueue(label: "pixxel-proxy.disk-writer")
    private let readQueue = DispatchQueue(label: "pixxel-proxy.disk-reader")
    /// Writes queued and not yet done; beyond `maxPendingWrites` new writes are dropped (the
    /// disk tier is a cache: losing a write costs one upstream call, never correctness).
    private let pending = Mutex(0)
    public let maxPendingWrites: Int
    /// After a failed write, writes must have worked for this long before the store counts as
    /// well again: on a nearly full disk the writes that grow the file fail while those that
    /// rewrite a page work, and without it readiness and the log flapped with every write.
    public let recoverySeconds: Double
    private let counters = Mutex<(bytes: Int?, entries: Int, dropped: Int, failures: Int)>((nil, 0, 0, 0))

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        /// SQLite's primary result code, when SQLite gave one.
        public var code: Int32 = 0

        public init(description: String, code: Int32 = 0) {
            self.description = description
            self.code = code
        }

        /// The file is not a database, or a corrupt one.
        var isCorruption: Bool { code == SQLITE_NOTADB || code == SQLITE_CORRUPT }

        /// Every `reason` there is.
        public static let reasons = ["disk_full", "read_only", "io_error", "busy", "corrupt", "other"]

        /// What an operator looks into, as the `reason` label of failed writes.
        public var reason: String {
            switch code {
            case SQLITE_FULL: "disk_full"
            case SQLITE_READONLY, SQLITE_PERM, SQLITE_CANTOPEN: "read_only"
            case SQLITE_IOERR: "io_error"
            case SQLITE_BUSY, SQLITE_LOCKED: "busy"
            case SQLITE_NOTADB, SQLITE_CORRUPT: "corrupt"
            default: "other"
            }
        }
    }

    /// The layout of the cache table. A store of another version (an earlier build's, or a
    /// later one's) has its cache table dropped and made anew; the audit table is kept.
    /// 1: the unversioned layout (keys "job W J" of decoded ids); 2: typed keys of encoded ids,
    /// `newest_seen`; 3: `sightings`, the newest `updated_at` each workflow's list showed per job.
    public static let schemaVersion = 3

    /// Next to the store: corruption was found while running; the next start moves it aside.
    static let corruptionMarker = ".corrupt-detected"

    /// What opening the store had to do besides opening it (a migration, a corrupt file moved
    /// aside), for the caller to log.
    public private(set) var openNotes: [String] = []

    /// Opens (creating if needed) the store in `directory`. Fast whatever the store's size:
    /// nothing is loaded; the byte total is computed on the writer queue. A file that is not a
    /// SQLite database (or is corrupt) is moved aside and a new store made.
    public init(directory: String, budgetBytes: Int, maxPendingWrites: Int = 10_000, recoverySeconds: Double = 10) throws {
        try Self.makeDirectory(directory)
        path = directory + "/" + Self.fileName
        self.budgetBytes = budgetBytes
        self.maxPendingWrites = maxPendingWrites
        self.recoverySeconds = recoverySeconds
        var notes: [String] = []
        do {
            // Corruption found while running (a read or write failed with SQLITE_CORRUPT) left
            // a marker: the file opens, but must not be used again.
            if FileManager.default.fileExists(atPath: path + Self.corruptionMarker) {
                try? FileManager.default.removeItem(atPath: path + Self.corruptionMarker)
                throw Failure(description: "corruption was found while it was in use", code: SQLITE_CORRUPT)
            }
            writer = try Self.openWriter(path: path, notes: &notes)
        } catch let failure as Failure where failure.isCorruption {
            let aside = path + ".corrupt-\(Int(Date().timeIntervalSince1970))"
            for suffix in ["", "-wal", "-shm", "-journal"] where FileManager.default.fileExists(atPath: path + suffix) {
                try FileManager.default.moveItem(atPath: path + suffix, toPath: aside + suffix)
            }
            notes.append("the cache store \(path) was not a usable SQLite database (\(failure.description)); moved to \(aside), starting empty")
            writer = try Self.openWriter(path: path, notes: &notes)
        }
        openNotes = notes
        reader = try SQLiteConnection(path: path)
        writeQueue.async { [self] in refreshByteTotal(writer) }
    }

    /// The store's journal (see the type's comment): truncated rather than deleted after each
    /// commit, which spares the directory an unlink and a create per batch. A store left in
    /// WAL by an older build is switched at its first open (SQLite replays its WAL first).
    public static let journalMode = "TRUNCATE"
    /// How far ahead of this clock a stored `updated_at` may be and still keep an older
    /// answer out (the upstream's clock is not ours, but not a day off).
    public static let futureTolerance = 86_400.0

    private static func openWriter(path: String, notes: inout [String]) throws -> SQLiteConnection {
        let connection = try SQLiteConnection(path: path)
        try connection.execute("PRAGMA journal_mode=\(journalMode); PRAGMA synchronous=NORMAL;")
        let version = try connection.scalarInt("PRAGMA user_version")
        let hasEntries = try connection.scalarInt("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'entries'") > 0
        if hasEntries && version != schemaVersion {
            notes.append("the cache store has layout version \(version == 0 ? 1 : version), this build uses \(schemaVersion): cache entries dropped, audit kept")
            try connection.execute("DROP TABLE entries; DROP TABLE IF EXISTS sightings")
        }
        try connection.execute("""
            CREATE TABLE IF NOT EXISTS entries (
                key TEXT PRIMARY KEY, kind INTEGER NOT NULL, workflow_id TEXT NOT NULL, job_id TEXT,
                body BLOB NOT NULL, headers TEXT NOT NULL, stored_at REAL NOT NULL, lifetime REAL NOT NULL,
                last_used REAL NOT NULL, size INTEGER NOT NULL,
                updated_at REAL, validated_at REAL NOT NULL, invalidated INTEGER NOT NULL DEFAULT 0, newest_seen REAL);
            CREATE INDEX IF NOT EXISTS entries_last_used ON entries(last_used);
            CREATE INDEX IF NOT EXISTS entries_workflow ON entries(workflow_id, job_id);
            CREATE TABLE IF NOT EXISTS sightings (
                workflow_id TEXT NOT NULL, job_id TEXT NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (workflow_id, job_id));
            PRAGMA user_version = \(schemaVersion);
            """)
        return connection
    }

    /// Reads asked for since the store opened (any thread).
    public var readsAsked: Int { readsAskedCount.load(ordering: .relaxed) }
    private let readsAskedCount = Atomic<Int>(0)
    /// Reads that failed (the store locked past the busy timeout by another process, an I/O
    /// error): a read that found nothing proves the row absent only if this did not move
    /// meanwhile (any thread).
    public var readFailures: Int { readFailuresCount.load(ordering: .relaxed) }
    private let readFailuresCount = Atomic<Int>(0)

    /// `mkdir -p`, failing with the OS's reason in words ("permission denied"), which
    /// FileManager gives only as a Foundation error domain and code.
    static func makeDirectory(_ directory: String) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw Failure(description: "the cache directory \(directory) exists and is not a directory") }
            return
        }
        let parent = (directory as NSString).deletingLastPathComponent
        if !parent.isEmpty, parent != directory { try makeDirectory(parent) }
        guard mkdir(directory, 0o755) == 0 || errno == EEXIST else {
            throw Failure(description: "cannot create the cache directory \(directory): \(String(cString: strerror(errno)).lowercased())")
        }
    }

    /// Looks `key` up on the reader queue.
    public func load(_ key: String, completion: @escaping @Sendable (DiskRecord?) -> Void) {
        readsAskedCount.add(1, ordering: .relaxed)
        readQueue.async { [self] in
            completion(readingOrMarking { try reader.record(key: key) } ?? nil)
        }
    }

    /// Looks a detail up with the newest `updated_at` its workflow's list showed for the job
    /// (which outlives the detail, and a restart).
    public func loadDetail(_ key: String, workflowID: String, jobID: String,
                           completion: @escaping @Sendable (DiskRecord?, _ newestListed: Double?) -> Void) {
        readsAskedCount.add(1, ordering: .relaxed)
        readQueue.async { [self] in
            let record = readingOrMarking { try reader.record(key: key) } ?? nil
            let listed = readingOrMarking { try reader.sighting(workflowID: workflowID, jobID: jobID) } ?? nil
            completion(record, listed)
        }
    }

    /// Looks a list up with the details on disk that are newer than the list's entries for their
    /// jobs (saved after the list, before a crash, say; at most `maxNewerDetails`): the cache
    /// patches the list from them rather than serve a job older than it once showed.
    public func loadList(_ key: String, workflowID: String,
                         completion: @escaping @Sendable (DiskRecord?, _ newerDetails: [DiskRecord]) -> Void) {
        readsAskedCount.add(1, ordering: .relaxed)
        readQueue.async { [self] in
            let record = readingOrMarking { try reader.record(key: key) } ?? nil
            guard let record, let list = JobListDocument(body: record.body) else { return completion(record, []) }
            var listed: [String: Double] = [:]
            for job in list.jobs {
                let id = job.compactID.percentEncoded
                listed[id] = max(listed[id] ?? -.infinity, job.updatedAt ?? -.infinity)
            }
            let rows = readingOrMarking { try reader.details(workflowID: workflowID) } ?? []
            let newer = rows.filter { row in
                guard let updatedAt = row.updatedAt, let entry = listed[row.jobID] else { return false }
                return updatedAt > entry
            }
            let details = newer.prefix(Self.maxNewerDetails).compactMap { row in readingOrMarking { try reader.record(key: row.key) } ?? nil }
            completion(record, details)
        }
    }

    /// A list read from disk brings at most this many newer details with it.
    public static let maxNewerDetails = 256

    /// Runs a read; a corrupt store is marked for the next start (and reads as a miss).
    private func readingOrMarking<T>(_ read: () throws -> T) -> T? {
        do {
            return try read()
        } catch let failure as Failure {
            readFailuresCount.add(1, ordering: .relaxed)
            if failure.isCorruption { markCorrupt(failure) }
            return nil
        } catch {
            readFailuresCount.add(1, ordering: .relaxed)
            return nil
        }
    }

    private func markCorrupt(_ failure: Failure) {
        let first = !FileManager.default.fileExists(atPath: path + Self.corruptionMarker)
        FileManager.default.createFile(atPath: path + Self.corruptionMarker, contents: Data(failure.description.utf8))
        lastFailure.withLock { $0 = (Date().timeIntervalSince1970, failure.reason) }
        if healthy.withLock({ was in defer { was = false }; return was }) { onWriteStateChange.withLock { $0 }?(failure) }
        guard first else { return }
        corruptionFound.withLock { $0 = failure.description }
        onCorruption.withLock { $0 }?(failure.description)
    }

    /// Called on the writer queue each time writes start failing (with the failure) and each
    /// time they work again (nil): for a log line per change of state, not per write.
    public func onWriteStateChange(_ report: @escaping @Sendable (Failure?) -> Void) {
        onWriteStateChange.withLock { $0 = report }
    }
    private let onWriteStateChange = Mutex<(@Sendable (Failure?) -> Void)?>(nil)

    /// Failed writes since the store opened, by `Failure.reason`.
    public var writeErrors: [String: Int] { writeErrorCounts.withLock { $0 } }
    private let writeErrorCounts = Mutex<[String: Int]>([:])
    /// When a write last failed (wall clock) and why: a nearly full disk fails the writes that
    /// grow the file while those that rewrite a page still work, so one that worked since does
    /// not mean the disk is well.
    public var lastWriteFailure: (at: Double, reason: String)? { lastFailure.withLock { $0 } }
    private let lastFailure = Mutex<(at: Double, reason: String)?>(nil)

    /// Called once (on a disk queue) when corruption is first found while running.
    public func onCorruption(_ report: @escaping @Sendable (String) -> Void) {
        onCorruption.withLock { $0 = report }
    }
    private let onCorruption = Mutex<(@Sendable (String) -> Void)?>(nil)

    /// Set once a read or write found the file corrupt (for the server to log once).
    public var corruption: String? { corruptionFound.withLock { $0 } }
    private let corruptionFound = Mutex<String?>(nil)

    /// Stores (or replaces) a record, then evicts least recently used entries over budget. A
    /// detail older than the one stored, or than the newest `updated_at` a list showed for it,
    /// does not replace it (`Invalidation.answerMayReplace`). `durable`: the write is not
    /// dropped when the queue is full, and `completion` runs on the writer queue once it is
    /// committed (or has failed): for what a client is told before it hears back.
    public func save(_ record: DiskRecord, durable: Bool = false, completion: (@Sendable () -> Void)? = nil) {
        enqueueWrite(force: durable, always: completion) { connection in
            let before = try connection.scalarInt("SELECT COALESCE(SUM(size), 0) FROM entries WHERE key = ?1", .text(record.key))
            // A stored version over a day ahead of this clock is not believed (one dated 2999
            // would keep every later answer out).
            let horizon = Date().timeIntervalSince1970 + Self.futureTolerance
            let plausible = { (instant: Double?) in instant.flatMap { $0 <= horizon ? $0 : nil } }
            if before > 0, record.kind == .detail, let stored = try connection.datedState(key: record.key),
               !Invalidation.answerMayReplace(cached: plausible(stored.updatedAt), newestSeen: plausible(stored.newestSeen), answer: record.updatedAt) {
                return
            }
            try connection.upsert(record, now: Date().timeIntervalSince1970)
            let after = try connection.scalarInt("SELECT COALESCE(SUM(size), 0) FROM entries WHERE key = ?1", .text(record.key))
            self.counters.withLock {
                $0.bytes = $0.bytes.map { $0 + after - before }
                if before == 0 && after > 0 { $0.entries += 1 }
            }
            try self.evictOverBudget(connection)
        }
    }

    /// Applies what a list answer for `workflowID` showed to the workflow's details on disk,
    /// by the same function as the memory tier (`ListSightings.applied`), in one transaction;
    /// `completion` runs on the writer queue once it is durable (or has failed).
    public func applyListSightings(workflowID: String, _ sightings: ListSightings, completion: (@Sendable () -> Void)? = nil) {
        enqueueWrite(force: true, always: completion) { connection in
            try connection.execute("BEGIN IMMEDIATE")
            do {
                // What the list showed, per job: the newest `updated_at` ever listed, while listed.
                try connection.run("DELETE FROM sightings WHERE workflow_id = ?1", .text(workflowID))
                for (job, updatedAt) in sightings.updatedAt {
                    guard let updatedAt else { continue }
                    try connection.run("INSERT INTO sightings (workflow_id, job_id, updated_at) VALUES (?1, ?2, ?3)",
                                       .text(workflowID), .text(job), .real(updatedAt))
                }
                for row in try connection.details(workflowID: workflowID) {
                    let after = sightings.applied(to: row.freshness, jobID: row.jobID, detailUpdatedAt: row.updatedAt)
                    if after != row.freshness {
                        try connection.run("UPDATE entries SET validated_at = ?1, invalidated = ?2, newest_seen = ?3 WHERE key = ?4",
                                           .real(after.validatedAt), .int(after.invalidated ? 1 : 0),
                                           after.newestSeen.map(SQLiteConnection.Value.real) ?? .null, .text(row.key))
                    }
                }
                try connection.execute("COMMIT")
            } catch {
                try? connection.execute("ROLLBACK")
                throw error
            }
        }
    }

    /// Marks `key` as used now (a disk hit), so eviction spares it.
    public func touch(_ key: String) {
        enqueueWrite { connection in
            try connection.run("UPDATE entries SET last_used = ?1 WHERE key = ?2", .real(Date().timeIntervalSince1970), .text(key))
        }
    }

    /// Removes a workflow's entries (or one job's) and calls back with how many.
    public func purge(workflowID: String, jobID: String?, completion: (@Sendable (Int) -> Void)? = nil) {
        enqueueWrite(force: true) { connection in
            let removed: Int
            if let jobID {
                removed = try connection.run("DELETE FROM entries WHERE workflow_id = ?1 AND job_id = ?2", .text(workflowID), .text(jobID))
                try connection.run("DELETE FROM sightings WHERE workflow_id = ?1 AND job_id = ?2", .text(workflowID), .text(jobID))
            } else {
                removed = try connection.run("DELETE FROM entries WHERE workflow_id = ?1", .text(workflowID))
                try connection.run("DELETE FROM sightings WHERE workflow_id = ?1", .text(workflowID))
            }
            self.refreshByteTotal(connection)
            completion?(removed)
        }
    }

    /// Removes the `cache.routes` entries whose path is `prefix` or under it (an encoded path;
    /// segment by segment) and calls back with how many.
    public func purgeRoutes(pathPrefix prefix: String, completion: (@Sendable (Int) -> Void)? = nil) {
        let under = prefix.hasSuffix("/") ? prefix : prefix + "/"
        enqueueWrite(force: true) { connection in
            let removed = try connection.run(
                "DELETE FROM entries WHERE kind = ?1 AND (workflow_id = ?2 OR substr(workflow_id, 1, length(?3)) = ?3)",
                .int(Int64(DiskRecord.Kind.route.rawValue)), .text(prefix), .text(under))
            self.refreshByteTotal(connection)
            completion?(removed)
        }
    }

    /// Entries and bytes on disk (computed on the writer queue, after queued writes).
    public func statistics(completion: @escaping @Sendable (_ entries: Int, _ bytes: Int) -> Void) {
        enqueueWrite(force: true) { connection in
            let entries = (try? connection.scalarInt("SELECT COUNT(*) FROM entries")) ?? 0
            let bytes = (try? connection.scalarInt("SELECT COALESCE(SUM(size), 0) FROM entries")) ?? 0
            completion(entries, bytes)
        }
    }

    /// Blocks until every queued write is done (shutdown; never on the event loop).
    public func flush() {
        writeQueue.sync {}
    }

    public var droppedWrites: Int { counters.withLock { $0.dropped } }
    /// False while writes fail (disk full, I/O errors): `/readyz` reports the store unusable.
    public var isHealthy: Bool { healthy.withLock { $0 } }
    private let healthy = Mutex(true)

    /// Caps the file at `pages` pages, so that writes fail with SQLITE_FULL (fault injection
    /// in tests; never called otherwise).
    func limitPages(_ pages: Int) {
        writeQueue.sync { try? writer.execute("PRAGMA max_page_count = \(pages)") }
    }
    /// Bytes on disk as last counted by the writer (0 until the count at open is done).
    public var knownBytes: Int { counters.withLock { $0.bytes ?? 0 } }
    /// Entries on disk as last counted by the writer.
    public var knownEntries: Int { counters.withLock { $0.entries } }

    /// `always` runs after `work`, whether it succeeded or failed.
    private func enqueueWrite(force: Bool = false, always: (@Sendable () -> Void)? = nil,
                              _ work: @escaping @Sendable (SQLiteConnection) throws -> Void) {
        let accepted = pending.withLock { count -> Bool in
            guard force || count < maxPendingWrites else { return false }
            count += 1
            return true
        }
        guard accepted else {
            counters.withLock { $0.dropped += 1 }
            always?()
            return
        }
        writeQueue.async { [self] in
            do {
                try work(writer)
                _ = writeWorked()
            } catch {
                let failure = error as? Failure ?? Failure(description: "\(error)")
                counters.withLock { $0.failures += 1 }
                writeErrorCounts.withLock { $0[failure.reason, default: 0] += 1 }
                lastFailure.withLock { $0 = (Date().timeIntervalSince1970, failure.reason) }
                if healthy.withLock({ was in defer { was = false }; return was }) {
                    onWriteStateChange.withLock { $0 }?(failure)
                    scheduleProbe()
                }
                if failure.isCorruption { markCorrupt(failure) }
            }
            pending.withLock { $0 -= 1 }
            always?()
        }
    }

    /// A write worked: space back, the file writable again. The first that works once writes
    /// have been quiet for `recoverySeconds` ends the episode; true when this one did.
    private func writeWorked() -> Bool {
        let quietSince = lastFailure.withLock { $0.map { Date().timeIntervalSince1970 - $0.at } } ?? .infinity
        guard quietSince >= recoverySeconds, healthy.withLock({ was in defer { was = true }; return !was }) else { return false }
        onWriteStateChange.withLock { $0 }?(nil)
        return true
    }

    /// While writes fail, a small write of its own every half recovery time (on the writer
    /// queue, not counted as a write): a store nobody writes to (an instance out of its load
    /// balancer's rotation for the 503 this causes, or one answering every hit from memory)
    /// still sees space come back. A corrupt store is not probed: the next start moves it aside.
    private func scheduleProbe() {
        // One chain of probes at a time, however often the store flaps (found by review).
        guard probing.withLock({ was in defer { was = true }; return !was }) else { return }
        probeLater()
    }

    private func probeLater() {
        writeQueue.asyncAfter(deadline: .now() + max(0.05, recoverySeconds / 2)) { [weak self] in
            guard let self else { return }
            guard !isHealthy, corruptionFound.withLock({ $0 }) == nil else { return probing.withLock { $0 = false } }
            if (try? probe(writer)) != nil, writeWorked() {
                probing.withLock { $0 = false }
            } else {
                probeLater()
            }
        }
    }
    private let probing = Mutex(false)

    /// A write that needs new pages (64 KiB), undone at once, and room on the file system
    /// beyond it: a rewrite of pages the file has can work on a disk that is still full.
    private func probe(_ connection: SQLiteConnection) throws {
        var space = statvfs()
        if statvfs((path as NSString).deletingLastPathComponent, &space) == 0,
           Int(space.f_bavail) * Int(space.f_frsize) < Self.probeFreeBytes {
            throw Failure(description: "cache store: the file system is still full", code: SQLITE_FULL)
        }
        // No busy wait: a probe of a store another process holds locked fails at once rather
        // than keep the writer queue (and the answers waiting on their rows) for seconds.
        try connection.withBusyTimeout(0) {
            try connection.execute("CREATE TABLE IF NOT EXISTS store_probe (id INTEGER PRIMARY KEY, filler BLOB)")
            try connection.execute("INSERT INTO store_probe (filler) VALUES (zeroblob(\(Self.probeFreeBytes / 4)))")
            try connection.execute("DELETE FROM store_probe")
        }
    }

    /// Room the probe wants free on the file system.
    static let probeFreeBytes = 256 << 10

    /// Counts bytes and entries afresh (at open and after a purge; writes keep them current).
    private func refreshByteTotal(_ connection: SQLiteConnection) {
        let total = (try? connection.scalarInt("SELECT COALESCE(SUM(size), 0) FROM entries")) ?? 0
        let entries = (try? connection.scalarInt("SELECT COUNT(*) FROM entries")) ?? 0
        counters.withLock {
            $0.bytes = total
            $0.entries = entries
        }
    }

    /// The byte total is kept up to date incrementally (a SUM over a large store on every write
    /// would be slow); until the first SUM at open has finished, nothing is evicted.
    private func evictOverBudget(_ connection: SQLiteConnection) throws {
        while let bytes = counters.withLock({ $0.bytes }), bytes > budgetBytes {
            // Oldest-used first, a batch at a time.
            let batch = "SELECT key FROM entries ORDER BY last_used LIMIT 64"
            let freed = try connection.scalarInt("SELECT COALESCE(SUM(size), 0) FROM entries WHERE key IN (\(batch))")
            let deleted = try connection.run("DELETE FROM entries WHERE key IN (\(batch))")
            guard deleted > 0 else { return }
            counters.withLock {
                $0.bytes = $0.bytes.map { $0 - freed }
                $0.entries -= deleted
            }
        }
    }
}

/// One SQLite connection, used from one queue at a time: unchecked Sendable because its owner
/// hands it only to that serial queue (opened NOMUTEX: SQLite does no locking of its own).
final class SQLiteConnection: @unchecked Sendable {
    private var db: OpaquePointer?

    enum Value {
        case text(String), real(Double), int(Int64), blob([UInt8]), null
    }

    init(path: String) throws {
        guard sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nil) == SQLITE_OK else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            sqlite3_close(db)
            throw DiskStore.Failure(description: "cannot open the cache store \(path): \(message)")
        }
        sqlite3_busy_timeout(db, Self.busyMilliseconds)
        try execute("PRAGMA cache_size = -\(Self.pageCacheKiB)")
    }

    static let busyMilliseconds: Int32 = 5000
    /// SQLite's own page cache per connection, in KiB (its default is 2 MB). The store's file
    /// is in the kernel's page cache anyway, and the proxy's hot data in its memory tier: a
    /// larger cache here only added 2 MB per connection to the resident size of a full store.
    static let pageCacheKiB = 512

    /// Runs `body` with SQLite's busy wait set to `milliseconds`, then the usual one again.
    func withBusyTimeout<T>(_ milliseconds: Int32, _ body: () throws -> T) rethrows -> T {
        sqlite3_busy_timeout(db, milliseconds)
        defer { sqlite3_busy_timeout(db, Self.busyMilliseconds) }
        return try body()
    }

    /// A failure carrying SQLite's primary result code.
    private func failure(_ context: String) -> DiskStore.Failure {
        DiskStore.Failure(description: "\(context): \(String(cString: sqlite3_errmsg(db)))", code: sqlite3_errcode(db) & 0xFF)
    }

    deinit { sqlite3_close(db) }

    func execute(_ sql: String) throws {
        var error: UnsafeMutablePointer<CChar>?
        let code = sqlite3_exec(db, sql, nil, nil, &error)
        guard code == SQLITE_OK else {
            let message = error.map { String(cString: $0) } ?? "error"
            sqlite3_free(error)
            throw DiskStore.Failure(description: "cache store: \(message)", code: code & 0xFF)
        }
    }

    private func prepare(_ sql: String, _ values: [Value]) throws -> OpaquePointer {
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(db, sql, -1, &statement, nil) == SQLITE_OK, let statement else {
            throw failure("cache store")
        }
        for (offset, value) in values.enumerated() {
            let index = Int32(offset + 1)
            switch value {
            case .text(let text): _ = pp_sqlite_bind_text(statement, index, text)
            case .real(let real): sqlite3_bind_double(statement, index, real)
            case .int(let int): sqlite3_bind_int64(statement, index, int)
            case .blob(let bytes): _ = bytes.withUnsafeBytes { pp_sqlite_bind_blob(statement, index, $0.baseAddress, Int32($0.count)) }
            case .null: sqlite3_bind_null(statement, index)
            }
        }
        return statement
    }

    /// Runs a statement; returns the rows it changed.
    @discardableResult
    func run(_ sql: String, _ values: Value...) throws -> Int {
        let statement = try prepare(sql, values)
        defer { sqlite3_finalize(statement) }
        let code = sqlite3_step(statement)
        guard code == SQLITE_DONE || code == SQLITE_ROW else {
            throw failure("cache store")
        }
        return Int(sqlite3_changes(db))
    }

    /// Runs a query and maps every row.
    func rows<T>(_ sql: String, _ values: [Value], _ map: (OpaquePointer) -> T) throws -> [T] {
        let statement = try prepare(sql, values)
        defer { sqlite3_finalize(statement) }
        var out: [T] = []
        while sqlite3_step(statement) == SQLITE_ROW { out.append(map(statement)) }
        return out
    }

    func scalarInt(_ sql: String, _ values: Value...) throws -> Int {
        let statement = try prepare(sql, values)
        defer { sqlite3_finalize(statement) }
        guard sqlite3_step(statement) == SQLITE_ROW else { return 0 }
        return Int(sqlite3_column_int64(statement, 0))
    }

    func upsert(_ record: DiskRecord, now: Double) throws {
        try run("""
            INSERT INTO entries (key, kind, workflow_id, job_id, body, headers, stored_at, lifetime, last_used, size,
                                 updated_at, validated_at, invalidated, newest_seen)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
            ON CONFLICT(key) DO UPDATE SET kind = excluded.kind, body = excluded.body, headers = excluded.headers,
                stored_at = excluded.stored_at, lifetime = excluded.lifetime, last_used = excluded.last_used, size = excluded.size,
                updated_at = excluded.updated_at, validated_at = excluded.validated_at, invalidated = excluded.invalidated,
                newest_seen = excluded.newest_seen
            """,
            .text(record.key), .int(Int64(record.kind.rawValue)), .text(record.workflowID), record.jobID.map(Value.text) ?? .null,
            .blob(record.body), .text(record.headers.joined(separator: "\n")), .real(record.storedAt), .real(record.lifetime),
            .real(now), .int(Int64(record.body.count + record.key.utf8.count + 128)),
            record.updatedAt.map(Value.real) ?? .null, .real(record.validatedAt), .int(record.invalidated ? 1 : 0),
            record.newestSeen.map(Value.real) ?? .null)
    }

    /// The newest `updated_at` the workflow's list showed for a job.
    func sighting(workflowID: String, jobID: String) throws -> Double? {
        let statement = try prepare("SELECT updated_at FROM sightings WHERE workflow_id = ?1 AND job_id = ?2",
                                    [.text(workflowID), .text(jobID)])
        defer { sqlite3_finalize(statement) }
        guard sqlite3_step(statement) == SQLITE_ROW else { return nil }
        return sqlite3_column_double(statement, 0)
    }

    /// A stored detail's `updated_at` and newest sighting, for `answerMayReplace`.
    func datedState(key: String) throws -> (updatedAt: Double?, newestSeen: Double?)? {
        let statement = try prepare("SELECT updated_at, newest_seen FROM entries WHERE key = ?1", [.text(key)])
        defer { sqlite3_finalize(statement) }
        guard sqlite3_step(statement) == SQLITE_ROW else { return nil }
        return (sqlite3_column_type(statement, 0) == SQLITE_NULL ? nil : sqlite3_column_double(statement, 0),
                sqlite3_column_type(statement, 1) == SQLITE_NULL ? nil : sqlite3_column_double(statement, 1))
    }

    func record(key: String) throws -> DiskRecord? {
        let statement = try prepare("""
            SELECT kind, workflow_id, job_id, body, headers, stored_at, lifetime, updated_at, validated_at, invalidated, newest_seen
            FROM entries WHERE key = ?1
            """, [.text(key)])
        defer { sqlite3_finalize(statement) }
        let code = sqlite3_step(statement)
        guard code == SQLITE_ROW else {
            if code != SQLITE_DONE { throw failure("cache store") }
            return nil
        }
        guard let kind = DiskRecord.Kind(rawValue: sqlite3_column_int(statement, 0)) else { return nil }
        let length = Int(sqlite3_column_bytes(statement, 3))
        let body: [UInt8] = length == 0 ? [] : Array(UnsafeRawBufferPointer(start: sqlite3_column_blob(statement, 3), count: length))
        func text(_ column: Int32) -> String? {
            sqlite3_column_text(statement, column).map { String(cString: $0) }
        }
        let headers = text(4).map { $0.isEmpty ? [] : $0.components(separatedBy: "\n") } ?? []
        return DiskRecord(key: key, kind: kind, workflowID: text(1) ?? "", jobID: text(2), body: body, headers: headers,
                          storedAt: sqlite3_column_double(statement, 5), lifetime: sqlite3_column_double(statement, 6),
                          updatedAt: sqlite3_column_type(statement, 7) == SQLITE_NULL ? nil : sqlite3_column_double(statement, 7),
                          validatedAt: sqlite3_column_double(statement, 8), invalidated: sqlite3_column_int(statement, 9) != 0,
                          newestSeen: sqlite3_column_type(statement, 10) == SQLITE_NULL ? nil : sqlite3_column_double(statement, 10))
    }

    struct DetailRow {
        let key: String, jobID: String, updatedAt: Double?, freshness: DetailFreshness
    }

    func details(workflowID: String) throws -> [DetailRow] {
        let statement = try prepare("""
            SELECT key, job_id, updated_at, validated_at, invalidated, newest_seen FROM entries
            WHERE workflow_id = ?1 AND job_id IS NOT NULL
            """, [.text(workflowID)])
        defer { sqlite3_finalize(statement) }
        var rows: [DetailRow] = []
        while sqlite3_step(statement) == SQLITE_ROW {
            rows.append(DetailRow(
                key: sqlite3_column_text(statement, 0).map { String(cString: $0) } ?? "",
                jobID: sqlite3_column_text(statement, 1).map { String(cString: $0) } ?? "",
                updatedAt: sqlite3_column_type(statement, 2) == SQLITE_NULL ? nil : sqlite3_column_double(statement, 2),
                freshness: DetailFreshness(
                    validatedAt: sqlite3_column_double(statement, 3), invalidated: sqlite3_column_int(statement, 4) != 0,
                    newestSeen: sqlite3_column_type(statement, 5) == SQLITE_NULL ? nil : sqlite3_column_double(statement, 5))))
        }
        return rows
    }
}
