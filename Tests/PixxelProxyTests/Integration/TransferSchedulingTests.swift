import Foundation
import Synchronization
import PixxelSim
import ProxyConfig
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Streamed transfers share the upstream connections fairly: no client starves another, the
/// cached routes keep a connection, and a waiting transfer gets one when a buffered call ends.
@Suite struct TransferSchedulingTests {
    /// Sends a download request and reads nothing: the proxy fills its buffers and holds the
    /// transfer (and its upstream connection) until the socket closes.
    static func openStalledDownload(port: UInt16, target: String, token: String) throws -> Int32 {
        let fd = try RawHTTPClient.connect(port: port, timeoutSeconds: 10)
        var size: Int32 = 4096
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        _ = RawSocket.send(fd, "GET \(target) HTTP/1.1\r\nHost: h\r\nAuthorization: \(token)\r\n\r\n")
        return fd
    }

    static func firstJob(_ sim: SimServer, _ proxy: ProxyHarness) throws -> String {
        let list = try proxy.get("/v0/workflows/\(sim.workflowIDs[0])/jobs", token: proxy.readToken)
        return try #require((list.json?["jobs"] as? [[String: Any]])?.first?["id"] as? String)
    }

    /// One client with a few downloads queued for a connection must not starve another
    /// client's pass-through request: the budget serves "clients in turn", but a streamed
    /// transfer first waits for a connection in `StreamingClient.waiting`, a plain FIFO. With
    /// one streamed slot (max_connections 2), when client A's first download ends the slot
    /// goes to A's next one, and client B, queued behind A's, times out with 504.
    @Test func aClientWithQueuedDownloadsDoesNotStarveAnotherClient() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        // The transfer's reservation lasts the upstream timeout: 30 s, so a transfer left
        // waiting fails with a 504 then, while one woken when a list's call ends (after the
        // simulator's 1 s) is answered long before, however slow the machine.
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)") {
            $0.upstreamMaxConnections = 2
            $0.upstreamTimeoutSeconds = 30
        }
        let job = try Self.firstJob(sim, proxy)
        let download = "/v0/workflows/\(sim.workflowIDs[0])/jobs/\(job)/download?size=\(1 << 30)"
        // Client A ("reader"): one download holding the only streamed slot, two more queued.
        let a1 = try Self.openStalledDownload(port: proxy.port, target: download, token: proxy.readToken)
        #expect(eventually { sim.stats.downloadsStarted == 1 })
        let a2 = try Self.openStalledDownload(port: proxy.port, target: download, token: proxy.readToken)
        let a3 = try Self.openStalledDownload(port: proxy.port, target: download, token: proxy.readToken)
        defer { close(a2); close(a3) }
        func queued() -> Int? {
            ((try? proxy.get("/admin/stats", token: proxy.adminToken))?.json?["streams"] as? [String: Any])?["queued"] as? Int
        }
        #expect(eventually { queued() == 2 }, "A's requests are queued first")
        // Client B ("writer"): one small pass-through read, queued after A's.
        let b = BackgroundCall { try RawHTTPClient.request(port: proxy.port, target: "/v0/projects", headers: [("Authorization", proxy.writeToken)]) }
        #expect(eventually { queued() == 3 })
        // A's first download ends: the slot frees, and it is B's turn.
        close(a1)
        let answer = try b.value()
        #expect(answer.status == 200, "client B got \(answer.status) \(answer.errorCode ?? ""): client A's queued downloads went first")
        await proxy.stop()
    }

    /// With two connections, a download holds one and the cached routes keep the other
    /// (`ConnectionAllowance`: transfers take at most all but one). With one connection there
    /// is nothing to keep: the README says a transfer and the cached routes then take turns,
    /// and the proxy warns at start.
    @Test func withTwoConnectionsADownloadDoesNotStarveTheCachedRoutes() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)") {
            $0.upstreamMaxConnections = 2
            // A list starved of a connection would get a 504 after 30 s; one that gets the kept
            // connection answers in milliseconds.
            $0.upstreamTimeoutSeconds = 30
        }
        let job = try Self.firstJob(sim, proxy)
        let fd = try Self.openStalledDownload(port: proxy.port, target: "/v0/workflows/\(sim.workflowIDs[0])/jobs/\(job)/download?size=\(1 << 30)",
                                              token: proxy.readToken)
        defer { close(fd) }
        #expect(eventually { sim.stats.downloadsStarted == 1 })
        let detail = try proxy.get("/v0/workflows/\(sim.workflowIDs[1])/jobs", token: proxy.writeToken)
        #expect(detail.status == 200, "a job list miss during a download: \(detail.status) \(detail.errorCode ?? "")")
        await proxy.stop()
    }

    /// A streamed transfer that waits for a connection is granted one only when a connection
    /// closes (`ConnectionAllowance.bufferedFreed`, `streamedFreed`). A buffered call that
    /// ends well leaves its connection idle in the pool (`HTTPClient.finish`), which wakes the
    /// budget (`onCapacity`) but not `StreamingClient.grantWaiting`: the transfer waits on,
    /// though `takeSlot` would close that idle connection for it, until its reservation times
    /// out (504). Here: max_connections 2, both busy with job-list misses for 1 s; a
    /// pass-through read arriving meanwhile gets 504 after 4 s instead of its answer after 1 s.
    @Test func aTransferWaitingForAConnectionGetsOneWhenABufferedCallEnds() async throws {
        let (sim, simPort) = try startSimulator { $0.faults.latencyMilliseconds = 1000 }
        defer { sim.stop() }
        // The transfer's reservation lasts the upstream timeout: 30 s, so a transfer left
        // waiting fails with a 504 then, while one woken when a list's call ends (after the
        // simulator's 1 s) is answered long before, however slow the machine.
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)") {
            $0.upstreamMaxConnections = 2
            $0.upstreamTimeoutSeconds = 30
        }
        let port = proxy.port, token = proxy.readToken, workflows = sim.workflowIDs
        let lists = (0..<2).map { i in
            BackgroundCall { try RawHTTPClient.request(port: port, target: "/v0/workflows/\(workflows[i])/jobs", headers: [("Authorization", token)]) }
        }
        #expect(eventually { sim.stats.requests["GET list"] == 2 }, "both buffered connections busy")
        let started = Date()
        let passThrough = try RawHTTPClient.request(port: port, target: "/v0/projects", headers: [("Authorization", token)], timeoutSeconds: 60)
        let waited = Date().timeIntervalSince(started)
        for list in lists { #expect(try list.value().status == 200) }
        #expect(passThrough.status == 200, "got \(passThrough.status) \(passThrough.errorCode ?? "") after \(String(format: "%.1f", waited)) s")
        await proxy.stop()
    }

    /// Many concurrent pass-through transfers never open more than
    /// `upstream.max_connections` upstream connections, and leave one to the buffered calls.
    @Test func streamedTransfersStayWithinMaxConnections() async throws {
        // Counted from the request's arrival to just before its answer: a connection the proxy
        // opens next can only arrive after that answer, so the count is exact.
        let waiting = Mutex<(now: Int, most: Int)>((0, 0))
        let upstream = try ScriptedUpstream { connection, _ in
            guard connection.readHead() != nil else { return }
            waiting.withLock { $0.now += 1; $0.most = max($0.most, $0.now) }
            // Held until a second transfer is here too (or 5 s have passed): the allowance is
            // then reached whatever the machine's speed, and a third one arriving meanwhile
            // would be counted.
            let heldSince = Date()
            while waiting.withLock({ $0.now }) < 2 && Date().timeIntervalSince(heldSince) < 5 { usleep(10_000) }
            usleep(50_000)
            waiting.withLock { $0.now -= 1 }
            connection.send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        }
        defer { upstream.stop() }
        let proxy = try ProxyHarness(upstreamURL: upstream.url) { $0.upstreamMaxConnections = 3 }
        let port = proxy.port, token = proxy.readToken
        let answers = concurrently(10) { _ in try? RawHTTPClient.request(port: port, target: "/v0/projects", headers: [("Authorization", token)]) }
        #expect(answers.allSatisfy { $0?.status == 200 })
        let most = waiting.withLock { $0.most }
        #expect(most == 2, "streamed transfers held \(most) connections at once (max 3, one kept for cached routes)")
        await proxy.stop()
    }
}

