import Foundation
import PixxelSim
import ProxyConfig
import Testing

/// What `cache.routes` stores and under which key: a rule applies to entries already on disk,
/// answers the upstream forbids storing are not stored, clients cannot poison or cross
/// entries, and an answer too large to cache still reaches every waiter whole.
@Suite struct CacheRouteStorageTests {
    static func rules(_ texts: [String]) -> [CacheRouteRule] { texts.map { try! CacheRouteRule.parse($0).get() } }

    static func diskEntries(_ proxy: ProxyHarness) -> Int? {
        (try? proxy.get("/admin/stats", token: proxy.adminToken))?.json.flatMap { ($0["disk"] as? [String: Any])?["entries"] as? Int }
    }

    /// An operator shortens a rule's lifetime (`/v0/projects 3600` to `/v0/projects 5`) and
    /// restarts: entries the disk tier holds keep the lifetime they were stored with, so the
    /// proxy keeps serving an answer up to an hour old as a fresh hit, well past the 5 s the
    /// configuration now says. (The key's lifetime takes no part in equality, and
    /// `CachedAnswer.restored(from:)` takes the stored one.)
    @Test func aShortenedRuleAppliesToEntriesAlreadyOnDisk() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let shared = TemporaryDirectory()
        let clock = ManualClock()
        let before = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)", clock: clock) {
            $0.cacheDirectory = shared.path + "/cache"
            $0.cacheRoutes = Self.rules(["/v0/projects 3600"])
        }
        let first = try before.get("/v0/projects", token: before.readToken)
        #expect(first.header("Cache-Status")?.contains("stored") == true)
        #expect(eventually { Self.diskEntries(before) == 1 })
        await before.stop()

        let after = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)", clock: clock) {
            $0.cacheDirectory = shared.path + "/cache"
            $0.cacheRoutes = Self.rules(["/v0/projects 5"])
        }
        clock.advance(60)
        let second = try after.get("/v0/projects", token: after.readToken)
        #expect(second.status == 200)
        #expect(sim.stats.requests["GET projects"] == 2,
                "a 60 s old answer under a 5 s rule was served as \(second.header("Cache-Status") ?? "?") with Age \(second.header("Age") ?? "?")")
        await after.stop()
    }

    /// A shared cache must not store an answer marked `Cache-Control: no-store` (RFC 9111
    /// 3), nor serve a `private` one to other users. `cache.routes` stores and serves both to
    /// every client for the rule's lifetime.
    @Test(arguments: ["no-store", "private"])
    func anAnswerTheUpstreamMarksUncacheableIsNotStored(_ directive: String) async throws {
        let upstream = try FakeUpstream { _ in FakeUpstream.json(200, #"{"url":"https://signed.example/x?sig=1"}"#, extraHeaders: "Cache-Control: \(directive)\r\n") }
        defer { upstream.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(upstream.port)") { $0.cacheRoutes = Self.rules(["/v0/links/{id} 300"]) }
        _ = try proxy.get("/v0/links/1", token: proxy.readToken)
        let second = try proxy.get("/v0/links/1", token: proxy.writeToken)
        #expect(upstream.received.count == 2, "\(directive): the second client got \(second.header("Cache-Status") ?? "?")")
        await proxy.stop()
    }

    /// No client's fields shape an entry others get; Set-Cookie is not stored;
    /// only 200 is stored; `?`, trailing `/`, HEAD and encodings of the same path are keyed
    /// as the upstream would see them; purge refuses traversal and matches by segment.
    @Test func clientsCannotPoisonOrCrossEntries() async throws {
        let upstream = try FakeUpstream { received in
            let line = received.requestLine
            if line.contains("/v0/err") { return FakeUpstream.json(500, #"{"error":{"code":"x"}}"#) }
            if line.contains("/v0/gone") { return FakeUpstream.json(404, #"{"error":{"code":"not_found"}}"#) }
            if line.contains("/v0/part") { return FakeUpstream.json(206, "{}", extraHeaders: "Content-Range: bytes 0-1/10\r\n") }
            let n = Int.random(in: 0..<1_000_000)
            return FakeUpstream.json(200, #"{"target":"\#(line)","accept":"\#(received.header("Accept") ?? "")","n":\#(n)}"#,
                                     extraHeaders: "Set-Cookie: session=for-the-first-client\r\n")
        }
        defer { upstream.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(upstream.port)") {
            $0.cacheRoutes = Self.rules(["/v0/things 300", "/v0/things/{id} 300", "/v0/err 300", "/v0/gone 300", "/v0/part 300"])
        }
        let poisoned = try proxy.get("/v0/things", token: proxy.readToken, headers: [
            ("Accept", "text/evil"), ("Range", "bytes=0-1"), ("If-None-Match", "\"x\""), ("Cookie", "a=1"), ("Cache-Control", "max-stale=999"),
        ])
        #expect(poisoned.status == 200 && poisoned.text.contains(#""accept":"application/json""#))
        let other = try proxy.get("/v0/things", token: proxy.writeToken)
        #expect(other.body == poisoned.body && other.header("Set-Cookie") == nil && other.header("Cache-Status")?.contains("hit") == true)
        let firstHead = try #require(upstream.received.first)
        #expect(firstHead.header("Range") == nil && firstHead.header("Cookie") == nil && firstHead.header("If-None-Match") == nil)
        // Same resource, other spellings: one entry; other resources: their own.
        #expect(try proxy.get("/v0/thing%73", token: proxy.readToken).body == poisoned.body)
        #expect(try proxy.request("HEAD", "/v0/things", token: proxy.readToken).header("Content-Length") == String(poisoned.body.count))
        let calls = upstream.received.count
        for target in ["/v0/things?", "/v0/things/", "/v0/things?a=1&b=2", "/v0/things?b=2&a=1", "/v0/things/a%2Fb", "/v0/Things"] {
            _ = try proxy.get(target, token: proxy.readToken)
        }
        #expect(upstream.received.count == calls + 5, "each other spelling went upstream (a%2Fb is refused)")
        // Only a 200 is stored.
        for target in ["/v0/err", "/v0/gone", "/v0/part"] {
            for _ in 0..<2 { _ = try proxy.get(target, token: proxy.readToken) }
        }
        #expect(upstream.received.filter { ["/v0/err", "/v0/gone", "/v0/part"].contains(where: $0.requestLine.contains) }.count == 6)
        // Purge: traversal refused, a partial segment purges nothing.
        for prefix in ["/v0/../admin", "/v0/%2e%2e/x", "/admin", "/v0/things?x=1", "v0/things"] {
            let answer = try proxy.request("POST", "/admin/purge?path_prefix=\(prefix)", token: proxy.adminToken)
            #expect(answer.status == 400, "\(prefix): \(answer.status) \(answer.text)")
        }
        let partial = try proxy.request("POST", "/admin/purge?path_prefix=/v0/thing", token: proxy.adminToken)
        #expect(partial.text.contains(#""memory_entries":0"#))
        await proxy.stop()
    }

    /// A chunked answer too large to cache (libevent stops at 1 MiB mid-body) is
    /// streamed through whole to every concurrent waiter.
    @Test func aChunkedAnswerTooLargeToCacheReachesEveryWaiterWhole() async throws {
        let (sim, simPort) = try startSimulator { $0.faults.latencyMilliseconds = 200 }
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)") { $0.cacheRoutes = Self.rules(["/v0/workflows/{w}/jobs/{j}/download 60"]) }
        let list = try proxy.get("/v0/workflows/\(sim.workflowIDs[0])/jobs", token: proxy.readToken)
        let job = try #require((list.json?["jobs"] as? [[String: Any]])?.first?["id"] as? String)
        let size = 3 << 20
        let target = "/v0/workflows/\(sim.workflowIDs[0])/jobs/\(job)/download?size=\(size)&chunked=1"
        let port = proxy.port, token = proxy.readToken
        let answers = concurrently(5) { _ in
            try? StreamingHTTPClient.download(port: port, target: target, headers: [("Authorization", token)], keep: [size - 100], keepLength: 100)
        }
        let tail = StreamingTests.jobPayload(job, size: size).bytes((size - 100)..<size)
        for answer in answers {
            #expect(answer?.status == 200 && answer?.complete == true && answer?.bodyBytes == size && answer?.kept[size - 100] == tail)
        }
        await proxy.stop()
    }

    /// What held: `no-store`, `private` and `no-cache` are found however the upstream spells
    /// them (case, a quoted argument, among other directives, in a second field, odd spacing).
    @Test(arguments: [
        "Cache-Control: No-Store\r\n", "Cache-Control: no-store=\"x\"\r\n", "Cache-Control: max-age=60,PRIVATE\r\n",
        "Cache-Control: max-age=60\r\ncache-control: no-cache\r\n", "Cache-Control: public ,\t no-store \r\n",
        "Cache-Control: private=\"set-cookie, x\", max-age=60\r\n", "Cache-Control: no-cache=\"Set-Cookie\"\r\n",
    ])
    func everySpellingOfADirectiveThatForbidsStoringIsHonoured(_ fields: String) async throws {
        let upstream = try FakeUpstream { _ in FakeUpstream.json(200, #"{"n":1}"#, extraHeaders: fields) }
        defer { upstream.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(upstream.port)") {
            $0.cacheRoutes = [try! CacheRouteRule.parse("/v0/links/{id} 300").get()]
        }
        _ = try proxy.get("/v0/links/1", token: proxy.readToken)
        let second = try proxy.get("/v0/links/1", token: proxy.writeToken)
        #expect(second.status == 200 && upstream.received.count == 2, "\(fields): \(second.header("Cache-Status") ?? "?")")
        await proxy.stop()
    }
}
