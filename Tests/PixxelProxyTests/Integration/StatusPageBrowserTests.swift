import Foundation
import PixxelSim
import Testing

/// The status page in a real browser. The real `pixxel-proxy` fronts the simulator, a scripted
/// set of requests goes through it, then `Tests/StatusPageBrowser/check-status-page.mjs` opens
/// `/admin/` in headless Chromium (the DevTools protocol over a pipe), types a token the way a
/// person would, and checks every figure the page shows against `/admin/stats`. This test then
/// checks that those figures are the scripted traffic. The screenshot is left in `.build/` for
/// a person to look at; its path is printed.
@Suite(.needs(.chromium, .node)) struct StatusPageBrowserTests {
    static let screenshot = ShippedConfigTests.repository + "/.build/status-page/status-page.png"
    static let outageScreenshot = ShippedConfigTests.repository + "/.build/status-page/status-page-outage.png"
    static let redisDownScreenshot = ShippedConfigTests.repository + "/.build/status-page/status-page-redis-down.png"
    static let diskFullScreenshot = ShippedConfigTests.repository + "/.build/status-page/status-page-disk-full.png"

    @Test func aPersonSignsInAndSeesWhatTheStatsSay() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let directory = TemporaryDirectory()
        let clients = directory.path + "/clients"
        func tokenFile(_ name: String, scopes: String) throws -> String {
            let token = try ProcessTests.run(["token", "add", name, "--scopes", scopes, "--clients-file", clients]).stdout
            return directory.file(name + ".token", token)
        }
        let reader = try tokenFile("reader", scopes: "read"), writer = try tokenFile("writer", scopes: "read,write")
        let bystander = try tokenFile("bystander", scopes: "read")
        let operatorToken = try tokenFile("operator", scopes: "admin"), checker = try tokenFile("checker", scopes: "admin")
        // A budget, so the page has tokens to show rather than "unlimited".
        let (proxy, port) = try ProcessTests.startServe(simPort: simPort, clients: clients, directory: directory,
                                                        extraEnvironment: ["PIXXEL_PROXY_UPSTREAM_REQUESTS_PER_SECOND": "20"])
        defer {
            proxy.terminate()
            proxy.waitUntilExit()
        }

        // The scripted traffic: 6 requests by `reader` and 3 by `writer`, 7 on the first workflow
        // and 2 on the second, one of them an upstream error.
        func get(_ target: String, _ file: String) throws -> RawResponse {
            let token = try String(contentsOfFile: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            return try RawHTTPClient.request(port: port, target: target, headers: [("Authorization", token)])
        }
        let (first, second) = ("/v0/workflows/\(sim.workflowIDs[0])", "/v0/workflows/\(sim.workflowIDs[1])")
        let list = try get(first + "/jobs", reader)
        let jobs = try #require(list.json?["jobs"] as? [[String: Any]])
        let (job, other) = (try #require(jobs.first?["id"] as? String), try #require(jobs.last?["id"] as? String))
        for _ in 0..<3 { #expect(try get(first + "/jobs", reader).status == 200) }
        for _ in 0..<2 { #expect(try get(first + "/jobs/\(job)", reader).status == 200) }
        for _ in 0..<2 { #expect(try get(second + "/jobs", writer).status == 200) }
        sim.faults.errorRate = 1
        #expect(try get(first + "/jobs/\(other)", writer).status == 500)
        sim.faults.errorRate = 0

        let run = try runProcess(try RequiredTool.node.require(), [
            ShippedConfigTests.repository + "/Tests/StatusPageBrowser/check-status-page.mjs",
            "--url", "http://127.0.0.1:\(port)", "--token-file", operatorToken, "--check-token-file", checker,
            "--wrong-token-file", bystander, "--screenshot", Self.screenshot, "--chromium", try RequiredTool.chromium.require(),
            "--polling-clients", "operator,checker", "--timeout", "90",
            // Then the outage: the proxy killed, the page greys its figures and says since when.
            "--outage-pid", String(proxy.processIdentifier), "--outage-screenshot", Self.outageScreenshot,
        ])
        let report = try #require(run.output.firstRange(of: "{\n").map { run.output[$0.lowerBound...] }
            .flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }, "no report: \(run.output)")
        #expect(run.status == 0 && report["ok"] as? Bool == true, "\(report["error"] ?? run.output)")
        print("status page screenshots: \(Self.screenshot), \(Self.outageScreenshot)")
        #expect((report["steps"] as? [String])?.contains { $0.contains("greyed its figures") } == true, "\(report)")

        // What the person saw is the scripted traffic.
        let figures = try #require(report["figures"] as? [String: Any])
        let clientRows = try #require(figures["clients"] as? [[String]])
        let counts = Dictionary(clientRows.map { ($0[0], $0.count > 1 ? $0[1] : "") }) { first, _ in first }
        #expect(counts["reader"] == "6" && counts["writer"] == "3" && counts["bystander"] == "1", "\(clientRows)")
        #expect(figures["workflows"] as? [[String]] == [[sim.workflowIDs[0], "7"], [sim.workflowIDs[1], "2"]])
        let errors = try #require(figures["errors"] as? [[String]])
        #expect(errors.count == 1 && errors.first?.dropFirst().elementsEqual(["/v0/workflows/{workflow_id}/jobs/{job_id}", "500"]) == true,
                "\(errors)")
    }

    /// With Redis configured and not reachable, the page leads with a degraded verdict that says
    /// so (the page showed nothing of Redis before).
    @Test func withRedisDownThePageLeadsWithADegradedVerdictSayingSo() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let directory = TemporaryDirectory()
        let clients = directory.path + "/clients"
        func tokenFile(_ name: String) throws -> String {
            let token = try ProcessTests.run(["token", "add", name, "--scopes", "admin", "--clients-file", clients]).stdout
            return directory.file(name + ".token", token)
        }
        let operatorToken = try tokenFile("operator"), checker = try tokenFile("checker")
        // Nothing listens on port 9: the join is refused at once and the instance acts alone.
        let (proxy, port) = try ProcessTests.startServe(simPort: simPort, clients: clients, directory: directory,
                                                        extraEnvironment: ["PIXXEL_PROXY_SHARED_REDIS_URL": "redis://127.0.0.1:9/0"])
        defer {
            proxy.terminate()
            proxy.waitUntilExit()
        }
        try Self.checkPageLeadsWithVerdict("DEGRADED", reason: "Redis is configured but not reachable", port: port, tokenFile: operatorToken,
                                           checkTokenFile: checker, pollingClients: "operator,checker", screenshot: Self.redisDownScreenshot)
    }

    /// Runs the browser check against the page on `port`, which must lead with `verdict` and
    /// `reason`, and leaves a screenshot at `screenshot`.
    static func checkPageLeadsWithVerdict(_ verdict: String, reason: String, port: UInt16, tokenFile: String, checkTokenFile: String,
                                          pollingClients: String, screenshot: String) throws {
        let run = try runProcess(try RequiredTool.node.require(), [
            ShippedConfigTests.repository + "/Tests/StatusPageBrowser/check-status-page.mjs",
            "--url", "http://127.0.0.1:\(port)", "--token-file", tokenFile, "--check-token-file", checkTokenFile,
            "--screenshot", screenshot, "--chromium", try RequiredTool.chromium.require(),
            "--polling-clients", pollingClients, "--timeout", "90",
            "--expect-verdict", verdict, "--expect-reason", reason,
        ])
        let report = try #require(run.output.firstRange(of: "{\n").map { run.output[$0.lowerBound...] }
            .flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }, "no report: \(run.output)")
        #expect(run.status == 0 && report["ok"] as? Bool == true, "\(report["error"] ?? run.output)")
        print("status page screenshot: \(screenshot)")
    }

    /// With the disk under the store full, the page leads with a failing verdict that names it
    /// (it showed nothing of the store before). The store's page limit (SQLite's
    /// max_page_count) makes its writes fail with SQLITE_FULL, the error a full filesystem
    /// gives; `scripts/status-page-disk-full.sh` shows the same on a real 1 MB tmpfs as root.
    @Test func withTheDiskFullThePageLeadsWithAFailingVerdictSayingSo() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let directory = TemporaryDirectory()
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)") { $0.cacheDirectory = directory.path + "/cache" }
        try proxy.fillTheStoreAsAFullDiskWould(workflow: sim.workflowIDs[0])
        // One admin token types into the page and checks its figures: both are the client "admin".
        let adminToken = directory.file("admin.token", proxy.adminToken)
        try Self.checkPageLeadsWithVerdict("FAILING", reason: "writes to the cache store fail (disk full)", port: proxy.port, tokenFile: adminToken,
                                           checkTokenFile: adminToken, pollingClients: "admin", screenshot: Self.diskFullScreenshot)
        await proxy.stop()
    }

    /// A token pasted with a character a header cannot carry (a zero-width space, which rich
    /// text editors and chat clients insert; `trim()` keeps it) makes `fetch` throw before any
    /// request is sent. The page takes that for "the proxy does not answer", keeps the token in
    /// sessionStorage and never asks again: every reload repeats it, and only closing the tab
    /// gets the form back, while the proxy answers fine.
    @Test    func aTokenFetchCannotSendIsRefusedAndAskedAgain() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)")
        let directory = TemporaryDirectory()
        let driver = ShippedConfigTests.repository + "/Tests/StatusPageBrowser/chromium.mjs"
        let script = directory.file("pasted-token.mjs", """
        import { Chromium } from \(String(reflecting: URL(fileURLWithPath: driver).absoluteString));
        const browser = await Chromium.launch({ executable: \(String(reflecting: try RequiredTool.chromium.require())) });
        const deadline = Date.now() + \(Int(awaitedSeconds * 1000));
        let report = { ok: false };
        try {
          const page = await browser.openPage();
          await page.navigate('http://127.0.0.1:\(proxy.port)/admin/');
          const state = () => page.evaluate(`({ login: !document.getElementById('login').hidden,
            err: document.getElementById('err').textContent, kept: sessionStorage.getItem('pixxel-proxy-admin-token') })`);
          while (!(await state()).login && Date.now() < deadline) await new Promise(r => setTimeout(r, 100));
          // The admin token as pasted from a chat message: a zero-width space at its end.
          await page.evaluate(`document.getElementById('token').value = \(String(reflecting: proxy.adminToken)) + '\\u200b'`);
          await page.click('#login button');
          // Given time to poll a few times: the form must come back, with the token dropped.
          let last;
          while (Date.now() < deadline) {
            last = await state();
            if (last.login && last.kept === null) { report = { ok: true, last }; break; }
            await new Promise(r => setTimeout(r, 100));
          }
          if (!report.ok) report = { ok: false, last };
          await page.reload();
          report.afterReload = await state();
        } catch (error) { report = { ok: false, error: error.message }; }
        await browser.close();
        console.log(JSON.stringify(report));
        process.exit(report.ok ? 0 : 1);
        """)
        let run = try runProcess(try RequiredTool.node.require(), [script])
        #expect(run.status == 0, "the page stays stuck: \(run.output)")
        await proxy.stop()
    }
}
