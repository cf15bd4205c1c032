import Foundation
import PixxelSim
import Testing

@Suite struct AccessLogTests {
    @Test func requestIDsTravelUpstreamAndBack() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)", clock: ManualClock())
        let list = "/v0/workflows/\(sim.workflowIDs[0])/jobs"
        let given = try proxy.get(list, token: proxy.readToken, headers: [("X-Request-Id", "trace-42.a")])
        #expect(given.header("X-Request-Id") == "trace-42.a")
        #expect(sim.stats.lastHeaders["x-request-id"] == "trace-42.a")

        let made = try proxy.get("/v0/workflows", token: proxy.readToken)
        let id = try #require(made.header("X-Request-Id"))
        #expect(id.count == 15)
        #expect(sim.stats.lastHeaders["x-request-id"] == id)

        let hostile = try proxy.get("/v0/workflows", token: proxy.readToken, headers: [("X-Request-Id", "a b <script>")])
        #expect(hostile.header("X-Request-Id")?.contains(" ") == false)
        await proxy.stop()
    }

    @Test func oneAccessLineARequestWithWhatOperatorsNeed() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)", clock: ManualClock())
        let list = "/v0/workflows/\(sim.workflowIDs[0])/jobs"
        _ = try proxy.get(list, token: proxy.readToken, headers: [("X-Request-Id", "first")])
        _ = try proxy.get(list + "?status=completed", token: proxy.readToken, headers: [("X-Request-Id", "second")])
        _ = try proxy.get(list, token: "nope", headers: [("X-Request-Id", "third")])
        let lines = proxy.logs.all.filter { $0.contains("request_id=") }
        #expect(lines.count == 3)
        let first = try #require(lines.first { $0.contains("request_id=first") })
        for part in ["GET /v0/workflows/{workflow_id}/jobs 200", "client=reader", "cache=miss", "upstream_status=200", "duration_ms=", "upstream_ms="] {
            #expect(first.contains(part), "\(part) in \(first)")
        }
        #expect(!first.contains("upstream_ms=-"))
        let second = try #require(lines.first { $0.contains("request_id=second") })
        #expect(second.contains("cache=hit") && second.contains("upstream_ms=-"))
        let third = try #require(lines.first { $0.contains("request_id=third") })
        #expect(third.contains(" 401") && third.contains("client=?"), "a wrong token, told apart from none (client=-)")
        for line in lines { #expect(!line.contains(sim.workflowIDs[0]), "no ids in access lines") }
        await proxy.stop()
    }

    /// A request refused before any handler saw it is recorded as what it got: a declared body
    /// over the limit as its 413 (not as the 401 or 400 its admission would have given: the size
    /// wins on the wire), and so is a chunked body found over the limit as it arrives. The
    /// refusal carried no request id, and the record says so.
    @Test func aBodyOverTheLimitIsRecordedAsThe413ItGot() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)") { $0.listenMaxBodyBytes = 1024 }
        let chunk = String(repeating: "x", count: 2048)
        let requests = [
            "POST /v0/workflows/w/jobs?project_id=p HTTP/1.1\r\nHost: h\r\nX-Request-Id: big-0\r\nContent-Length: 99999999999\r\n\r\n",
            "GET /v0/workflows/w/jobs HTTP/1.1\r\nHost: h\r\nX-Request-Id: big-1\r\nContent-Length: 99999999999\r\n\r\n",
            "POST /v0/workflows/w/jobs?project_id=p HTTP/1.1\r\nHost: h\r\nAuthorization: \(proxy.writeToken)\r\nX-Request-Id: big-2\r\n"
                + "Transfer-Encoding: chunked\r\n\r\n800\r\n\(chunk)\r\n0\r\n\r\n",
        ]
        for request in requests {
            #expect(try RawHTTPClient.parse(RawHTTPClient.exchange(port: proxy.port, bytes: Array(request.utf8))).status == 413)
        }
        let refusals = { proxy.logs.all.filter { $0.contains("/v0/workflows/{workflow_id}/jobs 413") } }
        #expect(eventually { refusals().count == 3 }, "each refusal is recorded once: \(refusals())")
        #expect(refusals().allSatisfy { $0.contains("request_id=-") }, "\(refusals())")
        #expect(refusals().filter { $0.contains("client=writer") }.count == 1, "the chunked one was admitted: its caller is known")
        let metrics = try proxy.get("/metrics", token: proxy.adminToken).text
        let refused = metrics.split(separator: "\n").filter { $0.hasPrefix("pixxel_proxy_requests_total") && ($0.contains("\"401\"") || $0.contains("\"400\"")) }
        #expect(refused.isEmpty, "\(refused)")
        await proxy.stop()
    }
}
