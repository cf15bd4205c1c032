import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Transfers queued for a connection or a budget token: a client leaving, a 429 or a job list
/// ahead of them never crashes the proxy, and with one connection lists take their turn.
@Suite struct QueuedTransferTests {
    /// An upstream whose job-list answers are held until the test lets them go: `/jobs` on a
    /// workflow named `held-*` waits for `release`, `hung-*` never answers, anything else gets
    /// a small close-delimited 200. Job-list answers keep the connection (keep-alive), so the
    /// proxy's buffered client puts it back in its idle pool.
    final class HeldUpstream: @unchecked Sendable {
        let released = Flag()
        let upstream: ScriptedUpstream

        /// `heldAnswer`: what a held job list gets once released (keep-alive).
        init(heldAnswer: String = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"jobs\":[]}") throws {
            let released = self.released
            upstream = try ScriptedUpstream { connection, upstream in
                while let head = connection.readHead() {
                    upstream.record(head: head)
                    let line = head.components(separatedBy: "\r\n").first ?? ""
                    if line.contains("/held-") {
                        while !released.isSet { usleep(5_000) }
                        connection.send(heldAnswer)
                    } else if line.contains("/hung-") {
                        _ = connection.drainUntilClosed(seconds: fakePeerHoldSeconds)
                        return
                    } else {
                        connection.send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                        return
                    }
                }
            }
        }

        func release() { released.set() }
        func stop() {
            release()
            upstream.stop()
        }
    }

    /// max_connections 2: two job-list misses hold both connections; a pass-through request
    /// queues for one (`StreamingClient.waiting`); its client leaves. When the first job list
    /// ends, its connection goes idle and `bufferedIdled` runs `grantWaiting`, which picks the
    /// waiting transfer's index, then `takeSlot` closes the idle connection for it
    /// (`closeOneIdle`, StreamingClient.swift:167): that fires `bufferedFreed`, a nested `grantWaiting` that grants the same
    /// reservation (removing it) to a client that has gone, which releases its slot at once.
    /// Back in the outer `takeSlot` there is room again, so it returns a second slot, and the
    /// outer `grantWaiting` does `waiting.remove(at: index)` (StreamingClient.swift:193) on the now empty array: the proxy
    /// traps (Index out of range) and every client's connection dies with it.
    @Test func aClientLeavingWhileItsTransferWaitsDoesNotCrashTheProxy() throws {
        let held = try HeldUpstream()
        defer { held.stop() }
        let proxy = try ProxyProcess(upstreamPort: held.upstream.port, environment: [
            "PIXXEL_PROXY_UPSTREAM_MAX_CONNECTIONS": "2", "PIXXEL_PROXY_UPSTREAM_TIMEOUT_SECONDS": "10",
        ])
        defer { proxy.stop() }
        let port = proxy.port, token = proxy.readToken
        let fast = BackgroundCall { try RawHTTPClient.request(port: port, target: "/v0/workflows/held-1/jobs", headers: [("Authorization", token)]) }
        let slow = BackgroundCall { try? RawHTTPClient.request(port: port, target: "/v0/workflows/hung-1/jobs", headers: [("Authorization", token)],
                                                               timeoutSeconds: 15) }
        _ = slow
        #expect(eventually { held.upstream.heads.count == 2 }, "both buffered connections busy")
        // A pass-through request waits for a connection, and its client leaves.
        let leaving = try RawHTTPClient.connect(port: port, timeoutSeconds: 5)
        #expect(RawSocket.send(leaving, "GET /v0/projects HTTP/1.1\r\nHost: h\r\nAuthorization: \(token)\r\n\r\n"))
        #expect(eventually { proxy.streams()?.queued == 1 }, "the transfer waits for a connection")
        close(leaving)
        // Another round trip through the loop: the close has been seen by then.
        #expect(proxy.streams() != nil)
        held.release()
        let answer = try? fast.value()
        #expect(answer?.status == 200, "the job list got \(answer.map { String($0.status) } ?? "no answer")")
        // The proxy must still be there.
        let alive = eventually { (try? RawHTTPClient.request(port: port, target: "/healthz"))?.status == 200 }
        #expect(alive && !proxy.hasExited, "the proxy died: \(proxy.crashReport ?? "no report")")
    }

