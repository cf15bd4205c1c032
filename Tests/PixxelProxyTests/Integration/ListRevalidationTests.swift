import CacheInvalidation
import Foundation
import ProxyConfig
import Synchronization
import Testing

/// Expired details revalidated through their workflow's list (issue 16): one list call renews
/// every unchanged detail; a changed job costs its own call after the list's.
@Suite struct ListRevalidationTests {
    /// Lists and running jobs with the same 5 s bound, no stale serving (as the harness).
    static func start(_ upstreamPort: UInt16, _ clock: ManualClock, staleWhileRevalidate: Double = 0,
                      configure: (inout ProxySettings) -> Void = { _ in }) throws -> ProxyHarness {
        try ProxyHarness(upstreamURL: "http://127.0.0.1:\(upstreamPort)", clock: clock) {
            $0.activeJobTTLSeconds = 5
            $0.jobListTTLSeconds = 5
            $0.staleWhileRevalidateSeconds = staleWhileRevalidate
            configure(&$0)
        }
    }

    @Test func expiredDetailsWhoseListIsDueAreRenewedByOneListCall() async throws {
        let pixxel = try InvalidationFlowTests.ScriptedPixxel()
        defer { pixxel.upstream.stop() }
        pixxel.publish(["a", "b", "c"], updatedAt: "2026-11-20T10:00:00Z")
        let clock = ManualClock()
        let proxy = try Self.start(pixxel.upstream.port, clock)
        _ = try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken)
        var first: [String: RawResponse] = [:]
        for job in ["a", "b", "c"] { first[job] = try proxy.get("/v0/workflows/w/jobs/\(job)", token: proxy.readToken) }
        #expect(pixxel.calls("GET /v0/workflows/w/jobs/") == 3)

