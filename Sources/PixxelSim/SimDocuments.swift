import Foundation

/// The JSON documents the simulated API answers with, shaped like Pixxel's documentation, with
/// a few fields the documentation does not list (a cache must pass them through).
enum SimDocuments {
    static func timestamp(_ seconds: Double, offsetMinutes: Int) -> String {
        let shifted = Date(timeIntervalSince1970: seconds + Double(offsetMinutes * 60))
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let parts = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second, .nanosecond], from: shifted)
        let micros = (parts.nanosecond ?? 0) / 1000
        func pad(_ value: Int, _ width: Int) -> String { String(value).leftPadded(width) }
        let zone: String
        if offsetMinutes == 0 { zone = "Z" } else {
            let absolute = abs(offsetMinutes)
            zone = (offsetMinutes > 0 ? "+" : "-") + pad(absolute / 60, 2) + ":" + pad(absolute % 60, 2)
        }
        return "\(pad(parts.year!, 4))-\(pad(parts.month!, 2))-\(pad(parts.day!, 2))T\(pad(parts.hour!, 2)):\(pad(parts.minute!, 2)):\(pad(parts.second!, 2)).\(pad(micros, 6))\(zone)"
    }

    static func listItem(_ job: SimJob, now: Double) -> [String: Any] {
        let status = job.status(at: now)
        let finished = status == "completed" || status == "failed"
        return [
            "id": job.id,
            "workflow_id": job.workflowID,
            "created_by": job.createdBy,
            "created_at": timestamp(job.createdAt, offsetMinutes: job.utcOffsetMinutes),
            "updated_at": timestamp(job.updatedAt(at: now), offsetMinutes: job.utcOffsetMinutes),
            // Nullable, as the create-job page documents: null while the job has not finished.
            "finished_at": finished ? timestamp(job.finishedAt, offsetMinutes: job.utcOffsetMinutes) : NSNull(),
            "status": status,
            "progress": "\(job.progress(at: now))%",
            "cost": job.cost,
            "estimated_duration": Int(job.pendingSeconds + job.runningSeconds),
            "time_taken": finished ? "\(Int(job.runningSeconds) / 60)m \(Int(job.runningSeconds) % 60)s" : "",
            "x_region": "ap-south-1",
        ]
    }

    static func detail(_ job: SimJob, now: Double) -> [String: Any] {
        var document = listItem(job, now: now)
        let status = job.status(at: now)
        let execCreated = job.createdAt + job.pendingSeconds
        document["exec_created_at"] = now >= execCreated ? timestamp(execCreated, offsetMinutes: job.utcOffsetMinutes) : ""
        document["exec_updated_at"] = document["updated_at"]
        document["spec"] = [1, 4, 9]
        document["val_errors"] = status == "failed"
            ? [["from": "block-ingest", "to": "block-ndvi", "err": "band mismatch", "reason": "expected 150 bands", "component_name": "ndvi"]]
            : [[String: Any]]()
        document["tasks"] = [[
            "id": "task-\(job.id.prefix(8))",
            "name": "ndvi",
            "status": status,
            "progress": job.progress(at: now),
            "created_at": document["created_at"]!,
            "updated_at": document["updated_at"]!,
            "finished_at": document["finished_at"]!,
            "estimated_time_duration": Int(job.runningSeconds),
            "time_taken": document["time_taken"]!,
            "state_msg": status,
            "info_logs": [1, 2],
            "inputs": [7],
            "result": status == "completed" ? [42] : [Int](),
            "depends_on": [String](),
            "disclaimer": ["simulated"],
            "block_info": ["id": "blk-ndvi", "name": "NDVI", "version": "1.2.0"],
            "err_msg": status == "failed" ? "band mismatch" : "",
            "failure_type": status == "failed" ? "validation" : "",
            "x_worker": "sim-worker-1",
        ]]
        document["x_project_id"] = job.projectID
        return document
    }

    static func encode(_ object: Any) -> [UInt8] {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return Array(data)
    }

    static func error(_ code: String, _ message: String) -> [UInt8] {
        encode(["error": ["code": code, "message": message, "details": NSNull()]])
    }
}
