import Foundation
import ProxyConfig
import ProxyServer
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The change stream (`?watch=1`, or `Accept: text/event-stream` on a list): the current jobs,
/// then one event per new or changed job as the proxy learns of it (its own revalidations, a
/// detail fetched, a job written through, another instance), resumable with `Last-Event-ID`
/// across restarts and instances, bounded for a slow reader, capped per client and in all.
@Suite struct ChangeStreamTests {
    typealias Documents = CacheCorrectnessTests.Documents

    static let list = "/v0/workflows/w/jobs"
    static let watch = "/v0/workflows/w/jobs?watch=1"

    static func documents(_ jobs: [String]) throws -> Documents {
        let documents = try Documents()
        documents.set(list, listBody(jobs))
        return documents
    }

    static func listBody(_ jobs: [String]) -> String { #"{"jobs":[\#(jobs.joined(separator: ","))],"total":\#(jobs.count)}"# }

    static func open(_ proxy: ProxyHarness, _ target: String = watch, token: String? = nil, headers: [(String, String)] = [],
                     receiveBuffer: Int? = nil) throws -> EventStreamClient {
        let stream = try EventStreamClient(port: proxy.port, target: target, headers: [("Authorization", token ?? proxy.readToken)] + headers,
                                           receiveBuffer: receiveBuffer)
        try stream.readHead()
        return stream
    }

    static func versions(_ events: [EventStreamClient.Event]) -> [String] {
        events.map { "\($0.jobID ?? "?")@\($0.json?["updated_at"] as? String ?? "?")" }
    }

    @Test func aStreamSendsTheCurrentJobsThenEachChangeOnceAtTheCostOfOnePoller() async throws {
        let documents = try Self.documents([Documents.job("b", "2026-11-20T10:01:00Z"), Documents.job("a", "2026-11-20T10:00:00Z")])
        defer { documents.recorder.stop() }
        let clock = ManualClock()
        let proxy = try CacheCorrectnessTests.proxy(documents, clock: clock)
        let stream = try Self.open(proxy)
        #expect(stream.status == 200 && stream.header("Content-Type")?.hasPrefix("text/event-stream") == true)
        let first = try stream.events(2)
        // Oldest change first, whatever the list's order; each id is the newest token so far.
        #expect(Self.versions(first) == ["a@2026-11-20T10:00:00Z", "b@2026-11-20T10:01:00Z"])
        #expect(first.allSatisfy { $0.name == "job" } && first[1].id != nil && first[0].id != first[1].id)
        #expect(first[0].data == Documents.job("a", "2026-11-20T10:00:00Z"), "the list entry's bytes, as the upstream sent them")
        #expect(eventually { proxy.server.changeStreamCount == 1 })
        // Nobody else asks; the list expires and the proxy revalidates it itself.
        documents.set(Self.list, Self.listBody([Documents.job("b", "2026-11-20T10:01:00Z"), Documents.job("a", "2026-11-20T10:02:00Z")]))
        clock.advance(6)
        let change = try #require(try stream.next())
        #expect(Self.versions([change]) == ["a@2026-11-20T10:02:00Z"], "only the job that changed")
        // A second revalidation that shows nothing new sends nothing; a new job is sent.
        clock.advance(6)
        #expect(eventually { documents.calls(Self.list) == 3 })
        documents.set(Self.list, Self.listBody([Documents.job("c", "2026-11-20T10:03:00Z"), Documents.job("b", "2026-11-20T10:01:00Z"),
                                                Documents.job("a", "2026-11-20T10:02:00Z")]))
        clock.advance(6)
        let added = try #require(try stream.next())
        #expect(Self.versions([added]) == ["c@2026-11-20T10:03:00Z"])
        #expect(documents.calls(Self.list) == 4, "one list call per freshness window: what one poller costs")
        #expect(documents.recorder.requests.allSatisfy { $0.target == Self.list }, "no detail is fetched for a stream")
        await proxy.stop()
    }

    @Test func filtersApplyAndAJobThatLeavesThemIsSentOnceMore() async throws {
        let documents = try Self.documents([Documents.job("a", "2026-11-20T10:00:00Z"),
                                            Documents.job("b", "2026-11-20T10:00:00Z", status: "completed")])
        defer { documents.recorder.stop() }
        let clock = ManualClock()
        let proxy = try CacheCorrectnessTests.proxy(documents, clock: clock)
        let stream = try Self.open(proxy, Self.watch + "&status=running")
        #expect(Self.versions(try stream.events(1)) == ["a@2026-11-20T10:00:00Z"])
        // a completes: a stream of running jobs learns it once, as it is now; b changing (still
        // completed) is nothing to it.
        documents.set(Self.list, Self.listBody([Documents.job("a", "2026-11-20T10:05:00Z", status: "completed"),
                                                Documents.job("b", "2026-11-20T10:05:00Z", status: "completed")]))
        clock.advance(6)
        let left = try #require(try stream.next())
        #expect(left.jobID == "a" && left.json?["status"] as? String == "completed")
        documents.set(Self.list, Self.listBody([Documents.job("a", "2026-11-20T10:06:00Z", status: "completed"),
                                                Documents.job("d", "2026-11-20T10:06:00Z")]))
        clock.advance(6)
        #expect(Self.versions([try #require(try stream.next())]) == ["d@2026-11-20T10:06:00Z"], "a, no longer running, is not sent again")
        // The header form opens the same stream; a bad watch value is refused like a bad filter.
        let viaAccept = try Self.open(proxy, Self.list + "?status=running", headers: [("Accept", "Text/Event-Stream")])
        let viaAcceptEvents = try viaAccept.events(1)
        #expect(viaAccept.status == 200 && Self.versions(viaAcceptEvents) == ["d@2026-11-20T10:06:00Z"])
        #expect(try proxy.get(Self.list + "?watch=yes", token: proxy.readToken).status == 400)
        #expect(try proxy.get(Self.list + "?watch=1&watch=1", token: proxy.readToken).status == 400)
        #expect(try proxy.get(Self.list + "?watch=0", token: proxy.readToken).header("Content-Type") == "application/json")
        await proxy.stop()
    }

    @Test func aJobWrittenThroughAndADetailFetchedAreSentAtOnce() async throws {
        let documents = try Self.documents([Documents.job("a", "2026-11-20T10:00:00Z")])
        defer { documents.recorder.stop() }
        documents.set("/v0/workflows/w/jobs?project_id=p", Documents.job("new", "2026-11-20T10:00:05Z"))
        documents.set("/v0/workflows/w/jobs/a", Documents.job("a", "2026-11-20T10:00:09Z"))
        let proxy = try CacheCorrectnessTests.proxy(documents)
        let stream = try Self.open(proxy)
        _ = try stream.events(1)
        let created = try proxy.request("POST", "/v0/workflows/w/jobs?project_id=p", token: proxy.writeToken, body: Array("{}".utf8))
        #expect(created.status == 200)
        #expect(Self.versions([try #require(try stream.next())]) == ["new@2026-11-20T10:00:05Z"])
        // A reader fetches a newer detail: the cached list's entry is patched, and the stream learns it.
        #expect(try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken).status == 200)
        #expect(Self.versions([try #require(try stream.next())]) == ["a@2026-11-20T10:00:09Z"])
        await proxy.stop()
    }

    @Test func lastEventIDResumesWithoutLossAcrossARestart() async throws {
        let documents = try Self.documents([Documents.job("a", "2026-11-20T08:00:00Z"), Documents.job("b", "2026-11-20T10:00:00Z")])
        defer { documents.recorder.stop() }
        let directory = TemporaryDirectory()
        let clock = ManualClock()
        var proxy = try CacheCorrectnessTests.proxy(documents, clock: clock, directory: directory.path)
        let stream = try Self.open(proxy)
        let seen = try stream.events(2)
        let token = try #require(seen.last?.id)
        await proxy.stop()
        // While nobody watches: b changes, c is created; a stays as it was.
        documents.set(Self.list, Self.listBody([Documents.job("a", "2026-11-20T08:00:00Z"), Documents.job("b", "2026-11-20T10:07:00Z"),
                                                Documents.job("c", "2026-11-20T10:08:00Z")]))
        clock.advance(60)
        proxy = try CacheCorrectnessTests.proxy(documents, clock: clock, directory: directory.path)
        let resumed = try Self.open(proxy, headers: [("Last-Event-ID", token)])
        let events = try resumed.events(2)
        // a, last changed two hours before the token, is not sent again.
        #expect(Self.versions(events) == ["b@2026-11-20T10:07:00Z", "c@2026-11-20T10:08:00Z"], "every change after the token")
        #expect(events.allSatisfy { $0.name == "job" })
        await proxy.stop()
    }

    @Test(arguments: ["not-a-token", "0_a", "9999999999999999_a", String(repeating: "9", count: 2000)])
    func aTokenThatCannotBeResumedFromGetsAResetThenEveryJob(_ lastEventID: String) async throws {
        let documents = try Self.documents([Documents.job("a", "2026-11-20T10:00:00Z"), Documents.job("b", "2026-11-20T10:01:00Z")])
        defer { documents.recorder.stop() }
        let proxy = try CacheCorrectnessTests.proxy(documents)
        let stream = try Self.open(proxy, headers: [("Last-Event-ID", lastEventID)])
        let events = try stream.events(3)
        #expect(events.map(\.name) == ["reset", "job", "job"], "\(lastEventID.prefix(40)): \(events.map(\.name))")
        #expect(events.first?.json?["reason"] != nil, "a reset carries data (EventSource drops an event without)")
        await proxy.stop()
    }

    /// A reader that stops reading is cut off once the connection holds a megabyte for it
    /// unsent: a final `event: overflow`, and the stream is gone (memory held for it is bounded).
    @Test func aSlowReaderIsCutOffWithOverflow() async throws {
        let padding = String(repeating: "x", count: 400_000)
        func big(_ id: String, _ updatedAt: String) -> String {
            #"{"id":"\#(id)","status":"running","created_at":"2026-11-20T09:00:00Z","updated_at":"\#(updatedAt)","notes":"\#(padding)"}"#
        }
        let ids = (0..<12).map { "j\($0)" }
        let documents = try Self.documents(ids.map { big($0, "2026-11-20T10:00:00Z") })
        defer { documents.recorder.stop() }
        let clock = ManualClock()
        // A reader that takes nothing for two heartbeats while jobs wait for it is too slow.
        let proxy = try CacheCorrectnessTests.proxy(documents, clock: clock) { $0.watchHeartbeatSeconds = 0.2 }
        let stream = try Self.open(proxy, receiveBuffer: 4096)
        #expect(eventually { proxy.server.changeStreamCount == 1 })
        // Rounds of every job changing (about 5 MB each) while the reader reads nothing.
        for minute in 1...3 where proxy.server.changeStreamCount == 1 {
            documents.set(Self.list, Self.listBody(ids.map { big($0, "2026-11-20T10:0\(minute):00Z") }))
            clock.advance(6)
            #expect(eventually { documents.calls(Self.list) == minute + 1 || proxy.server.changeStreamCount == 0 })
        }
        #expect(eventually { proxy.server.changeStreamCount == 0 }, "the stream is ended, not fed without bound")
        let events = try stream.rest()
        #expect(events.last?.name == "overflow", "\(events.count) events, the last \(events.last?.name ?? "none")")
        // It says where to resume from: the id of the last event the reader was sent, not one
        // covering what was not sent (found by review).
        #expect(events.last?.id != nil && events.last?.id == events.last { $0.name == "job" }?.id)
        let stats = try proxy.get("/admin/stats", token: proxy.adminToken)
        #expect((stats.json?["change_streams"] as? [String: Any])?["overflows"] as? Int == 1)
        await proxy.stop()
    }

    @Test func streamsAreCappedPerClientAndInAllAndEndWhenTheirClientLeaves() async throws {
        let documents = try Self.documents([Documents.job("a", "2026-11-20T10:00:00Z")])
        defer { documents.recorder.stop() }
        let proxy = try CacheCorrectnessTests.proxy(documents) {
            $0.watchMaxStreamsPerClient = 1
            $0.watchMaxStreams = 2
            // No heartbeat to find a departed client by a failed write: only its FIN can.
            $0.watchHeartbeatSeconds = 600
        }
        let first = try Self.open(proxy)
        let again = try Self.open(proxy)
        #expect(again.status == 429 && String(decoding: again.body, as: UTF8.self).contains("too_many_streams"))
        let other = try Self.open(proxy, token: proxy.writeToken)
        #expect(other.status == 200)
        let third = try Self.open(proxy, token: proxy.adminToken)
        #expect(third.status == 503 && String(decoding: third.body, as: UTF8.self).contains("watch.max_streams"))
        let stats = try proxy.get("/admin/stats", token: proxy.adminToken)
        #expect((stats.json?["change_streams"] as? [String: Any])?["open"] as? Int == 2, "the operator sees them")
        // A client that leaves (its FIN) frees its slot at once, not at the next heartbeat.
        first.finishSending()
        #expect(eventually { proxy.server.changeStreamCount == 1 })
        let reopened = try Self.open(proxy)
        #expect(reopened.status == 200)
        #expect(proxy.logs.all.contains { $0.contains("GET /v0/workflows/{workflow_id}/jobs 499") }, "a stream its client left is logged 499")
        await proxy.stop()
    }

    @Test func aQuietStreamGetsHeartbeatsAndADrainEndsIt() async throws {
        let documents = try Self.documents([Documents.job("a", "2026-11-20T10:00:00Z")])
        defer { documents.recorder.stop() }
        let proxy = try CacheCorrectnessTests.proxy(documents) { $0.watchHeartbeatSeconds = 0.2 }
        let stream = try Self.open(proxy)
        _ = try stream.events(1)
        try stream.awaitComments(2)
        #expect(stream.comments >= 2)
        proxy.server.beginShutdown()
        #expect(try stream.rest().isEmpty, "the drain ends the stream")
        #expect(stream.ended)
        await proxy.stop()
    }

    @Test func aStreamWhoseTokenIsRevokedEndsOnReload() async throws {
        let documents = try Self.documents([Documents.job("a", "2026-11-20T10:00:00Z")])
        defer { documents.recorder.stop() }
        let proxy = try CacheCorrectnessTests.proxy(documents)
        let stream = try Self.open(proxy)
        _ = try stream.events(1)
        try ClientsFileWriter.revoke(name: "reader", path: proxy.server.settings.clientsFile)
        proxy.server.reloadClients()
        #expect(try stream.rest().isEmpty, "the stream ends")
        #expect(eventually { proxy.server.changeStreamCount == 0 })
        await proxy.stop()
    }

    @Test func aWorkflowTheUpstreamDoesNotKnowIsAnsweredAsTheListWouldBe() async throws {
        let documents = try Self.documents([])
        defer { documents.recorder.stop() }
        let proxy = try CacheCorrectnessTests.proxy(documents) { $0.watchMaxStreamsPerClient = 1 }
        for _ in 0..<2 {
            let stream = try Self.open(proxy, "/v0/workflows/nope/jobs?watch=1")
            #expect(stream.status == 404, "the upstream's answer, and the slot is given back")
        }
        #expect(proxy.server.changeStreamCount == 0)
        await proxy.stop()
    }
}

/// Change streams on two instances sharing Redis: a change learnt through one instance reaches
/// the other's streams, and a token one gave resumes on the other.
@Suite struct ChangeStreamAcrossInstancesTests {
    typealias Documents = CacheCorrectnessTests.Documents