/// Streamed transfers spend the one budget, at its door.
@Suite struct TransferBudgetTests {
    @Test func streamedTransfersRespectRequestsPerSecond() async throws {
        let upstream = try ScriptedUpstream { connection, upstream in
            guard let head = connection.readHead() else { return }
            upstream.record(head: head)
            connection.send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        }
        defer { upstream.stop() }
        let proxy = try ProxyHarness(upstreamURL: upstream.url) {
            $0.upstreamRequestsPerSecond = 2
            $0.upstreamBurst = 2
        }
        let port = proxy.port, token = proxy.readToken
        let answers = concurrently(10) { _ in try? RawHTTPClient.request(port: port, target: "/v0/projects", headers: [("Authorization", token)]) }
        #expect(answers.allSatisfy { $0?.status == 200 || $0?.status == 429 })
        let passed = answers.filter { $0?.status == 200 }.count
        // Each request the upstream saw went through the door, and the door kept the rate.
        let grants = proxy.server.upstreamGrantInstants
        #expect(grants.count == passed && upstream.heads.count == passed, "\(grants.count) grants, \(upstream.heads.count) requests, \(passed) answers")
        let violations = budgetWindowViolations(grants, rate: 2, burst: 2)
        #expect(violations.isEmpty, "\(violations.prefix(5))")
        // The starts as the upstream saw them, with 0.9 of a token's time of slack.
        let startViolations = budgetWindowViolations(upstream.headInstants, rate: 2, burst: 2, slackSeconds: 0.9 / 2)
        #expect(startViolations.isEmpty, "\(startViolations.prefix(5))")
        await proxy.stop()
    }
}
