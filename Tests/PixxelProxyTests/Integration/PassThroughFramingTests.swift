import Foundation
import ProxyConfig
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Framing on the streamed pass-through: uploads meet their deadline and are reframed, no answer
/// looks whole that is not, a read token cannot write, pipelined requests stay apart.
@Suite struct PassThroughFramingTests {
    /// One answer read strictly off the wire: framed by Content-Length, chunked (complete only
    /// with its last chunk and final CRLF) or by the close.
    struct WireAnswer {
        let status: Int
        let headers: [(String, String)]
        let body: [UInt8]
        let complete: Bool
        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
        func count(_ name: String) -> Int { headers.filter { $0.0.lowercased() == name.lowercased() }.count }
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    /// The answers in `reply`, in order; the last may be incomplete. `bodiless`: answers to HEAD.
    static func wireAnswers(_ reply: [UInt8], bodiless: Set<Int> = []) -> [WireAnswer] {
        var out: [WireAnswer] = []
        var rest = reply[...]
        while let end = RawHTTPClient.find([13, 10, 13, 10], in: Array(rest)) {
            let headText = String(decoding: rest.prefix(end), as: UTF8.self)
            var lines = headText.components(separatedBy: "\r\n")
            let statusLine = lines.removeFirst().split(separator: " ")
            guard statusLine.count >= 2, let status = Int(statusLine[1]) else { break }
            let headers = lines.compactMap { line -> (String, String)? in
                guard let colon = line.firstIndex(of: ":") else { return nil }
                return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
            }
            rest = rest.dropFirst(end + 4)
            let answer = { (body: [UInt8], complete: Bool) in WireAnswer(status: status, headers: headers, body: body, complete: complete) }
            if status == 100 { continue }
            if bodiless.contains(out.count) || status == 204 || status == 304 {
                out.append(answer([], true))
                continue
            }
            if let length = headers.first(where: { $0.0.lowercased() == "content-length" }).flatMap({ Int($0.1) }) {
                let body = Array(rest.prefix(length))
                out.append(answer(body, body.count == length))
                rest = rest.dropFirst(length)
                if body.count < length { break }
            } else if headers.contains(where: { $0.0.lowercased() == "transfer-encoding" }) {
                var body: [UInt8] = []
                var complete = false
                while let lineEnd = RawHTTPClient.find([13, 10], in: Array(rest)) {
                    guard let size = Int(String(decoding: rest.prefix(lineEnd), as: UTF8.self).split(separator: ";").first ?? "", radix: 16) else { break }
                    rest = rest.dropFirst(lineEnd + 2)
                    if size == 0 {
                        if rest.starts(with: [13, 10]) {
                            rest = rest.dropFirst(2)
                            complete = true
                        }
                        break
                    }
                    guard rest.count >= size + 2 else { body += rest.prefix(size); rest = rest.dropFirst(rest.count); break }
                    body += rest.prefix(size)
                    rest = rest.dropFirst(size + 2)
                }
                out.append(answer(body, complete))
                if !complete { break }
            } else {
                // Ended by the close: whole only in that the connection closed.
                out.append(answer(Array(rest), true))
                break
            }
        }
        return out
    }

    // MARK: Defects

