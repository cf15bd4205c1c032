import Foundation
import PixxelSim
import Testing

/// The status page in a real browser. The real `pixxel-proxy` fronts the simulator, a scripted
/// set of requests goes through it, then `Tests/StatusPageBrowser/check-status-page.mjs` opens
/// `/admin/` in headless Chromium (the DevTools protocol over a pipe), types a token the way a
/// person would, and checks every figure the page shows against `/admin/stats`. This test then
/// checks that those figures are the scripted traffic. The screenshot is left in `.build/` for
/// a person to look at; its path is printed.
@Suite struct StatusPageBrowserTests {
    static let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }
    static let node = ["/usr/bin/node", "/usr/local/bin/node"].first { FileManager.default.isExecutableFile(atPath: $0) }
    static let screenshot = ShippedConfigTests.repository + "/.build/status-page/status-page.png"

    @Test(.enabled(if: chromium != nil && node != nil,
                   "the browser test of /admin/ needs chromium and node; scripts/install-deps.sh could not install them here"))
    func aPersonSignsInAndSeesWhatTheStatsSay() async throws {
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

        let run = try runProcess(try #require(Self.node), [
            ShippedConfigTests.repository + "/Tests/StatusPageBrowser/check-status-page.mjs",
            "--url", "http://127.0.0.1:\(port)", "--token-file", operatorToken, "--check-token-file", checker,
            "--wrong-token-file", bystander, "--screenshot", Self.screenshot, "--chromium", try #require(Self.chromium),
            "--polling-clients", "operator,checker", "--timeout", "90",
        ])
        let report = try #require(run.output.firstRange(of: "{\n").map { run.output[$0.lowerBound...] }
            .flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }, "no report: \(run.output)")
        #expect(run.status == 0 && report["ok"] as? Bool == true, "\(report["error"] ?? run.output)")
        print("status page screenshot: \(Self.screenshot)")

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
}
