import CSQLite
import Foundation

/// One job creation through the proxy: the upstream sees only the shared key, so this is the
/// record of who created what.
public struct AuditEntry: Sendable, Equatable {
    public var time: Double
    public var client: String
    public var workflowID: String
    public var projectID: String
    /// The id the upstream returned, when it created the job.
    public var jobID: String?
    /// The upstream's status, or the proxy's (502, 504...) when there was no answer.
    public var upstreamStatus: Int
    public var requestID: String

    public init(time: Double, client: String, workflowID: String, projectID: String, jobID: String?, upstreamStatus: Int, requestID: String) {
        self.time = time
        self.client = client
        self.workflowID = workflowID
        self.projectID = projectID
        self.jobID = jobID
        self.upstreamStatus = upstreamStatus
        self.requestID = requestID
    }
}

/// The audit table, in the same SQLite file as the cache but with its own connection and
/// queue: `synchronous=FULL`, so a recorded entry survives power loss, and neither purges nor
/// eviction ever touch it.
///
/// Unchecked Sendable: its one connection is used from its own serial queue only.
public final class AuditLog: @unchecked Sendable {
    private let connection: SQLiteConnection
    private let queue = DispatchQueue(label: "pixxel-proxy.audit")

    public init(directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        connection = try SQLiteConnection(path: directory + "/" + DiskStore.fileName)
        try connection.execute("""
            PRAGMA journal_mode=\(DiskStore.journalMode);
            PRAGMA synchronous=FULL;
            CREATE TABLE IF NOT EXISTS audit (
                id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, client TEXT NOT NULL, workflow_id TEXT NOT NULL,
                project_id TEXT NOT NULL, job_id TEXT, upstream_status INTEGER NOT NULL, request_id TEXT NOT NULL);
            CREATE INDEX IF NOT EXISTS audit_time ON audit(time);
            """)
    }

    /// Appends `entry` durably, then calls `completion(error?)` on the audit queue.
    public func record(_ entry: AuditEntry, completion: @escaping @Sendable ((any Error)?) -> Void) {
        queue.async { [self] in
            do {
                try connection.run("""
                    INSERT INTO audit (time, client, workflow_id, project_id, job_id, upstream_status, request_id)
                    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                    """, .real(entry.time), .text(entry.client), .text(entry.workflowID), .text(entry.projectID),
                    entry.jobID.map(SQLiteConnection.Value.text) ?? .null, .int(Int64(entry.upstreamStatus)), .text(entry.requestID))
                completion(nil)
            } catch {
                completion(error)
            }
        }
    }

    /// Makes the store refuse writes, as a read-only file does (fault injection in tests; never
    /// called otherwise).
    func refuseWrites(_ refuse: Bool) {
        queue.sync { try? connection.execute("PRAGMA query_only = \(refuse ? "ON" : "OFF")") }
    }

    /// Entries at or after `since`, optionally of one client, oldest first (blocking: for the CLI).
    public func entries(since: Double?, client: String?) throws -> [AuditEntry] {
        try queue.sync { try connection.auditEntries(since: since ?? 0, client: client) }
    }
}

extension SQLiteConnection {
    func auditEntries(since: Double, client: String?) throws -> [AuditEntry] {
        var sql = "SELECT time, client, workflow_id, project_id, job_id, upstream_status, request_id FROM audit WHERE time >= ?1"
        var values: [Value] = [.real(since)]
        if let client {
            sql += " AND client = ?2"
            values.append(.text(client))
        }
        return try rows(sql + " ORDER BY id", values) { statement in
            func text(_ column: Int32) -> String? { sqlite3_column_text(statement, column).map { String(cString: $0) } }
            return AuditEntry(time: sqlite3_column_double(statement, 0), client: text(1) ?? "", workflowID: text(2) ?? "",
                              projectID: text(3) ?? "", jobID: text(4), upstreamStatus: Int(sqlite3_column_int(statement, 5)),
                              requestID: text(6) ?? "")
        }
    }
}
