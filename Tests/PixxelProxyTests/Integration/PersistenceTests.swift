import Foundation
import Synchronization
import PixxelSim
import Testing
import CSQLite
@testable import JobCache

/// The disk tier through the real server: restarts, kill -9, purge and the offline CLI.
@Suite struct PersistenceTests {
    @Test func aRestartKeepsEntriesAndTheirAge() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let shared = TemporaryDirectory()
        let clock = ManualClock()
        let workflow = sim.workflowIDs[0]
        let first = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)", clock: clock) { $0.cacheDirectory = shared.path }
        let original = try first.get("/v0/workflows/\(workflow)/jobs", token: first.readToken)
        #expect(original.header("Cache-Status")?.hasSuffix("stored") == true)
        await first.stop()

        clock.advance(4)
        let second = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)", clock: clock) { $0.cacheDirectory = shared.path }
        #expect(try second.get("/readyz", token: nil).status == 200)
        let again = try second.get("/v0/workflows/\(workflow)/jobs", token: second.readToken)
        #expect(again.header("Cache-Status") == "pixxel-proxy; hit; ttl=11")
        #expect(again.header("Age") == "4", "age counts from the upstream's answer, across the restart")
        #expect(again.body == original.body)
        let filtered = try second.get("/v0/workflows/\(workflow)/jobs?status=completed", token: second.readToken)
        #expect(filtered.header("Cache-Status")?.contains("hit") == true)
        #expect(sim.stats.requests["GET list"] == 1)
        await second.stop()
    }

    /// Found by the soak: after a restart, a job created through the new process was missing
    /// from the list its creator read next, served fresh from the disk as the old process left it.
    @Test func aJobCreatedAfterARestartIsInTheListServedFromDisk() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let shared = TemporaryDirectory()
        let clock = ManualClock()
        let list = "/v0/workflows/\(sim.workflowIDs[0])/jobs"
        let first = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)", clock: clock) { $0.cacheDirectory = shared.path }
        _ = try first.get(list, token: first.readToken)
        await first.stop()

        let second = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)", clock: clock) { $0.cacheDirectory = shared.path }
        let created = try second.request("POST", "\(list)?project_id=p", token: second.writeToken)
        let id = try #require(created.json?["id"] as? String)
        let after = try second.get(list, token: second.readToken)
        #expect(after.header("Cache-Status")?.contains("hit") == true)
        let ids = (after.json?["jobs"] as? [[String: Any]])?.compactMap { $0["id"] as? String } ?? []
        #expect(ids.contains(id))
        await second.stop()
    }

    @Test func killNineDuringWritesLeavesAStoreThatServesCorrectAnswers() async throws {
        let (sim, simPort) = try startSimulator { $0.workflows = 1; $0.jobsPerWorkflow = 400 }
        defer { sim.stop() }
        let directory = TemporaryDirectory()
        let clients = directory.path + "/clients"
        let token = try ProcessTests.run(["token", "add", "ci", "--scopes", "read,admin", "--clients-file", clients]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let workflow = sim.workflowIDs[0]
        let (process, port) = try ProcessTests.startServe(simPort: simPort, clients: clients, directory: directory)
        let list = try RawHTTPClient.request(port: port, target: "/v0/workflows/\(workflow)/jobs", headers: [("Authorization", token)])
        let ids = try #require(list.json?["jobs"] as? [[String: Any]]).compactMap { $0["id"] as? String }
        // Many writes in flight from four threads, then kill -9 part way through.
        let served = Mutex(0)
        let workers = (0..<4).map { worker in
            Thread.detachedResult {
                for (index, id) in ids.enumerated() where index % 4 == worker {
                    guard (try? RawHTTPClient.request(port: port, target: "/v0/workflows/\(workflow)/jobs/\(id)",
                                                      headers: [("Authorization", token)], timeoutSeconds: 5)) != nil else { return }
                    served.withLock { $0 += 1 }
                }
            }
        }
        #expect(try eventually { served.withLock { $0 } >= 100 })
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        for worker in workers { worker.wait() }

        // A new server on the same store: ready at once, and every answer is the right job.
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)") { $0.cacheDirectory = directory.path + "/cache" }
        #expect(try proxy.get("/readyz", token: nil).status == 200)
        var hits = 0
        for id in ids {
            let answer = try proxy.get("/v0/workflows/\(workflow)/jobs/\(id)", token: proxy.readToken)
            #expect(answer.status == 200)
            #expect(answer.json?["id"] as? String == id)
            if answer.header("Cache-Status")?.contains("hit") == true { hits += 1 }
        }
        #expect(hits > 0, "entries written before the kill are served from disk")
        await proxy.stop()
    }

    @Test func purgeDropsEntriesFromBothTiers() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)", clock: ManualClock())
        let workflow = sim.workflowIDs[0]
        let target = "/v0/workflows/\(workflow)/jobs"
        let jobs = try #require(try proxy.get(target, token: proxy.readToken).json?["jobs"] as? [[String: Any]])
        let job = jobs[0]["id"] as! String
        _ = try proxy.get("\(target)/\(job)", token: proxy.readToken)

        #expect(try proxy.request("POST", "/admin/purge?workflow_id=\(workflow)", token: proxy.readToken).status == 403)
        #expect(try proxy.request("POST", "/admin/purge", token: proxy.adminToken).status == 400)
        #expect(try proxy.request("GET", "/admin/purge?workflow_id=\(workflow)", token: proxy.adminToken).status == 405)
        let one = try proxy.request("POST", "/admin/purge?workflow_id=\(workflow)&job_id=\(job)", token: proxy.adminToken)
        #expect(one.status == 200)
        #expect((one.json?["purged"] as? [String: Int])?["memory_entries"] == 1)
        #expect(try proxy.get("\(target)/\(job)", token: proxy.readToken).header("Cache-Status")?.contains("fwd=miss") == true)
        #expect(try proxy.get(target, token: proxy.readToken).header("Cache-Status")?.contains("hit") == true)

        let all = try proxy.request("POST", "/admin/purge?workflow_id=\(workflow)", token: proxy.adminToken)
        #expect((all.json?["purged"] as? [String: Int])?["memory_entries"] == 2)
        #expect((all.json?["purged"] as? [String: Int])?["disk_entries"] == 2)
        #expect(try proxy.get(target, token: proxy.readToken).header("Cache-Status")?.contains("fwd=miss") == true)
        await proxy.stop()
    }

    @Test func statsReportTiersHitsAndSavedCalls() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)", clock: ManualClock())
        let target = "/v0/workflows/\(sim.workflowIDs[0])/jobs"
        for _ in 0..<4 { _ = try proxy.get(target, token: proxy.readToken) }
        #expect(try proxy.get("/admin/stats", token: proxy.writeToken).status == 403)
        let stats = try #require(try proxy.get("/admin/stats", token: proxy.adminToken).json)
        #expect(stats["hits"] as? Int == 3)
        #expect(stats["misses"] as? Int == 1)
        #expect(stats["hit_ratio"] as? Double == 0.75)
        #expect(stats["upstream_calls_saved"] as? Int == 3)
        #expect((stats["memory"] as? [String: Any])?["entries"] as? Int == 1)
        #expect(try eventually { ((try proxy.get("/admin/stats", token: proxy.adminToken).json?["disk"] as? [String: Any])?["entries"] as? Int) == 1 })
        await proxy.stop()
    }

    @Test func theCacheCommandWorksOfflineOnTheStore() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let shared = TemporaryDirectory()
        let workflow = sim.workflowIDs[0]
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)") { $0.cacheDirectory = shared.path }
        _ = try proxy.get("/v0/workflows/\(workflow)/jobs", token: proxy.readToken)
        let environment = ["PIXXEL_PROXY_CACHE_DIRECTORY": shared.path]
        // While the server has the store open (SQLite locking makes readers and a second writer safe).
        #expect(try eventually { try ProcessTests.run(["cache", "stats"], environment: environment).stdout.contains("entries: 1") })
        _ = try proxy.get("/v0/workflows/\(sim.workflowIDs[1])/jobs", token: proxy.readToken)
        await proxy.stop()
        let stats = try ProcessTests.run(["cache", "stats"], environment: environment)
        #expect(stats.status == 0)
        #expect(stats.stdout.contains("entries: 2"))
        let purge = try ProcessTests.run(["cache", "purge", "--workflow", workflow], environment: environment)
        #expect(purge.stdout.contains("purged 1 entry"))
        #expect(try ProcessTests.run(["cache", "stats"], environment: environment).stdout.contains("entries: 1"))
        let empty = TemporaryDirectory()
        #expect(try ProcessTests.run(["cache", "stats"], environment: ["PIXXEL_PROXY_CACHE_DIRECTORY": empty.path]).stdout.contains("no cache yet"))
    }

    /// Found by the soak's disk-fault mode: with the store made immutable (`chattr +i`) the
    /// proxy died of SIGBUS, writing to the memory map of WAL's index file. The store maps no
    /// file of its own (a rollback journal), so an unwritable disk gives errors, not a crash.
    @Test func theStoreMapsNoFileIntoMemoryThatAnUnwritableDiskCouldTurnIntoSIGBUS() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let directory = TemporaryDirectory()
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)") { $0.cacheDirectory = directory.path }
        _ = try proxy.get("/v0/workflows/\(sim.workflowIDs[0])/jobs", token: proxy.readToken)
        let created = try proxy.request("POST", "/v0/workflows/\(sim.workflowIDs[0])/jobs?project_id=p", token: proxy.writeToken)
        #expect(created.status == 200)
        #expect(try eventually { ((try proxy.get("/admin/stats", token: proxy.adminToken).json?["disk"] as? [String: Any])?["entries"] as? Int ?? 0) >= 1 })
        // The harness serves in this process: its maps are this process's (read to the end:
        // a file of /proc has no size to read by).
        let maps = String(decoding: try #require(FileHandle(forReadingAtPath: "/proc/self/maps")).readToEnd() ?? Data(), as: UTF8.self)
        #expect(maps.contains("pixxel-proxyPackageTests"), "the maps were read")
        let mapped = maps.split(separator: "\n").filter { $0.contains(directory.path) }
        #expect(mapped.isEmpty, "\(mapped)")
        await proxy.stop()
    }

    typealias ScriptedPixxel = InvalidationFlowTests.ScriptedPixxel
    static let t0 = "2026-11-20T10:00:00Z", t7 = "2026-11-20T10:00:07Z"

    /// Another process's transaction on the store, held until `end`.
    final class OutsideTransaction {
        private var db: OpaquePointer?
        init(_ directory: String, _ begin: String) throws {
            guard sqlite3_open(directory + "/" + DiskStore.fileName, &db) == SQLITE_OK, sqlite3_busy_timeout(db, 30_000) == SQLITE_OK,
                  sqlite3_exec(db, begin, nil, nil, nil) == SQLITE_OK else { throw RawHTTPError(description: "cannot \(begin)") }
        }
        func end() {
            sqlite3_exec(db, "ROLLBACK", nil, nil, nil)
            sqlite3_close(db)
        }
    }

    /// Found by review: a detail's new version was answered while its row still waited behind
    /// a busy disk writer; killed then, the process came back with lists on disk showing the
    /// job older than it had been shown. A new version is answered once its row is on disk.
    @Test func aNewVersionOfAJobIsAnsweredOnlyOnceItsRowIsOnDisk() async throws {
        let pixxel = try ScriptedPixxel()
        defer { pixxel.upstream.stop() }
        pixxel.publish(["a"], updatedAt: Self.t0)
        let directory = TemporaryDirectory()
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(pixxel.upstream.port)") { $0.cacheDirectory = directory.path }
        _ = try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken)
        #expect(try eventually { ((try proxy.get("/admin/stats", token: proxy.adminToken).json?["disk"] as? [String: Any])?["entries"] as? Int) == 1 })
        pixxel.state.withLock { $0.detailUpdatedAt["a"] = Self.t7 }

        // Another process holds the store's write lock: the proxy's writer waits (up to 5 s).
        let outside = try OutsideTransaction(directory.path, "BEGIN IMMEDIATE")
        let port = proxy.port, token = proxy.readToken
        let detail = BackgroundCall { try RawHTTPClient.request(port: port, target: "/v0/workflows/w/jobs/a", headers: [("Authorization", token)]) }
        #expect(eventually { pixxel.calls("GET /v0/workflows/w/jobs/a") == 1 })
        #expect(!detail.ends(within: 1), "answered before its row was on disk")
        outside.end()
        #expect(try detail.value().json?["updated_at"] as? String == Self.t7)
        await proxy.stop()
    }

    /// Found by review: a disk read that failed (the store locked by another process past the
    /// busy timeout) counted as "no row", so an older answer from a lagging replica replaced
    /// the newer detail on disk and was served.
    @Test func aFailedDiskReadIsNoProofThatTheDiskHoldsNothingNewer() async throws {
        let pixxel = try ScriptedPixxel()
        defer { pixxel.upstream.stop() }
        pixxel.publish(["a"], updatedAt: Self.t7)
        let directory = TemporaryDirectory()
        let first = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(pixxel.upstream.port)") { $0.cacheDirectory = directory.path }
        #expect(try first.get("/v0/workflows/w/jobs/a", token: first.readToken).json?["updated_at"] as? String == Self.t7)
        await first.stop()

        // A fresh process; the upstream's replica lags; the store is locked outright meanwhile.
        pixxel.publish(["a"], updatedAt: Self.t0)
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(pixxel.upstream.port)") {
            $0.cacheDirectory = directory.path
            $0.upstreamTimeoutSeconds = 30
        }
        let outside = try OutsideTransaction(directory.path, "BEGIN EXCLUSIVE")
        // Each of the proxy's store accesses for this request waits out SQLite's 5 s busy
        // timeout against the lock (about 20 s in all): the client waits longer than the
        // default 20 s (found when CI timed out at 20 s, the answer coming a few ms later).
        let answer = try RawHTTPClient.request(port: proxy.port, target: "/v0/workflows/w/jobs/a",
                                               headers: [("Authorization", proxy.readToken)], timeoutSeconds: 90)
        outside.end()
        #expect(answer.json?["updated_at"] as? String != Self.t0, "\(answer.status) \(answer.text)")
        #expect(answer.status == 503 || answer.json?["updated_at"] as? String == Self.t7)
        await proxy.stop()
    }
}
