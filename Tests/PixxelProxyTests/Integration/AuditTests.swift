import Foundation
import PixxelSim
import Testing
@testable import JobCache
@testable import ProxyServer

@Suite struct AuditTests {
    @Test func everyCreationIsRecordedDurablyAndListable() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let shared = TemporaryDirectory()
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)") { $0.cacheDirectory = shared.path }
        let workflow = sim.workflowIDs[0]
        let created = try proxy.request("POST", "/v0/workflows/\(workflow)/jobs?project_id=proj%20one", token: proxy.writeToken,
                                        headers: [("X-Request-Id", "audit-1")])
        let jobID = try #require(created.json?["id"] as? String)
        sim.faults.errorRate = 1
        #expect(try proxy.request("POST", "/v0/workflows/\(workflow)/jobs?project_id=p2", token: proxy.adminToken).status == 500)
        sim.faults.errorRate = 0
        #expect(try proxy.request("POST", "/v0/workflows/\(workflow)/jobs", token: proxy.writeToken).status == 400, "not sent: not audited")
        await proxy.stop()

        let environment = ["PIXXEL_PROXY_CACHE_DIRECTORY": shared.path]
        let all = try ProcessTests.run(["audit"], environment: environment)
        #expect(all.status == 0, "\(all.stderr)")
        let rows = all.stdout.split(separator: "\n").dropFirst().map { $0.split(separator: "\t").map(String.init) }
        #expect(rows.count == 2)
        #expect(rows.first.map { Array($0[1...6]) } == ["writer", workflow, "proj one", jobID, "200", "audit-1"])
        #expect(rows.last.map { [$0[1], $0[4], $0[5]] } == ["admin", "-", "500"])
        let writerOnly = try ProcessTests.run(["audit", "--client", "writer", "--since", "1h"], environment: environment)
        #expect(writerOnly.stdout.split(separator: "\n").count == 2)
        let future = try ProcessTests.run(["audit", "--since", "2999-01-01"], environment: environment)
        #expect(future.stdout.split(separator: "\n").count == 1)
        #expect(try ProcessTests.run(["audit", "--since", "whenever"], environment: environment).status == 64)
        // Purging the cache leaves the audit alone.
        _ = try ProcessTests.run(["cache", "purge", "--workflow", workflow], environment: environment)
        #expect(try ProcessTests.run(["audit"], environment: environment).stdout.split(separator: "\n").count == 3)
    }

    /// A creation the upstream answered with a body that is not a JSON object as the contract
    /// has it (a byte-order mark first) but that holds the job: the client gets 502, and the
    /// audit still names the job that was created (decoding the answer once must not lose it).
    @Test func aCreationAnsweredWithAByteOrderMarkIsAuditedWithItsJob() async throws {
        let job = Array([0xEF, 0xBB, 0xBF]) + Array(#"{"id":"job-bom","status":"queued"}"#.utf8)
        let upstream = try FakeUpstream { _ in
            .reply(Array("HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: \(job.count)\r\nConnection: close\r\n\r\n".utf8) + job)
        }
        defer { upstream.stop() }
        let directory = TemporaryDirectory()
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(upstream.port)") { $0.cacheDirectory = directory.path }
        #expect(try proxy.request("POST", "/v0/workflows/w1/jobs?project_id=p", token: proxy.writeToken).status == 502)
        await proxy.stop()
        let audit = try ProcessTests.run(["audit"], environment: ["PIXXEL_PROXY_CACHE_DIRECTORY": directory.path])
        let rows = audit.stdout.split(separator: "\n").dropFirst().map { $0.split(separator: "\t").map(String.init) }
        #expect(rows.map { [$0[4], $0[5]] } == [["job-bom", "201"]], "\(audit.stdout)")
    }

    /// Found by the disk-fault soak: 190 creations answered 200 while the store was full or
    /// read-only had no audit entry anywhere ("audit entry not recorded" named only the request
    /// id). The entry now goes to the journal with every field, and is counted.
    @Test func aCreationTheAuditStoreRefusesIsRecordedInTheJournalWithEveryField() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)")
        let workflow = sim.workflowIDs[0]
        let audit = try #require(proxy.server.audit)
        audit.refuseWrites(true)
        let created = try proxy.request("POST", "/v0/workflows/\(workflow)/jobs?project_id=proj%20one", token: proxy.writeToken,
                                        headers: [("X-Request-Id", "audit-ro")])
        #expect(created.status == 200, "the upstream created the job: the client learns its id")
        let jobID = try #require(created.json?["id"] as? String)
        let line = try #require(proxy.logs.all.first { $0.contains("audit entry written to the journal") }, "\(proxy.logs.all)")
        #expect(line.hasPrefix("critical"))
        for field in ["client=writer", "workflow_id=\(workflow)", "project_id=proj one", "job_id=\(jobID)", "upstream_status=200",
                      "request_id=audit-ro", "audit_time="] {
            #expect(line.contains(field), "\(field) missing: \(line)")
        }
        let metrics = try proxy.get("/metrics", token: proxy.adminToken).text
        #expect(metrics.contains("pixxel_proxy_audit_journal_fallbacks_total 1"))
        // The store takes entries again once it can.
        audit.refuseWrites(false)
        #expect(try proxy.request("POST", "/v0/workflows/\(workflow)/jobs?project_id=p", token: proxy.writeToken).status == 200)
        #expect(proxy.logs.all.filter { $0.contains("audit entry written to the journal") }.count == 1)
        await proxy.stop()
    }
}
