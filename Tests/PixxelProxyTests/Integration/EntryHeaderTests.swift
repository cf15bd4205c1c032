import Foundation
import Testing
@testable import JobCache
@testable import ProxyServer
@testable import ResponseCache

/// What a cached entry keeps of its upstream's header fields: their own bytes, released with
/// the entry, and counted in the memory budget. Loopback only.
@Suite struct EntryHeaderTests {
    static func job(_ id: Substring) -> String {
        #"{"id":"\#(id)","status":"COMPLETED","created_by":"u","created_at":"2026-11-20T09:00:00Z","updated_at":"2026-11-20T10:00:00Z"}"#
    }

    /// Header sets were shared by a String key, and String equality takes canonically
    /// equivalent text as equal: job b's `cafe\u{301}` went out as job a's `caf\u{E9}`.
    @Test func canonicallyEquivalentHeaderValuesKeepTheirOwnBytes() async throws {
        let precomposed = "caf\u{E9}", decomposed = "cafe\u{301}"
        let upstream = try FakeUpstream { request in
            let line = request.requestLine
            if line.hasPrefix("GET /v0/workflows/w/jobs/a ") { return FakeUpstream.json(200, Self.job("a"), extraHeaders: "X-Note: \(precomposed)\r\n") }
            if line.hasPrefix("GET /v0/workflows/w/jobs/b ") { return FakeUpstream.json(200, Self.job("b"), extraHeaders: "X-Note: \(decomposed)\r\n") }
            return FakeUpstream.json(404, #"{"error":{"code":"not_found","message":"no","details":null}}"#)
        }
        defer { upstream.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(upstream.port)")
        func raw(_ target: String) throws -> [UInt8] {
            try RawHTTPClient.exchange(port: proxy.port, bytes: Array("GET \(target) HTTP/1.1\r\nHost: h\r\nAuthorization: \(proxy.readToken)\r\nConnection: close\r\n\r\n".utf8))
        }
        let a = try raw("/v0/workflows/w/jobs/a"), b = try raw("/v0/workflows/w/jobs/b"), bHit = try raw("/v0/workflows/w/jobs/b")
        #expect(RawHTTPClient.find(Array("X-Note: \(precomposed)\r\n".utf8), in: a) != nil)
        #expect(RawHTTPClient.find(Array("X-Note: \(decomposed)\r\n".utf8), in: b) != nil, "the miss")
        #expect(RawHTTPClient.find(Array("X-Note: \(decomposed)\r\n".utf8), in: bHit) != nil, "the hit")
        await proxy.stop()
    }

    final class WeakLines: @unchecked Sendable {
        weak var lines: CachedAnswer.PreparedHeaderLines?
    }

    /// The shared header lines were held by a process-wide table: a purged entry's headers
    /// stayed in memory for good. They now go with the last entry that holds them.
    @Test func aPurgedEntrysHeaderLinesAreReleased() async throws {
        let upstream = try FakeUpstream { _ in
            FakeUpstream.json(200, Self.job("only"), extraHeaders: "X-Trace: unique-\(UUID().uuidString)\r\n")
        }
        defer { upstream.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(upstream.port)")
        let target = "/v0/workflows/w/jobs/only"
        for _ in 0..<3 { _ = try proxy.get(target, token: proxy.readToken) }
        let weak = WeakLines()
        NeverOlderTests.onLoop(proxy) { cache in weak.lines = cache.memory.peek(.detail(workflowID: "w", jobID: "only"))?.preparedHeaderLines }
        #expect(weak.lines != nil, "the hits made them")
        #expect(try proxy.request("POST", "/admin/purge?workflow_id=w", token: proxy.adminToken).status == 200)
        await proxy.stop()
        #expect(weak.lines == nil, "a purged entry's header lines outlive it")
    }

    /// The memory budget counted bodies only: 48 KB of upstream headers per entry in a 1 MiB
    /// tier made no eviction at all.
    @Test func headerBytesCountAgainstTheMemoryBudget() async throws {
        let pad = String(repeating: "p", count: 48_000)
        let upstream = try FakeUpstream { request in
            guard let id = request.requestLine.split(separator: " ")[1].split(separator: "/").last else {
                return FakeUpstream.json(404, "{}")
            }
            return FakeUpstream.json(200, Self.job(id), extraHeaders: "X-Trace: \(pad)\r\n")
        }
        defer { upstream.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(upstream.port)") { $0.cacheMemoryMB = 1 }
        for index in 0..<60 { #expect(try proxy.get("/v0/workflows/w/jobs/j\(index)", token: proxy.readToken).status == 200) }
        let memory = try #require(try proxy.get("/admin/stats", token: proxy.adminToken).json?["memory"] as? [String: Any])
        #expect((memory["evictions"] as? Int ?? 0) > 0 && (memory["bytes"] as? Int ?? .max) <= 1 << 20, "\(memory)")
        await proxy.stop()
    }
}
