import Foundation
import PixxelSim
import Testing
@testable import JobCache
@testable import ProxyServer
@testable import ResponseCache

#if canImport(Glibc)
import Glibc
#endif

@Suite struct ReadinessTests {
    @Test func readinessFailsWhenTheStoreCannotBeWrittenAndRecovers() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)")
        #expect(try proxy.get("/readyz", token: nil).status == 200)
        let disk = try #require(proxy.server.cache.disk)
        disk.limitPages(1)  // a real SQLITE_FULL on the next write
        _ = try proxy.get("/v0/workflows/\(sim.workflowIDs[0])/jobs", token: proxy.readToken)
        #expect(try eventually { try proxy.get("/readyz", token: nil).status == 503 })
        #expect(try proxy.get("/readyz", token: nil).errorCode == "not_ready")
        #expect(try proxy.get("/healthz", token: nil).status == 200, "alive, just not ready")
        disk.limitPages(1_000_000)
        // Ready again once writes have worked for the store's recovery time (10 s), not at the
        // first write that works (on a nearly full disk, some do between failures).
        let list = "/v0/workflows/\(sim.workflowIDs[1])/jobs"
        var polls = 0
        #expect(try eventually {
            // A write every 200 ms or so: the list purged and fetched again is stored again.
            polls += 1
            if polls % 20 == 0 {
                _ = try proxy.request("POST", "/admin/purge?workflow_id=\(sim.workflowIDs[1])", token: proxy.adminToken)
                _ = try proxy.get(list, token: proxy.readToken)
            }
            return try proxy.get("/readyz", token: nil).status == 200
        })
        await proxy.stop()
    }

    /// Found by the disk-fault soak: a proxy restarted while its store was read-only exited 78
    /// ("attempt to write a readonly database") while the running one kept serving through the
    /// same fault. Now it starts degraded and recovers by itself when the disk does.
    @Test func aProxyStartedOnAnUnusableStoreServesFromMemoryAndRecoversWhenTheDiskDoes() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let directory = TemporaryDirectory()
        // The cache directory's parent is a file: the store cannot be made (ENOTDIR), even as root.
        let blocked = directory.path + "/store"
        #expect(FileManager.default.createFile(atPath: blocked, contents: Array("not a directory".utf8).withUnsafeBytes { Data($0) }))
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)") { $0.cacheDirectory = blocked + "/cache" }
        let ready = try proxy.get("/readyz", token: nil)
        #expect(ready.status == 503)
        #expect(ready.errorCode == "not_ready")
        #expect(ready.text.contains("cannot be opened"), "the reason: \(ready.text)")
        // Open to anyone: the reason in words, never the path or the OS's error (found by review).
        let message = ((ready.json?["error"] as? [String: Any])?["message"] as? String) ?? ""
        #expect(message == "the cache store cannot be opened", "\(ready.text)")
        #expect(!ready.text.contains("store") || !ready.text.lowercased().contains("not a directory"), "\(ready.text)")
        let stats = try proxy.get("/admin/stats", token: proxy.adminToken).text
        #expect(stats.contains(directory.path) || stats.contains("not a directory"), "the admin's view keeps the detail")
        let list = "/v0/workflows/\(sim.workflowIDs[0])/jobs"
        #expect(try proxy.get(list, token: proxy.readToken).status == 200)
        #expect(try proxy.get(list, token: proxy.readToken).header("Cache-Status")?.contains("hit") == true, "the memory tier serves")
        #expect(try proxy.request("POST", list + "?project_id=p", token: proxy.writeToken).status == 200)
        #expect(proxy.logs.all.contains { $0.contains("audit entry written to the journal") }, "audited in the journal")

        // The disk comes back: the proxy takes it up on its next attempt.
        try FileManager.default.removeItem(atPath: blocked)
        try FileManager.default.createDirectory(atPath: blocked, withIntermediateDirectories: true)
        #expect(try eventually { try proxy.get("/readyz", token: nil).status == 200 })
        #expect(try proxy.request("POST", list + "?project_id=p", token: proxy.writeToken).status == 200)
        #expect(proxy.logs.all.filter { $0.contains("audit entry written to the journal") }.count == 1, "the store audits again")
        #expect(FileManager.default.fileExists(atPath: blocked + "/cache/" + DiskStore.fileName))
        await proxy.stop()
    }

    @Test func readinessFailsDuringDrainOnAnOpenConnection() async throws {
        // The slow request's 8 s upstream is the window in which the test starts the drain and
        // reads /readyz on its open connection (milliseconds each).
        let (sim, simPort) = try startSimulator { $0.faults.latencyMilliseconds = 8000 }
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)")
        // A keep-alive connection opened before the drain.
        let fd = try RawHTTPClient.connect(port: proxy.port, timeoutSeconds: 30)
        defer { close(fd) }
        func exchange(_ target: String) throws -> RawResponse {
            let request = Array("GET \(target) HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
            _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            var reply: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while (try? RawHTTPClient.parse(reply)).map({ $0.body.count < Int($0.header("Content-Length") ?? "0")! }) ?? true {
                let n = recv(fd, &buffer, buffer.count, 0)
                guard n > 0 else { break }
                reply += buffer[0..<n]
            }
            return try RawHTTPClient.parse(reply)
        }
        #expect(try exchange("/readyz").status == 200)
        // A slow request keeps the drain going.
        let port = proxy.port, token = proxy.readToken, workflow = sim.workflowIDs[0]
        let slow = Thread.detachedResult {
            try? RawHTTPClient.request(port: port, target: "/v0/workflows/\(workflow)/jobs", headers: [("Authorization", token)])
        }
        #expect(eventually { sim.stats.total == 1 })
        proxy.server.beginShutdown()
        #expect(eventually { (try? exchange("/readyz"))?.status == 503 })
        #expect(slow.wait()?.status == 200, "the in-flight request still finished")
        await proxy.server.waitUntilStopped()
    }

    /// A request that began before the drain is answered with `Connection: close`, and its
    /// keep-alive connection closes after it: the client sends nothing more here.
    @Test func answersFinishedDuringTheDrainCloseTheirConnection() async throws {
        // The 6 s upstream is the window in which the test starts the drain (milliseconds).
        let (sim, simPort) = try startSimulator { $0.faults.latencyMilliseconds = 6000 }
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)")
        let fd = try RawHTTPClient.connect(port: proxy.port, timeoutSeconds: 30)
        defer { close(fd) }
        let workflow = sim.workflowIDs[0]
        let request = Array("GET /v0/workflows/\(workflow)/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: \(proxy.readToken)\r\n\r\n".utf8)
        _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        #expect(eventually { sim.stats.total == 1 }, "the request is in flight, keep-alive")
        proxy.server.beginShutdown()
        var reply: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            guard n > 0 else { break }  // the server closes after the answer
            reply += buffer[0..<n]
        }
        let answer = try RawHTTPClient.parse(reply)
        #expect(answer.status == 200)
        #expect(answer.header("Connection") == "close")
        await proxy.server.waitUntilStopped()
    }
}
