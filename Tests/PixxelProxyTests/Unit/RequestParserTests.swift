import EventHTTP
import Foundation
import FuzzTargets
import Testing

/// The HTTP/1.x request parser, without a socket.
@Suite struct RequestParserTests {
    static func parse(_ text: String, maxHeadBytes: Int = 16_384) -> RequestParser.HeadResult {
        Array(text.utf8).withUnsafeBytes { RequestParser.parseHead($0, maxHeadBytes: maxHeadBytes) }
    }

    static func head(_ text: String) throws -> (RequestParser.Head, Int) {
        guard case .complete(let head, let length) = parse(text) else { throw ParseFailure(result: "\(parse(text))") }
        return (head, length)
    }

    struct ParseFailure: Error { let result: String }

    @Test func parsesTheRequestLineAndHeaders() throws {
        let text = "GET /v0/workflows/w/jobs?status=running HTTP/1.1\r\nHost: h\r\nAuthorization:  Bearer t \r\n\r\nnext"
        let (head, length) = try Self.head(text)
        #expect(head.knownMethod == .get)
        #expect(head.target == "/v0/workflows/w/jobs?status=running")
        #expect(head.headers["authorization"] == "Bearer t")
        #expect(head.keepAlive && !head.hasBody)
        #expect(length == text.utf8.count - 4, "the head ends at the blank line; what follows is the next request")
    }

    @Test func keepAliveFollowsTheVersionAndConnection() throws {
        #expect(try Self.head("GET / HTTP/1.1\r\nHost: h\r\n\r\n").0.keepAlive)
        #expect(try !Self.head("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").0.keepAlive)
        #expect(try !Self.head("GET / HTTP/1.0\r\n\r\n").0.keepAlive)
        #expect(try Self.head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").0.keepAlive)
    }

    @Test func acceptsBareLineFeedsThroughoutAndLeadingBlankLines() throws {
        let (head, _) = try Self.head("\r\nPOST /x HTTP/1.1\nHost: h\nContent-Length: 3\n\n")
        #expect(head.knownMethod == .post && head.contentLength == 3 && head.hasBody)
    }

    /// Which of two credentials a server takes is anyone's guess: neither is (400, as for two
    /// `Host` or `Content-Length` fields), whatever the case of the names.
    @Test func twoAuthorizationFieldsAreRefused() {
        for text in ["GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n",
                     "GET / HTTP/1.1\r\nauthorization: Bearer a\r\nHost: h\r\nAUTHORIZATION: Bearer a\r\n\r\n"] {
            guard case .invalid(let status, let message) = Self.parse(text) else {
                Issue.record("accepted: \(text)")
                continue
            }
            #expect(status == 400 && message.contains("Authorization"))
        }
    }

    @Test func anUnknownMethodIsParsedWithoutAKnownMethod() throws {
        let (head, _) = try Self.head("BREW /pot HTTP/1.1\r\nHost: h\r\n\r\n")
        #expect(head.knownMethod == nil && head.methodName == "BREW")
    }

    @Test func waitsForTheRestOfAHead() {
        guard case .incomplete = Self.parse("GET / HTTP/1.1\r\nHost: h\r\n") else { Issue.record("expected incomplete"); return }
    }

