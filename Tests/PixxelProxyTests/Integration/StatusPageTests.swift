import Foundation
import PixxelSim
@testable import ProxyServer
import Testing

/// The operator's view: `GET /admin/` (no data, no token), the figures `/admin/stats` gains for
/// it, and `pixxel-proxy status`.
@Suite struct StatusPageTests {
    @Test func thePageHoldsNoDataAndAllowsOnlyItsOwnScript() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)")
        for target in ["/admin/", "/admin"] {
            let page = try proxy.get(target, token: nil)
            #expect(page.status == 200 && page.header("Content-Type") == "text/html; charset=utf-8")
            let policy = try #require(page.header("Content-Security-Policy"))
            #expect(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'") && policy.contains("frame-ancestors 'none'"))
            // The inline script and style are the ones the policy's hashes name.
            #expect(policy.contains("'sha256-\(StatusPage.hash(StatusPage.script))'") && page.text.contains("<script>\(StatusPage.script)</script>"))
            #expect(page.header("Cache-Control") == "no-store" && page.header("X-Frame-Options") == "DENY")
            #expect(page.text.contains("sessionStorage") && !page.text.contains("localStorage") && !page.text.contains("innerHTML"))
        }
        #expect(try proxy.request("POST", "/admin/", token: proxy.adminToken).status == 405)
        await proxy.stop()
    }

    /// A wrong token's 401 was counted as "no token": the two are told apart.
    @Test func aWrongTokenIsCountedApartFromNoToken() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)")
        let list = "/v0/workflows/\(sim.workflowIDs[0])/jobs"
        #expect(try proxy.get(list, token: nil).status == 401)
        for _ in 0..<2 { #expect(try proxy.get(list, token: "Bearer pxp_not-a-token").status == 401) }
        let clients = try #require(try proxy.get("/admin/stats", token: proxy.adminToken).json?["clients"] as? [String: Int])
        #expect(clients["-"] == 1 && clients["?"] == 2, "\(clients)")
        await proxy.stop()
    }

    @Test func statsCarryTheSeriesClientsWorkflowsAndBudget() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let clock = ManualClock()
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)", clock: clock) { $0.upstreamRequestsPerSecond = 5 }
        let list = "/v0/workflows/\(sim.workflowIDs[0])/jobs"
        for _ in 0..<3 { _ = try proxy.get(list, token: proxy.readToken) }
        _ = try proxy.get("/v0/workflows/\(sim.workflowIDs[1])/jobs", token: proxy.writeToken)
        clock.advance(1)
        let stats = try #require(try proxy.get("/admin/stats", token: proxy.adminToken).json)
        let series = try #require(stats["series"] as? [String: [Int]])
        #expect(series["requests"]?.count == OperatorStats.window - 1)
        #expect(series["requests"]?.last == 4 && series["hits"]?.last == 2 && series["upstream_calls"]?.last == 2)
        #expect(stats["clients"] as? [String: Int] == ["reader": 3, "writer": 1])
        let workflows = try #require(stats["workflows"] as? [[String: Any]])
        #expect(workflows.first?["id"] as? String == sim.workflowIDs[0] && workflows.first?["requests"] as? Int == 3)
        let budget = try #require(stats["budget"] as? [String: Any])
        #expect(budget["requests_per_second"] as? Double == 5 && budget["queued"] as? Int == 0)
        #expect((stats["recent_upstream_errors"] as? [Any])?.isEmpty == true)
        await proxy.stop()
    }

    @Test func theTerminalViewReadsARunningProxy() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)")
        _ = try proxy.get("/v0/workflows/\(sim.workflowIDs[0])/jobs", token: proxy.readToken)
        let tokenFile = proxy.directory.file("admin-token", proxy.adminToken + "\n")
        let run = try ProcessTests.run(["status", "--url", "http://127.0.0.1:\(proxy.port)", "--token-file", tokenFile])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains("pixxel-proxy 0.1.0 at http://127.0.0.1:\(proxy.port)") && run.stdout.contains("hit ratio"))
        #expect(run.stdout.contains("health       HEALTHY") || run.stdout.contains("health       DEGRADED"), "the verdict first: \(run.stdout)")
        #expect(run.stdout.contains("reader 1"))
        let readerFile = proxy.directory.file("read-token", proxy.readToken)
        let refused = try ProcessTests.run(["status", "--url", "http://127.0.0.1:\(proxy.port)", "--token-file", readerFile])
        #expect(refused.status == 1 && refused.stderr.contains("an admin token is needed"))
        // Without --url, the listen address the configuration names (found by review: 8787
        // whatever the installed configuration said).
        let config = proxy.directory.file("p.yaml", "listen:\n  host: 127.0.0.1\n  port: \(proxy.port)\n")
        let configured = try ProcessTests.run(["status", "--config", config, "--token-file", tokenFile])
        #expect(configured.status == 0 && configured.stdout.contains("at http://127.0.0.1:\(proxy.port)"), "\(configured.stdout) \(configured.stderr)")
        // The token from its variable, which is no setting (found by review: "unknown environment variable").
        let fromVariable = try ProcessTests.run(["status", "--config", config], environment: ["PIXXEL_PROXY_ADMIN_TOKEN": proxy.adminToken])
        #expect(fromVariable.status == 0 && fromVariable.stdout.contains("at http://127.0.0.1:\(proxy.port)"), "\(fromVariable.stdout) \(fromVariable.stderr)")
        await proxy.stop()
    }
}
