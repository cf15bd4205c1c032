import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Out of file descriptors, the proxy says so once, keeps serving the connections it holds, and
/// takes new ones again when descriptors free up; it never spins on accept or floods its log
/// (libevent's own warning per failed accept was a million lines in three seconds).
/// Loopback only.
@Suite struct DescriptorLimitTests {
    /// Sets the soft open-file limit of process `pid` (the hard one stays: raising it again
    /// would take CAP_SYS_RESOURCE), with util-linux's prlimit(1) (Glibc's prlimit(2) wrapper is
    /// not visible to Swift).
    static func limitDescriptors(of pid: Int32, to count: Int) throws {
        let tool = Process()
        tool.executableURL = URL(fileURLWithPath: "/usr/bin/prlimit")
        tool.arguments = ["--pid", String(pid), "--nofile=\(count):"]
        try tool.run()
        tool.waitUntilExit()
        #expect(tool.terminationStatus == 0, "prlimit failed")
    }

    static func openDescriptors(of pid: Int32) -> Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).count
    }

    /// The last answer `status(asking:)` read, whole.
    nonisolated(unsafe) static var lastAnswer: [UInt8] = []

    /// One answer on a kept-alive connection: its status.
    static func status(asking target: String, token: String, on fd: Int32) throws -> Int {
        RawHTTPClient.send(Array("GET \(target) HTTP/1.1\r\nHost: proxy\r\nAuthorization: \(token)\r\n\r\n".utf8), to: fd)
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            if let end = RawHTTPClient.find(Array("\r\n\r\n".utf8), in: received) {
                let head = String(decoding: received[..<end], as: UTF8.self)
                let length = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
                    .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
                if received.count >= end + 4 + length {
                    lastAnswer = Array(received[..<(end + 4 + length)])
                    return Int(head.split(separator: " ")[1]) ?? 0
                }
            }
            let n = recv(fd, &buffer, buffer.count, 0)
            guard n > 0 else { throw RawHTTPError(description: "the connection ended before its answer") }
            received += buffer[0..<n]
        }
    }

    @Test func outOfDescriptorsTheProxySaysSoOnceServesWhatItHoldsAndRecovers() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyProcess(upstreamPort: simPort, environment: [:])
        defer { proxy.stop() }
        let pid = proxy.process.processIdentifier
        let list = "/v0/workflows/\(sim.workflowIDs[0])/jobs"
        let held = try RawHTTPClient.connect(port: proxy.port, timeoutSeconds: 20)
        defer { close(held) }
        #expect(try Self.status(asking: list, token: proxy.readToken, on: held) == 200, "cached before the limit bites")

        try Self.limitDescriptors(of: pid, to: Self.openDescriptors(of: pid) + 4)
        var waiting: [Int32] = []
        defer { for fd in waiting { close(fd) } }
        for _ in 0..<40 { waiting.append(try RawHTTPClient.connect(port: proxy.port, timeoutSeconds: 20)) }
        #expect(eventually { proxy.log.all.joined().contains("cannot accept connections") }, "the operator is told")
        #expect(try Self.status(asking: list, token: proxy.readToken, on: held) == 200, "an open connection is still served")
        #expect(try Self.status(asking: "/admin/stats", token: proxy.adminToken, on: held) == 200)
        let stats = try RawHTTPClient.parse(Self.lastAnswer)
        let health = stats.json?["health"] as? [String: Any]
        #expect(health?["state"] as? String == "failing" && (health?["reasons"] as? [String])?.contains { $0.contains("cannot be accepted") } == true,
                "the verdict sees it: \(health ?? [:])")
        #expect(try Self.status(asking: list, token: proxy.readToken, on: held) == 200)

        let lines = proxy.log.all.joined().split(separator: "\n")
        #expect(lines.filter { $0.contains("accept") }.count <= 2, "once per episode, not per attempt: \(lines.suffix(5))")
        #expect(lines.count < 50, "no flood: \(lines.count) lines")

        for fd in waiting { close(fd) }
        waiting.removeAll()
        try Self.limitDescriptors(of: pid, to: 1024)
        #expect(eventually { (try? RawHTTPClient.request(port: proxy.port, target: list, headers: [("Authorization", proxy.readToken)]).status) == 200 },
                "new connections are taken again")
        #expect(eventually { proxy.log.all.joined().contains("accepting connections again") })
        #expect(!proxy.hasExited)
    }

    @Test func theUnitRaisesTheDescriptorLimitForTenThousandConnections() throws {
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().path
        let unit = try String(contentsOfFile: repository + "/deploy/pixxel-proxy.service", encoding: .utf8)
        #expect(unit.split(separator: "\n").contains("LimitNOFILE=65536"))
    }
}
