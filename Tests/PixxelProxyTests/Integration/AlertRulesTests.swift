import Foundation
@testable import ProxyServer
import Testing

/// The alerting rules and the Grafana dashboard in deploy/ name only metrics a running proxy
/// exports (histograms by their `_bucket` series), and the rules pass Prometheus's own checks.
@Suite struct AlertRulesTests {
    /// `promtool check rules` (syntax, PromQL, templates) and `promtool test rules` (each alert
    /// fires on series shaped like the proxy's: deploy/prometheus/pixxel-proxy.rules.test.yml).
    @Test(.needs(.promtool)) func theRulesPassPromtoolAndTheirUnitTests() throws {
        let tool = try RequiredTool.promtool.require()
        let directory = ShippedConfigTests.repository + "/deploy/prometheus/"
        let check = try runProcess(tool, ["check", "rules", directory + "pixxel-proxy.rules.yml"])
        #expect(check.status == 0 && check.output.contains("SUCCESS"), "\(check.output)")
        let unit = try runProcess(tool, ["test", "rules", directory + "pixxel-proxy.rules.test.yml"])
        #expect(unit.status == 0 && unit.output.contains("SUCCESS"), "\(unit.output)")
    }

    @Test func everyMetricTheRulesAndTheDashboardNameIsExported() async throws {
        let rules = try String(contentsOfFile: ShippedConfigTests.repository + "/deploy/prometheus/pixxel-proxy.rules.yml", encoding: .utf8)
        let dashboard = try String(contentsOfFile: ShippedConfigTests.repository + "/deploy/grafana/pixxel-proxy-dashboard.json", encoding: .utf8)
        #expect((try JSONSerialization.jsonObject(with: Data(dashboard.utf8)) as? [String: Any])?["panels"] != nil, "the dashboard is JSON")
        let inRules = Set(rules.matches(of: /pixxel_proxy_[a-z_]+/).map { String($0.output) })
        let inDashboard = Set(dashboard.matches(of: /pixxel_proxy_[a-z_]+/).map { String($0.output) })
        #expect(inRules.count >= 8 && inDashboard.count >= 15)
        let named = inRules.union(inDashboard)
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)")
        _ = try proxy.get("/v0/workflows/\(sim.workflowIDs[0])/jobs", token: proxy.readToken)
        let metrics = try proxy.get("/metrics", token: nil).text
        let exported = Set(metrics.split(separator: "\n").filter { !$0.hasPrefix("#") }
            .compactMap { $0.split(whereSeparator: { $0 == "{" || $0 == " " }).first.map(String.init) })
        for name in named.sorted() {
            // The shared tier's series exist only with Redis configured: checked against the
            // table that explains what /metrics has.
            let sharedOnly = name.hasPrefix("pixxel_proxy_shared_") && MetricsHelp.texts[name] != nil
            #expect(exported.contains(name) || exported.contains(name + "_bucket") || sharedOnly, "\(name) is named in deploy/ but not exported")
        }
        await proxy.stop()
    }
}
