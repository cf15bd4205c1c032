import Foundation
import PixxelSim
import Testing

/// pixxel-sim itself: what the proxy's tests and `make run` rely on.
@Suite struct SimulatorTests {
    func get(_ port: UInt16, _ target: String, key: String? = ProxyHarness.apiKey, method: String = "GET") throws -> RawResponse {
        try RawHTTPClient.request(port: port, method: method, target: target, headers: key.map { [("Authorization", $0)] } ?? [])
    }

    @Test func checksItsOwnAPIKey() throws {
        let (sim, port) = try startSimulator()
        defer { sim.stop() }
        #expect(try get(port, "/v0/workflows/\(sim.workflowIDs[0])/jobs", key: nil).status == 401)
        #expect(try get(port, "/v0/workflows/\(sim.workflowIDs[0])/jobs", key: "wrong").errorCode == "unauthorized")
        #expect(try get(port, "/v0/workflows/\(sim.workflowIDs[0])/jobs").status == 200)
    }

    @Test func jobsMoveFromPendingThroughRunningToAFinalStatus() throws {
        let (sim, port) = try startSimulator { $0.pendingSeconds = 10; $0.runningSeconds = 60 }
        defer { sim.stop() }
        let workflow = sim.workflowIDs[0]
        let created = try get(port, "/v0/workflows/\(workflow)/jobs?project_id=p", method: "POST")
        let id = try #require(created.json?["id"] as? String)
        #expect(created.json?["status"] as? String == "pending")
        let firstUpdate = created.json?["updated_at"] as? String

        sim.advanceClock(by: 30)
        let running = try get(port, "/v0/workflows/\(workflow)/jobs/\(id)").json
        #expect(running?["status"] as? String == "running")
        let runningUpdate = running?["updated_at"] as? String
        #expect(runningUpdate != firstUpdate)

        sim.advanceClock(by: 10)
        #expect(try get(port, "/v0/workflows/\(workflow)/jobs/\(id)").json?["updated_at"] as? String != runningUpdate,
                "updated_at advances while the job runs")

        sim.advanceClock(by: 120)
        let done = try get(port, "/v0/workflows/\(workflow)/jobs/\(id)").json
        #expect(["completed", "failed"].contains(done?["status"] as? String))
        #expect(done?["progress"] as? String == "100%")
        #expect((done?["tasks"] as? [Any])?.isEmpty == false)
        #expect(done?["x_project_id"] as? String == "p", "fields the docs do not list are present")
    }

    @Test func listFiltersFollowTheContract() throws {
        let (sim, port) = try startSimulator()
        defer { sim.stop() }
        let workflow = sim.workflowIDs[0]
        let all = try #require(try get(port, "/v0/workflows/\(workflow)/jobs").json?["jobs"] as? [[String: Any]])
        let first = all[0]
        let byID = try get(port, "/v0/workflows/\(workflow)/jobs?id=\(first["id"] as! String)").json?["jobs"] as? [Any]
        #expect(byID?.count == 1)
        let status = (first["status"] as! String).uppercased()
        let byStatus = try get(port, "/v0/workflows/\(workflow)/jobs?status=\(status)").json?["jobs"] as? [[String: Any]]
        #expect(byStatus?.allSatisfy { ($0["status"] as? String)?.uppercased() == status } == true)
        #expect(try get(port, "/v0/workflows/\(workflow)/jobs?status=a&status=b").status == 400)
        #expect(try get(port, "/v0/workflows/\(workflow)/jobs?created_on=never").status == 400)
        #expect(try get(port, "/v0/workflows/unknown/jobs").status == 404)
    }

    @Test func faultKnobsChangeAtRunTime() throws {
        let (sim, port) = try startSimulator()
        defer { sim.stop() }
        let target = "/v0/workflows/\(sim.workflowIDs[0])/jobs"
        #expect(try get(port, "/_sim/faults?error_rate=1", method: "POST").status == 200)
        #expect(try get(port, target).status == 500)
        _ = try get(port, "/_sim/faults?error_rate=0&rate_429=1&retry_after=9", method: "POST")
        let limited = try get(port, target)
        #expect(limited.status == 429)
        #expect(limited.header("Retry-After") == "9")
        _ = try get(port, "/_sim/faults?rate_429=0&garbage_rate=1", method: "POST")
        #expect(try get(port, target).json == nil)
        _ = try get(port, "/_sim/faults?garbage_rate=0&hang_rate=1", method: "POST")
        #expect(throws: (any Error).self) {
            _ = try RawHTTPClient.request(port: port, target: target, headers: [("Authorization", ProxyHarness.apiKey)], timeoutSeconds: 1)
        }
        _ = try get(port, "/_sim/faults?hang_rate=0", method: "POST")
        #expect(try get(port, target).status == 200)
        #expect(sim.stats.total == 5)
    }
}
