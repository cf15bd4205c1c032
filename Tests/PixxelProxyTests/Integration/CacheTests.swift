import Foundation
import PixxelSim
import Testing
@testable import ProxyServer
@testable import ResponseCache

/// The cache through the real server, against pixxel-sim counting upstream calls, with the
/// proxy's clock moved by hand.
@Suite struct CacheTests {
    func listCalls(_ sim: SimServer) -> Int { sim.stats.requests["GET list", default: 0] }
    func detailCalls(_ sim: SimServer) -> Int { sim.stats.requests["GET detail", default: 0] }

    @Test func aRunningJobIsRefetchedAfterItsTTLAndAFinishedOneIsNot() async throws {
        let (sim, simPort) = try startSimulator { $0.pendingSeconds = 0; $0.runningSeconds = 3600 }
        defer { sim.stop() }
        let clock = ManualClock()
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)", clock: clock)
        let workflow = sim.workflowIDs[0]
        let jobs = try #require(try proxy.get("/v0/workflows/\(workflow)/jobs", token: proxy.readToken).json?["jobs"] as? [[String: Any]])
        let running = try #require(jobs.first { $0["status"] as? String == "running" }?["id"] as? String)
        let finished = try #require(jobs.first { ["completed", "failed"].contains($0["status"] as? String) }?["id"] as? String)

        for id in [running, finished] {
            let first = try proxy.get("/v0/workflows/\(workflow)/jobs/\(id)", token: proxy.readToken)
            #expect(first.header("Cache-Status") == "pixxel-proxy; fwd=miss; fwd-status=200; stored")
        }
        #expect(detailCalls(sim) == 2)

        clock.advance(5)
        let hit = try proxy.get("/v0/workflows/\(workflow)/jobs/\(running)", token: proxy.readToken)
        #expect(hit.header("Cache-Status") == "pixxel-proxy; hit; ttl=5")
        #expect(hit.header("Age") == "5")
        #expect(detailCalls(sim) == 2)

        clock.advance(6)  // 11 s: past the 10 s of an active job, far within a day
        let refetched = try proxy.get("/v0/workflows/\(workflow)/jobs/\(running)", token: proxy.readToken)
        #expect(refetched.header("Cache-Status") == "pixxel-proxy; fwd=stale; fwd-status=200; stored")
        #expect(refetched.header("Age") == "0")
        let stillCached = try proxy.get("/v0/workflows/\(workflow)/jobs/\(finished)", token: proxy.readToken)
        #expect(stillCached.header("Cache-Status")?.hasPrefix("pixxel-proxy; hit; ttl=863") == true)
        #expect(detailCalls(sim) == 3)

