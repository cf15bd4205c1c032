import Foundation
import PixxelSim
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Hostile clients and a hostile upstream: clean 4xx answers or a closed connection, never a
/// crash or a 5xx; nothing bad cached; memory bounded. Loopback only.
@Suite struct HostileInputTests {
    static func residentBytes() -> Int {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) * 1024
    }

    /// What came back: a status, or nil when the server closed without answering.
    /// A hang (no answer and no close within 10 s) gives -2, which every test counts as a failure.
    static func send(_ port: UInt16, _ bytes: [UInt8]) -> Int? {
        let reply: [UInt8]
        do { reply = try RawHTTPClient.exchange(port: port, bytes: bytes, timeoutSeconds: 10) } catch { return -2 }
        guard !reply.isEmpty else { return nil }
        return (try? RawHTTPClient.parse(reply))?.status ?? -1
    }

    static func request(_ line: String, headers: [String] = [], body: [UInt8] = []) -> [UInt8] {
        Array((line + "\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + headers.map { $0 + "\r\n" }.joined() + "\r\n").utf8) + body
    }

    @Test func hostileRequestsGetClean4xxOrAClosedConnection() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)") {
            $0.listenTimeoutSeconds = 1
            $0.listenMaxBodyBytes = 64 * 1024
        }
        let auth = "Authorization: \(proxy.writeToken)"
        let workflow = sim.workflowIDs[0]
        var nested = String(repeating: "[", count: 5000) + String(repeating: "]", count: 5000)
        nested = #"{"a":\#(nested)}"#
        let cases: [(String, [UInt8])] = [
            ("raw traversal", Self.request("GET /v0/../../etc/passwd HTTP/1.1", headers: [auth])),
            ("encoded traversal", Self.request("GET /v0/workflows/%2e%2e/%2e%2e/admin/stats HTTP/1.1", headers: [auth])),
            ("mixed traversal", Self.request("GET /v0/workflows/..%2f..%2fadmin HTTP/1.1", headers: [auth])),
            ("backslash traversal", Self.request("GET /v0/workflows/..%5c..%5cx HTTP/1.1", headers: [auth])),
            ("200 KB URL", Self.request("GET /v0/" + String(repeating: "a", count: 200_000) + " HTTP/1.1", headers: [auth])),
            ("100 KB header", Self.request("GET /healthz HTTP/1.1", headers: ["X-Big: " + String(repeating: "b", count: 100_000)])),
            ("many headers", Self.request("GET /healthz HTTP/1.1", headers: (0..<2000).map { "X-H\($0): v" })),
            ("binary garbage", (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 7919 &+ 13) }),
            ("NUL in the request line", Array("GET /v0/\u{0}x HTTP/1.1\r\nHost: h\r\n\r\n".utf8)),
            ("absolute URI with userinfo", Self.request("GET http://user@evil.example/v0/workflows HTTP/1.1", headers: [auth])),
            ("absolute URI of another scheme", Self.request("GET ftp://evil.example/v0/workflows HTTP/1.1", headers: [auth])),
            ("HTTP/0.9", Array("GET /\r\n\r\n".utf8)),
            ("unknown method", Self.request("BREW /v0/workflows HTTP/1.1", headers: [auth])),
            ("invalid percent-encoding", Self.request("GET /v0/workflows/%zz/jobs HTTP/1.1", headers: [auth])),
            ("invalid query escape", Self.request("GET /v0/workflows/\(workflow)/jobs?status=%G0 HTTP/1.1", headers: [auth])),
            ("oversized Content-Length", Self.request("POST /v0/workflows/\(workflow)/jobs?project_id=p HTTP/1.1",
                                                      headers: [auth, "Content-Length: 999999999999"])),
            ("negative Content-Length", Self.request("POST /v0/workflows/\(workflow)/jobs?project_id=p HTTP/1.1",
                                                     headers: [auth, "Content-Length: -5"])),
            ("lying Content-Length", Self.request("POST /v0/workflows/\(workflow)/jobs?project_id=p HTTP/1.1",
                                                  headers: [auth, "Content-Length: 1000"], body: Array("short".utf8))),
            ("bad chunk size", Self.request("POST /v0/workflows/\(workflow)/jobs?project_id=p HTTP/1.1",
                                            headers: [auth, "Transfer-Encoding: chunked"], body: Array("zz\r\nxx\r\n0\r\n\r\n".utf8))),
            ("huge JSON body", Self.request("POST /v0/workflows/\(workflow)/jobs?project_id=p HTTP/1.1",
                                            headers: [auth, "Content-Length: 1000000"], body: [UInt8](repeating: 0x7B, count: 1_000_000))),
            ("slow loris", Array("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".utf8)),
        ]
        let before = Self.residentBytes()
        for round in 0..<2 {
            for (name, bytes) in cases {
                let status = Self.send(proxy.port, bytes)
                #expect(status == nil || (400..<500).contains(status!), "\(name) (round \(round)): \(String(describing: status))")
            }
        }
        // A deeply nested but small JSON body is a valid request: forwarded, never a proxy 5xx.
        let deep = Self.send(proxy.port, Self.request("POST /v0/workflows/\(workflow)/jobs?project_id=p HTTP/1.1",
                                                      headers: [auth, "Content-Length: \(nested.utf8.count)"], body: Array(nested.utf8)))
        #expect(deep == 200)
        #expect(try proxy.get("/healthz", token: nil).status == 200)
        #expect(try proxy.get("/v0/workflows/\(workflow)/jobs", token: proxy.readToken).status == 200)
        let grown = Self.residentBytes() - before
        #expect(grown < 256 << 20, "memory grew by \(grown) bytes")
        #expect(!sim.stats.lastTarget.contains(".."), "no traversal reached the upstream")
        await proxy.stop()
    }

    @Test(arguments: ["huge declared body", "huge chunked body"])
    func aHostileUpstreamGives502AndNothingIsCached(_ kind: String) async throws {
        let upstream = try FakeUpstream { _ in
            if kind == "huge declared body" {
                return .reply(Array("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n{\"id\":\"j\"".utf8)
                              + [UInt8](repeating: 0x20, count: 64 * 1024))
            }
            var bytes = Array("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)
            let chunk = [UInt8](repeating: 0x20, count: 256 * 1024)
            for _ in 0..<12 { bytes += Array("40000\r\n".utf8) + chunk + Array("\r\n".utf8) }
            return .reply(bytes + Array("0\r\n\r\n".utf8))
        }
        defer { upstream.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(upstream.port)") { $0.upstreamMaxResponseBytes = 1 << 20 }
        for _ in 0..<2 {
            let answer = try proxy.get("/v0/workflows/w/jobs/j", token: proxy.readToken)
            #expect(answer.status == 502)
            #expect(answer.errorCode == "bad_gateway")
        }
        #expect(upstream.received.count >= 2, "nothing was cached: the second read went upstream again")
        #expect(proxy.server.cacheStatistics.entries == 0)
        #expect(try proxy.get("/healthz", token: nil).status == 200)
        await proxy.stop()
    }
}
