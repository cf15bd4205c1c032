import Foundation
import PixxelSim
@testable import ProxyServer
import Testing

/// The operator's view (`GET /admin/`, `/admin/stats`, `pixxel-proxy status`) shows only what
/// happened: refused requests write nothing, odd figures and hostile text cannot drive the
/// terminal, and the stats are never stored by a cache.
@Suite struct OperatorViewTests {
    /// The busiest-workflows table, once full (a long-running proxy has seen 512 workflows),
    /// resets a newcomer to 1 and evicts the quietest: two workflows that become busy at the
    /// same time (a client polling two jobs in turn) evict each other on every request and
    /// never show, however busy they get.
    @Test func twoNewBusyWorkflowsShowOnceTheTableIsFull() {
        var stats = OperatorStats()
        for index in 0..<OperatorStats.maxWorkflows {
            for _ in 0..<3 { stats.answered(at: 1, hit: false, client: "c", workflow: "old-\(index)") }
        }
        for _ in 0..<100 {
            stats.answered(at: 1, hit: false, client: "c", workflow: "new-a")
            stats.answered(at: 1, hit: false, client: "c", workflow: "new-b")
        }
        let top = stats.busiestWorkflows(2)
        #expect(Set(top.map(\.id)) == ["new-a", "new-b"], "200 requests against 3 each: \(top)")
    }