    /// The same trap with every client still there: while a transfer waits for a connection,
    /// a job list answered `429` with `Retry-After: 60` pauses the budget, and its connection
    /// goes idle. The nested `grantWaiting` (as above) grants the waiting transfer a slot, the
    /// budget refuses it at once (the pause outlasts its deadline: `UpstreamBudget.acquire`),
    /// the gateway releases the slot, and the outer `grantWaiting` removes from an empty queue.
    /// An upstream's ordinary rate limiting takes the whole proxy down.
    @Test func anUpstream429WhileATransferWaitsDoesNotCrashTheProxy() throws {
        let held = try HeldUpstream(heldAnswer: "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 60\r\nContent-Type: application/json\r\n"
            + "Content-Length: 33\r\n\r\n{\"error\":{\"code\":\"rate_limited\"}}")
        defer { held.stop() }
        let proxy = try ProxyProcess(upstreamPort: held.upstream.port, environment: [
            "PIXXEL_PROXY_UPSTREAM_MAX_CONNECTIONS": "2", "PIXXEL_PROXY_UPSTREAM_TIMEOUT_SECONDS": "10",
        ])
        defer { proxy.stop() }
        let port = proxy.port, token = proxy.readToken
        let fast = BackgroundCall { try RawHTTPClient.request(port: port, target: "/v0/workflows/held-1/jobs", headers: [("Authorization", token)]) }
        let slow = BackgroundCall { try? RawHTTPClient.request(port: port, target: "/v0/workflows/hung-1/jobs", headers: [("Authorization", token)],
                                                               timeoutSeconds: 15) }
        _ = slow
        #expect(eventually { held.upstream.heads.count == 2 }, "both buffered connections busy")
        let transfer = BackgroundCall { try RawHTTPClient.request(port: port, target: "/v0/projects", headers: [("Authorization", token)]) }
        #expect(eventually { proxy.streams()?.queued == 1 }, "the transfer waits for a connection")
        held.release()
        let list = try? fast.value()
        #expect(list?.status == 429, "the job list got \(list.map { String($0.status) } ?? "no answer")")
        let answer = try? transfer.value()
        #expect(answer?.status == 429, "the waiting transfer got \(answer.map { String($0.status) } ?? "no answer") (the budget is paused)")
        let alive = eventually { (try? RawHTTPClient.request(port: port, target: "/healthz"))?.status == 200 }
        #expect(alive && !proxy.hasExited, "the proxy died: \(proxy.crashReport ?? "no report")")
    }

