import Foundation
import PixxelSim
import ProxyServer
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The hit path (prepared header lines, bodies by reference, remembered targets and tokens)
/// answers exactly what the full path answers, and steps aside whenever it should.
@Suite struct HitPathTests {
    /// Headers that differ between any two answers by nature.
    static let varying: Set<String> = ["date", "age", "x-request-id", "cache-status"]

    static func comparable(_ answer: RawResponse) -> [String] {
        answer.headers.filter { !varying.contains($0.0.lowercased()) }.map { "\($0.0.lowercased()): \($0.1)" }.sorted()
    }

    @Test(arguments: ["detail", "list", "filtered list"])
    func preparedHitsMatchTheFullPathByteForByte(_ kind: String) async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)")
        let workflow = sim.workflowIDs[0]
        let list = try proxy.get("/v0/workflows/\(workflow)/jobs", token: proxy.readToken)
        let job = try #require(((list.json?["jobs"] as? [[String: Any]])?.first?["id"]) as? String)
        let target = switch kind {
        case "detail": "/v0/workflows/\(workflow)/jobs/\(job)"
        case "list": "/v0/workflows/\(workflow)/jobs"
        default: "/v0/workflows/\(workflow)/jobs?status=COMPLETED"
        }
        _ = try proxy.get(target, token: proxy.readToken)  // stores (or is already a hit)
        // The write token has not been seen: the full path answers this hit and remembers it.
        let before = proxy.server.cacheStatistics.preparedHits
        let full = try proxy.get(target, token: proxy.writeToken)
        #expect(proxy.server.cacheStatistics.preparedHits == before)
        let prepared = try proxy.get(target, token: proxy.writeToken, headers: [("X-Request-Id", "prepared-1")])
        #expect(proxy.server.cacheStatistics.preparedHits == before + 1, "the second hit took the hit path")
        #expect(full.status == 200 && prepared.status == 200)
        #expect(prepared.body == full.body)
        #expect(Self.comparable(prepared) == Self.comparable(full))
        #expect(prepared.header("Cache-Status")?.hasPrefix("pixxel-proxy; hit; ttl=") == true)
        #expect(full.header("Cache-Status")?.hasPrefix("pixxel-proxy; hit; ttl=") == true)
        #expect(prepared.header("Age") != nil && prepared.header("X-Request-Id") == "prepared-1")
        let head = try proxy.request("HEAD", target, token: proxy.writeToken)
        #expect(head.status == 200 && head.body.isEmpty && head.header("Content-Length") == String(full.body.count))
        #expect(proxy.logs.all.contains { $0.contains("request_id=prepared-1") && $0.contains("cache=hit") }, "hits are logged")
        await proxy.stop()
    }

    @Test func generatedRequestIDsAreDistinct() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)")
        let target = "/v0/workflows/\(sim.workflowIDs[0])/jobs"
        let ids = try (0..<4).map { _ in try proxy.get(target, token: proxy.readToken).header("X-Request-Id") ?? "" }
        #expect(proxy.server.cacheStatistics.preparedHits >= 2, "the hit path made some of them")
        #expect(Set(ids).count == 4)
        // 15 bytes: a Swift small string, made without an allocation on the hit path.
        // Digits and lower-case letters: no two differ by case alone, none starts with `-`.
        #expect(ids.allSatisfy { $0.utf8.count == 15 && $0.utf8.allSatisfy { (48...57).contains($0) || (97...122).contains($0) } }, "\(ids)")
        #expect(Set(ids.map { $0.prefix(6) }).count == 1, "one process prefix, then the counter: \(ids)")
        #expect(ids == ids.sorted(), "one process's ids sort in the order they were made: \(ids)")
        await proxy.stop()
    }

    @Test func aRevokedTokenStopsWorkingAtTheReload() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)")
        let target = "/v0/workflows/\(sim.workflowIDs[0])/jobs"
        for _ in 0..<3 { #expect(try proxy.get(target, token: proxy.readToken).status == 200) }
        #expect(proxy.server.cacheStatistics.preparedHits >= 1)
        let clientsFile = proxy.server.settings.clientsFile
        let kept = try String(contentsOfFile: clientsFile, encoding: .utf8).split(separator: "\n").filter { !$0.hasPrefix("reader ") }
        try (kept.joined(separator: "\n") + "\n").write(toFile: clientsFile, atomically: true, encoding: .utf8)
        proxy.server.reloadClients()
        #expect(try eventually { try proxy.get(target, token: proxy.readToken).status == 401 })
        await proxy.stop()
    }

    @Test func aRequestToRevalidateGoesUpstream() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)")
        let target = "/v0/workflows/\(sim.workflowIDs[0])/jobs"
        for _ in 0..<3 { _ = try proxy.get(target, token: proxy.readToken) }
        let calls = sim.stats.total
        let revalidated = try proxy.get(target, token: proxy.readToken, headers: [("Cache-Control", "no-cache")])
        #expect(revalidated.header("Cache-Status")?.contains("fwd=request") == true)
        #expect(sim.stats.total == calls + 1)
        await proxy.stop()
    }

    /// One writer makes every answer's head: a miss, a hit on the full path and a hit on the
    /// hit path send the same fields in the same order.
    @Test func aMissAFullPathHitAndAPreparedHitSendTheSameFields() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)", clock: ManualClock())
        let list = "/v0/workflows/\(sim.workflowIDs[0])/jobs"
        let names = { (answer: RawResponse) in answer.headers.map { $0.0 } }
        let miss = try proxy.get(list, token: proxy.readToken)
        let full = try proxy.get(list, token: proxy.adminToken)  // a token not seen yet: the full path
        let prepared = try proxy.get(list, token: proxy.adminToken)
        #expect(proxy.server.cacheStatistics.preparedHits == 1)
        #expect(names(full) == names(prepared), "\(names(full)) vs \(names(prepared))")
        #expect(names(miss) == names(full), "\(names(miss)) vs \(names(full))")
        await proxy.stop()
    }
}
