import Foundation
import Testing

/// The alerting rules in deploy/ name only metrics a running proxy exports.
@Suite struct AlertRulesTests {
    @Test func everyMetricTheRulesNameIsExported() async throws {
        let rules = try String(contentsOfFile: ShippedConfigTests.repository + "/deploy/prometheus/pixxel-proxy.rules.yml", encoding: .utf8)
        let named = Set(rules.matches(of: /pixxel_proxy_[a-z_]+/).map { String($0.output) })
        #expect(named.count >= 8)
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)")
        _ = try proxy.get("/v0/workflows/\(sim.workflowIDs[0])/jobs", token: proxy.readToken)
        let metrics = try proxy.get("/metrics", token: nil).text
        let exported = Set(metrics.split(separator: "\n").filter { !$0.hasPrefix("#") }
            .compactMap { $0.split(whereSeparator: { $0 == "{" || $0 == " " }).first.map(String.init) })
        for name in named.sorted() {
            #expect(exported.contains(name) || exported.contains(name + "_bucket"), "\(name) is named by a rule but not exported")
        }
        await proxy.stop()
    }
}