    /// A client that trickles its upload (a byte every 250 ms: never idle for
    /// `listen.timeout_seconds`) must still meet the request's deadline (the timeout plus one
    /// per MiB of declared body, as for bodies the proxy reads itself). On the streamed
    /// pass-through nothing bounds it: the client connection, a streamed slot and an upstream
    /// connection are held for as long as the client likes (slowloris; `max_connections - 1`
    /// such clients stop every pass-through transfer).
    @Test func aTrickledUploadMeetsItsDeadlineAndFreesItsUpstreamConnection() async throws {
        let upstream = try ScriptedUpstream { connection, upstream in
            guard let head = connection.readHead() else { return }
            upstream.record(head: head)
            if connection.drainUntilClosed(seconds: fakePeerHoldSeconds) { upstream.notePeerClosed() }
        }
        defer { upstream.stop() }
        let proxy = try ProxyHarness(upstreamURL: upstream.url) { $0.listenTimeoutSeconds = 1 }
        let fd = try RawHTTPClient.connect(port: proxy.port, timeoutSeconds: 10)
        defer { close(fd) }
        #expect(RawSocket.send(fd, "PUT /v0/uploads/slow HTTP/1.1\r\nHost: h\r\nAuthorization: \(proxy.writeToken)\r\nContent-Length: 1000\r\n\r\n"))
        #expect(eventually { upstream.heads.count == 1 }, "the upload went upstream")
        // A byte every 250 ms for up to 60 s (240 of the 1000 bytes). The deadline is about
        // 1 s (listen.timeout_seconds 1, plus 1 s per MiB declared); the cut must come within
        // 30 s, far past that deadline however slow the machine, and far short of the 60 s an
        // unbounded trickle would run.
        let started = Date()
        var closedAfter: Double?
        for _ in 0..<240 {
            usleep(250_000)
            if RawSocket.peerClosed(fd) || !RawSocket.send(fd, "x") {
                closedAfter = Date().timeIntervalSince(started)
                break
            }
        }
        #expect(closedAfter.map { $0 < 30 } == true,
                "a 1000-byte body trickled for \(closedAfter.map { String(format: "%.1f", $0) } ?? "more than 60") s was not cut off (deadline about 1 s)")
        // The fake upstream holds a connection nobody closes for fakePeerHoldSeconds.
        #expect(eventually { upstream.open == 0 }, "the upstream connection is still held by the trickling client")
        await proxy.stop()
    }

