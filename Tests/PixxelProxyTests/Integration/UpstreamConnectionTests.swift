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

    /// The budget holds at the upstream's door (issue 13): calls queued behind busy connections
    /// once held tokens already and started together when the connections freed up. In any one
    /// second at most rate + burst calls may start at the upstream.
    @Test func noOneSecondWindowAtTheUpstreamHoldsMoreThanRatePlusBurst() async throws {
        // A hung upstream that answers everything held so far at once, 3 s after the start:
        // twelve connections free up together while calls wait behind them.
        let releaseAt = Date().addingTimeInterval(3)
        let recorder = try WireRecorder { request in
            let wait = releaseAt.timeIntervalSinceNow
            if wait > 0 { Thread.sleep(forTimeInterval: wait) }
            let id = request.target.components(separatedBy: "/").last ?? ""
            return WireRecorder.json(200, #"{"id":"\#(id)","status":"running","updated_at":"2026-11-20T10:00:00Z"}"#)
        }
        defer { recorder.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(recorder.port)") {
            $0.upstreamRequestsPerSecond = 5
            $0.upstreamBurst = 5
            $0.upstreamMaxConnections = 12
            $0.upstreamTimeoutSeconds = 30
        }
        let port = proxy.port, token = proxy.readToken
        let statuses = concurrently(30) { index in
            (try? RawHTTPClient.request(port: port, target: "/v0/workflows/w/jobs/j\(index)", headers: [("Authorization", token)],
                                        timeoutSeconds: 40).status) ?? -1
        }
        #expect(statuses.allSatisfy { $0 == 200 }, "\(statuses)")
        #expect(recorder.requests.count == 30)
        // The door's own record, on the budget's clock: rate 5 and burst 5 allow at most 10 in
        // any one second, however many connections free up together.
        let grants = proxy.server.upstreamGrantInstants
        #expect(grants.count == 30)
        let violations = budgetWindowViolations(grants, rate: 5, burst: 5)
        #expect(violations.isEmpty, "\(violations.prefix(5))")
        // A grant is not a start: this test's defect was grants at the rate whose calls waited
        // for connections and started together. So the starts at the upstream too, with 0.9 of
        // a token's time of slack for delivery jitter (a call too many is a whole token over).
        let startViolations = budgetWindowViolations(recorder.requests.map(\.at), rate: 5, burst: 5, slackSeconds: 0.9 / 5)
        #expect(startViolations.isEmpty, "\(startViolations.prefix(5))")
        await proxy.stop()
    }
}