    /// An upstream for the budget scenarios: `/v0/big` starts an endless download (fed while the
    /// proxy reads), job lists on `held-*` wait for `release`, anything else a small 200.
    static func budgetUpstream(_ released: Flag) throws -> ScriptedUpstream {
        try ScriptedUpstream { connection, upstream in
            while let head = connection.readHead() {
                upstream.record(head: head)
                let line = head.components(separatedBy: "\r\n").first ?? ""
                if line.contains("/v0/big") {
                    connection.send("HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n")
                    let piece = [UInt8](repeating: UInt8(ascii: "d"), count: 65_536)
                    while piece.withUnsafeBytes({ send(connection.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) > 0 {}
                    return
                } else if line.contains("/held-") {
                    while !released.isSet { usleep(5_000) }
                    connection.send("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"jobs\":[]}")
                } else {
                    connection.send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                    return
                }
            }
        }
    }

    /// `UpstreamBudget.drain` lets a transfer that already holds its connection go past a
    /// first waiter that has none, with `queue.removeAll { guard !taken ... taken = true }`: a
    /// predicate that remembers. `FairQueue.removeAll` (FairQueue.swift:63-64) calls the
    /// predicate twice per item (once for `kept`, once for `removed`): the transfer is left out
    /// of both, dropped without being granted or refused. Its `Slot` dies inside the queue's
    /// mutation, `slotEnded` -> `streamedFreed` -> `capacityFreed` reads the queue again: a
    /// Swift exclusivity violation, and the proxy aborts ("Fatal access conflict"; checked in
    /// release builds too). Here with max_connections 2, a state any busy proxy reaches: one
    /// download running, one job-list call in flight, a second job-list miss waiting in the
    /// budget for a connection, a pass-through request waiting for a stream slot; the
    /// download's client leaves.
    @Test func aTransferQueuedInTheBudgetBehindAJobListDoesNotCrashTheProxy() throws {
        let released = Flag()
        let upstream = try Self.budgetUpstream(released)
        defer {
            released.set()
            upstream.stop()
        }
        let proxy = try ProxyProcess(upstreamPort: upstream.port, environment: [
            "PIXXEL_PROXY_UPSTREAM_MAX_CONNECTIONS": "2", "PIXXEL_PROXY_UPSTREAM_TIMEOUT_SECONDS": "10",
        ])
        defer { proxy.stop() }
        let port = proxy.port, token = proxy.readToken
        let download = try TransferSchedulingTests.openStalledDownload(port: port, target: "/v0/big", token: token)
        #expect(eventually { proxy.streams()?.running == 1 })
        let inFlight = BackgroundCall { try? RawHTTPClient.request(port: port, target: "/v0/workflows/held-1/jobs", headers: [("Authorization", token)]) }
        #expect(eventually { upstream.heads.count == 2 }, "both connections busy")
        let waitingList = BackgroundCall { try? RawHTTPClient.request(port: port, target: "/v0/workflows/held-2/jobs", headers: [("Authorization", token)]) }
        #expect(eventually { proxy.budgetQueued() == 1 }, "the second job list waits in the budget before the transfer comes")
        let transfer = BackgroundCall { try? RawHTTPClient.request(port: port, target: "/v0/projects", headers: [("Authorization", token)]) }
        #expect(eventually { proxy.streams()?.queued == 1 }, "the transfer waits for a slot")
        close(download)
        let answer = (try? transfer.value()) ?? nil
        released.set()
        #expect(answer?.status == 200, "the transfer got \(answer.map { String($0.status) } ?? "no answer")")
        #expect((try? inFlight.value())??.status == 200)
        #expect((try? waitingList.value())??.status == 200)
        let alive = eventually { (try? RawHTTPClient.request(port: port, target: "/healthz"))?.status == 200 }
        #expect(alive && !proxy.hasExited, "the proxy died: \(proxy.crashReport ?? "no report")")
    }

    /// README: "With `upstream.max_connections: 1` ... a transfer and the cached routes take
    /// turns on the one connection". With a download running, a job-list miss waiting and a
    /// second download queued, the first download's client leaves: the proxy aborts (the
    /// `UpstreamBudget.drain` defect above: the second download, granted the connection by
    /// `streamedFreed` -> `grantWaiting` (StreamingClient.swift:92) before `capacityFreed`
    /// lets the job list try, queues in the budget behind it and is dropped). Were it not
    /// dropped, it would still go first, and the job list wait behind every queued download.
    @Test func withOneConnectionAJobListTakesItsTurnBetweenDownloads() throws {
        let released = Flag()
        released.set()
        let upstream = try Self.budgetUpstream(released)
        defer { upstream.stop() }
        let proxy = try ProxyProcess(upstreamPort: upstream.port, environment: [
            "PIXXEL_PROXY_UPSTREAM_MAX_CONNECTIONS": "1", "PIXXEL_PROXY_UPSTREAM_TIMEOUT_SECONDS": "4",
        ])
        defer { proxy.stop() }
        let port = proxy.port, token = proxy.readToken
        let first = try TransferSchedulingTests.openStalledDownload(port: port, target: "/v0/big", token: token)
        #expect(eventually { proxy.streams()?.running == 1 })
        let list = BackgroundCall { try? RawHTTPClient.request(port: port, target: "/v0/workflows/held-1/jobs", headers: [("Authorization", token)]) }
        // The list waits at the budget (the one connection is the download's) before the second
        // download comes: otherwise the second one is simply first.
        #expect(eventually { proxy.budgetQueued() == 1 }, "the job list waits for the connection")
        let second = try TransferSchedulingTests.openStalledDownload(port: port, target: "/v0/big", token: token)
        defer { close(second) }
        #expect(eventually { proxy.streams()?.queued == 1 }, "the second download waits")
        close(first)
        let answer = try list.value()
        #expect(answer?.status == 200, "the job list got \(answer.map { "\($0.status) \($0.errorCode ?? "")" } ?? "no answer")")
        let alive = eventually { (try? RawHTTPClient.request(port: port, target: "/healthz"))?.status == 200 }
        #expect(alive && !proxy.hasExited, "the proxy died: \(proxy.crashReport ?? "no report")")
    }
}
