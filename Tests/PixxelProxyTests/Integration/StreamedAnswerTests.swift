import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// An upstream's early answer to an upload is recorded with the status the client got.
@Suite struct EarlyAnswerRecordingTests {
    /// An upstream that answers an upload early (413 here, before reading the body), whole:
    /// the client gets that 413, but the proxy records a 499 "client closed request". The
    /// relay's `complete()` calls `response.finish()`, whose `finishStreamed`
    /// (ServerConnection.swift:395) fails the unread request body with `.clientGone`; the body's
    /// `onEnd` ends the relay with `.clientGone` before `complete()` reports `.relayed`, so the
    /// access line and the request metrics count a 499 (and no upstream status), not the 413 sent.
    @Test func anEarlyAnswerToAnUploadIsRecordedWithItsStatus() async throws {
        let upstream = try ScriptedUpstream { connection, _ in
            guard connection.readHead() != nil else { return }
            connection.send("HTTP/1.1 413 Content Too Large\r\nContent-Type: application/json\r\nContent-Length: 15\r\nConnection: close\r\n\r\n{\"early\":true}  ")
            _ = connection.drainUntilClosed(seconds: fakePeerHoldSeconds)
        }
        defer { upstream.stop() }
        let proxy = try ProxyHarness(upstreamURL: upstream.url)
        let fd = try RawHTTPClient.connect(port: proxy.port, timeoutSeconds: 10)
        defer { close(fd) }
        #expect(RawSocket.send(fd, "PUT /v0/uploads/early HTTP/1.1\r\nHost: h\r\nAuthorization: \(proxy.writeToken)\r\nX-Request-Id: early-413\r\n"
            + "Content-Length: 10000000\r\n\r\n" + String(repeating: "u", count: 1000)))
        let (reply, closed) = RawSocket.readUntilClosed(fd, seconds: awaitedSeconds)
        let answer = try #require(PassThroughFramingTests.wireAnswers(reply).first)
        #expect(answer.status == 413 && answer.complete && closed)
        #expect(eventually { proxy.logs.all.contains { $0.contains("early-413") && $0.contains("PUT /v0/* ") } })
        let line = proxy.logs.all.first { $0.contains("early-413") && $0.contains("PUT /v0/* ") } ?? ""
        #expect(line.contains("PUT /v0/* 413"), "the access line: \(line)")
        await proxy.stop()
    }
}

/// Keep-alive after streamed answers: each pipelined request gets its own answer.
@Suite struct StreamedKeepAliveTests {
    /// On one keep-alive connection, a 3 MiB streamed download (more than the output
    /// high-water mark), a chunked one, a 304 and a HEAD, then a pass-through read, pipelined
    /// in one write (HTTP/1.1), and an HTTP/1.0 keep-alive client's download then a second
    /// request: every answer whole and in order.
    @Test func pipelinedRequestsAfterStreamedAnswersEachGetTheirOwn() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)")
        let job = try TransferSchedulingTests.firstJob(sim, proxy)
        let base = "/v0/workflows/\(sim.workflowIDs[0])/jobs/\(job)/download"
        let etag = try #require(try proxy.request("HEAD", base + "?size=10", token: proxy.readToken).header("ETag"))
        let auth = "Authorization: \(proxy.readToken)\r\n"
        let bytes = "GET \(base)?size=\(3 << 20) HTTP/1.1\r\nHost: h\r\n\(auth)\r\n"
            + "GET \(base)?size=100000&chunked=1 HTTP/1.1\r\nHost: h\r\n\(auth)\r\n"
            + "GET \(base)?size=10 HTTP/1.1\r\nHost: h\r\n\(auth)If-None-Match: \(etag)\r\n\r\n"
            + "HEAD \(base)?size=10 HTTP/1.1\r\nHost: h\r\n\(auth)\r\n"
            + "GET /v0/projects HTTP/1.1\r\nHost: h\r\n\(auth)Connection: close\r\n\r\n"
        let answers = PassThroughFramingTests.wireAnswers(try RawHTTPClient.exchange(port: proxy.port, bytes: Array(bytes.utf8)), bodiless: [3])
        #expect(answers.map(\.status) == [200, 200, 304, 200, 200], "\(answers.map(\.status))")
        #expect(answers.count == 5 && answers[0].body.count == 3 << 20 && answers[1].body.count == 100_000 && answers.allSatisfy(\.complete))
        #expect(answers.last?.text.contains("projects") == true)
        let old = "GET \(base)?size=200000 HTTP/1.0\r\n\(auth)Connection: keep-alive\r\n\r\nGET /v0/projects HTTP/1.0\r\n\(auth)\r\n"
        let oldAnswers = PassThroughFramingTests.wireAnswers(try RawHTTPClient.exchange(port: proxy.port, bytes: Array(old.utf8)))
        #expect(oldAnswers.map(\.status) == [200, 200] && oldAnswers.first?.body.count == 200_000, "\(oldAnswers.map(\.status))")
        await proxy.stop()
    }
}

/// A drain (SIGTERM) while streamed transfers run and wait ends them and exits cleanly.
@Suite struct DrainDuringTransferTests {
    /// SIGTERM while a download runs (and another transfer waits for a connection):
    /// the process stops within `listen.drain_seconds` with status 0, and the client sees the
    /// download broken, never whole.
    @Test func aDrainDuringADownloadBreaksItAndExitsCleanly() throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyProcess(upstreamPort: simPort, environment: [
            "PIXXEL_PROXY_LISTEN_DRAIN_SECONDS": "1", "PIXXEL_PROXY_UPSTREAM_MAX_CONNECTIONS": "2",
        ])
        defer { proxy.stop() }
        let port = proxy.port, token = proxy.readToken
        let list = try RawHTTPClient.request(port: port, target: "/v0/workflows/\(sim.workflowIDs[0])/jobs", headers: [("Authorization", token)])
        let job = try #require((list.json?["jobs"] as? [[String: Any]])?.first?["id"] as? String)
        let target = "/v0/workflows/\(sim.workflowIDs[0])/jobs/\(job)/download?size=\(1 << 30)"
        let download = BackgroundCall {
            try StreamingHTTPClient.download(port: port, target: target, headers: [("Authorization", token)], bytesPerSecond: 1 << 20)
        }
        #expect(eventually { sim.stats.downloadsStarted == 1 })
        let waiting = try TransferSchedulingTests.openStalledDownload(port: port, target: target, token: token)
        defer { close(waiting) }
        #expect(eventually { proxy.streams()?.queued == 1 })
        let started = Date()
        proxy.process.terminate()
        let answer = try? download.value()
        proxy.process.waitUntilExit()
        proxy.stopped.set()
        // drain_seconds is 1; a drain that waited for the download would take 1,024 s (1 GiB at
        // the client's 1 MiB/s). 30 s is far past the one and far short of the other.
        #expect(Date().timeIntervalSince(started) < 30)
        #expect(proxy.process.terminationReason == .exit && proxy.process.terminationStatus == 0,
                "the proxy ended with \(proxy.process.terminationReason) \(proxy.process.terminationStatus): \(proxy.crashReport ?? "")")
        #expect(answer.map { $0.status == 200 && !$0.complete } ?? true, "the download looked whole after \(answer?.bodyBytes ?? 0) bytes")
    }
}
