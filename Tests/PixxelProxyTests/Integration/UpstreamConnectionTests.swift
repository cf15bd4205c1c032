import Foundation
import Testing

@Suite struct UpstreamConnectionTests {
    @Test func connectionsNeverExceedMaxConnections() async throws {
        let (sim, simPort) = try startSimulator { $0.faults.latencyMilliseconds = 50 }
        defer { sim.stop() }
        // Count connections at the socket level with a relay in front of the simulator.
        let relay = try TCPRelay(to: simPort)
        defer { relay.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(relay.port)") { $0.upstreamMaxConnections = 2 }
        let workflow = sim.workflowIDs[0]
        let port = proxy.port
        let token = proxy.readToken
        let list = try RawHTTPClient.request(port: port, target: "/v0/workflows/\(workflow)/jobs", headers: [("Authorization", token)])
        let ids = try #require(list.json?["jobs"] as? [[String: Any]]).compactMap { $0["id"] as? String }.prefix(12)
        #expect(ids.count == 12)
        // Twelve different jobs at once: twelve upstream calls that coalescing cannot merge.
        let statuses = concurrently(12) { index in
            (try? RawHTTPClient.request(port: port, target: "/v0/workflows/\(workflow)/jobs/\(ids[ids.startIndex + index])",
                                        headers: [("Authorization", token)]).status) ?? -1
        }
        #expect(statuses.allSatisfy { $0 == 200 }, "\(statuses)")
        #expect(sim.stats.requests["GET detail"] == 12, "every detail was its own call: \(sim.stats.requests)")
        #expect(relay.maxConcurrentConnections == 2, "the limit was reached and never passed")
        #expect(relay.totalConnections <= 2, "idle connections are kept alive and reused")
        await proxy.stop()
    }
}
