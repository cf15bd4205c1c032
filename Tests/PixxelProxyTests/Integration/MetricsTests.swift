import Foundation
import PixxelSim
import Testing

@Suite struct MetricsTests {
    /// `name{labels} value` lines of a Prometheus text page.
    static func samples(_ text: String) -> [String: Double] {
        var out: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            out[String(line[..<space])] = value
        }
        return out
    }

    @Test func accessCanRequireTheAdminScope() async throws {
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:9") { $0.metricsAccess = "admin" }
        #expect(try proxy.get("/metrics", token: nil).status == 401)
        #expect(try proxy.get("/metrics", token: proxy.readToken).status == 403)
        #expect(try proxy.get("/metrics", token: proxy.adminToken).status == 200)
        await proxy.stop()
    }

    /// Every metric has a `# HELP` line in words (the page had none), and the conventional
    /// build and process series are there.
    @Test func everyMetricIsExplainedAndTheBuildAndProcessAreDescribed() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)")
        _ = try proxy.get("/v0/workflows/\(sim.workflowIDs[0])/jobs", token: proxy.readToken)
        let text = try proxy.get("/metrics", token: proxy.adminToken).text
        let lines = text.split(separator: "\n").map(String.init)
        let typed = lines.filter { $0.hasPrefix("# TYPE ") }.map { $0.split(separator: " ")[2] }
        #expect(typed.count > 40)
        for name in typed {
            let help = lines.first { $0.hasPrefix("# HELP \(name) ") }
            #expect(help != nil && help!.count > "# HELP \(name) ".count + 15 && help!.hasSuffix("."), "\(name): \(help ?? "no HELP")")
        }
        #expect(Set(typed).count == typed.count, "one TYPE per metric")
        // The commit the build was told: make exports it from git, so under `make test` this is
        // HEAD's; a test binary built by a bare `swift build` was told nothing ("unknown"), and
        // one built by make but run by hand carries make's.
        let info = lines.first { $0.hasPrefix("pixxel_proxy_build_info{") } ?? ""
        if let told = ProcessInfo.processInfo.environment["PIXXEL_BUILD_COMMIT"].flatMap({ $0.isEmpty ? nil : $0.lowercased() }) {
            #expect(info == "pixxel_proxy_build_info{version=\"0.1.0\",commit=\"\(told)\"} 1", "\(info)")
        } else {
            #expect(info.wholeMatch(of: #/pixxel_proxy_build_info\{version="0\.1\.0",commit="(unknown|[0-9a-f]{4,40})"\} 1/#) != nil, "\(info)")
        }
        let samples = Self.samples(text)
        #expect((samples["process_cpu_seconds_total"] ?? 0) > 0)
        #expect((samples["process_resident_memory_bytes"] ?? 0) > 1_000_000)
        #expect((samples["process_open_fds"] ?? 0) > 3 && (samples["process_max_fds"] ?? 0) >= (samples["process_open_fds"] ?? 0))
        #expect(abs((samples["process_start_time_seconds"] ?? 0) - Date().timeIntervalSince1970) < 3600)
        await proxy.stop()
    }

    @Test func countsMatchWhatWasSent() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)", clock: ManualClock())
        let list = "/v0/workflows/\(sim.workflowIDs[0])/jobs"
        for _ in 0..<3 { _ = try proxy.get(list, token: proxy.readToken) }          // 1 miss, 2 hits
        _ = try proxy.get(list + "?status=completed", token: proxy.readToken)     // hit
        _ = try proxy.get(list, token: nil)                                        // 401
        _ = try proxy.get(list + "/missing", token: proxy.readToken)              // upstream 404

        let page = try proxy.get("/metrics", token: nil)
        #expect(page.status == 200)
        #expect(page.header("Content-Type")?.hasPrefix("text/plain") == true)
        let text = page.text
        let samples = Self.samples(text)
        let listRoute = #"route="/v0/workflows/{workflow_id}/jobs""#
        #expect(samples.first { $0.key.hasPrefix("pixxel_proxy_requests_total{") && $0.key.contains(listRoute)
            && $0.key.contains(#"status="200""#) && $0.key.contains(#"cache="hit""#) }?.value == 3)
        #expect(samples.first { $0.key.hasPrefix("pixxel_proxy_requests_total{") && $0.key.contains(#"status="401""#) }?.value == 1)
        #expect(samples["pixxel_proxy_cache_hits_total"] == 3)
        #expect(samples["pixxel_proxy_cache_misses_total"] == 2)
        #expect(samples.filter { $0.key.hasPrefix("pixxel_proxy_upstream_requests_total{") }.values.reduce(0, +) == 2)
        #expect(samples.first { $0.key.hasPrefix("pixxel_proxy_upstream_requests_total{") && $0.key.contains(#"outcome="404""#) }?.value == 1)
        #expect(text.contains("pixxel_proxy_request_duration_seconds_bucket"))
        #expect(samples[#"pixxel_proxy_cache_entries{tier="memory"}"#] == 1)
        #expect(samples["pixxel_proxy_invalidation_renewals_total"] == 0)
        #expect(!text.contains(sim.workflowIDs[0]), "no ids in labels")
        #expect(text.contains("pixxel_proxy_upstream_duration_seconds_bucket"))
        for name in ["pixxel_proxy_upstream_budget_tokens", "pixxel_proxy_upstream_budget_queue_length",
                     "pixxel_proxy_upstream_retry_after_pauses_total", "pixxel_proxy_cache_stale_served_total",
                     "pixxel_proxy_cache_collapsed_total", "pixxel_proxy_cache_evictions_total", #"pixxel_proxy_cache_bytes{tier="disk"}"#] {
            #expect(samples[name] != nil, "\(name)")
        }

        #expect(samples[#"pixxel_proxy_cache_entries{tier="disk"}"#] != nil)
        // Counters only grow: a second page shows the same totals, not doubled ones.
        let again = Self.samples(try proxy.get("/metrics", token: nil).text)
        #expect(again["pixxel_proxy_cache_hits_total"] == 3)
        await proxy.stop()
    }
}
