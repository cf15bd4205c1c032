import EventHTTP
import Foundation
import Testing

/// Every cached answer carries a strong ETag of the bytes it serves, and If-None-Match naming
/// it is answered 304 from the cache: no body, no upstream call, by the hit path and the full
/// path alike.
@Suite struct ConditionalAnswerTests {
    typealias Documents = CacheCorrectnessTests.Documents

    static let list = #"{"jobs":[\#(Documents.job("a", "2026-11-20T10:00:00Z")),\#(Documents.job("b", "2026-11-20T10:00:00Z", status: "completed"))],"total":2}"#

    @Test(arguments: ["/v0/workflows/w/jobs/a", "/v0/workflows/w/jobs", "/v0/workflows/w/jobs?status=completed"])
    func ifNoneMatchNamingTheServedBytesIsAnswered304WithoutAnUpstreamCall(_ target: String) async throws {
        let documents = try Documents()
        defer { documents.recorder.stop() }
        documents.set("/v0/workflows/w/jobs/a", Documents.job("a", "2026-11-20T10:00:00Z"))
        documents.set("/v0/workflows/w/jobs", Self.list)
        let proxy = try CacheCorrectnessTests.proxy(documents)
        let first = try proxy.get(target, token: proxy.readToken)
        let tag = try #require(first.header("ETag"))
        #expect(first.status == 200 && tag == EntityTag(of: first.body).quoted, "the tag is the served bytes'")
        let calls = documents.recorder.requests.count
        let preparedBefore = proxy.server.cacheStatistics.preparedHits
        // The same token and target as a request answered before: the hit path answers.
        for value in [tag, tag, "W/\(tag)", #""other", \#(tag)"#, "*"] {
            let answer = try proxy.get(target, token: proxy.readToken, headers: [("If-None-Match", value)])
            #expect(answer.status == 304, "\(value)")
            #expect(answer.body.isEmpty && answer.header("Content-Length") == nil)
            #expect(answer.header("ETag") == tag)
            #expect(answer.header("Cache-Status")?.hasPrefix("pixxel-proxy; hit") == true)
        }
        #expect(proxy.server.cacheStatistics.preparedHits > preparedBefore, "the hit path answered some of them")
        let head = try proxy.request("HEAD", target, token: proxy.readToken, headers: [("If-None-Match", tag)])
        #expect(head.status == 304)
        let other = try proxy.get(target, token: proxy.readToken, headers: [("If-None-Match", #""0000000000000000""#)])
        #expect(other.status == 200 && other.body == first.body && other.header("ETag") == tag)
        #expect(documents.recorder.requests.count == calls, "no answer above called the upstream")
        #expect(proxy.logs.all.contains { $0.contains(" 304") && $0.contains("cache=hit") }, "a 304 is logged as what it is")
        await proxy.stop()
    }

    /// A request that must go upstream (a miss) is still answered 304 when the bytes it gets
    /// are the ones the client has: the client pays nothing for the body.
    @Test func aMissWhoseAnswerIsTheClientsBytesIsAnswered304() async throws {
        let documents = try Documents()
        defer { documents.recorder.stop() }
        let body = Documents.job("a", "2026-11-20T10:00:00Z")
        documents.set("/v0/workflows/w/jobs/a", body)
        let proxy = try CacheCorrectnessTests.proxy(documents)
        let answer = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken,
                                   headers: [("If-None-Match", EntityTag(of: Array(body.utf8)).quoted)])
        #expect(answer.status == 304 && answer.body.isEmpty)
        #expect(answer.header("Cache-Status")?.contains("fwd=miss") == true)
        await proxy.stop()
    }

    /// A filtered list's tag is its own bytes': it changes when a job it shows changes, and not
    /// when only jobs it filters out do; the whole list's changes with either.
    @Test func aFilteredListsTagChangesExactlyWhenItsBytesDo() async throws {
        let documents = try Documents()
        defer { documents.recorder.stop() }
        documents.set("/v0/workflows/w/jobs", Self.list)
        let clock = ManualClock()
        let proxy = try CacheCorrectnessTests.proxy(documents, clock: clock)
        func tags() throws -> (whole: String?, completed: String?, running: String?) {
            (try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken).header("ETag"),
             try proxy.get("/v0/workflows/w/jobs?status=completed", token: proxy.readToken).header("ETag"),
             try proxy.get("/v0/workflows/w/jobs?status=running", token: proxy.readToken).header("ETag"))
        }
        let before = try tags()
        #expect(Set([before.whole, before.completed, before.running]).count == 3)
        // Job a (running) moves on; b (completed) does not.
        documents.set("/v0/workflows/w/jobs",
                      #"{"jobs":[\#(Documents.job("a", "2026-11-20T10:01:00Z")),\#(Documents.job("b", "2026-11-20T10:00:00Z", status: "completed"))],"total":2}"#)
        clock.advance(6)
        _ = try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken)  // stale: revalidates in the background
        #expect(try eventually { try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken).text.contains("10:01:00") },
                "the new list is served")
        let after = try tags()
        #expect(after.whole != before.whole)
        #expect(after.running != before.running)
        #expect(after.completed == before.completed, "nothing the completed filter shows changed")
        await proxy.stop()
    }

    /// The tag depends on the bytes alone: another instance, or this one after a restart, gives
    /// the same bytes the same tag.
    @Test func twoInstancesGiveTheSameBytesTheSameTag() async throws {
        let documents = try Documents()
        defer { documents.recorder.stop() }
        documents.set("/v0/workflows/w/jobs", Self.list)
        let one = try CacheCorrectnessTests.proxy(documents), two = try CacheCorrectnessTests.proxy(documents)
        for target in ["/v0/workflows/w/jobs", "/v0/workflows/w/jobs?status=completed"] {
            let a = try one.get(target, token: one.readToken), b = try two.get(target, token: two.readToken)
            #expect(a.body == b.body && a.header("ETag") != nil && a.header("ETag") == b.header("ETag"))
            let conditional = try two.get(target, token: two.readToken, headers: [("If-None-Match", a.header("ETag") ?? "")])
            #expect(conditional.status == 304)
        }
        await one.stop()
        await two.stop()
    }
}
