import Foundation

/// One simulated job. Its status is a pure function of time: pending, then running (progress
/// advancing in steps, each step a new `updated_at`), then completed or failed.
struct SimJob {
    let id: String
    let workflowID: String
    let projectID: String
    let createdBy: String
    let createdAt: Double
    let pendingSeconds: Double
    let runningSeconds: Double
    let succeeds: Bool
    let cost: Int
    /// Minutes east of UTC used when writing this job's timestamps (the API may send offsets).
    let utcOffsetMinutes: Int
    /// A running job's `updated_at` moves on this often (its progress steps).
    let progressStepSeconds: Double

    func status(at now: Double) -> String {
        if now < createdAt + pendingSeconds { return "pending" }
        if now < createdAt + pendingSeconds + runningSeconds { return "running" }
        return succeeds ? "completed" : "failed"
    }

    var finishedAt: Double { createdAt + pendingSeconds + runningSeconds }

    func updatedAt(at now: Double) -> Double {
        let started = createdAt + pendingSeconds
        if now < started { return createdAt }
        if now >= finishedAt { return finishedAt }
        return started + ((now - started) / progressStepSeconds).rounded(.down) * progressStepSeconds
    }

    func progress(at now: Double) -> Int {
        switch status(at: now) {
        case "pending": return 0
        case "running": return min(99, Int((updatedAt(at: now) - createdAt - pendingSeconds) / runningSeconds * 100))
        default: return 100
        }
    }
}

/// The simulator's data: workflows and their jobs, seeded deterministically.
public final class SimJobStore {
    private(set) var workflows: [(id: String, jobs: [SimJob])] = []
    private var random: SeededGenerator
    let pendingSeconds: Double
    let runningSeconds: Double
    let progressStepSeconds: Double
    static let users = ["user-analyst-01", "user-pipeline-bot", "user-ops-07"]

    /// Seeds `workflowCount` workflows of `jobsPerWorkflow` jobs created over the three days
    /// before `now`; the newest few are still pending or running.
    public init(workflowCount: Int, jobsPerWorkflow: Int, pendingSeconds: Double, runningSeconds: Double,
                progressStepSeconds: Double = 5, seed: UInt64, now: Double) {
        random = SeededGenerator(seed: seed)
        self.progressStepSeconds = progressStepSeconds
        self.pendingSeconds = pendingSeconds
        self.runningSeconds = runningSeconds
        for _ in 0..<workflowCount {
            let workflowID = random.uuid()
            var jobs: [SimJob] = []
            for index in 0..<jobsPerWorkflow {
                let age = Double(jobsPerWorkflow - index) / Double(max(1, jobsPerWorkflow)) * 3 * 86_400
                let isRecent = index >= jobsPerWorkflow - 3
                let createdAt = isRecent ? now - Double(jobsPerWorkflow - index) * 2 : now - age - 600
                jobs.append(makeJob(workflowID: workflowID, projectID: "proj-\(workflowID.prefix(8))", createdAt: createdAt.rounded(.down) + 0.25))
            }
            workflows.append((workflowID, jobs))
        }
    }

    public var workflowIDs: [String] { workflows.map(\.id) }

    /// Every job's schedule, from which each `updated_at` it will ever have follows: the
    /// truth a soak or an economy run measures staleness against.
    func truth() -> [[String: Any]] {
        workflows.flatMap { workflow in
            workflow.jobs.map { job in
                ["id": job.id, "workflow_id": job.workflowID, "created_at": job.createdAt,
                 "started_at": job.createdAt + job.pendingSeconds, "finished_at": job.finishedAt, "step_seconds": job.progressStepSeconds]
            }
        }
    }

    func jobs(in workflowID: String) -> [SimJob]? {
        workflows.first { $0.id == workflowID }?.jobs
    }

    func createJob(workflowID: String, projectID: String, createdBy: String, now: Double) -> SimJob? {
        guard let index = workflows.firstIndex(where: { $0.id == workflowID }) else { return nil }
        let job = makeJob(workflowID: workflowID, projectID: projectID, createdAt: now, createdBy: createdBy)
        workflows[index].jobs.append(job)
        return job
    }

    private func makeJob(workflowID: String, projectID: String, createdAt: Double, createdBy: String? = nil) -> SimJob {
        let offsets = [0, 0, 0, 330, -300]
        return SimJob(
            id: random.uuid(), workflowID: workflowID, projectID: projectID,
            createdBy: createdBy ?? Self.users[Int(random.next() % UInt64(Self.users.count))],
            createdAt: createdAt, pendingSeconds: pendingSeconds, runningSeconds: runningSeconds,
            succeeds: random.next() % 5 != 0, cost: Int(random.next() % 900) + 100,
            utcOffsetMinutes: offsets[Int(random.next() % UInt64(offsets.count))], progressStepSeconds: progressStepSeconds)
    }
}

/// A small deterministic PRNG (SplitMix64), so every run of the simulator has the same ids.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func uuid() -> String {
        let a = next(), b = next()
        let hex = String(a, radix: 16).leftPadded(16) + String(b, radix: 16).leftPadded(16)
        let c = Array(hex)
        return "\(String(c[0..<8]))-\(String(c[8..<12]))-4\(String(c[13..<16]))-a\(String(c[17..<20]))-\(String(c[20..<32]))"
    }
}

extension String {
    func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
