import Foundation
import ProxyConfig
import ProxyServer
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// An upstream whose answers (status, body) and delays the test sets per target.
final class AttackUpstream: @unchecked Sendable {
    struct State {
        var answers: [String: (status: Int, body: String)] = [:]
        var delays: [String: Double] = [:]
    }
    let state = Mutex(State())
    var recorder: WireRecorder!

    init() throws {
        recorder = try WireRecorder { [unowned self] request in
            let (answer, delay) = state.withLock { ($0.answers[request.target], $0.delays[request.target]) }
            if let delay { Thread.sleep(forTimeInterval: delay) }
            guard let answer else { return WireRecorder.json(404, #"{"error":{"code":"not_found","message":"no","details":null}}"#) }
            return WireRecorder.json(answer.status, answer.body)
        }
    }

    func set(_ target: String, _ body: String, status: Int = 200) { state.withLock { $0.answers[target] = (status, body) } }
    func delay(_ target: String, _ seconds: Double?) { state.withLock { $0.delays[target] = seconds } }
    func calls(_ target: String) -> Int { recorder.requests.filter { $0.target == target }.count }

    func proxy(clock: ManualClock? = nil, configure: @escaping (inout ProxySettings) -> Void = { _ in }) throws -> ProxyHarness {
        try ProxyHarness(upstreamURL: "http://127.0.0.1:\(recorder.port)", clock: clock) {
            $0.upstreamTimeoutSeconds = awaitedSeconds
            $0.activeJobTTLSeconds = 10
            $0.jobListTTLSeconds = 5
            configure(&$0)
        }
    }
}

@Suite(.serialized) struct ChangeStreamAttackTests {
    typealias Documents = CacheCorrectnessTests.Documents
    static let list = ChangeStreamTests.list
    static let watch = ChangeStreamTests.watch
    static func job(_ id: String, _ updatedAt: String) -> String { Documents.job(id, updatedAt) }
    static func listBody(_ jobs: [String]) -> String { ChangeStreamTests.listBody(jobs) }

    /// A workflow id that needs percent-encoding: the stream must watch that workflow's list,
    /// the one a plain list request gets, and ask the upstream for that path.
    @Test(arguments: [("a%2520b", "y"), ("a%3Fb", "z"), ("%C3%A9", "e")])
    func aStreamOnAWorkflowWhoseIdNeedsEncodingWatchesThatWorkflow(_ path: String, _ id: String) async throws {
        let upstream = try AttackUpstream()
        defer { upstream.recorder.stop() }
        upstream.set("/v0/workflows/a%20b/jobs", Self.listBody([Self.job("x", "2026-11-20T10:00:00Z")]))  // workflow "a b"
        upstream.set("/v0/workflows/a%2520b/jobs", Self.listBody([Self.job("y", "2026-11-20T10:00:00Z")]))  // workflow "a%20b"
        upstream.set("/v0/workflows/a%3Fb/jobs", Self.listBody([Self.job("z", "2026-11-20T10:00:00Z")]))  // workflow "a?b"
        upstream.set("/v0/workflows/%C3%A9/jobs", Self.listBody([Self.job("e", "2026-11-20T10:00:00Z")]))  // workflow "é"
        let proxy = try upstream.proxy()
        let plain = try proxy.get("/v0/workflows/\(path)/jobs", token: proxy.readToken)
        #expect((plain.json?["jobs"] as? [[String: Any]])?.first?["id"] as? String == id, "the plain list of \(path)")
        let stream = try ChangeStreamTests.open(proxy, "/v0/workflows/\(path)/jobs?watch=1")
        #expect(stream.status == 200, "\(path): \(stream.status) \(String(decoding: stream.body, as: UTF8.self))")
        if stream.status == 200 {
            let first = try stream.events(1)
            #expect(first.first?.jobID == id, "\(path): the stream shows job \(first.first?.jobID ?? "none") of another workflow")
        }
        let targets = upstream.recorder.requests.map(\.target)
        #expect(targets.allSatisfy { $0 == "/v0/workflows/\(path)/jobs" }, "asked upstream: \(targets)")
        await proxy.stop()
    }

    /// A cached list whose ETag a client holds, expired, and an upstream that takes 2 s to
    /// answer its revalidation: what happens meanwhile is what the test is about.
    static func listAboutToRevalidateSlowly() throws -> (AttackUpstream, ProxyHarness, String) {
        let upstream = try AttackUpstream()
        upstream.set(list, listBody([job("a", "2026-11-20T10:00:00Z")]))
        let clock = ManualClock()
        let proxy = try upstream.proxy(clock: clock)
        guard let tag = try proxy.get(list, token: proxy.readToken).header("ETag") else { throw RawHTTPError(description: "no ETag") }
        clock.advance(6)
        upstream.delay(list, 2)
        return (upstream, proxy, tag)
    }

    /// A client that sends its FIN while its stream is being opened (the list on its way from a
    /// slow upstream): the README says a FIN ends a stream; the slot must come back.
    @Test func aFinWhileTheStreamOpensEndsIt() async throws {
        let upstream = try AttackUpstream()
        defer { upstream.recorder.stop() }
        upstream.set(Self.list, Self.listBody([Self.job("a", "2026-11-20T10:00:00Z")]))
        upstream.delay(Self.list, 2)
        let proxy = try upstream.proxy { $0.watchHeartbeatSeconds = 600 }
        let stream = try EventStreamClient(port: proxy.port, target: Self.watch, headers: [("Authorization", proxy.readToken)])
        stream.finishSending()
        #expect(eventually { upstream.calls(Self.list) == 1 })
        try stream.readHead()
        #expect(eventually { proxy.server.changeStreamCount == 0 }, "the stream of a client that sent its FIN is still open")
        await proxy.stop()
    }

    /// The same for a client that closes its socket (FIN, then RST on the first write) while
    /// the list is on its way: nothing reads the socket any more, so only a later write notices.
    @Test func aClientThatLeavesWhileTheStreamOpensFreesItsSlot() async throws {
        let upstream = try AttackUpstream()
        defer { upstream.recorder.stop() }
        upstream.set(Self.list, Self.listBody([Self.job("a", "2026-11-20T10:00:00Z")]))
        upstream.delay(Self.list, 2)
        let proxy = try upstream.proxy { $0.watchHeartbeatSeconds = 600 }
        let fd = try RawHTTPClient.connect(port: proxy.port, timeoutSeconds: 30)
        RawHTTPClient.send(Array("GET \(Self.watch) HTTP/1.1\r\nHost: x\r\nAuthorization: \(proxy.readToken)\r\n\r\n".utf8), to: fd)
        close(fd)
        #expect(eventually { upstream.calls(Self.list) == 1 })
        // Once the list has come, nothing is in flight and no slot is taken.
        #expect(eventually { proxy.server.inFlightRequests == 0 && proxy.server.changeStreamSlots == 0 }, "a stream is kept for a client that left")
        await proxy.stop()
    }

    /// A held request whose client sends its FIN while the proxy revalidates the resource (before
    /// it is held) is held to its deadline anyway.
    @Test func aFinDuringTheRevalidationBeforeAHoldIsNotMissed() async throws {
        let (upstream, proxy, tag) = try Self.listAboutToRevalidateSlowly()
        defer { upstream.recorder.stop() }
        let request = Array("GET \(Self.list) HTTP/1.1\r\nHost: x\r\nAuthorization: \(proxy.readToken)\r\nIf-None-Match: \(tag)\r\nPrefer: wait=600\r\n\r\n".utf8)
        // Missed, the FIN would leave the request held for 600 s, past the client's timeout.
        let reply = try ClientHalfCloseTests.sendThenShutWrite(port: proxy.port, request)
        #expect(try RawHTTPClient.parse(reply).status == 304)
        await proxy.stop()
    }

    /// The same with a client that resets during the revalidation: the request is held (and its
    /// resource refreshed) for the whole wait on behalf of nobody.
    @Test func aResetDuringTheRevalidationBeforeAHoldIsNotHeld() async throws {
        let (upstream, proxy, tag) = try Self.listAboutToRevalidateSlowly()
        defer { upstream.recorder.stop() }
        let fd = try RawHTTPClient.connect(port: proxy.port, timeoutSeconds: 30)
        RawHTTPClient.send(Array("GET \(Self.list) HTTP/1.1\r\nHost: x\r\nAuthorization: \(proxy.readToken)\r\nIf-None-Match: \(tag)\r\nPrefer: wait=60\r\n\r\n".utf8), to: fd)
        #expect(eventually { upstream.calls(Self.list) == 2 })
        var linger = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
        close(fd)
        // Held, the request would stay in flight for its whole wait.
        #expect(eventually { proxy.server.inFlightRequests == 0 && proxy.server.heldRequestCount == 0 }, "held for a client that reset")
        await proxy.stop()
    }

    /// A token revoked while its stream is being opened (the list on its way) gets no stream.
    @Test func aStreamOpeningWhenItsTokenIsRevokedIsRefused() async throws {
        let upstream = try AttackUpstream()
        defer { upstream.recorder.stop() }
        upstream.set(Self.list, Self.listBody([Self.job("a", "2026-11-20T10:00:00Z")]))
        upstream.delay(Self.list, 2)
        let proxy = try upstream.proxy()
        let stream = try EventStreamClient(port: proxy.port, target: Self.watch, headers: [("Authorization", proxy.readToken)])
        #expect(eventually { upstream.calls(Self.list) == 1 })
        try ClientsFileWriter.revoke(name: "reader", path: proxy.server.settings.clientsFile)
        proxy.server.reloadClients()
        try stream.readHead()
        #expect(stream.status == 401, "a revoked token got \(stream.status)")
        #expect(eventually { proxy.server.changeStreamCount == 0 }, "a stream runs on a revoked token")
        await proxy.stop()
    }

    /// A token revoked during the revalidation before a hold gets no data.
    @Test func aWaitWhoseTokenIsRevokedDuringItsRevalidationGetsNoData() async throws {
        let (upstream, proxy, tag) = try Self.listAboutToRevalidateSlowly()
        defer { upstream.recorder.stop() }
        let held = HeldRequestTests.waiting(proxy, Self.list, tag: tag, seconds: 15)
        #expect(eventually { upstream.calls(Self.list) == 2 })
        try ClientsFileWriter.revoke(name: "reader", path: proxy.server.settings.clientsFile)
        proxy.server.reloadClients()
        upstream.set(Self.list, Self.listBody([Self.job("a", "2026-11-20T10:09:00Z")]))
        let answer = try held.value()
        #expect(proxy.server.heldRequestCount == 0, "refused when it would have been held, not held")
        #expect(answer.status == 401, "a revoked token got \(answer.status) \(answer.text.prefix(80))")
        await proxy.stop()
    }

    /// A `pixxel-proxy serve` of its own in front of `documents`, whose resident set is the
    /// proxy's alone (the tests of this process run side by side).
    static func serve(_ documents: Documents, environment: [String: String] = [:]) throws -> (ChildProcess, UInt16, String, TemporaryDirectory) {
        let directory = TemporaryDirectory()
        let clients = directory.path + "/clients"
        let token = try ProcessTests.run(["token", "add", "reader", "--scopes", "read", "--clients-file", clients]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let (process, port) = try ProcessTests.startServe(simPort: documents.recorder.port, clients: clients, directory: directory,
                                                          extraEnvironment: environment)
        return (process, port, token, directory)
    }

    static func openStream(_ port: UInt16, token: String, receiveBuffer: Int? = nil) throws -> EventStreamClient {
        let stream = try EventStreamClient(port: port, target: watch, headers: [("Authorization", token)], receiveBuffer: receiveBuffer)
        try stream.readHead()
        return stream
    }

    /// The caps bound what streams hold: a stream ended by its reader's FIN closes its
    /// connection at once, with the unsent rest of its first burst (found by review: 25 such
    /// streams of an 8 MB list, each ended and its slot given back, held about 200 MB).
    @Test func endedStreamsGiveBackTheirSlotWithTheirBytes() throws {
        let padding = String(repeating: "x", count: 4000)
        let jobs = (0..<2000).map { #"{"id":"j\#($0)","status":"running","updated_at":"2026-11-20T10:00:00Z","notes":"\#(padding)"}"# }
        let documents = try ChangeStreamTests.documents(jobs)  // about 8 MB
        defer { documents.recorder.stop() }
        let (process, port, token, directory) = try Self.serve(documents, environment: [
            "PIXXEL_PROXY_WATCH_MAX_STREAMS_PER_CLIENT": "2", "PIXXEL_PROXY_WATCH_MAX_STREAMS": "4",
        ])
        defer {
            process.terminate()
            process.waitUntilExit()
            _ = directory
        }
        _ = try RawHTTPClient.request(port: port, target: Self.list, headers: [("Authorization", token)])
        let before = process.residentBytes
        var clients: [EventStreamClient] = []
        for _ in 0..<25 {
            let client = try Self.openStream(port, token: token, receiveBuffer: 4096)
            #expect(client.status == 200)
            client.finishSending()
            clients.append(client)
        }
        let grown = process.residentBytes - before
        // Without the pacing and the close on FIN: 25 lists, about 200 MB.
        #expect(grown < 64 << 20, "RSS grew by \(grown >> 20) MiB with every stream ended")
    }

    /// Bytes a client sends after its stream request are dropped, not kept up to the
    /// connection's input limit (about 20 MB) for the stream's life (found by review).
    @Test func bytesSentAfterAStreamRequestAreNotKept() throws {
        let documents = try ChangeStreamTests.documents([Self.job("a", "2026-11-20T10:00:00Z")])
        defer { documents.recorder.stop() }
        let (process, port, token, directory) = try Self.serve(documents)
        defer {
            process.terminate()
            process.waitUntilExit()
            _ = directory
        }
        _ = try RawHTTPClient.request(port: port, target: Self.list, headers: [("Authorization", token)])
        let before = process.residentBytes
        var clients: [EventStreamClient] = []
        let junk = [UInt8](repeating: UInt8(ascii: "x"), count: 4 << 20)
        for _ in 0..<8 {
            let client = try Self.openStream(port, token: token)
            _ = try client.events(1)
            for _ in 0..<5 { RawHTTPClient.send(junk, to: client.fd) }
            clients.append(client)
        }
        let grown = process.residentBytes - before
        #expect(grown < 48 << 20, "RSS grew by \(grown >> 20) MiB for 8 streams of a one-job list (160 MB sent after them)")
    }

    /// A job created upstream after the token without an `updated_at`: a live stream sends it
    /// (it is new); a resume from the token never does.
    @Test func aResumeSendsANewJobWithoutUpdatedAt() async throws {
        let documents = try ChangeStreamTests.documents([Self.job("a", "2026-11-20T10:00:00Z")])
        defer { documents.recorder.stop() }
        let clock = ManualClock()
        let proxy = try CacheCorrectnessTests.proxy(documents, clock: clock)
        let token = try #require(try ChangeStreamTests.open(proxy).events(1).last?.id)
        documents.set(Self.list, Self.listBody([Self.job("a", "2026-11-20T10:00:00Z"), #"{"id":"u","status":"running"}"#]))
        clock.advance(6)
        _ = try proxy.get(Self.list, token: proxy.readToken)
        let resumed = try ChangeStreamTests.open(proxy, headers: [("Last-Event-ID", token)])
        try resumed.awaitComments(1)
        let events = try resumed.events(1)
        #expect(events.contains { $0.jobID == "u" }, "the new job u never reaches a resumed reader: \(events.map(\.name))")
        await proxy.stop()
    }

    /// `Accept: text/event-stream;q=0` says the client does NOT accept a stream.
    @Test func anAcceptThatRefusesEventStreamsGetsTheList() async throws {
        let documents = try ChangeStreamTests.documents([Self.job("a", "2026-11-20T10:00:00Z")])
        defer { documents.recorder.stop() }
        let proxy = try CacheCorrectnessTests.proxy(documents)
        // (A plain client would hang here: the stream never ends and its heartbeats beat any read timeout.)
        let answer = try ChangeStreamTests.open(proxy, Self.list, headers: [("Accept", "application/json, text/event-stream;q=0")])
        #expect(answer.header("Content-Type") == "application/json", "got \(answer.header("Content-Type") ?? "-")")
        await proxy.stop()
    }

    /// Caps after failures: a list call that fails (503, 500) or a client gone before the
    /// list arrives gives its slot back (max_streams 1: a leaked slot refuses the next).
    @Test func slotsComeBackAfterFailuresAndDepartures() async throws {
        let upstream = try AttackUpstream()
        defer { upstream.recorder.stop() }
        let proxy = try upstream.proxy {
            $0.watchMaxStreams = 1
            $0.watchMaxStreamsPerClient = 1
        }
        for status in [500, 503, 502, 429] {
            upstream.set(Self.list, #"{"error":{"code":"x","message":"x","details":null}}"#, status: status)
            let stream = try ChangeStreamTests.open(proxy)
            #expect(stream.status != 200, "\(status)")
        }
        upstream.set(Self.list, Self.listBody([Self.job("a", "2026-11-20T10:00:00Z")]))
        upstream.delay(Self.list, 1)
        // The departures below are awaited until the server has accepted them and closed
        // them: slots and requests at 0 alone also hold before it has read them (a loaded
        // machine), and a departure read afterwards took the slot the last stream needed.
        #expect(eventually { proxy.server.clientConnections.open == 0 })
        let acceptedBefore = proxy.server.clientConnections.accepted
        for _ in 0..<3 {
            let fd = try RawHTTPClient.connect(port: proxy.port, timeoutSeconds: 30)
            RawHTTPClient.send(Array("GET \(Self.watch) HTTP/1.1\r\nHost: x\r\nAuthorization: \(proxy.readToken)\r\nCache-Control: no-cache\r\n\r\n".utf8), to: fd)
            var linger = linger(l_onoff: 1, l_linger: 0)
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
            close(fd)
        }
        #expect(eventually {
            let connections = proxy.server.clientConnections
            return connections.accepted >= acceptedBefore + 3 && connections.open == 0
                && proxy.server.inFlightRequests == 0 && proxy.server.changeStreamSlots == 0
        })
        let head = try proxy.request("HEAD", Self.watch, token: proxy.readToken)
        #expect(head.status == 200 && head.body.isEmpty)
        let last = try ChangeStreamTests.open(proxy)
        #expect(last.status == 200, "\(last.status) \(String(decoding: last.body, as: UTF8.self))")
        await proxy.stop()
    }
    /// One job dated absurdly far ahead (year 9999) pins every id the stream sends to it, and
    /// the proxy then refuses its own ids as "dated over a day ahead": every reconnect is a
    /// reset and the whole list again.
    @Test func aJobDatedYear9999DoesNotMakeEveryResumeAReset() async throws {
        let documents = try ChangeStreamTests.documents([Self.job("a", "2026-11-20T10:00:00Z"), Self.job("z", "9999-12-31T00:00:00Z")])
        defer { documents.recorder.stop() }
        let proxy = try CacheCorrectnessTests.proxy(documents)
        let first = try ChangeStreamTests.open(proxy).events(2)
        let token = try #require(first.last?.id)
        let resumed = try ChangeStreamTests.open(proxy, headers: [("Last-Event-ID", token)])
        let events = try resumed.events(1)
        #expect(events.first?.name != "reset", "the proxy's own id \(token) is refused")
        await proxy.stop()
    }
}
