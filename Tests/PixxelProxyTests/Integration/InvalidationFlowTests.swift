import Foundation
import PixxelSim
import Synchronization
import Testing

/// `updated_at` invalidation and write-through through the real server.
@Suite struct InvalidationFlowTests {
    /// A fake Pixxel whose documents the test changes between requests.
    final class ScriptedPixxel: @unchecked Sendable {
        struct State {
            var listUpdatedAt: [String: String] = [:]
            var detailUpdatedAt: [String: String] = [:]
            var postStatus = 200
            /// Not 200: every list request fails with it.
            var listStatus = 200
        }
        let state = Mutex(State())
        var upstream: FakeUpstream!
        /// When set, a list request is answered (with the jobs of the moment it arrived) only
        /// once the test signals it.
        let listGate = Mutex<DispatchSemaphore?>(nil)
        /// When set, a POST creates its job and is answered only once the test signals it.
        let postGate = Mutex<DispatchSemaphore?>(nil)

        init() throws {
            upstream = try FakeUpstream { [unowned self] request in
                let line = request.requestLine
                let s = state.withLock { $0 }
                if line.hasPrefix("POST ") {
                    if s.postStatus == 0 { return .hang }
                    if s.postStatus != 200 { return FakeUpstream.json(s.postStatus, #"{"error":{"code":"x","message":"no","details":null}}"#) }
                    postGate.withLock { $0 }?.wait()
                    return FakeUpstream.json(200, Self.job("new", "2026-11-20T12:00:00Z", extra: #","tasks":[]"#))
                }
                if line.hasPrefix("GET /v0/workflows/w/jobs ") {
                    if s.listStatus != 200 { return FakeUpstream.json(s.listStatus, #"{"error":{"code":"x","message":"no","details":null}}"#) }
                    let jobs = s.listUpdatedAt.keys.sorted().map { Self.job($0, s.listUpdatedAt[$0]!) }
                    listGate.withLock { $0 }?.wait()
                    return FakeUpstream.json(200, #"{"jobs":[\#(jobs.joined(separator: ","))]}"#)
                }
                if line.hasPrefix("GET /v0/workflows/w/jobs/") {
                    let id = String(line.dropFirst("GET /v0/workflows/w/jobs/".count).prefix { $0 != " " })
                    guard let updated = s.detailUpdatedAt[id] else { return FakeUpstream.json(404, #"{"error":{"code":"not_found","message":"no","details":null}}"#) }
                    return FakeUpstream.json(200, Self.job(id, updated, extra: #","tasks":[{"id":"t"}]"#))
                }
                return FakeUpstream.json(404, "{}")
            }
        }

        static func job(_ id: String, _ updatedAt: String, extra: String = "") -> String {
            #"{"id":"\#(id)","status":"running","created_by":"u","created_at":"2026-11-20T09:00:00Z","updated_at":"\#(updatedAt)"\#(extra)}"#
        }

        func calls(_ prefix: String) -> Int { upstream.received.filter { $0.requestLine.hasPrefix(prefix) }.count }

        /// Every job in `ids` listed and served as a detail, all updated at `time`.
        func publish(_ ids: [String], updatedAt time: String) {
            state.withLock {
                $0.listUpdatedAt = Dictionary(uniqueKeysWithValues: ids.map { ($0, time) })
                $0.detailUpdatedAt = $0.listUpdatedAt
            }
        }
    }

    @Test func aListRefreshInvalidatesChangedDetailsAndRenewsUnchangedOnes() async throws {
        let pixxel = try ScriptedPixxel()
        defer { pixxel.upstream.stop() }
        pixxel.publish(["a", "b"], updatedAt: "2026-11-20T10:00:00Z")
        let clock = ManualClock()
        let proxy = try ScriptedHarness.start(pixxel, clock)
        _ = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        _ = try proxy.get("/v0/workflows/w/jobs/b", token: proxy.readToken)
        #expect(pixxel.calls("GET /v0/workflows/w/jobs/") == 2)

        // Job a changes upstream; b does not. A list read (8 s later) brings the news.
        clock.advance(8)
        pixxel.state.withLock { $0.listUpdatedAt["a"] = "2026-11-20T10:00:05.5Z"; $0.detailUpdatedAt["a"] = "2026-11-20T10:00:05.5Z" }
        _ = try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken)

        // 14 s after the first read: past b's original 10 s, within its renewed 10 s.
        clock.advance(6)
        let b = try proxy.get("/v0/workflows/w/jobs/b", token: proxy.readToken)
        #expect(b.header("Cache-Status") == "pixxel-proxy; hit; ttl=4", "renewed by the list: outlives its original TTL")
        #expect(b.header("Age") == "6")
        let a = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        #expect(a.header("Cache-Status")?.hasPrefix("pixxel-proxy; fwd=stale") == true, "changed: refetched")
        #expect(a.json?["updated_at"] as? String == "2026-11-20T10:00:05.5Z")
        #expect(pixxel.calls("GET /v0/workflows/w/jobs/") == 3)

        let stats = try #require(try proxy.get("/admin/stats", token: proxy.adminToken).json?["invalidation"] as? [String: Int])
        #expect(stats["renewals"] == 1 && stats["invalidations"] == 1)
        await proxy.stop()
    }

    @Test func aJobMissingFromAFreshListHasItsDetailMarkedStale() async throws {
        let pixxel = try ScriptedPixxel()
        defer { pixxel.upstream.stop() }
        pixxel.publish(["a", "b"], updatedAt: "2026-11-20T10:00:00Z")
        let clock = ManualClock()
        let proxy = try ScriptedHarness.start(pixxel, clock)
        _ = try proxy.get("/v0/workflows/w/jobs/b", token: proxy.readToken)
        clock.advance(1)
        pixxel.state.withLock { _ = $0.listUpdatedAt.removeValue(forKey: "b") }
        let list = try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken)
        #expect((list.json?["jobs"] as? [[String: Any]])?.map { $0["id"] as? String } == ["a"])
        let b = try proxy.get("/v0/workflows/w/jobs/b", token: proxy.readToken)
        #expect(b.header("Cache-Status")?.hasPrefix("pixxel-proxy; fwd=stale") == true)
        #expect(pixxel.calls("GET /v0/workflows/w/jobs/") == 2)
        await proxy.stop()
    }

    @Test func aListWithAnOlderUpdatedAtDoesNotRollBackANewerDetail() async throws {
        let pixxel = try ScriptedPixxel()
        defer { pixxel.upstream.stop() }
        pixxel.state.withLock {
            $0.detailUpdatedAt = ["a": "2026-11-20T10:00:10Z"]
            $0.listUpdatedAt = ["a": "2026-11-20T10:00:00Z"]  // a lagging replica
        }
        let proxy = try ScriptedHarness.start(pixxel, ManualClock())
        let detail = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        _ = try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken)
        let again = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        #expect(again.header("Cache-Status")?.contains("hit") == true)
        #expect(again.body == detail.body)
        #expect(pixxel.calls("GET /v0/workflows/w/jobs/") == 1)
        await proxy.stop()
    }

    @Test func anOlderDetailAnswerNeverReplacesANewerOne() async throws {
        let pixxel = try ScriptedPixxel()
        defer { pixxel.upstream.stop() }
        pixxel.state.withLock { $0.detailUpdatedAt = ["a": "2026-11-20T10:00:10Z"] }
        let proxy = try ScriptedHarness.start(pixxel, ManualClock())
        _ = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        pixxel.state.withLock { $0.detailUpdatedAt["a"] = "2026-11-20T15:29:00+05:30" }  // 09:59Z: older
        let forced = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken, headers: [("Cache-Control", "no-cache")])
        #expect(forced.json?["updated_at"] as? String == "2026-11-20T10:00:10Z")
        let stats = try #require(try proxy.get("/admin/stats", token: proxy.adminToken).json?["invalidation"] as? [String: Int])
        #expect(stats["rejected_out_of_order"] == 1)
        await proxy.stop()
    }

    @Test func aNewerDetailUpdatesItsEntryInTheCachedList() async throws {
        let pixxel = try ScriptedPixxel()
        defer { pixxel.upstream.stop() }
        pixxel.state.withLock {
            $0.listUpdatedAt = ["a": "2026-11-20T10:00:00Z", "b": "2026-11-20T10:00:00Z"]
            $0.detailUpdatedAt = ["a": "2026-11-20T10:00:07Z"]
        }
        let proxy = try ScriptedHarness.start(pixxel, ManualClock())
        let before = try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken)
        _ = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        let after = try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken)
        #expect(after.header("Cache-Status")?.contains("hit") == true)
        let jobs = try #require(after.json?["jobs"] as? [[String: Any]])
        #expect(jobs.map { $0["id"] as? String } == ["a", "b"])
        #expect(jobs[0]["updated_at"] as? String == "2026-11-20T10:00:07Z")
        #expect(jobs[0]["tasks"] == nil, "projected to the list's own fields")
        #expect(Set(jobs[0].keys) == Set(((before.json?["jobs"] as? [[String: Any]])?[0].keys).map(Array.init) ?? []))
        #expect(pixxel.calls("GET /v0/workflows/w/jobs ") == 1)
        await proxy.stop()
    }

    @Test func aCreatedJobAppearsInListAndDetailWithoutAnUpstreamRead() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)", clock: ManualClock())
        let workflow = sim.workflowIDs[0]
        let list = "/v0/workflows/\(workflow)/jobs"
        let before = try #require(try proxy.get(list, token: proxy.readToken).json?["jobs"] as? [[String: Any]])
        let created = try proxy.request("POST", "\(list)?project_id=p-9", token: proxy.writeToken)
        let id = try #require(created.json?["id"] as? String)

        let after = try proxy.get(list, token: proxy.readToken)
        #expect(after.header("Cache-Status")?.contains("hit") == true)
        let jobs = try #require(after.json?["jobs"] as? [[String: Any]])
        #expect(jobs.count == before.count + 1)
        #expect(jobs.last?["id"] as? String == id, "the simulator lists oldest first: appended")
        #expect(Set(jobs.last!.keys) == Set(before[0].keys))
        let pending = try proxy.get("\(list)?status=pending&created_by=user-api", token: proxy.readToken)
        #expect((pending.json?["jobs"] as? [[String: Any]])?.map { $0["id"] as? String } == [id])
        let detail = try proxy.get("\(list)/\(id)", token: proxy.readToken)
        #expect(detail.header("Cache-Status")?.contains("hit") == true)
        #expect(detail.body == created.body)
        #expect(sim.stats.requests["GET list"] == 1)
        #expect(sim.stats.requests["GET detail"] == nil)
        await proxy.stop()
    }

    /// Found by the soak: a list fetched before a POST reached the upstream, answered after the
    /// POST was written through, replaced the list that had the new job; the creator's next
    /// list read did not show its write.
    @Test func aListFetchThatCrossesAJobCreationStillShowsTheCreatedJob() async throws {
        let pixxel = try ScriptedPixxel()
        defer { pixxel.upstream.stop() }
        pixxel.publish(["a"], updatedAt: "2026-11-20T10:00:00Z")
        let clock = ManualClock()
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(pixxel.upstream.port)", clock: clock) { $0.jobListTTLSeconds = 5 }
        _ = try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken)
        clock.advance(6)
        let gate = DispatchSemaphore(value: 0)
        pixxel.listGate.withLock { $0 = gate }
        let port = proxy.port, token = proxy.readToken
        let crossing = BackgroundCall { try RawHTTPClient.request(port: port, target: "/v0/workflows/w/jobs", headers: [("Authorization", token)]) }
        #expect(eventually { pixxel.calls("GET /v0/workflows/w/jobs ") == 2 })
        let created = try proxy.request("POST", "/v0/workflows/w/jobs?project_id=p", token: proxy.writeToken)
        #expect(created.status == 200)
        gate.signal()
        pixxel.listGate.withLock { $0 = nil }
        #expect(try crossing.value().status == 200)

        let after = try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken)
        #expect(after.header("Cache-Status")?.contains("hit") == true)
        let ids = (after.json?["jobs"] as? [[String: Any]])?.compactMap { $0["id"] as? String }
        #expect(ids?.contains("new") == true, "\(ids ?? [])")
        let detail = try proxy.get("/v0/workflows/w/jobs/new", token: proxy.readToken)
        #expect(detail.header("Cache-Status")?.contains("hit") == true, "not invalidated as 'no longer listed'")
        await proxy.stop()
    }

