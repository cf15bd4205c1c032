import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What goes upstream is exactly what was parsed and authorized: request vectors and smuggling
/// mutations replayed against the real proxy, with an upstream that records the bytes it gets.
/// Loopback only.
@Suite struct RequestFramingTests {
    static let followUp = "GET /v0/after HTTP/1.1\r\nHost: h\r\n{AUTH}Connection: close\r\n\r\n"

    /// Replays `vector` (then a normal request on the same connection) and checks the verdict
    /// against the answers and against what reached the upstream.
    static func replay(_ vector: HTTPVector, proxy: ProxyHarness, recorder: WireRecorder) throws {
        let before = recorder.requests.count
        let auth = proxy.writeToken
        let followUp = HTTPVector(name: "follow-up", text: Self.followUp, verdict: .accept(body: ""))
        let reply = try RawHTTPClient.exchange(port: proxy.port, bytes: vector.bytes(authorization: auth) + followUp.bytes(authorization: auth),
                                               timeoutSeconds: 10)
        let answers = answers(in: reply)
        let forwarded = Array(recorder.requests[before...])
        #expect(!forwarded.contains { $0.target.contains("smuggled") }, "\(vector): a smuggled request reached the upstream")
        guard let first = answers.first else {
            Issue.record("\(vector): no answer")
            return
        }
        switch vector.verdict {
        case .refuse(let status):
            #expect(first.status == status, "\(vector): \(first.status) \(first.text)")
            #expect(!forwarded.contains { $0.target.hasPrefix("/v0/vector") }, "\(vector) was refused yet forwarded")
            #expect(forwarded.allSatisfy { $0.target == "/v0/after" }, "\(vector): \(forwarded.map(\.target))")
        case .accept(let body):
            #expect(first.status == 200, "\(vector): \(first.status) \(first.text)")
            guard let request = forwarded.first else {
                Issue.record("\(vector): nothing reached the upstream")
                return
            }
            #expect(request.target.hasPrefix("/v0/vector"), "\(vector): \(request.target)")
            #expect(request.body == Array(body.utf8), "\(vector): body \(String(decoding: request.body, as: UTF8.self))")
            let method = String(vector.text.prefix { $0 != " " }).trimmingCharacters(in: .newlines)
            #expect(request.method == method, "\(vector): \(request.method)")
            // Framed as parsed: chunked stays chunked (streamed), a length stays that length.
            if request.header("Transfer-Encoding") != nil {
                #expect(request.values("Transfer-Encoding") == ["chunked"] && request.values("Content-Length").isEmpty,
                        "\(vector): \(request.headers)")
                #expect(vector.text.lowercased().contains("transfer-encoding"), "\(vector): chunked upstream, not from the client")
            } else if method == "POST" || !body.isEmpty {
                #expect(request.values("Content-Length") == [String(body.utf8.count)], "\(vector): the body went up unframed")
            }
            // HTTP/1.0 closes after one exchange; otherwise the follow-up came through intact.
            let expected = vector.text.contains("HTTP/1.0") ? ["/v0/vector"] : ["/v0/vector", "/v0/after"]
            #expect(forwarded.map { String($0.target.prefix(10)) } == expected, "\(vector): \(forwarded.map(\.target))")
        }
    }

    /// Replays `vectors` against a proxy with one upstream connection in front of a new
    /// recorder, which it returns (running: the caller stops it).
    static func replayAgainstTheRealServer(_ vectors: [HTTPVector]) async throws -> WireRecorder {
        let recorder = try WireRecorder()
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(recorder.port)") {
            $0.upstreamMaxConnections = 1
            $0.listenTimeoutSeconds = 3
            $0.listenMaxBodyBytes = 64 * 1024
            // The vectors go to pass-through routes, whose bodies are streamed.
            $0.listenMaxUploadBytes = 64 * 1024
        }
        for vector in vectors { try replay(vector, proxy: proxy, recorder: recorder) }
        await proxy.stop()
        return recorder
    }

    @Test func everyVectorGetsItsVerdictFromTheRealServer() async throws {
        try await Self.replayAgainstTheRealServer(HTTPVector.all).stop()
    }

    @Test func smugglingMutationsAreRefusedAndWhatTheyHideIsNeverRead() async throws {
        let recorder = try await Self.replayAgainstTheRealServer(HTTPVector.smuggling)
        defer { recorder.stop() }
        let everything = recorder.rawStreams.map { String(decoding: $0, as: UTF8.self) }.joined()
        #expect(!everything.contains("smuggled"))
    }

    /// The reported attack: a read-only token's GET carrying a job creation as its body.
    @Test func aReadOnlyTokenCannotCreateAJobThroughABody() async throws {
        let recorder = try WireRecorder { request in
            if request.method == "POST" { return WireRecorder.json(201, #"{"id":"smuggled-job","status":"queued"}"#) }
            return WireRecorder.json(200, #"{"id":"j1","status":"running","updated_at":"2026-11-30T00:00:00Z"}"#)
        }
        defer { recorder.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(recorder.port)") { $0.upstreamMaxConnections = 1 }
        let smuggled = "POST /v0/workflows/w/jobs?project_id=x HTTP/1.1\r\nHost: api.pixxel.space\r\nContent-Length: 2\r\n\r\n{}"
        let attack = try proxy.request("GET", "/v0/workflows", token: proxy.readToken, body: Array(smuggled.utf8))
        #expect(attack.status == 400)
        let detail = try proxy.get("/v0/workflows/w/jobs/j1", token: proxy.readToken)
        #expect(detail.status == 200 && detail.text.contains("\"j1\""), "the cache holds the job's own document: \(detail.text)")
        #expect(recorder.requests.allSatisfy { $0.method == "GET" }, "\(recorder.requests.map(\.method))")
        let raw = recorder.rawStreams.map { String(decoding: $0, as: UTF8.self) }.joined()
        #expect(!raw.contains("POST"), "no POST in any byte the upstream received")
        await proxy.stop()
    }

    @Test(arguments: ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"], ["content-length", "chunked", "empty"])
    func bodiesOfEveryMethodReachTheUpstreamWholeAndFramed(_ method: String, _ framing: String) async throws {
        let recorder = try WireRecorder()
        defer { recorder.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(recorder.port)") { $0.upstreamMaxConnections = 1 }
        // A body that would be a request of its own if it went up unframed.
        let body = framing == "empty" ? "" : "GET /v0/smuggled HTTP/1.1\r\nHost: h\r\n\r\n{\"name\":\"caf\u{E9}\"}"
        let fields = [("X-Custom", "one, two"), ("X-Utf8", "caf\u{E9} \u{2603}"), ("User-Agent", "framing-test/1"), ("Accept", "application/json")]
        var head = "\(method) /v0/things/a%20b?x=1&y=%2F HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: \(proxy.writeToken)\r\n"
        for (name, value) in fields { head += "\(name): \(value)\r\n" }
        var bytes: [UInt8]
        if framing == "chunked" {
            let data = Array(body.utf8)
            bytes = Array((head + "Transfer-Encoding: chunked\r\n\r\n").utf8)
            bytes += Array("5;ext=1\r\n".utf8) + data[0..<5] + Array("\r\n".utf8)
            bytes += Array(String(data.count - 5, radix: 16).utf8) + Array("\r\n".utf8) + data[5...] + Array("\r\n0\r\nX-T: 1\r\n\r\n".utf8)
        } else {
            bytes = Array((head + "Content-Length: \(body.utf8.count)\r\n\r\n" + body).utf8)
        }
        bytes += Array("GET /v0/after HTTP/1.1\r\nHost: h\r\nAuthorization: \(proxy.writeToken)\r\nConnection: close\r\n\r\n".utf8)
        let answers = answers(in: try RawHTTPClient.exchange(port: proxy.port, bytes: bytes, timeoutSeconds: 10))
        #expect(answers.map(\.status) == [200, 200])
        let forwarded = recorder.requests
        #expect(forwarded.map(\.target) == ["/v0/things/a%20b?x=1&y=%2F", "/v0/after"], "one upstream request per client request")
        guard let request = forwarded.first else { return }
        #expect(request.method == method)
        #expect(request.body == Array(body.utf8))
        let bodyless = body.isEmpty && (method == "DELETE" || method == "OPTIONS")
        // Framed as parsed: a chunked body goes up chunked (it is streamed, its length unknown
        // until its end), any other with its exact Content-Length.
        if framing == "chunked" {
            #expect(request.values("Content-Length") == [] && request.values("Transfer-Encoding") == ["chunked"])
        } else {
            #expect(request.values("Content-Length") == (bodyless ? [] : [String(body.utf8.count)]))
            #expect(request.header("Transfer-Encoding") == nil)
        }
        #expect(request.values("Host").count == 1)
        #expect(request.values("Authorization") == [ProxyHarness.apiKey])
        // The client's end-to-end fields, unchanged and in order; nothing else but what the
        // proxy adds itself.
        let ownNames: Set<String> = ["host", "content-length", "transfer-encoding", "connection", "authorization", "x-request-id"]
        let passed = request.headers.filter { !ownNames.contains($0.name.lowercased()) }
        #expect(passed.map(\.name) == fields.map(\.0) && passed.map(\.value) == fields.map(\.1), "\(passed)")
        #expect(request.rawHead.contains(subsequence: Array("X-Utf8: caf\u{E9} \u{2603}\r\n".utf8)), "value bytes unchanged")
        await proxy.stop()
    }

    /// Property: over many crafted inputs, a read-only client never causes an upstream request
    /// with a method other than GET or HEAD, nor any body. The same inputs with a write token
    /// do reach the upstream as writes, so the generator does try.
    @Test func aReadOnlyClientNeverCausesAnUpstreamWrite() async throws {
        let recorder = try WireRecorder { request in
            if request.target.contains("/jobs/") || request.target.hasSuffix("/jobs") {
                return WireRecorder.json(200, #"{"id":"j","status":"running","updated_at":"2026-11-30T00:00:00Z","jobs":[]}"#)
            }
            return WireRecorder.okAnswer(request)
        }
        defer { recorder.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(recorder.port)") {
            $0.upstreamMaxConnections = 2
            $0.listenTimeoutSeconds = 1
        }
        var generator = CraftedRequests(seed: 0x5EED)
        let inputs = (0..<400).map { _ in generator.next() }
        try Self.send(inputs, token: proxy.readToken, port: proxy.port)
        let readOnly = recorder.requests
        #expect(readOnly.count >= 5, "the generator reaches the upstream at all: \(readOnly.count)")
        for request in readOnly {
            #expect(request.method == "GET" || request.method == "HEAD", "\(request.method) \(request.target)")
            #expect(request.body.isEmpty && request.header("Content-Length") == nil, "a body went up: \(request.target)")
        }
        for stream in recorder.rawStreams {
            let text = String(decoding: stream, as: UTF8.self)
            for line in text.components(separatedBy: "\r\n") {
                let method = line.prefix { $0 != " " }
                #expect(!["POST", "PUT", "PATCH", "DELETE", "OPTIONS"].contains(String(method)) || !line.contains(" HTTP/1."),
                        "a write request line reached the upstream: \(line)")
            }
        }
        // Control: the same inputs with a write token do produce writes upstream.
        try Self.send(inputs, token: proxy.writeToken, port: proxy.port)
        let writes = recorder.requests.dropFirst(readOnly.count).filter { $0.method != "GET" && $0.method != "HEAD" }
        #expect(writes.count > 5, "the generator's writes reach the upstream with a write token: \(writes.count)")
        await proxy.stop()
    }

    /// Each input on its own connection, four at a time.
    static func send(_ inputs: [CraftedRequests.Input], token: String, port: UInt16) throws {
        let queue = DispatchQueue(label: "crafted", attributes: .concurrent)
        let group = DispatchGroup()
        let chunks = stride(from: 0, to: inputs.count, by: 60).map { Array(inputs[$0..<min($0 + 60, inputs.count)]) }
        for chunk in chunks {
            queue.async(group: group) {
                for input in chunk { _ = try? RawHTTPClient.exchange(port: port, bytes: input.bytes(token: token), timeoutSeconds: 10) }
            }
        }
        group.wait()
    }

    @Test func headOnAPassThroughRouteCarriesTheUpstreamsLength() async throws {
        let recorder = try WireRecorder { request in
            Array("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1234\r\n\r\n".utf8)
                + (request.method == "HEAD" ? [] : [UInt8](repeating: 0x61, count: 1234))
        }
        defer { recorder.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(recorder.port)")
        let reply = String(decoding: try RawHTTPClient.exchange(
            port: proxy.port, bytes: Array("HEAD /v0/assets/a HTTP/1.1\r\nHost: h\r\nAuthorization: \(proxy.readToken)\r\nConnection: close\r\n\r\n".utf8)),
            as: UTF8.self)
        #expect(reply.hasPrefix("HTTP/1.1 200"))
        #expect(reply.contains("\r\nContent-Length: 1234\r\n"), "\(reply)")
        #expect(reply.hasSuffix("\r\n\r\n"), "no body after a HEAD answer")
        #expect(recorder.requests.map(\.method) == ["HEAD"])
        await proxy.stop()
    }

    @Test func anAbsoluteFormTargetIsRoutedByItsPathAlone() async throws {
        let recorder = try WireRecorder { _ in
            WireRecorder.json(200, #"{"id":"j","status":"completed","updated_at":"2026-11-30T00:00:00Z"}"#)
        }
        defer { recorder.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(recorder.port)")
        let answer = try proxy.request("GET", "http://evil.example:9/v0/workflows/w/jobs/j", token: proxy.readToken)
        #expect(answer.status == 200)
        #expect(answer.header("Cache-Status")?.contains("fwd=miss") == true, "routed as a job detail")
        #expect(recorder.requests.map(\.target) == ["/v0/workflows/w/jobs/j"])
        #expect(recorder.requests.first?.header("Host") == "127.0.0.1:\(recorder.port)", "the authority never goes upstream")
        await proxy.stop()
    }

    @Test func rawQueryCharactersThatClientsSendAreForwardedEncoded() async throws {
        let recorder = try WireRecorder()
        defer { recorder.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(recorder.port)")
        let answer = try proxy.get(#"/v0/things?a=1|2&b[]=3&c={x}^"y"&d=%7C"#, token: proxy.readToken)
        #expect(answer.status == 200)
        #expect(recorder.requests.map(\.target) == ["/v0/things?a=1%7C2&b%5B%5D=3&c=%7Bx%7D%5E%22y%22&d=%7C"])
        // The path stays strict.
        #expect(try proxy.get("/v0/th|ngs", token: proxy.readToken).status == 400)
        await proxy.stop()
    }

    @Test func headerBytesAboveASCIIAreForwardedUnchangedOrRefused() async throws {
        let recorder = try WireRecorder()
        defer { recorder.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(recorder.port)")
        let good = Array("GET /v0/things HTTP/1.1\r\nHost: h\r\nAuthorization: \(proxy.readToken)\r\nX-Name: ".utf8)
            + [0xE2, 0x98, 0x83, 0x20, 0xC3, 0xA9] + Array("\r\nConnection: close\r\n\r\n".utf8)
        #expect(try RawHTTPClient.parse(RawHTTPClient.exchange(port: proxy.port, bytes: good)).status == 200)
        #expect(recorder.requests.first?.rawHead.contains(subsequence: [0x58, 0x2D, 0x4E, 0x61, 0x6D, 0x65, 0x3A, 0x20, 0xE2, 0x98, 0x83, 0x20, 0xC3, 0xA9, 0x0D, 0x0A]) == true)
        let bad = Array("GET /v0/things HTTP/1.1\r\nHost: h\r\nAuthorization: \(proxy.readToken)\r\nX-Name: caf".utf8)
            + [0xE9] + Array("\r\nConnection: close\r\n\r\n".utf8)
        #expect(try RawHTTPClient.parse(RawHTTPClient.exchange(port: proxy.port, bytes: bad)).status == 400)
        #expect(recorder.requests.count == 1, "the invalid value never went upstream")
        await proxy.stop()
    }

    /// An upstream that sends more than its answer: the rest must not become the next answer.
    @Test func bytesPastAnUpstreamAnswerAreNeverReadAsTheNextAnswer() async throws {
        let recorder = try WireRecorder { request in
            guard request.target == "/v0/first" else { return WireRecorder.json(200, #"{"for":"second"}"#) }
            return WireRecorder.json(200, #"{"for":"first"}"#) + WireRecorder.json(200, #"{"for":"poison"}"#)
        }
        defer { recorder.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(recorder.port)") { $0.upstreamMaxConnections = 1 }
        #expect(try proxy.get("/v0/first", token: proxy.readToken).text == #"{"for":"first"}"#)
        #expect(try proxy.get("/v0/second", token: proxy.readToken).text == #"{"for":"second"}"#)
        #expect(recorder.requests.map(\.target) == ["/v0/first", "/v0/second"])
        #expect(recorder.connectionCount == 2, "the connection in doubt was not reused")
        await proxy.stop()
    }
}

/// Found by an attack review of the framing change: bodies read before authentication,
/// slow clients, interim answers and hostile header bytes from the upstream, method overrides.
@Suite struct RequestAdmissionTests {
    /// Reads one answer (up to its blank line and `Content-Length` bytes) or until close.
    static func readAnswer(_ fd: Int32) throws -> RawResponse {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            if let end = RawHTTPClient.find([13, 10, 13, 10], in: received) {
                let parsed = try RawHTTPClient.parse(received)
                let length = Int(parsed.header("Content-Length") ?? "0") ?? 0
                if received.count >= end + 4 + length { return parsed }
            }
            let n = recv(fd, &buffer, buffer.count, 0)
            guard n > 0 else { return try RawHTTPClient.parse(received) }
            received += buffer[0..<n]
        }
    }

    static func send(_ fd: Int32, _ text: String) {
        _ = Array(text.utf8).withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// A body is never read, and 100 Continue never sent, for a caller that may not send it.
    @Test(arguments: ["none", "reader"])
    func aBodyIsRefusedOnItsHeadBeforeAnyOfItIsRead(_ who: String) async throws {
        let recorder = try WireRecorder()
        defer { recorder.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(recorder.port)")
        let fd = try RawHTTPClient.connect(port: proxy.port, timeoutSeconds: 10)
        defer { close(fd) }
        let auth = who == "reader" ? "Authorization: \(proxy.readToken)\r\n" : ""
        // The head alone, announcing a large body that never comes.
        Self.send(fd, "POST /v0/things HTTP/1.1\r\nHost: h\r\n\(auth)Expect: 100-continue\r\nContent-Length: 5000000\r\n\r\n")
        let answer = try Self.readAnswer(fd)
        #expect(answer.status == (who == "reader" ? 403 : 401), "answered on the head, without waiting for the body")
        #expect(answer.header("Connection") == "close")
        #expect(answer.header("X-Request-Id") != nil)
        #expect(recorder.requests.isEmpty)
        let status = who == "reader" ? "403" : "401"
        #expect(proxy.logs.all.contains { $0.contains("POST /v0/* \(status)") && $0.contains("request_id=") },
                "the refusal has an access line: \(proxy.logs.all.suffix(3))")
        await proxy.stop()
    }

    @Test func aClientThatSendsItsHeadByteByByteIsCutOff() async throws {
        let recorder = try WireRecorder()
        defer { recorder.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(recorder.port)") { $0.listenTimeoutSeconds = 1 }
        let fd = try RawHTTPClient.connect(port: proxy.port, timeoutSeconds: 10)
        defer { close(fd) }
        // Never idle for a whole timeout, but never done: 40 bytes, one every 0.2 s (8 s).
        let head = "GET /v0/things HTTP/1.1\r\nX-Slow: " + String(repeating: "s", count: 40)
        var refusedAfter: Int?
        for (index, byte) in head.utf8.enumerated() {
            let sent = [byte].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, 1, Int32(MSG_NOSIGNAL)) }
            if sent <= 0 { refusedAfter = index; break }
            var pending: pollfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&pending, 1, 200) > 0 { refusedAfter = index; break }
        }
        #expect(refusedAfter != nil && refusedAfter! < head.utf8.count - 5, "the connection was ended before the head was")
        let answer = try? Self.readAnswer(fd)
        #expect(answer?.status == 408)
        await proxy.stop()
    }

    /// Chunks of one byte (overhead 5x the body) are fine; each byte is decoded once.
    @Test func aBodyOfTinyChunksIsTakenWhole() async throws {
        let recorder = try WireRecorder()
        defer { recorder.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(recorder.port)") { $0.listenMaxUploadBytes = 64 * 1024 }
        let body = (0..<(64 * 1024)).map { _ in "1\r\nx\r\n" }.joined()
        let request = "POST /v0/things HTTP/1.1\r\nHost: h\r\nAuthorization: \(proxy.writeToken)\r\nTransfer-Encoding: chunked\r\n"
            + "Connection: close\r\n\r\n" + body + "0\r\n\r\n"
        let answer = try RawHTTPClient.parse(RawHTTPClient.exchange(port: proxy.port, bytes: Array(request.utf8), timeoutSeconds: 30))
        #expect(answer.status == 200)
        #expect(recorder.requests.first?.body.count == 64 * 1024)
        await proxy.stop()
    }

    @Test func anInterimAnswerFromTheUpstreamIsNeverTakenForTheFinalOne() async throws {
        let recorder = try WireRecorder { request in
            guard request.target == "/v0/one" else { return WireRecorder.json(200, #"{"for":"two"}"#) }
            return Array("HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n".utf8) + WireRecorder.json(200, #"{"for":"one"}"#)
        }
        defer { recorder.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(recorder.port)") { $0.upstreamMaxConnections = 1 }
        let pipelined = "GET /v0/one HTTP/1.1\r\nHost: h\r\nAuthorization: \(proxy.readToken)\r\n\r\n"
            + "GET /v0/two HTTP/1.1\r\nHost: h\r\nAuthorization: \(proxy.readToken)\r\nConnection: close\r\n\r\n"
        let replies = answers(in: try RawHTTPClient.exchange(port: proxy.port, bytes: Array(pipelined.utf8)))
        // A pass-through route is streamed: the interim answer is dropped and the final one
        // passed on (RFC 9110 15.2); each request gets its own.
        #expect(replies.map(\.status) == [200, 200])
        #expect(replies.first?.text == #"{"for":"one"}"#, "the final answer, not the interim one")
        #expect(replies.last?.text == #"{"for":"two"}"#, "the second request got its own answer")
        await proxy.stop()
    }

    @Test func upstreamHeaderBytesThatCannotBePassedOnUnchangedAreDropped() async throws {
        let recorder = try WireRecorder { _ in
            Array("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Bytes: ".utf8) + [0xFF, 0xFE]
                + Array("\r\nX-Control: a\u{1}b\r\nX-Fine: caf\u{E9}\r\nContent-Length: 2\r\n\r\n{}".utf8)
        }
        defer { recorder.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(recorder.port)")
        let reply = try RawHTTPClient.exchange(
            port: proxy.port, bytes: Array("GET /v0/things HTTP/1.1\r\nHost: h\r\nAuthorization: \(proxy.readToken)\r\nConnection: close\r\n\r\n".utf8))
        let answer = try RawHTTPClient.parse(reply)
        #expect(answer.status == 200 && answer.text == "{}")
        #expect(answer.header("X-Bytes") == nil && answer.header("X-Control") == nil)
        #expect(reply.contains(subsequence: Array("X-Fine: caf\u{E9}\r\n".utf8)))
        #expect(!reply.contains(subsequence: [0xEF, 0xBF, 0xBD]), "nothing rewritten to U+FFFD")
        await proxy.stop()
    }

    @Test func aReadMayNotAskForAnotherMethodButAWriteMay() async throws {
        let recorder = try WireRecorder()
        defer { recorder.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(recorder.port)")
        for field in ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override", "x-http-method-override"] {
            #expect(try proxy.get("/v0/things", token: proxy.readToken, headers: [(field, "DELETE")]).status == 400, "\(field)")
        }
        #expect(try proxy.get("/v0/things?_method=DELETE", token: proxy.readToken).status == 400)
        #expect(try proxy.get("/v0/workflows/w/jobs?_method=DELETE", token: proxy.readToken).status == 400)
        #expect(recorder.requests.isEmpty)
        let write = try proxy.request("POST", "/v0/things", token: proxy.writeToken, headers: [("X-HTTP-Method-Override", "PATCH")])
        #expect(write.status == 200)
        #expect(recorder.requests.first?.header("X-HTTP-Method-Override") == "PATCH")
        await proxy.stop()
    }

    @Test func proxyFieldsNeverGoUpAndConnectionCannotRemoveTheRequestID() async throws {
        let recorder = try WireRecorder()
        defer { recorder.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(recorder.port)")
        let answer = try proxy.get("/v0/things", token: proxy.readToken,
                                   headers: [("Proxy-Foo", "y"), ("Connection", "X-Request-Id, X-Drop"), ("X-Drop", "1"), ("X-Request-Id", "mine-1")])
        #expect(answer.status == 200)
        let request = try #require(recorder.requests.first)
        #expect(request.header("Proxy-Foo") == nil && request.header("X-Drop") == nil)
        #expect(request.values("X-Request-Id") == ["mine-1"])
        await proxy.stop()
    }

    @Test func headOnAChunkedUpstreamAnswerSaysNoLength() async throws {
        let recorder = try WireRecorder { _ in
            Array("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)
        }
        defer { recorder.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(recorder.port)")
        let reply = String(decoding: try RawHTTPClient.exchange(
            port: proxy.port, bytes: Array("HEAD /v0/things HTTP/1.1\r\nHost: h\r\nAuthorization: \(proxy.readToken)\r\nConnection: close\r\n\r\n".utf8)),
            as: UTF8.self)
        #expect(reply.hasPrefix("HTTP/1.1 200"))
        #expect(!reply.lowercased().contains("content-length"), "\(reply)")
        await proxy.stop()
    }

    @Test func anAbsurdRetryAfterFromTheUpstreamIsIgnoredNotFatal() async throws {
        let recorder = try WireRecorder { _ in
            WireRecorder.json(503, #"{"error":"busy"}"#, extraHeaders: "Retry-After: Sun, 06 Nov 99999999999999 08:49:37 GMT\r\n")
        }
        defer { recorder.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(recorder.port)")
        #expect(try proxy.get("/v0/things", token: proxy.readToken).status == 503)
        #expect(try proxy.get("/healthz", token: nil).status == 200, "still serving")
        await proxy.stop()
    }

    /// A read-only token's upload is refused on its head: 403, and no `100 Continue` first.
    @Test func aReadTokensUploadIsRefusedBeforeContinue() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)")
        for framing in ["Transfer-Encoding: chunked\r\n", "Content-Length: 5\r\n"] {
            let head = "POST /v0/workflows/w/jobs?project_id=p HTTP/1.1\r\nHost: h\r\nAuthorization: \(proxy.readToken)\r\n"
                + "Expect: 100-continue\r\n\(framing)\r\n"
            let reply = String(decoding: try RawHTTPClient.exchange(port: proxy.port, bytes: Array(head.utf8)), as: UTF8.self)
            #expect(reply.hasPrefix("HTTP/1.1 403"), "\(reply)")
            #expect(!reply.contains("100 Continue"))
        }
        await proxy.stop()
    }

    /// What an admission decided belongs to its request: the next request on the connection,
    /// without a token, is decided afresh (401), whatever the one before it carried.
    @Test func anAdmissionDoesNotCarryIntoTheNextPipelinedRequest() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)")
        let workflow = sim.workflowIDs[0]
        let first = "POST /v0/workflows/\(workflow)/jobs?project_id=p HTTP/1.1\r\nHost: h\r\nAuthorization: \(proxy.writeToken)\r\n"
            + "Content-Length: 2\r\n\r\n{}"
        let second = "DELETE /v0/workflows/\(workflow)/jobs/x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
        let third = "POST /admin/purge?workflow_id=\(workflow) HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        let reply = String(decoding: try RawHTTPClient.exchange(port: proxy.port, bytes: Array((first + second + third).utf8)), as: UTF8.self)
        let statuses = reply.components(separatedBy: "HTTP/1.1 ").dropFirst().map { String($0.prefix(3)) }
        #expect(statuses == ["200", "401", "401"], "\(statuses)")
        await proxy.stop()
    }
}

/// A deterministic generator of hostile requests: methods, routes, framing fields in every
/// spelling, line-end tricks, and bodies that hold a job creation.
struct CraftedRequests {
    struct Input {
        let text: String
        func bytes(token: String) -> [UInt8] { Array(text.replacingOccurrences(of: "{TOKEN}", with: token).utf8) }
    }

    private var state: UInt64

    init(seed: UInt64) { state = seed }

    /// SplitMix64: the same inputs on every run.
    mutating func random(_ bound: Int) -> Int {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return Int((z ^ (z >> 31)) % UInt64(bound))
    }

    mutating func pick<T>(_ choices: [T]) -> T { choices[random(choices.count)] }

    static let write = "POST /v0/workflows/w/jobs?project_id=p HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}"
    static let methods = ["GET", "HEAD", "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "get", "BREW", "TRACE", "CONNECT"]
    static let targets = ["/v0/workflows", "/v0/workflows/w/jobs", "/v0/workflows/w/jobs/j", "/v0/projects/p",
                          "/v0/workflows/w/jobs?status=running", "http://h/v0/workflows/w/jobs", "/admin/purge?workflow_id=w",
                          "/v0/workflows/a%20b/jobs/c", "*"]
    static let framing = ["Content-Length: 86", "Content-Length: 0", "Content-Length: 86\r\nContent-Length: 86",
                          "Transfer-Encoding: chunked", "Transfer-Encoding: chunked\r\nContent-Length: 4",
                          "Content-Length: 4\r\nTransfer-Encoding: chunked", "Transfer-Encoding: xchunked",
                          "Transfer-Encoding : chunked", "Transfer_Encoding: chunked", " Transfer-Encoding: chunked",
                          "Transfer-Encoding:\tchunked", "Transfer-Encoding: chunked, identity", "Content-Length: +86",
                          "Content-Length:86", "X: y\nTransfer-Encoding: chunked", "Expect: 100-continue\r\nContent-Length: 86", ""]
    static let ends = ["\r\n", "\r\n", "\n"]

    mutating func next() -> Input {
        let method = pick(Self.methods)
        let target = pick(Self.targets)
        let end = pick(Self.ends)
        var head = "\(method) \(target) HTTP/1.\(pick(["1", "1", "0"]))\(end)Host: h\(end)Authorization: {TOKEN}\(end)"
        // Two in five with no framing field (so that many are valid reads), else one spelling.
        if random(5) >= 2 { head += pick(Self.framing) + end }
        if random(3) == 0 { head += "Connection: keep-alive\(end)" }
        head += end
        let body: String
        switch random(5) {
        case 0: body = Self.write
        case 1: body = String(Self.write.utf8.count, radix: 16) + "\r\n" + Self.write + "\r\n0\r\n\r\n"
        case 2: body = "0\r\n\r\n" + Self.write
        default: body = ""
        }
        // A normal request after it: whatever the framing did, its answer ends the exchange.
        return Input(text: head + body + "\r\nGET /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    }
}

extension Array where Element == UInt8 {
    func contains(subsequence: [UInt8]) -> Bool { RawHTTPClient.find(subsequence, in: self) != nil }
}
