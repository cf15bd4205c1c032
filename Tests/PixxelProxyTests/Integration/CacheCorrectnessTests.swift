import CSQLite
import Foundation
import ProxyConfig
import Synchronization
import Testing

/// One resource's answer never serves another's request; nothing the upstream sends stops the
/// process; a job never goes back in time for a client, not even stale or after a restart.
@Suite struct CacheCorrectnessTests {
    /// An upstream whose documents the test sets: a detail per job path, a list per workflow
    /// path, and a switch that makes every call fail.
    final class Documents: @unchecked Sendable {
        struct State {
            var bodies: [String: String] = [:]
            var failing = false
            var rateLimitedFor: Int?
        }
        let state = Mutex(State())
        var recorder: WireRecorder!

        init() throws {
            recorder = try WireRecorder { [unowned self] request in
                let s = state.withLock { $0 }
                if s.failing { return WireRecorder.json(503, #"{"error":{"code":"down","message":"down","details":null}}"#) }
                if let seconds = s.rateLimitedFor {
                    return WireRecorder.json(429, #"{"error":{"code":"slow_down","message":"slow down","details":null}}"#,
                                             extraHeaders: "Retry-After: \(seconds)\r\n")
                }
                guard let body = s.bodies[request.target] else {
                    return WireRecorder.json(404, #"{"error":{"code":"not_found","message":"no","details":null}}"#)
                }
                return WireRecorder.json(200, body)
            }
        }

        func set(_ target: String, _ body: String) { state.withLock { $0.bodies[target] = body } }
        func fail(_ failing: Bool) { state.withLock { $0.failing = failing } }
        func calls(_ target: String) -> Int { recorder.requests.filter { $0.target == target }.count }

        static func job(_ id: String, _ updatedAt: String, status: String = "running", createdAt: String = "2026-11-20T09:00:00Z") -> String {
            #"{"id":"\#(id)","status":"\#(status)","created_by":"u","created_at":"\#(createdAt)","updated_at":"\#(updatedAt)"}"#
        }
    }

    /// The `updated_at` of the first job a list answer shows.
    static func firstVersion(in list: RawResponse) -> String? {
        (list.json?["jobs"] as? [[String: Any]])?.first?["updated_at"] as? String
    }

    static func proxy(_ documents: Documents, clock: ManualClock? = nil, directory: String? = nil,
                      configure: @escaping (inout ProxySettings) -> Void = { _ in }) throws -> ProxyHarness {
        try ProxyHarness(upstreamURL: "http://127.0.0.1:\(documents.recorder.port)", clock: clock) {
            // No call here is meant to time out; the call timer runs on real time even with a
            // manual clock, so a short timeout would fail a slow machine's calls.
            $0.upstreamTimeoutSeconds = awaitedSeconds
            $0.activeJobTTLSeconds = 10
            $0.jobListTTLSeconds = 5
            if let directory { $0.cacheDirectory = directory }
            configure(&$0)
        }
    }

    /// Ids whose bytes differ must never share an entry: spaces and separators, and Unicode
    /// that Swift's String calls equal (canonically equivalent) but the upstream does not.
    @Test(arguments: [
        ("/v0/workflows/a%20b/jobs/c", "/v0/workflows/a/jobs/b%20c"),
        ("/v0/workflows/w/jobs/%C3%A9", "/v0/workflows/w/jobs/e%CC%81"),
        ("/v0/workflows/w/jobs/%E2%84%AB", "/v0/workflows/w/jobs/%C3%85"),
        ("/v0/workflows/a%20b/jobs", "/v0/workflows/a/jobs"),
    ])
    func distinctIdsNeverShareAnEntry(_ first: String, _ second: String) async throws {
        let documents = try Documents()
        defer { documents.recorder.stop() }
        let isList = first.hasSuffix("/jobs")
        for target in [first, second] {
            let id = target.components(separatedBy: "/").last?.removingPercentEncoding ?? ""
            documents.set(target, isList ? #"{"jobs":[],"for":"\#(target)"}"# : #"{"id":"\#(id)","status":"running","for":"\#(target)"}"#)
        }
        let proxy = try Self.proxy(documents)
        for target in [first, second, first, second] {
            let answer = try proxy.get(target, token: proxy.readToken)
            #expect(answer.status == 200)
            #expect((answer.json?["for"] as? String) == target, "\(target) got \(answer.text)")
        }
        #expect(documents.calls(first) == 1 && documents.calls(second) == 1, "one call each, then hits")
        // Purging one leaves the other.
        let workflow = first.components(separatedBy: "/")[3]
        _ = try proxy.request("POST", "/admin/purge?workflow_id=\(workflow)", token: proxy.adminToken)
        let other = try proxy.get(second, token: proxy.readToken)
        if second.components(separatedBy: "/")[3] != workflow {
            #expect(other.header("Cache-Status")?.contains("hit") == true, "purging \(workflow) kept \(second)")
        }
        await proxy.stop()
    }

    /// `0001-01-01T00:00:00+14:00` is in year 0 in UTC: the calendar cannot hold it.
    @Test func aTimestampOutsideTheCalendarNeitherCrashesNorMatches() async throws {
        let documents = try Documents()
        defer { documents.recorder.stop() }
        let jobs = [
            Documents.job("early", "2026-11-20T10:00:00Z", createdAt: "0001-01-01T00:00:00+14:00"),
            Documents.job("late", "2026-11-20T10:00:00Z", createdAt: "9999-12-31T23:00:00-05:00"),
            Documents.job("fine", "2026-11-20T10:00:00Z", createdAt: "2026-11-20T09:00:00Z"),
        ]
        documents.set("/v0/workflows/w/jobs", #"{"jobs":[\#(jobs.joined(separator: ","))]}"#)
        let proxy = try Self.proxy(documents)
        for day in ["2026-11-20", "0001-01-01", "0000-12-31", "9999-12-31"] {
            let answer = try proxy.get("/v0/workflows/w/jobs?created_on=\(day)", token: proxy.readToken)
            let ids = (answer.json?["jobs"] as? [[String: Any]])?.compactMap { $0["id"] as? String }
            #expect(answer.status == 200 || answer.status == 400, "\(day): \(answer.status)")
            if day == "2026-11-20" { #expect(ids == ["fine"]) }
            if answer.status == 200, day != "2026-11-20" { #expect(ids == [], "\(day): \(String(describing: ids))") }
        }
        #expect(try proxy.get("/healthz", token: nil).status == 200)
        await proxy.stop()
    }

    /// A detail that a list showed to be superseded is never served again, not while
    /// revalidating, not when the upstream fails, not after a restart.
    @Test(arguments: ["stale-while-revalidate", "stale-if-error", "restart", "restart and failing upstream"])
    func aSupersededDetailIsNeverServed(_ path: String) async throws {
        let documents = try Documents()
        defer { documents.recorder.stop() }
        let old = Documents.job("j", "2026-11-20T10:00:00Z"), new = Documents.job("j", "2026-11-20T10:05:00Z")
        documents.set("/v0/workflows/w/jobs/j", old)
        documents.set("/v0/workflows/w/jobs", #"{"jobs":[\#(new)]}"#)
        let directory = TemporaryDirectory()
        let clock = ManualClock()
        var proxy = try Self.proxy(documents, clock: clock, directory: directory.path) {
            $0.staleWhileRevalidateSeconds = 300
            $0.staleIfErrorSeconds = 86_400
        }
        #expect(try proxy.get("/v0/workflows/w/jobs/j", token: proxy.readToken).json?["updated_at"] as? String == "2026-11-20T10:00:00Z")
        // The list shows the newer version to this client.
        #expect(try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken).status == 200)
        documents.set("/v0/workflows/w/jobs/j", new)
        clock.advance(12)  // the detail's own TTL has run out too
        if path.hasPrefix("restart") {
            await proxy.stop()
            proxy = try Self.proxy(documents, clock: clock, directory: directory.path) {
                $0.staleWhileRevalidateSeconds = 300
                $0.staleIfErrorSeconds = 86_400
            }
        }
        let failing = path == "stale-if-error" || path == "restart and failing upstream"
        if failing { documents.fail(true) }
        let answer = try proxy.get("/v0/workflows/w/jobs/j", token: proxy.readToken)
        if failing {
            #expect(answer.status == 503, "\(path): the error, not the superseded detail: \(answer.status) \(answer.text)")
        } else {
            #expect(answer.json?["updated_at"] as? String == "2026-11-20T10:05:00Z", "\(path): \(answer.status) \(answer.text) \(answer.header("Cache-Status") ?? "")")
        }
        #expect(answer.json?["updated_at"] as? String != "2026-11-20T10:00:00Z", "\(path): went back in time")
        await proxy.stop()
    }

    /// An answer older than a detail held only on disk never replaces it in memory.
    @Test func anOlderAnswerNeverReplacesANewerDetailHeldOnlyOnDisk() async throws {
        let documents = try Documents()
        defer { documents.recorder.stop() }
        let directory = TemporaryDirectory()
        documents.set("/v0/workflows/w/jobs/j", Documents.job("j", "2026-11-20T10:05:00Z"))
        var proxy = try Self.proxy(documents, directory: directory.path)
        _ = try proxy.get("/v0/workflows/w/jobs/j", token: proxy.readToken)
        await proxy.stop()
        // A lagging replica answers the older version; the newer one sits on disk only.
        documents.set("/v0/workflows/w/jobs/j", Documents.job("j", "2026-11-20T10:00:00Z"))
        proxy = try Self.proxy(documents, directory: directory.path)
        let revalidated = try proxy.get("/v0/workflows/w/jobs/j", token: proxy.readToken, headers: [("Cache-Control", "no-cache")])
        #expect(revalidated.json?["updated_at"] as? String == "2026-11-20T10:05:00Z", "\(revalidated.text)")
        let again = try proxy.get("/v0/workflows/w/jobs/j", token: proxy.readToken)
        #expect(again.json?["updated_at"] as? String == "2026-11-20T10:05:00Z")
        await proxy.stop()
    }

    /// Found by an attack review of the cache component: each of these once served the wrong
    /// or an older version.
    @Test func canonicallyEquivalentJobIdsAreDifferentJobsInListsAndFilters() async throws {
        let documents = try Documents()
        defer { documents.recorder.stop() }
        let nfc = "\u{E9}", nfd = "e\u{301}"
        documents.set("/v0/workflows/w/jobs", #"{"jobs":[\#(Documents.job(nfc, "2026-11-20T10:05:00Z")),\#(Documents.job(nfd, "2026-11-20T10:00:00Z"))]}"#)
        documents.set("/v0/workflows/w/jobs/e%CC%81", Documents.job(nfd, "2026-11-20T10:00:00Z"))
        let proxy = try Self.proxy(documents)
        #expect(try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken).status == 200)
        let detail = try proxy.get("/v0/workflows/w/jobs/e%CC%81", token: proxy.readToken)
        #expect(detail.status == 200, "the other job's newer version is not this one's: \(detail.text)")
        let filtered = try proxy.get("/v0/workflows/w/jobs?id=%C3%A9", token: proxy.readToken)
        let ids = (filtered.json?["jobs"] as? [[String: Any]])?.compactMap { $0["id"] as? String }
        #expect(ids?.count == 1 && ids?.first?.unicodeScalars.count == 1, "only the NFC job")
        await proxy.stop()
    }

    @Test func aJobListedTwiceCountsWithItsNewestVersion() async throws {
        let documents = try Documents()
        defer { documents.recorder.stop() }
        documents.set("/v0/workflows/w/jobs/a", Documents.job("a", "2026-11-20T10:00:00Z"))
        documents.set("/v0/workflows/w/jobs", #"{"jobs":[\#(Documents.job("a", "2026-11-20T10:00:00Z")),\#(Documents.job("a", "2026-11-20T10:05:00Z"))]}"#)
        let proxy = try Self.proxy(documents)
        _ = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        _ = try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken)
        documents.set("/v0/workflows/w/jobs/a", Documents.job("a", "2026-11-20T10:05:00Z"))
        let again = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        #expect(again.json?["updated_at"] as? String == "2026-11-20T10:05:00Z", "\(again.header("Cache-Status") ?? "")")
        await proxy.stop()
    }

    @Test func aLaggingListNeverTakesAJobBackAndNeitherDoesALaterDetail() async throws {
        let documents = try Documents()
        defer { documents.recorder.stop() }
        let clock = ManualClock()
        documents.set("/v0/workflows/w/jobs", #"{"jobs":[\#(Documents.job("a", "2026-11-20T10:05:00Z"))]}"#)
        let proxy = try Self.proxy(documents, clock: clock)
        _ = try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken)
        clock.advance(6)  // the list has expired; a lagging replica answers the next fetch
        documents.set("/v0/workflows/w/jobs", #"{"jobs":[\#(Documents.job("a", "2026-11-20T10:00:00Z"))]}"#)
        documents.set("/v0/workflows/w/jobs/a", Documents.job("a", "2026-11-20T10:00:00Z"))
        let list = try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken)
        #expect(Self.firstVersion(in: list) == "2026-11-20T10:05:00Z", "the newer list stays: \(list.text)")
        let detail = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        #expect(detail.status == 502 && detail.json?["updated_at"] == nil, "never the older job: \(detail.text)")
        await proxy.stop()
    }

    @Test func whatAListShowedOutlivesARestartEvenWithoutACachedDetail() async throws {
        let documents = try Documents()
        defer { documents.recorder.stop() }
        let directory = TemporaryDirectory()
        documents.set("/v0/workflows/w/jobs", #"{"jobs":[\#(Documents.job("a", "2026-11-20T10:05:00Z"))]}"#)
        var proxy = try Self.proxy(documents, directory: directory.path)
        _ = try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken)
        await proxy.stop()
        documents.set("/v0/workflows/w/jobs/a", Documents.job("a", "2026-11-20T10:00:00Z"))
        proxy = try Self.proxy(documents, directory: directory.path)
        let detail = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        #expect(detail.status == 502, "older than what the list showed before the restart: \(detail.text)")
        documents.set("/v0/workflows/w/jobs/a", Documents.job("a", "2026-11-20T10:05:00Z"))
        #expect(try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken).status == 200)
        await proxy.stop()
    }

    /// A detail evicted from memory leaves its version known: a lagging list that shows the job
    /// older afterwards is not served, as it is not while the detail is held.
    @Test func aDetailEvictedFromMemoryStillKeepsALaggingListFromTakingItsJobBack() async throws {
        let documents = try Documents()
        defer { documents.recorder.stop() }
        let padding = String(repeating: "x", count: 600_000)
        documents.set("/v0/workflows/w/jobs/a", Documents.job("a", "2026-11-20T10:05:00Z"))
        for job in ["b", "c"] {
            documents.set("/v0/workflows/w/jobs/\(job)", #"{"id":"\#(job)","status":"completed","updated_at":"2026-11-20T10:00:00Z","pad":"\#(padding)"}"#)
        }
        documents.set("/v0/workflows/w/jobs", #"{"jobs":[\#(Documents.job("a", "2026-11-20T10:00:00Z"))]}"#)
        let proxy = try Self.proxy(documents) { $0.cacheMemoryMB = 1 }
        #expect(try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken).status == 200)
        // Two details of 600 KB in a 1 MiB memory tier: the first job's detail is evicted.
        for job in ["b", "c"] { #expect(try proxy.get("/v0/workflows/w/jobs/\(job)", token: proxy.readToken).status == 200) }
        let list = try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken)
        #expect(Self.firstVersion(in: list) != "2026-11-20T10:00:00Z", "the job went back in time: \(list.status) \(list.text.prefix(300))")
        await proxy.stop()
    }

    /// A held detail's version counts as known for as long as it is held, even when the wall
    /// clock steps back far enough that a version of that date would no longer be believed if
    /// it arrived now: it was believed when it was shown.
    @Test func aHeldDetailStillCountsAfterTheClockStepsBackADay() async throws {
        let documents = try Documents()
        defer { documents.recorder.stop() }
        let clock = ManualClock()
        documents.set("/v0/workflows/w/jobs/a", Documents.job("a", "2026-11-20T10:05:00Z"))
        documents.set("/v0/workflows/w/jobs", #"{"jobs":[\#(Documents.job("a", "2026-11-20T10:00:00Z"))]}"#)
        let proxy = try Self.proxy(documents, clock: clock)
        #expect(try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken).status == 200)
        clock.advance(1_794_996_000 - clock.now)  // 2026-11-18T10:00:00Z: two days before the version
        let list = try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken)
        #expect(Self.firstVersion(in: list) != "2026-11-20T10:00:00Z", "the job went back in time: \(list.status) \(list.text.prefix(300))")
        await proxy.stop()
    }

    /// With no room in memory every entry lives on disk only: an older answer must still lose.
    @Test func anOlderAnswerLosesToADiskOnlyDetailWhenMemoryHoldsNothing() async throws {
        let documents = try Documents()
        defer { documents.recorder.stop() }
        let directory = TemporaryDirectory()
        documents.set("/v0/workflows/w/jobs/a", Documents.job("a", "2026-11-20T10:05:00Z"))
        let proxy = try Self.proxy(documents, directory: directory.path) { $0.cacheMemoryMB = 0 }
        _ = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        documents.set("/v0/workflows/w/jobs/a", Documents.job("a", "2026-11-20T10:00:00Z"))
        let answer = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken, headers: [("Cache-Control", "no-cache")])
        #expect(answer.json?["updated_at"] as? String == "2026-11-20T10:05:00Z", "\(answer.text)")
        await proxy.stop()
    }

    @Test func aDetailOfAnotherJobIsNotStoredAsThisOne() async throws {
        let documents = try Documents()
        defer { documents.recorder.stop() }
        documents.set("/v0/workflows/w/jobs/c", Documents.job("b", "2026-11-20T10:05:00Z", status: "failed"))
        let proxy = try Self.proxy(documents)
        #expect(try proxy.get("/v0/workflows/w/jobs/c", token: proxy.readToken).status == 502)
        #expect(documents.calls("/v0/workflows/w/jobs/c") == 1)
        #expect(try proxy.get("/v0/workflows/w/jobs/c", token: proxy.readToken).status == 502, "nothing was cached")
        await proxy.stop()
    }

    /// The disk file is outside the process: absurd times in it must not stop it.
    @Test func absurdTimesOnDiskAreIgnoredNotFatal() async throws {
        let documents = try Documents()
        defer { documents.recorder.stop() }
        let directory = TemporaryDirectory()
        documents.set("/v0/workflows/w/jobs/a", Documents.job("a", "2026-11-20T10:05:00Z"))
        var proxy = try Self.proxy(documents, directory: directory.path)
        _ = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        await proxy.stop()
        var db: OpaquePointer?
        #expect(sqlite3_open(directory.path + "/pixxel-proxy-cache.sqlite3", &db) == SQLITE_OK)
        #expect(sqlite3_exec(db, "UPDATE entries SET validated_at = 1e300, lifetime = 1e300", nil, nil, nil) == SQLITE_OK)
        sqlite3_close(db)
        proxy = try Self.proxy(documents, directory: directory.path)
        let answer = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        #expect(answer.status == 200 && answer.header("Cache-Status")?.contains("fwd=miss") == true, "the row is ignored")
        await proxy.stop()
    }

    @Test func theHitPathRefusesAMethodOverrideAsTheFullPathDoes() async throws {
        let documents = try Documents()
        defer { documents.recorder.stop() }
        documents.set("/v0/workflows/w/jobs/a", Documents.job("a", "2026-11-20T10:05:00Z"))
        let proxy = try Self.proxy(documents)
        _ = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        #expect(try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken).header("Cache-Status")?.contains("hit") == true)
        #expect(try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken, headers: [("X-HTTP-Method-Override", "DELETE")]).status == 400)
        await proxy.stop()
    }

    /// During an upstream pause, a request with a stale answer to give gets it at once rather
    /// than waiting for the pause to end (issue 13). Time stands still here, so waiting would
    /// never end.
    @Test func duringAnUpstreamPauseStaleDataGoesOutAtOnce() async throws {
        let documents = try Documents()
        defer { documents.recorder.stop() }
        let clock = ManualClock()
        for id in ["a", "b"] { documents.set("/v0/workflows/w/jobs/\(id)", Documents.job(id, "2026-11-20T10:00:00Z")) }
        let proxy = try Self.proxy(documents, clock: clock) {
            $0.upstreamTimeoutSeconds = 10
            $0.staleIfErrorSeconds = 86_400
        }
        for id in ["a", "b"] { _ = try proxy.get("/v0/workflows/w/jobs/\(id)", token: proxy.readToken) }
        clock.advance(12)
        documents.state.withLock { $0.rateLimitedFor = 5 }
        let first = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        #expect(first.status == 200 && first.header("Cache-Status") == "pixxel-proxy; fwd=stale; fwd-status=429")
        // The budget is paused for 5 s now; b has stale data within its window.
        let second = try proxy.get("/v0/workflows/w/jobs/b", token: proxy.readToken)
        #expect(second.status == 200 && second.header("Cache-Status")?.hasPrefix("pixxel-proxy; fwd=stale") == true,
                "\(second.status) \(second.header("Cache-Status") ?? "")")
        #expect(documents.calls("/v0/workflows/w/jobs/b") == 1, "no call during the pause")
        await proxy.stop()
    }

    /// A cached answer is fetched with a fixed set of fields: one client's `Accept` or cookies
    /// must not shape the entry every other client then reads.
    @Test func aCachedFetchCarriesNoClientFieldsButItsRequestID() async throws {
        let documents = try Documents()
        defer { documents.recorder.stop() }
        documents.set("/v0/workflows/w/jobs/j", Documents.job("j", "2026-11-20T10:00:00Z"))
        let proxy = try Self.proxy(documents)
        _ = try proxy.get("/v0/workflows/w/jobs/j", token: proxy.readToken,
                          headers: [("Accept", "application/xml"), ("Cookie", "a=b"), ("X-Request-Id", "req-1"), ("Accept-Language", "fr")])
        let request = try #require(documents.recorder.requests.first)
        let names = Set(request.headers.map { $0.name.lowercased() })
        #expect(names == ["host", "authorization", "x-request-id", "accept"], "\(names)")
        #expect(request.header("Accept") == "application/json")
        #expect(request.header("X-Request-Id") == "req-1")
        await proxy.stop()
    }
}
