import Foundation
import PixxelSim
import Synchronization
import Testing

/// The upstream budget and stale serving, against pixxel-sim's fault knobs.
@Suite struct ResilienceTests {
    @Test func theUpstreamNeverSeesMoreThanBurstPlusRateTimesT() async throws {
        let (sim, simPort) = try startSimulator { $0.workflows = 1; $0.jobsPerWorkflow = 30 }
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)") {
            $0.upstreamRequestsPerSecond = 10
            $0.upstreamBurst = 3
        }
        let workflow = sim.workflowIDs[0]
        let ids = try #require(try proxy.get("/v0/workflows/\(workflow)/jobs", token: proxy.readToken).json?["jobs"] as? [[String: Any]])
            .compactMap { $0["id"] as? String }.prefix(16)
        let port = proxy.port, token = proxy.readToken
        let answers = concurrently(ids.count) { index in
            try? RawHTTPClient.request(port: port, target: "/v0/workflows/\(workflow)/jobs/\(ids[ids.startIndex + index])",
                                       headers: [("Authorization", token)])
        }
        #expect(answers.allSatisfy { $0?.status == 200 }, "calls wait in the queue rather than fail")
        // Every call went through the door (one list and the details), and the door's record
        // of when it let them go fits the bucket in every window.
        #expect(sim.stats.arrivals.count == ids.count + 1)
        let grants = proxy.server.upstreamGrantInstants
        #expect(grants.count == ids.count + 1)
        let violations = budgetWindowViolations(grants, rate: 10, burst: 3)
        #expect(violations.isEmpty, "\(violations.prefix(5))")
        // And the calls as the upstream saw them: a grant is not a start (calls granted at the
        // rate once waited for connections and started together). Arrivals carry delivery
        // jitter: 0.9 of a token's time of slack, short of the whole token a call too many is.
        let arrivalViolations = budgetWindowViolations(sim.stats.arrivals, rate: 10, burst: 3, slackSeconds: 0.9 / 10)
        #expect(arrivalViolations.isEmpty, "\(arrivalViolations.prefix(5))")
        await proxy.stop()
    }

    @Test func anUpstream429PausesEveryoneForItsRetryAfter() async throws {
        let (sim, simPort) = try startSimulator { $0.faults.rateLimitRate = 1; $0.faults.retryAfterSeconds = 30 }
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)")
        let workflow = sim.workflowIDs[0]
        let first = try proxy.get("/v0/workflows/\(workflow)/jobs", token: proxy.readToken)
        #expect(first.status == 429)
        #expect(sim.stats.total == 1)
        sim.faults.rateLimitRate = 0
        for target in ["/v0/workflows/\(workflow)/jobs/x", "/v0/workflows", "/v0/workflows/\(workflow)/jobs"] {
            let paused = try proxy.get(target, token: proxy.readToken)
            #expect(paused.status == 429, "\(target)")
            #expect(paused.errorCode == "rate_limited")
            #expect(Int(paused.header("Retry-After") ?? "") .map { (1...30).contains($0) } == true)
        }
        #expect(sim.stats.total == 1, "no upstream call during the pause")
        await proxy.stop()
    }

    @Test func callsThatCannotGoBeforeTheirTimeoutGet429() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)") {
            $0.upstreamRequestsPerSecond = 0.1
            $0.upstreamBurst = 1
            // Ends hung calls; a call that answers takes milliseconds, and 2 s of real time is its
            // margin on a loaded machine.
            $0.upstreamTimeoutSeconds = 2
        }
        let workflow = sim.workflowIDs[0]
        #expect(try proxy.get("/v0/workflows/\(workflow)/jobs", token: proxy.readToken).status == 200)
        let refused = try proxy.get("/v0/workflows/\(workflow)/jobs/other", token: proxy.readToken)
        #expect(refused.status == 429)
        #expect(refused.header("Retry-After") != nil)
        #expect(sim.stats.total == 1)
        await proxy.stop()
    }

    @Test func staleWhileRevalidateAnswersAtOnceAndRefreshesInTheBackground() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let clock = ManualClock()
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)", clock: clock) {
            $0.staleWhileRevalidateSeconds = 30
            $0.jobListTTLSeconds = 15
            // Ends hung calls; a call that answers takes milliseconds, and 2 s of real time is its
            // margin on a loaded machine.
            $0.upstreamTimeoutSeconds = 2
        }
        let list = "/v0/workflows/\(sim.workflowIDs[0])/jobs"
        _ = try proxy.get(list, token: proxy.readToken)
        clock.advance(20)  // 5 s past the list's TTL, within 30 s of grace
        // The refresh never gets an answer: the stale answer arriving at all shows it did not wait.
        sim.faults.hangRate = 1
        let stale = try proxy.get(list, token: proxy.readToken)
        #expect(stale.status == 200)
        #expect(stale.header("Cache-Status") == "pixxel-proxy; hit; ttl=-5")
        #expect(stale.header("Age") == "20")
        #expect(try proxy.get(list, token: proxy.readToken).header("Cache-Status") == "pixxel-proxy; hit; ttl=-5")
        #expect(try eventually { sim.stats.requests["GET list"] == 2 })
        #expect(try eventually { proxy.server.cacheStatistics.inFlightFetches == 0 }, "the hung refresh timed out")
        #expect(sim.stats.requests["GET list"] == 2, "one refresh for both stale answers")

        sim.faults.hangRate = 0
        _ = try proxy.get(list, token: proxy.readToken)  // still within grace: stale, and a new refresh
        #expect(try eventually { try proxy.get(list, token: proxy.readToken).header("Age") == "0" }, "the refresh landed")
        #expect(sim.stats.requests["GET list"] == 3)
        await proxy.stop()
    }

    @Test(arguments: ["error", "hang", "rate-limit"])
    func staleIfErrorServesTheOldAnswerWhenTheUpstreamFails(_ fault: String) async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let clock = ManualClock()
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)", clock: clock) {
            $0.staleIfErrorSeconds = 3600
            // Ends hung calls; a call that answers takes milliseconds, and 2 s of real time is its
            // margin on a loaded machine.
            $0.upstreamTimeoutSeconds = 2
        }
        let list = "/v0/workflows/\(sim.workflowIDs[0])/jobs"
        let original = try proxy.get(list, token: proxy.readToken)
        clock.advance(100)
        switch fault {
        case "error": sim.faults.errorRate = 1
        case "hang": sim.faults.hangRate = 1
        default: sim.faults.rateLimitRate = 1
        }
        let answer = try proxy.get(list, token: proxy.readToken)
        #expect(answer.status == 200)
        #expect(answer.body == original.body)
        let expected = ["error": 500, "hang": 504, "rate-limit": 429][fault]!
        #expect(answer.header("Cache-Status") == "pixxel-proxy; fwd=stale; fwd-status=\(expected)")
        // Beyond the window: the error itself.
        clock.advance(3600)
        #expect(try proxy.get(list, token: proxy.readToken).status != 200)
        await proxy.stop()
    }

    @Test func aGetIsRetriedOnceOnABrokenConnectionAndAPostNever() async throws {
        let count = Mutex(0)
        let upstream = try FakeUpstream { request in
            let n = count.withLock { value -> Int in
                value += 1
                return value
            }
            if request.requestLine.hasPrefix("POST") { return .close }
            return n % 2 == 1 ? .close : FakeUpstream.json(200, #"{"id":"j","status":"running","updated_at":"2026-11-20T10:00:00Z"}"#)
        }
        defer { upstream.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(upstream.port)")
        let answer = try proxy.get("/v0/workflows/w/jobs/j", token: proxy.readToken)
        #expect(answer.status == 200)
        #expect(upstream.received.count == 2)
        let post = try proxy.request("POST", "/v0/workflows/w/jobs?project_id=p", token: proxy.writeToken)
        #expect(post.status == 502)
        #expect(upstream.received.filter { $0.requestLine.hasPrefix("POST") }.count == 1)
        await proxy.stop()
    }

    /// One deadline covers a call and its one retry: a broken read is not tried again once the
    /// deadline has passed (found by the soak: the retry took a fresh timeout, so a client could
    /// wait twice `upstream.timeout_seconds`).
    @Test func aBrokenReadIsNotRetriedPastTheCallsDeadline() async throws {
        let clock = ManualClock()
        let calls = Mutex(0)
        let release = DispatchSemaphore(value: 0)
        let upstream = try FakeUpstream { _ in
            // The first call is held until the test has moved time past its deadline.
            if calls.withLock({ $0 += 1; return $0 }) == 1 { release.wait() }
            return .close
        }
        defer { upstream.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(upstream.port)", clock: clock) { $0.upstreamTimeoutSeconds = 5 }
        let port = proxy.port, token = proxy.readToken
        let answer = BackgroundCall { try RawHTTPClient.request(port: port, target: "/v0/workflows/w/jobs/j", headers: [("Authorization", token)]) }
        #expect(eventually { calls.withLock { $0 } == 1 })
        clock.advance(6)
        release.signal()
        let response = try answer.value()
        #expect(response.status == 502)
        #expect(calls.withLock { $0 } == 1, "not retried after its deadline")
        await proxy.stop()
    }
}
