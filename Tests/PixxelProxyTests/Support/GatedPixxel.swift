import Foundation
import ProxyConfig
import Synchronization
import Testing

/// A scripted Pixxel (workflow `w`) for the read-your-writes and revalidation races: an
/// ordered list, details, delays, hangs, gates that hold a list or a POST until the test lets
/// it go, a large list of filler jobs, and POSTs that create jobs `n1`, `n2`, ...
final class GatedPixxel: @unchecked Sendable {
    struct State {
        var listed: [(id: String, updatedAt: String)] = []
        var details: [String: String] = [:]
        var listDelay = 0.0
        var detailDelay = 0.0
        var detailHang = false
        var posts = 0
        var postUpdatedAt = "2026-11-20T12:00:00Z"
        /// Jobs `f0`... listed before the scripted ones (a big list).
        var filler = 0
        /// Non-zero: every request is answered 429 with this Retry-After.
        var rateLimitedFor = 0
    }
    let state = Mutex(State())
    let listGate = Mutex<DispatchSemaphore?>(nil)
    let postGate = Mutex<DispatchSemaphore?>(nil)
    var upstream: FakeUpstream!
    private let fillerCache = Mutex<(Int, String)>((0, ""))

    init() throws {
        upstream = try FakeUpstream { [unowned self] request in
            let line = request.requestLine
            let pause = state.withLock { $0.rateLimitedFor }
            if pause > 0 {
                return FakeUpstream.json(429, #"{"error":{"code":"rate_limited","message":"slow down","details":null}}"#,
                                         extraHeaders: "Retry-After: \(pause)\r\n")
            }
            if line.hasPrefix("POST ") {
                let (n, updated) = state.withLock { s -> (Int, String) in s.posts += 1; return (s.posts, s.postUpdatedAt) }
                postGate.withLock { $0 }?.wait()
                return FakeUpstream.json(200, Self.job("n\(n)", updated, extra: #","tasks":[]"#))
            }
            if line.hasPrefix("GET /v0/workflows/w/jobs ") {
                let s = state.withLock { $0 }
                listGate.withLock { $0 }?.wait()
                if s.listDelay > 0 { Thread.sleep(forTimeInterval: s.listDelay) }
                var jobs = s.listed.map { Self.job($0.id, $0.updatedAt) }
                if s.filler > 0 { jobs.insert(fillerJobs(s.filler), at: 0) }
                return FakeUpstream.json(200, #"{"jobs":[\#(jobs.joined(separator: ","))]}"#)
            }
            if line.hasPrefix("GET /v0/workflows/w/jobs/") {
                let id = String(line.dropFirst("GET /v0/workflows/w/jobs/".count).prefix { $0 != " " })
                let s = state.withLock { $0 }
                if s.detailHang { return .hang }
                if s.detailDelay > 0 { Thread.sleep(forTimeInterval: s.detailDelay) }
                guard let updated = s.details[id] else { return FakeUpstream.json(404, #"{"error":{"code":"not_found","message":"no","details":null}}"#) }
                return FakeUpstream.json(200, Self.job(id, updated, extra: #","tasks":[{"id":"t"}]"#))
            }
            return FakeUpstream.json(404, "{}")
        }
    }

    private func fillerJobs(_ count: Int) -> String {
        fillerCache.withLock { cache in
            if cache.0 == count { return cache.1 }
            let text = (0..<count).map { Self.job("f\($0)", "2026-11-20T08:00:00Z", extra: #","cost":12.5,"progress":100"#) }
                .joined(separator: ",")
            cache = (count, text)
            return text
        }
    }

    static func job(_ id: String, _ updatedAt: String, extra: String = "") -> String {
        #"{"id":"\#(id)","status":"running","created_by":"u","created_at":"2026-11-20T09:00:00Z","updated_at":"\#(updatedAt)"\#(extra)}"#
    }

    func calls(_ prefix: String) -> Int { upstream.received.filter { $0.requestLine.hasPrefix(prefix) }.count }

    func publish(_ ids: [String], updatedAt time: String) {
        state.withLock {
            $0.listed = ids.map { ($0, time) }
            for id in ids { $0.details[id] = time }
        }
    }
}


extension GatedPixxel {
    /// Reads `target` through `proxy` on a thread of its own, with the list fetch it causes
    /// held at the upstream until `release` is called: what the test does in between crosses
    /// that fetch. Returns once the fetch has reached the upstream.
    func readWithListHeld(_ proxy: ProxyHarness, _ target: String) -> (answer: BackgroundCall<RawResponse>, release: () -> Void) {
        let gate = DispatchSemaphore(value: 0)
        listGate.withLock { $0 = gate }
        let before = calls("GET /v0/workflows/w/jobs ")
        let port = proxy.port, token = proxy.readToken
        let answer = BackgroundCall { try RawHTTPClient.request(port: port, target: target, headers: [("Authorization", token)]) }
        #expect(eventually { self.calls("GET /v0/workflows/w/jobs ") == before + 1 })
        return (answer, { [self] in
            listGate.withLock { $0 = nil }
            gate.signal()
        })
    }
}
