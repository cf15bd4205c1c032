import EventHTTP
import Foundation
import Testing

/// A client that accepts gzip gets cached bodies of 1 KiB or more compressed, with
/// `Vary: Accept-Encoding` and an ETag of their own, from the hit path and the full path alike.
@Suite struct CompressedAnswerTests {
    typealias Documents = CacheCorrectnessTests.Documents

    static func bigJob(_ id: String, status: String = "running") -> String {
        let job = Documents.job(id, "2026-11-20T10:00:00Z", status: status)
        return String(job.dropLast()) + #","note":"\#(String(repeating: "band ", count: 300))"}"#
    }

    @Test(arguments: ["/v0/workflows/w/jobs/a", "/v0/workflows/w/jobs", "/v0/workflows/w/jobs?status=completed"])
    func gzipBytesDecodeToThePlainBytes(_ target: String) async throws {
        let documents = try Documents()
        defer { documents.recorder.stop() }
        documents.set("/v0/workflows/w/jobs/a", Self.bigJob("a"))
        documents.set("/v0/workflows/w/jobs", #"{"jobs":[\#(Self.bigJob("a")),\#(Self.bigJob("b", status: "completed"))]}"#)
        let proxy = try CacheCorrectnessTests.proxy(documents)
        let plain = try proxy.get(target, token: proxy.readToken)
        #expect(plain.status == 200 && plain.header("Content-Encoding") == nil && plain.header("Vary") == "Accept-Encoding")
        let preparedBefore = proxy.server.cacheStatistics.preparedHits
        for token in [proxy.readToken, proxy.readToken, proxy.writeToken] {  // hit path, then a full path and
            let gzip = try proxy.get(target, token: token, headers: [("Accept-Encoding", "gzip, br")])
            #expect(gzip.status == 200 && gzip.header("Content-Encoding") == "gzip" && gzip.header("Vary") == "Accept-Encoding")
            #expect(gzip.header("Content-Length") == String(gzip.body.count) && gzip.body.count < plain.body.count)
            #expect(Gzip.decompress(gzip.body, limit: 1 << 20) == plain.body)
            let tag = try #require(gzip.header("ETag"))
            #expect(tag != plain.header("ETag") && tag.hasSuffix(#"-gzip""#))
            let notModified = try proxy.get(target, token: token, headers: [("Accept-Encoding", "gzip"), ("If-None-Match", tag)])
            #expect(notModified.status == 304 && notModified.header("ETag") == tag)
            // The plain tag does not match the gzip form: the client has other bytes.
            let other = try proxy.get(target, token: token, headers: [("Accept-Encoding", "gzip"), ("If-None-Match", plain.header("ETag")!)])
            #expect(other.status == 200 && other.header("Content-Encoding") == "gzip")
        }
        #expect(proxy.server.cacheStatistics.preparedHits > preparedBefore, "the hit path answered some of them")
        let refused = try proxy.get(target, token: proxy.readToken, headers: [("Accept-Encoding", "gzip;q=0")])
        #expect(refused.header("Content-Encoding") == nil && refused.body == plain.body)
        let head = try proxy.request("HEAD", target, token: proxy.readToken, headers: [("Accept-Encoding", "gzip")])
        #expect(head.status == 200 && head.body.isEmpty && head.header("Content-Encoding") == "gzip")
        #expect(documents.recorder.requests.count <= 2, "every answer after the first came from the cache")
        await proxy.stop()
    }

    @Test func aBodyUnder1KiBIsSentPlainWithoutVary() async throws {
        let documents = try Documents()
        defer { documents.recorder.stop() }
        documents.set("/v0/workflows/w/jobs/a", Documents.job("a", "2026-11-20T10:00:00Z"))
        let proxy = try CacheCorrectnessTests.proxy(documents)
        for _ in 0..<2 {
            let answer = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken, headers: [("Accept-Encoding", "gzip")])
            #expect(answer.status == 200 && answer.header("Content-Encoding") == nil && answer.header("Vary") == nil)
            #expect(answer.header("ETag")?.hasSuffix(#"-gzip""#) == false)
        }
        await proxy.stop()
    }
}