        clock.advance(6)
        for job in ["a", "b", "c"] {
            let again = try proxy.get("/v0/workflows/w/jobs/\(job)", token: proxy.readToken)
            #expect(again.status == 200)
            #expect(again.body == first[job]?.body, "the detail's own bytes, not the list's entry")
            #expect(again.header("Age") == "0", "confirmed by the list just now")
        }
        #expect(pixxel.calls("GET /v0/workflows/w/jobs ") == 2, "one list call for the three details")
        #expect(pixxel.calls("GET /v0/workflows/w/jobs/") == 3, "no detail call")
        let a = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        #expect(a.header("Cache-Status")?.contains("hit") == true)
        let stats = try #require(try proxy.get("/admin/stats", token: proxy.adminToken).json?["invalidation"] as? [String: Int])
        #expect(stats["list_revalidations"] == 1, "the first read went through the list; the other two were renewed by it")
        await proxy.stop()
    }

    @Test func theFirstReadAfterExpirySaysItWasRevalidatedThroughTheList() async throws {
        let pixxel = try InvalidationFlowTests.ScriptedPixxel()
        defer { pixxel.upstream.stop() }
        pixxel.publish(["a"], updatedAt: "2026-11-20T10:00:00Z")
        let clock = ManualClock()
        let proxy = try Self.start(pixxel.upstream.port, clock)
        _ = try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken)
        _ = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        clock.advance(6)
        let a = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        #expect(a.header("Cache-Status") == "pixxel-proxy; fwd=stale; fwd-status=200; detail=list-revalidated")
        await proxy.stop()
    }

    @Test func aJobTheListShowsChangedIsFetchedOnItsOwnAfterTheList() async throws {
        let pixxel = try InvalidationFlowTests.ScriptedPixxel()
        defer { pixxel.upstream.stop() }
        pixxel.publish(["a", "b"], updatedAt: "2026-11-20T10:00:00Z")
        let clock = ManualClock()
        let proxy = try Self.start(pixxel.upstream.port, clock)
        _ = try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken)
        _ = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        clock.advance(6)
        pixxel.state.withLock { $0.listUpdatedAt["a"] = "2026-11-20T10:00:15Z"; $0.detailUpdatedAt["a"] = "2026-11-20T10:00:15Z" }
        let a = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        #expect(a.json?["updated_at"] as? String == "2026-11-20T10:00:15Z")
        #expect(a.header("Cache-Status")?.hasPrefix("pixxel-proxy; fwd=stale; fwd-status=200") == true)
        #expect(pixxel.calls("GET /v0/workflows/w/jobs ") == 2)
        #expect(pixxel.calls("GET /v0/workflows/w/jobs/a ") == 2)
        await proxy.stop()
    }

    /// A list TTL longer than the job TTL: the detail expires while its list has 9 s left, so
    /// it is fetched on its own (bringing the list call forward would not be shared).
    @Test func aDetailWhoseListIsNotDueIsFetchedOnItsOwn() async throws {
        let pixxel = try InvalidationFlowTests.ScriptedPixxel()
        defer { pixxel.upstream.stop() }
        pixxel.publish(["a"], updatedAt: "2026-11-20T10:00:00Z")
        let clock = ManualClock()
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(pixxel.upstream.port)", clock: clock) {
            $0.activeJobTTLSeconds = 5
            $0.jobListTTLSeconds = 15
        }
        _ = try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken)
        _ = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        clock.advance(6)
        let a = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        #expect(a.header("Cache-Status") == "pixxel-proxy; fwd=stale; fwd-status=200; stored")
        #expect(pixxel.calls("GET /v0/workflows/w/jobs ") == 1)
        #expect(pixxel.calls("GET /v0/workflows/w/jobs/a ") == 2)
        await proxy.stop()
    }

    @Test func aSupersededDetailIsNeverRevalidatedThroughTheList() {
        #expect(Revalidation.route(detailSuperseded: true, detailUpdatedAt: 10, listedUpdatedAt: 10, listRemaining: -1) == .detail)
    }

    @Test(arguments: [
        // (detail updated_at, listed updated_at, list remaining) -> route
        (10.0, 10.0, -3.0, Revalidation.Route.list),  // list expired, same version
        (10.0, 10.0, 0.5, .list),                      // list due within a second
        (10.0, 10.0, 4.0, .detail),                    // list fresh for a while: not due
        (10.0, 12.0, -1.0, .detail),                   // the list already shows a newer version
        (12.0, 10.0, -1.0, .detail),                   // the list is behind the detail: it cannot renew it
    ])
    func theRouteFollowsTheListsDueTimeAndVersion(_ detail: Double, _ listed: Double, _ remaining: Double, _ expected: Revalidation.Route) {
        #expect(Revalidation.route(detailSuperseded: false, detailUpdatedAt: detail, listedUpdatedAt: listed, listRemaining: remaining) == expected)
    }

    @Test func withoutAListOrADateTheDetailGoesOnItsOwn() {
        #expect(Revalidation.route(detailSuperseded: false, detailUpdatedAt: 10, listedUpdatedAt: nil, listRemaining: -1) == .detail)
        #expect(Revalidation.route(detailSuperseded: false, detailUpdatedAt: 10, listedUpdatedAt: 10, listRemaining: nil) == .detail)
        #expect(Revalidation.route(detailSuperseded: false, detailUpdatedAt: nil, listedUpdatedAt: nil, listRemaining: -1) == .detail)
    }

    /// Within the stale-while-revalidate window the stale detail goes out at once, and the
    /// background refresh is the list's.
    @Test func aStaleDetailServedAtOnceIsRefreshedThroughItsList() async throws {
        let pixxel = try InvalidationFlowTests.ScriptedPixxel()
        defer { pixxel.upstream.stop() }
        pixxel.publish(["a", "b"], updatedAt: "2026-11-20T10:00:00Z")
        let clock = ManualClock()
        let proxy = try Self.start(pixxel.upstream.port, clock, staleWhileRevalidate: 30)
        _ = try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken)
        _ = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        _ = try proxy.get("/v0/workflows/w/jobs/b", token: proxy.readToken)
        clock.advance(6)
        let a = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        #expect(a.header("Cache-Status") == "pixxel-proxy; hit; ttl=-1")
        #expect(eventually { pixxel.calls("GET /v0/workflows/w/jobs ") == 2 })
        #expect(eventually { (try? proxy.get("/v0/workflows/w/jobs/b", token: proxy.readToken).header("Cache-Status")) == "pixxel-proxy; hit; ttl=5" })
        #expect(pixxel.calls("GET /v0/workflows/w/jobs/") == 2, "no detail call after the first reads")
        await proxy.stop()
    }

    /// One deadline for the list's call and the detail's own (found by review: the detail's
    /// call, after a list showing the job changed, started a second full timeout). The list is
    /// held while the test moves the clock past the deadline: the detail call never starts.
    @Test func aDetailRevalidatedThroughItsListKeepsOneDeadline() async throws {
        let pixxel = try GatedPixxel()
        defer { pixxel.upstream.stop() }
        pixxel.publish(["a"], updatedAt: "2026-11-20T10:00:00Z")
        let clock = ManualClock()
        let proxy = try Self.start(pixxel.upstream.port, clock) { $0.upstreamTimeoutSeconds = 5 }
        _ = try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken)
        _ = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        clock.advance(6)
        pixxel.state.withLock { $0.listed = [("a", "2026-11-20T10:00:15Z")]; $0.details["a"] = "2026-11-20T10:00:15Z" }
        let detail = pixxel.readWithListHeld(proxy, "/v0/workflows/w/jobs/a")
        clock.advance(6)  // past the request's deadline while its list call is in the air
        detail.release()
        let answer = try detail.answer.value()
        #expect(answer.status == 504, "\(answer.status) \(answer.header("Cache-Status") ?? "")")
        #expect(pixxel.calls("GET /v0/workflows/w/jobs/a ") == 1, "no detail call past the deadline")
        await proxy.stop()
    }

    /// During an upstream pause a detail with stale data gets it at once, even when its list
    /// (which the revalidation would fetch) is older than stale_if_error (found by review: the
    /// list's stale window decided, and the request waited out the pause). The pause is 60 s
    /// and the clock stands still: waiting it out would not answer at all.
    @Test func aDetailWithStaleDataRevalidatedThroughItsListGetsItAtOnceDuringAPause() async throws {
        let pixxel = try GatedPixxel()
        defer { pixxel.upstream.stop() }
        pixxel.publish(["a"], updatedAt: "2026-11-20T10:00:00Z")
        let clock = ManualClock()
        let proxy = try Self.start(pixxel.upstream.port, clock) {
            $0.upstreamTimeoutSeconds = 100
            $0.staleIfErrorSeconds = 10
        }
        _ = try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken)
        clock.advance(12)
        _ = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)  // fetched on its own: the list is stale beyond 10 s
        clock.advance(6)  // the detail: expired 1 s ago; the list: 13 s ago, beyond stale_if_error
        pixxel.state.withLock { $0.rateLimitedFor = 60 }
        let paused = try proxy.get("/v0/workflows", token: proxy.readToken)
        #expect(paused.status == 429)
        pixxel.state.withLock { $0.rateLimitedFor = 0 }
        let a = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        #expect(a.status == 200)
        #expect(a.header("Cache-Status")?.hasPrefix("pixxel-proxy; fwd=stale; fwd-status=429") == true, "\(a.header("Cache-Status") ?? "")")
        await proxy.stop()
    }
}