    /// Requests refused with 401 (no token, a wrong token) or 403 (a read-only token creating a
    /// job) are counted in the busiest workflows: anyone who can reach the port writes the
    /// workflow ids the operator reads, and can push the real ones out of the ten shown.
    @Test func refusedRequestsDoNotWriteTheBusiestWorkflows() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)")
        let spoof = "SECURITY-NOTICE-rotate-all-tokens-at-evil.example"
        for _ in 0..<20 {
            #expect(try proxy.get("/v0/workflows/\(spoof)/jobs", token: nil).status == 401)
            #expect(try proxy.get("/v0/workflows/\(spoof)/jobs/j1", token: "Bearer not-a-token").status == 401)
            #expect(try proxy.request("POST", "/v0/workflows/\(spoof)/jobs", token: proxy.readToken,
                                      headers: [("Content-Type", "application/json")], body: Array("{}".utf8)).status == 403)
        }
        let stats = try #require(try proxy.get("/admin/stats", token: proxy.adminToken).json)
        let ids = (stats["workflows"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }
        #expect(!ids.contains(spoof), "refused requests fill the operator's busiest workflows: \(ids)")
        await proxy.stop()
    }

    /// Every text field of the terminal view goes through `printable` except the time of an
    /// upstream error: an `/admin/stats` answer (a wrong `--url`, a man in the middle on plain
    /// HTTP) drives the operator's terminal through it (title, screen clear, colours, OSC 52).
    @Test func theTimeOfAnUpstreamErrorCannotDriveTheTerminal() {
        let stats: [String: Any] = [
            "recent_upstream_errors": [["at": "2026-12-01T\u{1B}]2;x\u{07}\u{1B}[2J", "route": "/v0/*", "outcome": "503"]],
        ]
        let text = StatusReport.render(stats, url: "http://127.0.0.1:8787")
        #expect(!text.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" }, "control bytes in:\n\(text.debugDescription)")
    }

    /// `pixxel-proxy status` against a server that answers a JSON object with numbers out of
    /// the proxy's ranges (negative, huge): the renderer traps (array index, String(repeating:)
    /// with a negative count, Int(Double) out of range, Int overflow in a sum) and the command
    /// dies on a signal instead of printing the figures or an error.
    @Test(arguments: [
        #"{"series":{"requests":[-3,1]}}"#,
        #"{"memory":{"entries":1,"bytes":-1,"budget_bytes":10}}"#,
        #"{"budget":{"requests_per_second":1,"tokens":1e300,"burst":1}}"#,
        #"{"series":{"requests":[9223372036854775807,9223372036854775807]}}"#,
        #"{"disk":{"entries":1,"bytes":-1e300,"budget_bytes":0}}"#,
    ])
    func theStatusCommandSurvivesOddNumbers(body: String) throws {
        let server = try FakeUpstream { _ in FakeUpstream.json(200, body) }
        defer { server.stop() }
        let directory = TemporaryDirectory()
        let tokenFile = directory.file("admin-token", "pxp_whatever\n")
        let run = try ProcessTests.run(["status", "--url", "http://127.0.0.1:\(server.port)", "--token-file", tokenFile])
        #expect(run.status == 0 || run.status == 1, "status \(run.status) for \(body): \(run.stderr.suffix(400))")
        #expect(!run.stderr.contains("Fatal error"), "\(body): \(run.stderr.suffix(400))")
    }
    /// The page is sent with `Cache-Control: no-store`, but the figures it reads are not: the
    /// client names, workflow ids and budget in `/admin/stats` carry no caching directive at
    /// all, so whatever reads them with a plain GET (a browser tab, a caching forward proxy
    /// configured to cache authorized answers, a tool's HTTP cache) may keep them.
    @Test func theStatsTheOperatorReadsAreNeverStored() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)")
        let stats = try proxy.get("/admin/stats", token: proxy.adminToken)
        #expect(stats.status == 200)
        #expect(stats.header("Cache-Control")?.contains("no-store") == true, "Cache-Control: \(stats.header("Cache-Control") ?? "absent")")
        await proxy.stop()
    }
    /// The page's hit ratio "in the last minute" (and its chart, and the terminal view's) is
    /// `series.hits / series.requests`, and `requests` counts every answer: a load balancer's
    /// `/healthz`, Prometheus' scrape, a 401, and the page's own poll of `/admin/stats` all
    /// count as requests not answered from the cache. With only cache traffic in the minute it
    /// must agree with the lookups' ratio (`hit_ratio`); here it shows about a third of it.
    @Test func theLastMinuteHitRatioCountsOnlyCacheLookups() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let clock = ManualClock()
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)", clock: clock)
        let list = "/v0/workflows/\(sim.workflowIDs[0])/jobs"
        for _ in 0..<4 { #expect(try proxy.get(list, token: proxy.readToken).status == 200) }
        for _ in 0..<4 { #expect(try proxy.get("/healthz", token: nil).status == 200) }
        #expect(try proxy.get("/admin/stats", token: proxy.adminToken).status == 200)
        clock.advance(1)
        let stats = try #require(try proxy.get("/admin/stats", token: proxy.adminToken).json)
        let series = try #require(stats["series"] as? [String: [Int]])
        // (Fixed with a per-second `lookups` series, the page's and the terminal's base for the ratio.)
        let hits = (series["hits"] ?? []).suffix(60).reduce(0, +), requests = (series["lookups"] ?? []).suffix(60).reduce(0, +)
        let sinceStart = try #require(stats["hit_ratio"] as? Double)
        #expect(hits == 3 && sinceStart == 0.75)
        #expect(requests > 0 && Double(hits) / Double(requests) == sinceStart,
                "the last minute shows \(hits)/\(requests) while every lookup in it was \(sinceStart)")
        await proxy.stop()
    }
    /// `printable` keeps Unicode's bidirectional controls: a name from an `/admin/stats` answer
    /// with U+202E (right-to-left override) or U+2067 (right-to-left isolate) reverses the rest
    /// of its line in a terminal that applies bidi (VTE, Konsole, mlterm), so the counts and the
    /// names after it read differently from what they are.
    @Test func theTerminalViewDropsBidiControls() {
        let stats: [String: Any] = [
            "clients": ["a\u{202E}9 nimda": 1, "b\u{2067}x": 2],
            "workflows": [["id": "w\u{202D}1\u{200F}", "requests": 3]],
        ]
        let text = StatusReport.render(stats, url: "http://127.0.0.1:8787")
        let bidi: ClosedRange<UInt32> = 0x202A...0x202E, isolates: ClosedRange<UInt32> = 0x2066...0x2069
        #expect(!text.unicodeScalars.contains { bidi.contains($0.value) || isolates.contains($0.value) || $0.value == 0x200E || $0.value == 0x200F },
                "bidi controls reach the terminal: \(text.unicodeScalars.filter { $0.value > 0x2000 && $0.value < 0x2070 }.map { String($0.value, radix: 16) })")
    }
}