    /// RFC 9110 8.6: a 304 may carry Content-Length only when it equals the length the 200
    /// would have. The upstream said nothing; the streamed answer invents `Content-Length: 0`,
    /// which a client cache merging the 304's fields into its stored answer takes as the
    /// new length (the simulator's own 304 does the same, through the same code).
    @Test func aNotModifiedAnswerDeclaresNoContentLengthTheUpstreamDidNotGive() async throws {
        let upstream = try FakeUpstream { _ in .reply(Array("HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nConnection: close\r\n\r\n".utf8)) }
        defer { upstream.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(upstream.port)")
        let answer = try proxy.get("/v0/workflows/w/jobs/j/download", token: proxy.readToken, headers: [("If-None-Match", "\"v1\"")])
        #expect(answer.status == 304 && answer.header("ETag") == "\"v1\"")
        #expect(answer.header("Content-Length") == nil, "304 with Content-Length: \(answer.header("Content-Length") ?? "")")
        await proxy.stop()
    }

    /// A 103 (Early Hints) before the final answer is legal (RFC 8297; RFC 9110 15.2: a client
    /// must be able to parse 1xx answers it did not ask for, a proxy forwards or drops them).
    /// The streamed relay skips only 100 and turns any other interim answer into a 502.
    @Test func anEarlyHintsInterimAnswerIsNotTurnedIntoA502() async throws {
        let upstream = try FakeUpstream { _ in
            .reply(Array(("HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
                + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").utf8))
        }
        defer { upstream.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(upstream.port)")
        let answer = try proxy.get("/v0/projects", token: proxy.readToken)
        #expect(answer.status == 200 && answer.text == "ok", "got \(answer.status) \(answer.text)")
        await proxy.stop()
    }

    // MARK: Upstreams that misbehave on streamed answers

    enum Expected: Sendable { case refused502, broken, whole(String) }

    /// The script's bytes, with `<FF>` and `<FE>` standing for those (non-UTF-8) bytes.
    static func bytes(_ script: String) -> [UInt8] {
        var out: [UInt8] = []
        var rest = Substring(script)
        while let range = rest.range(of: #"<F[EF]>"#, options: .regularExpression) {
            out += Array(rest[..<range.lowerBound].utf8)
            out.append(rest[range] == "<FF>" ? 0xFF : 0xFE)
            rest = rest[range.upperBound...]
        }
        return out + Array(rest.utf8)
    }

    static let misbehaviours: [(String, String, Expected)] = [
        ("short Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b", .broken),
        ("bytes past Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbad", .whole("hello")),
        ("chunked without its last chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", .broken),
        ("chunk size not hex", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nhello\r\n0\r\n\r\n", .broken),
        ("chunk lines with bare LF", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n", .broken),
        ("chunk size past Int", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nhello", .broken),
        ("Content-Length and chunked", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", .refused502),
        ("two Content-Lengths", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", .refused502),
        ("chunked in HTTP/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", .refused502),
        ("gzip, chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", .refused502),
        ("101 Switching Protocols", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nraw bytes", .refused502),
        ("100 then the answer", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", .whole("ok")),
        ("bare LF head", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", .whole("ok")),
        ("mixed line ends", "HTTP/1.1 200 OK\r\nContent-Length: 2\n\r\nok", .refused502),
        ("obs-fold", "HTTP/1.1 200 OK\r\nX-A: 1\r\n  folded\r\nContent-Length: 2\r\n\r\nok", .refused502),
        ("control byte in a value", "HTTP/1.1 200 OK\r\nX-Evil: a\u{01}b\r\nContent-Length: 2\r\n\r\nok", .whole("ok")),
        ("invalid UTF-8 in a value", "HTTP/1.1 200 OK\r\nX-Evil: a<FF><FE>b\r\nContent-Length: 2\r\n\r\nok", .whole("ok")),
        ("control byte in Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 2\u{01}\r\n\r\nok", .refused502),
        ("not HTTP", "SSH-2.0-OpenSSH_9.6\r\n\r\n", .refused502),
        ("huge head", "HTTP/1.1 200 OK\r\n" + String(repeating: "X-Pad: " + String(repeating: "a", count: 1000) + "\r\n", count: 90) + "Content-Length: 2\r\n\r\nok", .refused502),
        ("close-delimited", "HTTP/1.1 200 OK\r\n\r\nuntil close", .whole("until close")),
    ]

    /// Each misbehaving upstream gives a 502, an answer the client sees broken, or the right
    /// bytes; when the connection survives, the pipelined request behind gets its own answer.
    @Test(arguments: 0..<misbehaviours.count)
    func aMisbehavingUpstreamNeverGivesAnAnswerThatLooksWholeButIsNot(_ index: Int) async throws {
        let (name, script, expected) = Self.misbehaviours[index]
        let upstream = try FakeUpstream { received in
            received.requestLine.contains("/v0/next") ? FakeUpstream.json(200, #"{"next":true}"#) : .reply(Self.bytes(script))
        }
        defer { upstream.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(upstream.port)")
        let request = "GET /v0/thing HTTP/1.1\r\nHost: h\r\nAuthorization: \(proxy.readToken)\r\n\r\n"
            + "GET /v0/next HTTP/1.1\r\nHost: h\r\nAuthorization: \(proxy.readToken)\r\nConnection: close\r\n\r\n"
        let reply = try RawHTTPClient.exchange(port: proxy.port, bytes: Array(request.utf8))
        let answers = Self.wireAnswers(reply)
        let first = try #require(answers.first, "\(name): no answer")
        switch expected {
        case .refused502:
            #expect(first.status == 502, "\(name): \(first.status)")
            #expect(answers.count == 2 && answers[1].text == #"{"next":true}"#, "\(name): the next request's own answer")
        case .broken:
            #expect(first.status == 200 && !first.complete, "\(name): the client must see the answer broken")
        case .whole(let body):
            #expect(first.status == 200 && first.complete && first.text == body, "\(name): \(first.text)")
            #expect(first.header("X-Evil") == nil && first.count("Content-Length") <= 1)
        }
        // The proxy goes on serving.
        #expect(try proxy.get("/v0/next", token: proxy.readToken).status == 200)
        await proxy.stop()
    }

    /// A chunked upload with extensions and a trailer, with a request pipelined behind it:
    /// the upstream gets the body re-chunked (no extension, no trailer), the next request on a
    /// connection of its own, and the client two answers in order.
    @Test func aChunkedUploadWithExtensionsAndTrailersGoesUpReframedAndThePipelinedRequestStaysApart() async throws {
        let recorder = try WireRecorder()
        defer { recorder.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(recorder.port)")
        let bytes = "PUT /v0/uploads/a HTTP/1.1\r\nHost: h\r\nAuthorization: \(proxy.writeToken)\r\nTransfer-Encoding: chunked\r\n\r\n"
            + "5;name=\"v\"\r\nhello\r\n0\r\nX-Trailer: GET /v0/smuggled HTTP/1.1\r\n\r\n"
            + "DELETE /v0/uploads/b HTTP/1.1\r\nHost: h\r\nAuthorization: \(proxy.readToken)\r\nConnection: close\r\n\r\n"
        let answers = Self.wireAnswers(try RawHTTPClient.exchange(port: proxy.port, bytes: Array(bytes.utf8)))
        #expect(answers.map(\.status) == [200, 403], "\(answers.map(\.status))")
        #expect(recorder.requests.count == 1)
        let put = try #require(recorder.requests.first)
        #expect(put.method == "PUT" && put.body == Array("hello".utf8) && put.header("Transfer-Encoding") == "chunked")
        #expect(!String(decoding: recorder.rawStreams.joined(), as: UTF8.self).contains("smuggled"))
        #expect(!String(decoding: recorder.rawStreams.joined(), as: UTF8.self).contains("name="))
        await proxy.stop()
    }

    /// A client that sends its head and part of its body, then leaves: the upstream connection
    /// closes (the upstream sees a short body, never a complete request).
    @Test func aClientThatVanishesMidUploadClosesTheUpstreamConnection() async throws {
        let upstream = try ScriptedUpstream { connection, upstream in
            guard let head = connection.readHead() else { return }
            upstream.record(head: head)
            if connection.drainUntilClosed(seconds: fakePeerHoldSeconds) { upstream.notePeerClosed() }
        }
        defer { upstream.stop() }
        let proxy = try ProxyHarness(upstreamURL: upstream.url)
        let fd = try RawHTTPClient.connect(port: proxy.port, timeoutSeconds: 10)
        #expect(RawSocket.send(fd, "PUT /v0/uploads/v HTTP/1.1\r\nHost: h\r\nAuthorization: \(proxy.writeToken)\r\nContent-Length: 1048576\r\n\r\n"
            + String(repeating: "a", count: 1000)))
        #expect(eventually { upstream.heads.count == 1 })
        close(fd)
        #expect(eventually { upstream.closedByPeer == 1 && upstream.open == 0 })
        await proxy.stop()
    }

    /// A read token may not write through the pass-through, with or without a body, nor ask
    /// for another method; nothing of it reaches the upstream.
    @Test func aReadTokenCannotWriteThroughThePassThrough() async throws {
        let recorder = try WireRecorder()
        defer { recorder.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(recorder.port)")
        for method in ["PUT", "POST", "DELETE", "PATCH", "OPTIONS"] {
            for body in [[], Array("x".utf8)] {
                let answer = try proxy.request(method, "/v0/uploads/r", token: proxy.readToken, body: body)
                #expect(answer.status == 403, "\(method) with \(body.count) bytes: \(answer.status)")
            }
            let chunked = "\(method) /v0/uploads/r HTTP/1.1\r\nHost: h\r\nAuthorization: \(proxy.readToken)\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"
            #expect(try RawHTTPClient.parse(RawHTTPClient.exchange(port: proxy.port, bytes: Array(chunked.utf8))).status == 403)
        }
        for header in ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"] {
            #expect(try proxy.get("/v0/uploads/r", token: proxy.readToken, headers: [(header, "DELETE")]).status == 400)
            #expect(try proxy.request("HEAD", "/v0/uploads/r", token: proxy.readToken, headers: [(header, "PUT")]).status == 400)
        }
        #expect(try proxy.get("/v0/uploads/r?_method=DELETE", token: proxy.readToken).status == 400)
        #expect(try proxy.request("GET", "/v0/uploads/r", token: proxy.writeToken, body: Array("body".utf8)).status == 400)
        #expect(recorder.requests.isEmpty, "\(recorder.requests.map(\.method))")
        await proxy.stop()
    }
}

/// Upstreams that answer early or stall, and old clients: the client gets what was sent and
/// the connection is freed.
@Suite struct MisbehavingUpstreamTests {
    /// An upstream that answers before reading the upload: the client gets that answer (and a
    /// closed connection, its body unread), the proxy does not hang.
    @Test func anUpstreamThatAnswersBeforeReadingTheUploadIsPassedOn() async throws {
        let upstream = try ScriptedUpstream { connection, upstream in
            guard let head = connection.readHead() else { return }
            upstream.record(head: head)
            connection.send("HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n{\"early\":true}")
            _ = connection.drainUntilClosed(seconds: fakePeerHoldSeconds)
        }
        defer { upstream.stop() }
        let proxy = try ProxyHarness(upstreamURL: upstream.url)
        let body = [UInt8](repeating: 0x61, count: 4 << 20)
        let head = "PUT /v0/uploads/early HTTP/1.1\r\nHost: h\r\nAuthorization: \(proxy.writeToken)\r\nContent-Length: \(body.count)\r\n\r\n"
        let fd = try RawHTTPClient.connect(port: proxy.port, timeoutSeconds: 10)
        defer { close(fd) }
        #expect(RawSocket.send(fd, head))
        // Send the body a piece at a time while looking for the answer, as a client that reads while it writes.
        var offset = 0
        var reply: [UInt8] = []
        var closed = false
        let deadline = Date().addingTimeInterval(awaitedSeconds)
        while Date() < deadline, !closed {
            if offset < body.count {
                let n = body[offset..<min(body.count, offset + 65_536)].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
                if n > 0 { offset += n } else if errno != EAGAIN { offset = body.count }
            }
            let (bytes, isClosed) = RawSocket.readUntilClosed(fd, seconds: 0.05)
            reply += bytes
            closed = isClosed
        }
        let answers = PassThroughFramingTests.wireAnswers(reply)
        #expect(answers.first?.status == 401 && answers.first?.text == #"{"early":true}"#, "\(answers.map(\.status)) after \(offset) bytes sent")
        #expect(closed, "the connection closes: the rest of the body is not a request")
        await proxy.stop()
    }

    /// An upstream that stalls mid-body: after the idle timeout the client's answer is broken
    /// (short of its Content-Length) and the upstream connection is closed.
    @Test func anUpstreamThatStallsMidBodyBreaksTheAnswerAtTheIdleTimeout() async throws {
        let upstream = try ScriptedUpstream { connection, upstream in
            guard connection.readHead() != nil else { return }
            connection.send("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + String(repeating: "b", count: 100))
            if connection.drainUntilClosed(seconds: fakePeerHoldSeconds) { upstream.notePeerClosed() }
        }
        defer { upstream.stop() }
        let proxy = try ProxyHarness(upstreamURL: upstream.url) { $0.upstreamTimeoutSeconds = 1 }
        // The idle timeout is 1 s; without it the answer would stay open until the fake gives
        // up (fakePeerHoldSeconds). The break must come within 30 s: far past 1 s on any
        // machine, far short of the fake's hold.
        let started = Date()
        let reply = try RawHTTPClient.exchange(port: proxy.port, bytes: Array("GET /v0/big HTTP/1.1\r\nHost: h\r\nAuthorization: \(proxy.readToken)\r\n\r\n".utf8),
                                               timeoutSeconds: 60)
        let answer = try #require(PassThroughFramingTests.wireAnswers(reply).first)
        #expect(answer.status == 200 && !answer.complete && answer.body.count == 100)
        #expect(Date().timeIntervalSince(started) < 30)
        #expect(eventually { upstream.closedByPeer == 1 })
        await proxy.stop()
    }

    /// An HTTP/1.0 client gets a chunked upstream answer decoded and ended by the close, never
    /// `Transfer-Encoding`; a HEAD carries the upstream's length and no body.
    @Test func anHTTP10ClientGetsAnAnswerItCanRead() async throws {
        let upstream = try FakeUpstream { received in
            if received.requestLine.hasPrefix("HEAD") {
                return .reply(Array("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n".utf8))
            }
            return .reply(Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".utf8))
        }
        defer { upstream.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(upstream.port)")
        let reply = try RawHTTPClient.exchange(port: proxy.port, bytes: Array("GET /v0/x HTTP/1.0\r\nAuthorization: \(proxy.readToken)\r\n\r\n".utf8))
        let text = String(decoding: reply, as: UTF8.self)
        #expect(text.hasPrefix("HTTP/1.1 200") || text.hasPrefix("HTTP/1.0 200"))
        #expect(!text.lowercased().contains("transfer-encoding") && text.hasSuffix("\r\n\r\nhello world"), "\(text)")
        let head = try RawHTTPClient.exchange(port: proxy.port, bytes: Array("HEAD /v0/x HTTP/1.0\r\nAuthorization: \(proxy.readToken)\r\n\r\n".utf8))
        let headText = String(decoding: head, as: UTF8.self)
        #expect(headText.contains("Content-Length: 11\r\n") && headText.hasSuffix("\r\n\r\n"), "\(headText)")
        await proxy.stop()
    }

    /// A HEAD on the pass-through whose upstream answer wrongly carries a body, pipelined
    /// before a GET on the same keep-alive connection: the HEAD answer has the upstream's
    /// length and no body, and the GET gets its own answer.
    @Test func aPipelinedHeadThenGetEachGetTheirOwnAnswer() async throws {
        let upstream = try FakeUpstream { received in
            received.requestLine.hasPrefix("HEAD")
                ? .reply(Array("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nHEAD-BODYHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil".utf8))
                : FakeUpstream.json(200, #"{"get":true}"#)
        }
        defer { upstream.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(upstream.port)")
        let bytes = "HEAD /v0/x HTTP/1.1\r\nHost: h\r\nAuthorization: \(proxy.readToken)\r\n\r\n"
            + "GET /v0/y HTTP/1.1\r\nHost: h\r\nAuthorization: \(proxy.readToken)\r\nConnection: close\r\n\r\n"
        let answers = PassThroughFramingTests.wireAnswers(try RawHTTPClient.exchange(port: proxy.port, bytes: Array(bytes.utf8)), bodiless: [0])
        #expect(answers.count == 2 && answers[0].header("Content-Length") == "9" && answers[1].text == #"{"get":true}"#,
                "\(answers.map { "\($0.status) \($0.text)" })")
        await proxy.stop()
    }

    /// A Content-Length upload with the next request pipelined right behind its last byte:
    /// the body goes up exactly, the next request is answered on its own.
    @Test func aContentLengthUploadWithAPipelinedRequestStaysApart() async throws {
        let recorder = try WireRecorder()
        defer { recorder.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(recorder.port)")
        let smuggled = "GET /v0/smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
        let bytes = "POST /v0/uploads/a HTTP/1.1\r\nHost: h\r\nAuthorization: \(proxy.writeToken)\r\nContent-Length: 5\r\n\r\nhello"
            + "GET /v0/second HTTP/1.1\r\nHost: h\r\nAuthorization: \(proxy.readToken)\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" + smuggled
        let answers = PassThroughFramingTests.wireAnswers(try RawHTTPClient.exchange(port: proxy.port, bytes: Array(bytes.utf8)))
        #expect(answers.map(\.status) == [200, 200])
        #expect(recorder.requests.map(\.target) == ["/v0/uploads/a", "/v0/second"])
        #expect(recorder.requests.first?.body == Array("hello".utf8))
        await proxy.stop()
    }
}
