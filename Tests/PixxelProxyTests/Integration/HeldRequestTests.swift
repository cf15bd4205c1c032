import EventHTTP
import Foundation
import ProxyServer
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `Prefer: wait=N` with `If-None-Match`: a request on a job or a list is held until the bytes
/// its client would get differ (200, `Preference-Applied: wait`), until N seconds pass (304), or
/// until the server drains (304); while it waits, the proxy keeps the resource fresh itself, at
/// the cost of one poller however many wait.
@Suite struct HeldRequestTests {
    typealias Documents = CacheCorrectnessTests.Documents

    static let job = "/v0/workflows/w/jobs/a"
    static let list = "/v0/workflows/w/jobs"

    static func documents() throws -> Documents {
        let documents = try Documents()
        documents.set(job, Documents.job("a", "2026-11-20T10:00:00Z"))
        documents.set(list, #"{"jobs":[\#(Documents.job("a", "2026-11-20T10:00:00Z"))]}"#)
        return documents
    }

    /// A request sent from a thread of its own (not a task: the test's own thread blocks in
    /// `eventually`, and on a small machine the tasks' threads may all be blocked so).
    final class Waiting: @unchecked Sendable {
        private let done = DispatchSemaphore(value: 0)
        private var result: Result<RawResponse, any Error>?

        init(_ send: @escaping @Sendable () throws -> RawResponse) {
            Thread.detachNewThread { [self] in
                result = Result { try send() }
                done.signal()
            }
        }

        func value() throws -> RawResponse {
            done.wait()
            return try result!.get()
        }
    }

    static func waiting(_ proxy: ProxyHarness, _ target: String, tag: String, seconds: Int = 30) -> Waiting {
        Waiting { try proxy.get(target, token: proxy.readToken, headers: [("If-None-Match", tag), ("Prefer", "wait=\(seconds)")]) }
    }

    @Test func aWaitEndsEarlyWhenTheProxysOwnRevalidationFindsAChange() async throws {
        let documents = try Self.documents()
        defer { documents.recorder.stop() }
        let clock = ManualClock()
        let proxy = try CacheCorrectnessTests.proxy(documents, clock: clock)
        let first = try proxy.get(Self.job, token: proxy.readToken)
        let tag = try #require(first.header("ETag"))
        let held = Self.waiting(proxy, Self.job, tag: tag)
        #expect(eventually { proxy.server.heldRequestCount == 1 }, "the request is held")
        // The job moves on upstream; nobody else asks. Once the entry expires the proxy asks
        // for it itself (the list, then the detail: the economy rule's route).
        documents.set(Self.job, Documents.job("a", "2026-11-20T10:00:09Z"))
        documents.set(Self.list, #"{"jobs":[\#(Documents.job("a", "2026-11-20T10:00:09Z"))]}"#)
        clock.advance(11)
        let answer = try held.value()
        #expect(answer.status == 200 && answer.header("Preference-Applied") == "wait")
        #expect(answer.text.contains("10:00:09") && answer.header("ETag") != tag)
        #expect(proxy.server.heldRequestCount == 0)
        await proxy.stop()
    }

    @Test func aWaitOnAListEndsWhenAJobIsWrittenThrough() async throws {
        let documents = try Self.documents()
        defer { documents.recorder.stop() }
        documents.set("/v0/workflows/w/jobs?project_id=p", Documents.job("new", "2026-11-20T10:00:05Z"))
        let proxy = try CacheCorrectnessTests.proxy(documents)
        let tag = try #require(try proxy.get(Self.list, token: proxy.readToken).header("ETag"))
        let held = Self.waiting(proxy, Self.list, tag: tag)
        #expect(eventually { proxy.server.heldRequestCount == 1 })
        let created = try proxy.request("POST", "/v0/workflows/w/jobs?project_id=p", token: proxy.writeToken, body: Array("{}".utf8))
        #expect(created.status == 200)
        let answer = try held.value()
        #expect(answer.status == 200 && answer.header("Preference-Applied") == "wait")
        #expect(answer.text.contains(#""id":"new""#))
        await proxy.stop()
    }

    @Test func aWaitWithNoChangeEndsWith304() async throws {
        let documents = try Self.documents()
        defer { documents.recorder.stop() }
        let proxy = try CacheCorrectnessTests.proxy(documents)
        let tag = try #require(try proxy.get(Self.job, token: proxy.readToken).header("ETag"))
        let calls = documents.recorder.requests.count
        let answer = try Self.waiting(proxy, Self.job, tag: tag, seconds: 1).value()
        #expect(answer.status == 304 && answer.body.isEmpty)
        #expect(answer.header("Preference-Applied") == "wait" && answer.header("ETag") == tag)
        #expect(documents.recorder.requests.count == calls, "a fresh resource is not asked for")
        // Without If-None-Match naming the bytes, nothing is held: the answer is at once.
        let plain = try proxy.get(Self.job, token: proxy.readToken, headers: [("Prefer", "wait=30")])
        #expect(plain.status == 200 && plain.header("Preference-Applied") == nil)
        await proxy.stop()
    }

    @Test func aDrainAnswersHeldRequestsAtOnce() async throws {
        let documents = try Self.documents()
        defer { documents.recorder.stop() }
        let proxy = try CacheCorrectnessTests.proxy(documents)
        let tag = try #require(try proxy.get(Self.list, token: proxy.readToken).header("ETag"))
        let held = Self.waiting(proxy, Self.list, tag: tag, seconds: 60)
        #expect(eventually { proxy.server.heldRequestCount == 1 })
        proxy.server.beginShutdown()
        let answer = try held.value()
        #expect(answer.status == 304 && answer.header("Connection") == "close" && answer.header("ETag") == tag)
        await proxy.stop()
    }

    /// A thousand clients waiting on one job cost what one poller costs: one revalidation per
    /// freshness window, then all are answered when the job changes.
    @Test func aThousandWaitersCostNoMoreUpstreamCallsThanOnePoller() async throws {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        if limit.rlim_cur < 4096 {
            limit.rlim_cur = max(limit.rlim_cur, min(limit.rlim_max, 4096))
            setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        let documents = try Self.documents()
        defer { documents.recorder.stop() }
        let clock = ManualClock()
        let proxy = try CacheCorrectnessTests.proxy(documents, clock: clock)
        let tag = try #require(try proxy.get(Self.job, token: proxy.readToken).header("ETag"))
        let request = Array("GET \(Self.job) HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(proxy.readToken)\r\nIf-None-Match: \(tag)\r\nPrefer: wait=60\r\nConnection: close\r\n\r\n".utf8)
        var sockets: [Int32] = []
        defer { for fd in sockets { close(fd) } }
        for _ in 0..<1000 {
            let fd = try RawHTTPClient.connect(port: proxy.port, timeoutSeconds: 60)
            sockets.append(fd)
            RawHTTPClient.send(request, to: fd)
        }
        #expect(eventually { proxy.server.heldRequestCount == 1000 }, "all are held: \(proxy.server.heldRequestCount)")
        let stats = try proxy.get("/admin/stats", token: proxy.adminToken)
        #expect((stats.json?["held_requests"] as? Int) == 1000, "the operator sees them")
        let before = documents.recorder.requests.count
        // Two freshness windows with no change: one revalidation each, for all thousand.
        for window in 1...2 {
            clock.advance(11)
            #expect(eventually { documents.recorder.requests.count >= before + window && proxy.server.cacheStatistics.inFlightFetches == 0 },
                    "window \(window) revalidated")
        }
        #expect(proxy.server.heldRequestCount == 1000, "no change: all still wait")
        // Then the job changes: the next window's one call answers all of them.
        documents.set(Self.job, Documents.job("a", "2026-11-20T10:00:09Z"))
        documents.set(Self.list, #"{"jobs":[\#(Documents.job("a", "2026-11-20T10:00:09Z"))]}"#)
        clock.advance(11)
        var changed = 0
        for fd in sockets {
            let reply = String(decoding: try RawHTTPClient.readUntilClosed(fd, timeoutSeconds: 60), as: UTF8.self)
            if reply.hasPrefix("HTTP/1.1 200") && reply.contains("10:00:09") { changed += 1 }
        }
        #expect(changed == 1000)
        // A poller asking every second would have cost one call per window too: 3 windows.
        #expect(documents.recorder.requests.count - before <= 3 * 2, "\(documents.recorder.requests.count - before) calls")
        await proxy.stop()
    }

    /// A held request whose client sends its FIN is answered as things stand (a client that
    /// half-closed reads it; one that left frees the connection and the refreshes at once).
    @Test func aHeldRequestWhoseClientSendsItsFinIsAnsweredAtOnce() async throws {
        let documents = try Self.documents()
        defer { documents.recorder.stop() }
        let proxy = try CacheCorrectnessTests.proxy(documents)
        let tag = try #require(try proxy.get(Self.job, token: proxy.readToken).header("ETag"))
        let request = Array("GET \(Self.job) HTTP/1.1\r\nHost: x\r\nAuthorization: \(proxy.readToken)\r\nIf-None-Match: \(tag)\r\nPrefer: wait=60\r\n\r\n".utf8)
        let reply = try ClientHalfCloseTests.sendThenShutWrite(port: proxy.port, request)
        let answer = try RawHTTPClient.parse(reply)
        #expect(answer.status == 304 && answer.header("Preference-Applied") == "wait", "answered before the 60 s wait")
        #expect(proxy.server.heldRequestCount == 0)
        await proxy.stop()
    }

    @Test func aHeldRequestWhoseClientLeftIsRecordedAs499() async throws {
        let documents = try Self.documents()
        defer { documents.recorder.stop() }
        let proxy = try CacheCorrectnessTests.proxy(documents)
        let tag = try #require(try proxy.get(Self.job, token: proxy.readToken).header("ETag"))
        let fd = try RawHTTPClient.connect(port: proxy.port, timeoutSeconds: 30)
        RawHTTPClient.send(Array("GET \(Self.job) HTTP/1.1\r\nHost: x\r\nAuthorization: \(proxy.readToken)\r\nIf-None-Match: \(tag)\r\nPrefer: wait=60\r\n\r\n".utf8), to: fd)
        #expect(eventually { proxy.server.heldRequestCount == 1 })
        // Gone without a FIN first: a reset.
        var linger = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
        close(fd)
        #expect(eventually { proxy.server.heldRequestCount == 0 })
        #expect(eventually { proxy.logs.all.contains { $0.contains("GET /v0/workflows/{workflow_id}/jobs/{job_id} 499") } })
        await proxy.stop()
    }

    @Test func aHeldRequestWhoseTokenIsRevokedIsRefusedOnReload() async throws {
        let documents = try Self.documents()
        defer { documents.recorder.stop() }
        let proxy = try CacheCorrectnessTests.proxy(documents)
        let tag = try #require(try proxy.get(Self.job, token: proxy.readToken).header("ETag"))
        let held = Self.waiting(proxy, Self.job, tag: tag, seconds: 60)
        #expect(eventually { proxy.server.heldRequestCount == 1 })
        try ClientsFileWriter.revoke(name: "reader", path: proxy.server.settings.clientsFile)
        proxy.server.reloadClients()
        let answer = try held.value()
        #expect(answer.status == 401, "not the resource, once the token is gone")
        await proxy.stop()
    }

    /// The request-duration histogram measures the proxy, not the wait a client asked for: a
    /// 3 s hold is not a 3 s request there (the access line still says how long it took).
    @Test func aHeldRequestsWaitIsLeftOutOfTheDurationHistogram() async throws {
        let documents = try Self.documents()
        defer { documents.recorder.stop() }
        let proxy = try CacheCorrectnessTests.proxy(documents)
        let tag = try #require(try proxy.get(Self.job, token: proxy.readToken).header("ETag"))
        #expect(try Self.waiting(proxy, Self.job, tag: tag, seconds: 3).value().status == 304)
        let metrics = try proxy.get("/metrics", token: proxy.adminToken).text
        func bucket(_ le: String) -> Int? {
            metrics.split(separator: "\n").first { $0.hasPrefix("pixxel_proxy_request_duration_seconds_bucket")
                && $0.contains("jobs/{job_id}") && $0.contains("le=\"\(le)\"") }
                .flatMap { $0.split(separator: " ").last.flatMap { Int($0) } }
        }
        #expect(bucket("+Inf") == 2 && bucket("2.5") == 2, "both requests under 2.5 s: \(metrics.split(separator: "\n").filter { $0.contains("jobs/{job_id}") && $0.contains("bucket") })")
        #expect(eventually { proxy.logs.all.contains { $0.contains("duration_ms=3") && $0.contains("304") } }, "the access line says 3 s")
        await proxy.stop()
    }
}