    @Test(arguments: [
        ("GET /  HTTP/1.1\r\n\r\n", 400),
        ("GET http://evil.example/ HTTP/1.1\r\n\r\n", 400),
        ("GET /a\u{1}b HTTP/1.1\r\n\r\n", 400),
        ("GET / HTTP/2.0\r\n\r\n", 505),
        ("GET /\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nX-A : 1\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nNo colon here\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        ("POST / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n", 417),
    ])
    func refusesWhatCouldBeMisread(_ text: String, _ status: Int) {
        guard case .invalid(let got, _) = Self.parse(text) else { Issue.record("\(text.debugDescription) was accepted"); return }
        #expect(got == status, "\(text.debugDescription)")
    }

    @Test func boundsTheHeadAndTheFieldCount() {
        let big = "GET / HTTP/1.1\r\nX-Big: " + String(repeating: "a", count: 2000) + "\r\n\r\n"
        guard case .invalid(431, _) = Self.parse(big, maxHeadBytes: 1024) else { Issue.record("a large head was accepted"); return }
        let partial = "GET / HTTP/1.1\r\nX-Big: " + String(repeating: "a", count: 2000)
        guard case .invalid(431, _) = Self.parse(partial, maxHeadBytes: 1024) else { Issue.record("an endless head was awaited"); return }
        let many = "GET / HTTP/1.1\r\n" + (0...RequestParser.maxHeaderFields).map { "X-\($0): v\r\n" }.joined() + "\r\n"
        guard case .invalid(431, _) = Self.parse(many) else { Issue.record("too many fields were accepted"); return }
    }

    static func chunked(_ text: String, max: Int = 1024) -> RequestParser.ChunkedResult {
        Array(text.utf8).withUnsafeBytes { RequestParser.decodeChunked($0, maxBodyBytes: max) }
    }

    @Test func decodesChunkedBodiesWithExtensionsAndTrailers() {
        let text = "5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\nGET"
        #expect(Self.chunked(text) == .complete(Array("hello world".utf8), length: text.utf8.count - 3))
        #expect(Self.chunked("5\r\nhel") == .incomplete)
        #expect(Self.chunked("5\r\nhello\r\n0\r\n") == .incomplete)
        #expect(Self.chunked("zz\r\nxx\r\n0\r\n\r\n") == .invalid)
        #expect(Self.chunked("5\r\nhelloXX0\r\n\r\n") == .invalid)
        #expect(Self.chunked("800\r\n", max: 1024) == .tooLarge)
        #expect(Self.chunked("FFFFFFFFFFFF\r\n") == .tooLarge)
    }
}

/// The request vectors (Support/HTTPVectors.swift) against the parser alone, and through the
/// framing fuzz targets' invariants.
@Suite struct RequestVectorParserTests {
    /// What the parser makes of a whole request: its body, or the status it refuses with.
    static func verdict(_ bytes: [UInt8]) -> HTTPVector.Verdict {
        let head = bytes.withUnsafeBytes { RequestParser.parseHead($0, maxHeadBytes: 16_384) }
        switch head {
        case .incomplete: return .refuse(-1)
        case .invalid(let status, _): return .refuse(status)
        case .complete(let parsed, let length):
            let rest = Array(bytes[length...])
            if parsed.isChunked {
                switch rest.withUnsafeBytes({ RequestParser.decodeChunked($0, maxBodyBytes: 64 * 1024) }) {
                case .complete(let body, _): return .accept(body: String(decoding: body, as: UTF8.self))
                case .incomplete: return .refuse(-1)
                case .invalid: return .refuse(400)
                case .tooLarge: return .refuse(413)
                }
            }
            return .accept(body: String(decoding: rest.prefix(parsed.contentLength ?? 0), as: UTF8.self))
        }
    }

    @Test(arguments: HTTPVector.all + HTTPVector.smuggling)
    func theParserReachesEachVectorsVerdict(_ vector: HTTPVector) {
        let got = Self.verdict(vector.bytes(authorization: "Bearer t"))
        if vector.parserAccepts {
            guard case .accept = got else { Issue.record("\(vector): \(got)"); return }
        } else {
            #expect(got == vector.verdict, "\(vector)")
        }
    }

    /// Every vector holds the fuzz targets' invariants; PIXXEL_FUZZ_SEED_DIR=dir also writes
    /// each as a seed of the framing targets there (how Fuzz/corpus got them).
    @Test func everyVectorHoldsTheFramingFuzzInvariants() throws {
        let seedDirectory = ProcessInfo.processInfo.environment["PIXXEL_FUZZ_SEED_DIR"]
        for vector in HTTPVector.all + HTTPVector.smuggling {
            let bytes = vector.bytes(authorization: "Bearer t")
            HTTPFramingFuzz.head(bytes)
            var bodyStart = bytes.count
            if case .complete(_, let length) = bytes.withUnsafeBytes({ RequestParser.parseHead($0, maxHeadBytes: 16_384) }) {
                bodyStart = length
                HTTPFramingFuzz.chunked(Array(bytes[length...]))
            }
            if let seedDirectory {
                let seeds = [[FuzzTargets.requestHeadSelector] + bytes, [FuzzTargets.chunkedBodySelector] + bytes[bodyStart...]]
                for (index, seed) in seeds.enumerated() {
                    let name = "vector-\(index == 0 ? "head" : "chunked")-" + vector.name.map { $0.isLetter || $0.isNumber ? $0 : "-" }
                    FileManager.default.createFile(atPath: seedDirectory + "/" + String(name), contents: Data(seed))
                }
            }
        }
    }
}
