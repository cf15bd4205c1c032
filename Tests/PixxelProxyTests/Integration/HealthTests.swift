import Foundation
@testable import JobCache
@testable import ProxyServer
@testable import ResponseCache
import Testing

/// One verdict, everywhere an operator looks: `/admin/stats`, `/readyz`'s body, the gauge.
/// Loopback only.
@Suite struct HealthTests {
    static func health(_ proxy: ProxyHarness) throws -> (state: String, reasons: [String])? {
        guard let health = try proxy.get("/admin/stats", token: proxy.adminToken).json?["health"] as? [String: Any],
              let state = health["state"] as? String else { return nil }
        return (state, health["reasons"] as? [String] ?? [])
    }

    @Test func anUpstreamFailingEveryCallShowsAsFailingEverywhere() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)")
        let list = "/v0/workflows/\(sim.workflowIDs[0])/jobs"
        #expect(try proxy.get(list, token: proxy.readToken).status == 200)
        #expect(try Self.health(proxy)?.state == "healthy")
        let ready = try proxy.get("/readyz", token: nil)
        #expect(ready.status == 200 && (ready.json?["health"] as? [String: Any])?["state"] as? String == "healthy", "\(ready.text)")

        sim.faults.errorRate = 1
        for index in 0..<4 { _ = try proxy.get("/v0/workflows/\(sim.workflowIDs[0])/jobs/missing-\(index)", token: proxy.readToken) }
        // Hits keep the hit ratio high meanwhile: that must not read as healthy.
        for _ in 0..<20 { #expect(try proxy.get(list, token: proxy.readToken).status == 200) }
        // Counted once their second has passed (the page's window: the 60 whole seconds before).
        #expect(try eventually { try Self.health(proxy)?.state == "failing" })
        let health = try #require(try Self.health(proxy))
        #expect(health.state == "failing", "\(health)")
        #expect(health.reasons.contains { $0.contains("upstream calls failed in the last minute") }, "\(health)")
        let readyBody = try proxy.get("/readyz", token: nil)
        #expect(readyBody.status == 200, "failing upstream is not unready: the proxy still serves its cache")
        #expect((readyBody.json?["health"] as? [String: Any])?["state"] as? String == "failing", "\(readyBody.text)")
        // Open to anyone: categories, no figures (the admin's /admin/stats has the words).
        #expect((readyBody.json?["health"] as? [String: Any])?["reasons"] as? [String] == ["upstream_failing"], "\(readyBody.text)")
        let metrics = try proxy.get("/metrics", token: proxy.adminToken).text
        #expect(metrics.split(separator: "\n").contains("pixxel_proxy_health 2.0") || metrics.split(separator: "\n").contains("pixxel_proxy_health 2"),
                "\(metrics.split(separator: "\n").filter { $0.contains("health") })")
        await proxy.stop()
    }

    @Test func aFullDiskIsSaidOnceCountedByReasonAndShownInTheVerdict() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let directory = TemporaryDirectory()
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)") { $0.cacheDirectory = directory.path }
        try proxy.fillTheStoreAsAFullDiskWould(workflow: sim.workflowIDs[0])
        let health = try #require(try Self.health(proxy))
        #expect(health.state == "failing" && health.reasons.contains { $0.contains("writes to the cache store fail (disk full)") }, "\(health)")
        let metrics = try proxy.get("/metrics", token: proxy.adminToken).text
        #expect(metrics.contains(#"pixxel_proxy_store_write_errors_total{reason="disk_full"}"#), "\(metrics.split(separator: "\n").filter { $0.contains("store") })")
        #expect(proxy.logs.all.filter { $0.contains("writes to the cache store fail") }.count == 1, "once per change of state")

        #expect(try proxy.get("/readyz", token: nil).status == 503, "not ready while the store fails (recovery: DiskStoreTests)")
        await proxy.stop()
    }
}