    @Test(.needs(.redisServer)) func aStreamOnOneInstanceSeesAJobCreatedThroughTheOtherAndResumesThere() async throws {
        let redis = try RedisProcess()
        defer { redis.stop() }
        let documents = try ChangeStreamTests.documents([Documents.job("a", "2026-11-20T08:00:00Z")])
        defer { documents.recorder.stop() }
        documents.set("/v0/workflows/w/jobs?project_id=p", Documents.job("new", "2026-11-20T10:00:05Z"))
        func instance() throws -> ProxyHarness {
            try CacheCorrectnessTests.proxy(documents) { $0.sharedRedisURL = RedisURL(parsing: redis.url) }
        }
        let a = try instance(), b = try instance()
        func up(_ proxy: ProxyHarness) -> Bool {
            ((try? proxy.get("/admin/stats", token: proxy.adminToken))?.json?["shared"] as? [String: Any])?["state"] as? String == "up"
        }
        #expect(eventually { up(a) && up(b) })
        let stream = try ChangeStreamTests.open(a)
        #expect(ChangeStreamTests.versions(try stream.events(1)) == ["a@2026-11-20T08:00:00Z"])
        // Created through B: A's stream hears of it through Redis, before any list expires.
        let created = try b.request("POST", "/v0/workflows/w/jobs?project_id=p", token: b.writeToken, body: Array("{}".utf8))
        #expect(created.status == 200)
        let heard = try #require(try stream.next())
        #expect(ChangeStreamTests.versions([heard]) == ["new@2026-11-20T10:00:05Z"])
        let token = try #require(heard.id)
        // The reader moves to B; meanwhile a changes upstream. B's stream resumes from A's token.
        documents.set(ChangeStreamTests.list, ChangeStreamTests.listBody([Documents.job("a", "2026-11-20T10:09:00Z"),
                                                                           Documents.job("new", "2026-11-20T10:00:05Z")]))
        _ = try b.get(ChangeStreamTests.list, token: b.readToken, headers: [("Cache-Control", "no-cache")])
        let resumed = try ChangeStreamTests.open(b, headers: [("Last-Event-ID", token)])
        let events = try resumed.events(2)
        // The job at the token is sent again (a resume overlaps: at least once), then a's change.
        #expect(ChangeStreamTests.versions(events) == ["new@2026-11-20T10:00:05Z", "a@2026-11-20T10:09:00Z"])
        await a.stop()
        await b.stop()
    }
}