    @Test(arguments: [500, 0])
    func aFailedOrTimedOutPostIsSentOnceAndChangesNothing(_ status: Int) async throws {
        let pixxel = try ScriptedPixxel()
        defer { pixxel.upstream.stop() }
        pixxel.state.withLock { $0.listUpdatedAt = ["a": "2026-11-20T10:00:00Z"]; $0.postStatus = status }
        let proxy = try ScriptedHarness.start(pixxel, ManualClock())
        let before = try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken)
        let answer = try proxy.request("POST", "/v0/workflows/w/jobs?project_id=p", token: proxy.writeToken)
        #expect(answer.status == (status == 0 ? 504 : 500))
        #expect(pixxel.calls("POST ") == 1, "never retried")
        let after = try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken)
        #expect(after.body == before.body)
        #expect(after.header("Cache-Status")?.contains("hit") == true)
        await proxy.stop()
    }
}

enum ScriptedHarness {
    static func start(_ pixxel: InvalidationFlowTests.ScriptedPixxel, _ clock: ManualClock) throws -> ProxyHarness {
        try ProxyHarness(upstreamURL: "http://127.0.0.1:\(pixxel.upstream.port)", clock: clock) {
            // Ends the one hung POST (aFailedOrTimedOutPostIsSentOnceAndChangesNothing); every
            // other call answers in milliseconds, and 3 s of real time is its margin on a loaded
            // machine (the call timer runs on real time even with a manual clock).
            $0.upstreamTimeoutSeconds = 3
            $0.activeJobTTLSeconds = 10
            $0.jobListTTLSeconds = 5
        }
    }
}