        clock.advance(86_400)
        let expired = try proxy.get("/v0/workflows/\(workflow)/jobs/\(finished)", token: proxy.readToken)
        // Revalidated through its workflow's (long expired) list, which shows it unchanged.
        #expect(expired.header("Cache-Status")?.hasPrefix("pixxel-proxy; fwd=stale; fwd-status=200") == true,
                "a finished job expires after terminal_job_seconds")
        #expect(sim.stats.total == 5)
        await proxy.stop()
    }

    @Test func fiftyFilterCombinationsCostOneUpstreamCall() async throws {
        let (sim, simPort) = try startSimulator { $0.jobsPerWorkflow = 40 }
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)", clock: ManualClock())
        let workflow = sim.workflowIDs[0]
        let full = try proxy.get("/v0/workflows/\(workflow)/jobs", token: proxy.readToken)
        let direct = try RawHTTPClient.request(port: simPort, target: "/v0/workflows/\(workflow)/jobs",
                                               headers: [("Authorization", ProxyHarness.apiKey)])
        #expect(full.body.count == direct.body.count, "unfiltered: the upstream's bytes")
        let jobs = try #require(full.json?["jobs"] as? [[String: Any]])
        let statuses = ["completed", "FAILED", "running", "pending", "nope"]
        let creators = Set(jobs.compactMap { $0["created_by"] as? String }).sorted() + ["nobody"]
        let days = Set(jobs.compactMap { ($0["created_at"] as? String)?.prefix(10) }).sorted().map(String.init)
        var queries: [String] = []
        for status in statuses { for creator in creators { queries.append("status=\(status)&created_by=\(creator)") } }
        for day in days { queries.append("created_on=\(day)"); queries.append("created_on=\(day)T12:00:00Z&status=completed") }
        for job in jobs.prefix(50 - queries.count) { queries.append("id=\(job["id"] as! String)") }
        #expect(queries.count >= 50)

        for query in queries {
            let answer = try proxy.get("/v0/workflows/\(workflow)/jobs?\(query)", token: proxy.readToken)
            #expect(answer.status == 200)
            #expect(answer.header("Cache-Status")?.contains("hit") == true, "\(query)")
            // The proxy's filtering agrees with what the simulator would answer itself.
            let upstream = try RawHTTPClient.request(port: simPort, target: "/v0/workflows/\(workflow)/jobs?\(query)",
                                                     headers: [("Authorization", ProxyHarness.apiKey)])
            let ids = { (r: RawResponse) in (r.json?["jobs"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String } }
            #expect(ids(answer) == ids(upstream), "\(query)")
        }
        #expect(listCalls(sim) == 1 + queries.count + 1, "one call from the proxy; the rest are this test's own checks")
        await proxy.stop()
    }

    @Test func concurrentMissesCostOneUpstreamCall() async throws {
        let (sim, simPort) = try startSimulator { $0.faults.latencyMilliseconds = 300 }
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)", clock: ManualClock())
        let target = "/v0/workflows/\(sim.workflowIDs[0])/jobs"
        let port = proxy.port, token = proxy.readToken
        let answers = concurrently(20) { index in
            try? RawHTTPClient.request(port: port, target: target + (index % 2 == 0 ? "" : "?status=completed"),
                                       headers: [("Authorization", token)])
        }
        #expect(answers.allSatisfy { $0?.status == 200 })
        #expect(listCalls(sim) == 1)
        let statuses = answers.compactMap { $0?.header("Cache-Status") }
        #expect(statuses.filter { $0.hasSuffix("stored") }.count == 1 || statuses.contains { $0.contains("hit") })
        #expect(statuses.contains { $0.hasSuffix("stored; collapsed") })
        await proxy.stop()
    }

    @Test func aFailedFetchWakesEveryWaiterWithTheError() async throws {
        let upstream = try FakeUpstream { _ in .hang }
        defer { upstream.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(upstream.port)", clock: ManualClock()) { $0.upstreamTimeoutSeconds = 1 }
        let port = proxy.port, token = proxy.readToken
        let answers = concurrently(8) { _ in
            try? RawHTTPClient.request(port: port, target: "/v0/workflows/w/jobs/j", headers: [("Authorization", token)])
        }
        #expect(answers.allSatisfy { $0?.status == 504 })
        #expect(upstream.received.count == 1)
        #expect(answers.contains { $0?.header("Cache-Status")?.hasSuffix("collapsed") == true })
        await proxy.stop()
    }

    @Test func noCacheForcesARevalidation() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)", clock: ManualClock())
        let target = "/v0/workflows/\(sim.workflowIDs[0])/jobs"
        _ = try proxy.get(target, token: proxy.readToken)
        #expect(try proxy.get(target, token: proxy.readToken).header("Cache-Status")?.contains("hit") == true)
        let forced = try proxy.get(target, token: proxy.readToken, headers: [("Cache-Control", "no-cache")])
        #expect(forced.header("Cache-Status") == "pixxel-proxy; fwd=request; fwd-status=200; stored")
        #expect(listCalls(sim) == 2)
        await proxy.stop()
    }

    @Test func upstreamErrorsAreNotCached() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)", clock: ManualClock())
        let missing = "/v0/workflows/\(sim.workflowIDs[0])/jobs/no-such-job"
        for _ in 0..<2 {
            let answer = try proxy.get(missing, token: proxy.readToken)
            #expect(answer.status == 404)
            #expect(answer.header("Cache-Status") == "pixxel-proxy; fwd=miss; fwd-status=404")
        }
        #expect(detailCalls(sim) == 2)
        sim.faults.errorRate = 1
        let list = "/v0/workflows/\(sim.workflowIDs[0])/jobs"
        #expect(try proxy.get(list, token: proxy.readToken).status == 500)
        sim.faults.errorRate = 0
        #expect(try proxy.get(list, token: proxy.readToken).status == 200)
        #expect(listCalls(sim) == 2)
        await proxy.stop()
    }

    @Test func headIsAnsweredFromTheCachedGet() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)", clock: ManualClock())
        let target = "/v0/workflows/\(sim.workflowIDs[0])/jobs"
        let full = try proxy.get(target, token: proxy.readToken)
        let head = try proxy.request("HEAD", target, token: proxy.readToken)
        #expect(head.status == 200)
        #expect(head.header("Content-Length") == String(full.body.count))
        #expect(head.header("Cache-Status")?.contains("hit") == true)
        #expect(sim.stats.requests["HEAD list"] == nil)
        await proxy.stop()
    }

    @Test func theMemoryBudgetHoldsUnderManyEntries() async throws {
        // 900 job details of about 1.5 KB each do not fit in 1 MiB: the oldest are evicted.
        let (sim, simPort) = try startSimulator { $0.workflows = 1; $0.jobsPerWorkflow = 900 }
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)", clock: ManualClock()) { $0.cacheMemoryMB = 1 }
        let workflow = sim.workflowIDs[0]
        let jobs = try #require(try proxy.get("/v0/workflows/\(workflow)/jobs", token: proxy.readToken).json?["jobs"] as? [[String: Any]])
        for job in jobs {
            #expect(try proxy.get("/v0/workflows/\(workflow)/jobs/\(job["id"] as! String)", token: proxy.readToken).status == 200)
        }
        let stats = proxy.server.cacheStatistics
        #expect(stats.bytes <= 1 << 20)
        #expect(stats.evictions > 0)
        #expect(stats.entries < jobs.count + 1)
        // The most recently used entry is still a hit.
        let last = try proxy.get("/v0/workflows/\(workflow)/jobs/\(jobs.last!["id"] as! String)", token: proxy.readToken)
        #expect(last.header("Cache-Status")?.contains("hit") == true)
        await proxy.stop()
    }

    /// A cold detail miss reads the disk once: the look before the fetch found no row, and
    /// nothing was written since, so storing the answer does not read it again.
    @Test func aColdDetailMissReadsTheDiskOnce() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)", clock: ManualClock())
        let workflow = sim.workflowIDs[0]
        let listed = try RawHTTPClient.request(port: simPort, target: "/v0/workflows/\(workflow)/jobs",
                                               headers: [("Authorization", ProxyHarness.apiKey)])
        let job = try #require((listed.json?["jobs"] as? [[String: Any]])?.first?["id"] as? String)
        let disk = try #require(proxy.server.cache.disk)
        let before = disk.readsAsked
        let answer = try proxy.get("/v0/workflows/\(workflow)/jobs/\(job)", token: proxy.readToken)
        #expect(answer.header("Cache-Status")?.contains("fwd=miss") == true)
        #expect(disk.readsAsked - before == 1, "\(disk.readsAsked - before) disk reads for one cold miss")
        await proxy.stop()
    }
}
