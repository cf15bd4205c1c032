import Foundation
import PixxelSim
import ProxyConfig
import Testing

/// `cache.routes`: other GET routes cached by rule, with the query as part of the key,
/// coalescing, stale-if-error, `Cache-Status` and `Age`, purge by path prefix, and answers too
/// large to cache streamed through.
@Suite struct CacheRoutesTests {
    static let rules = ["/v0/workflows/{workflow_id} 300", "/v0/blocks 60", "/v0/indices 60",
                        "/v0/workflows/{w}/jobs/{j}/download 60"]

    static func start(simConfigure: (inout SimOptions) -> Void = { _ in }, clock: ManualClock = ManualClock(),
                      configure: @escaping (inout ProxySettings) -> Void = { _ in }) throws -> (SimServer, ProxyHarness) {
        let (sim, simPort) = try startSimulator(configure: simConfigure)
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)", clock: clock) { settings in
            settings.cacheRoutes = rules.map { try! CacheRouteRule.parse($0).get() }
            configure(&settings)
        }
        return (sim, proxy)
    }

    static func calls(_ sim: SimServer, _ template: String) -> Int { sim.stats.requests[template] ?? 0 }

    @Test func aRuledRouteIsAHitOnTheSecondCallWithOneUpstreamCall() async throws {
        let (sim, proxy) = try Self.start()
        defer { sim.stop() }
        let target = "/v0/workflows/\(sim.workflowIDs[0])"
        let first = try proxy.get(target, token: proxy.readToken)
        #expect(first.status == 200 && first.header("Cache-Status") == "pixxel-proxy; fwd=miss; fwd-status=200; stored")
        let second = try proxy.get(target, token: proxy.readToken)
        #expect(second.status == 200 && second.header("Cache-Status")?.hasPrefix("pixxel-proxy; hit; ttl=") == true)
        #expect(second.body == first.body, "the upstream's bytes, unchanged (x_served_at is the first call's)")
        #expect(second.header("Age") == "0" && second.header("Content-Type") == "application/json")
        #expect(Self.calls(sim, "GET workflow") == 1)
        // HEAD is answered from the same entry.
        let head = try proxy.request("HEAD", target, token: proxy.readToken)
        #expect(head.status == 200 && head.header("Content-Length") == String(first.body.count))
        #expect(Self.calls(sim, "GET workflow") == 1 && Self.calls(sim, "HEAD workflow") == 0)
        // A route no rule names stays uncached.
        _ = try proxy.get("/v0/projects", token: proxy.readToken)
        let again = try proxy.get("/v0/projects", token: proxy.readToken)
        #expect(again.header("Cache-Status") == nil && Self.calls(sim, "GET projects") == 2)
        await proxy.stop()
    }

    @Test func twentyConcurrentMissesCostOneCall() async throws {
        let (sim, proxy) = try Self.start(simConfigure: { $0.faults.latencyMilliseconds = 300 })
        defer { sim.stop() }
        let port = proxy.port, token = proxy.readToken
        let answers = concurrently(20) { _ in try? RawHTTPClient.request(port: port, target: "/v0/blocks", headers: [("Authorization", token)]) }
        #expect(answers.allSatisfy { $0?.status == 200 })
        #expect(Set(answers.compactMap { $0?.body }).count == 1, "every client got the one answer")
        #expect(Self.calls(sim, "GET blocks") == 1)
        await proxy.stop()
    }

    @Test func theQueryIsPartOfTheKey() async throws {
        let (sim, proxy) = try Self.start()
        defer { sim.stop() }
        for query in ["", "?page=1", "?page=2", "?page=1", "", "?", "?page=2"] {
            let answer = try proxy.get("/v0/blocks" + query, token: proxy.readToken)
            #expect(answer.status == 200)
            if query.contains("page") { #expect(answer.text.contains(#""page":"\#(query.dropFirst(6))""#), "\(query): its own answer") }
        }
        #expect(Self.calls(sim, "GET blocks") == 4, "no query, an empty one, page=1 and page=2: four entries")
        await proxy.stop()
    }

    @Test func purgeByPathPrefixEmptiesBothTiers() async throws {
        let (sim, proxy) = try Self.start()
        defer { sim.stop() }
        let workflow = "/v0/workflows/\(sim.workflowIDs[0])"
        for target in [workflow, "/v0/blocks", "/v0/blocks?page=3", "/v0/indices"] { _ = try proxy.get(target, token: proxy.readToken) }
        let refused = try proxy.request("POST", "/admin/purge?path_prefix=/v0/blocks", token: proxy.writeToken)
        #expect(refused.status == 403)
        #expect(try proxy.request("POST", "/admin/purge?path_prefix=blocks", token: proxy.adminToken).status == 400)
        #expect(try proxy.request("POST", "/admin/purge?path_prefix=/v0/blocks&workflow_id=w", token: proxy.adminToken).status == 400)
        // `/v0/block` is not a prefix of `/v0/blocks` segment by segment: nothing goes.
        let none = try proxy.request("POST", "/admin/purge?path_prefix=/v0/block", token: proxy.adminToken)
        #expect(none.text == #"{"purged":{"memory_entries":0,"disk_entries":0}}"#)
        #expect(eventually { (try? proxy.get("/admin/stats", token: proxy.adminToken))?.json.flatMap { ($0["disk"] as? [String: Any])?["entries"] as? Int } == 4 })
        let purged = try proxy.request("POST", "/admin/purge?path_prefix=/v0/blocks", token: proxy.adminToken)
        #expect(purged.text == #"{"purged":{"memory_entries":2,"disk_entries":2}}"#, "\(purged.text)")
        _ = try proxy.get("/v0/blocks", token: proxy.readToken)
        _ = try proxy.get("/v0/indices", token: proxy.readToken)
        _ = try proxy.get(workflow, token: proxy.readToken)
        #expect(Self.calls(sim, "GET blocks") == 3 && Self.calls(sim, "GET indices") == 1 && Self.calls(sim, "GET workflow") == 1)
        await proxy.stop()
    }

    @Test func anExpiredEntryIsServedStaleWhenTheUpstreamFails() async throws {
        let clock = ManualClock()
        let (sim, proxy) = try Self.start(clock: clock) { $0.staleIfErrorSeconds = 600 }
        defer { sim.stop() }
        let first = try proxy.get("/v0/indices", token: proxy.readToken)
        clock.advance(61)
        var faults = sim.faults
        faults.errorRate = 1
        sim.faults = faults
        let stale = try proxy.get("/v0/indices", token: proxy.readToken)
        #expect(stale.status == 200 && stale.body == first.body)
        #expect(stale.header("Cache-Status") == "pixxel-proxy; fwd=stale; fwd-status=500")
        #expect(stale.header("Age") == "61")
        await proxy.stop()
    }

    @Test func anAnswerTooLargeToCacheIsStreamedThroughWhole() async throws {
        let (sim, proxy) = try Self.start()
        defer { sim.stop() }
        let list = try proxy.get("/v0/workflows/\(sim.workflowIDs[0])/jobs", token: proxy.readToken)
        let job = try #require((list.json?["jobs"] as? [[String: Any]])?.first?["id"] as? String)
        let download = "/v0/workflows/\(sim.workflowIDs[0])/jobs/\(job)/download"
        let size = 3 << 20
        for round in 0..<2 {
            let answer = try StreamingHTTPClient.download(port: proxy.port, target: download + "?size=\(size)",
                                                          headers: [("Authorization", proxy.readToken)], keep: [size - 1000], keepLength: 1000)
            #expect(answer.status == 200 && answer.complete && answer.bodyBytes == size, "round \(round)")
            #expect(answer.header("Cache-Status") == "pixxel-proxy; fwd=bypass; detail=too-large")
            #expect(answer.kept[size - 1000] == StreamingTests.jobPayload(job, size: size).bytes((size - 1000)..<size))
        }
        #expect(Self.calls(sim, "GET download") == 3, "one fetch found it too large; then each request streamed it")
        // A small answer on the same rule is cached.
        _ = try proxy.get(download + "?size=1000", token: proxy.readToken)
        let hit = try proxy.get(download + "?size=1000", token: proxy.readToken)
        #expect(hit.header("Cache-Status")?.contains("hit") == true && hit.body.count == 1000)
        #expect(Self.calls(sim, "GET download") == 4)
        await proxy.stop()
    }
}
