import Foundation
import PixxelSim
import ProxyServer
import Testing

@Suite struct SecretsTests {
    @Test func theKeyAndTokensNeverAppearInAnswersOrLogs() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let hanging = try FakeUpstream { _ in .hang }
        defer { hanging.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)")
        let workflow = sim.workflowIDs[0]
        var answers: [RawResponse] = []
        answers.append(try proxy.get("/v0/workflows/\(workflow)/jobs", token: proxy.readToken))
        answers.append(try proxy.get("/v0/workflows/\(workflow)/jobs/nope", token: proxy.readToken))
        answers.append(try proxy.request("POST", "/v0/workflows/\(workflow)/jobs", token: proxy.writeToken))
        answers.append(try proxy.request("POST", "/v0/workflows/\(workflow)/jobs?project_id=p", token: proxy.readToken))
        answers.append(try proxy.get("/v0/workflows/\(workflow)/jobs", token: "Bearer wrong-\(ProxyHarness.apiKey)"))
        answers.append(try proxy.get("/v0/../x", token: proxy.adminToken))
        await proxy.stop()

        let secrets = [ProxyHarness.apiKey, proxy.readToken, proxy.writeToken, proxy.adminToken]
        // The same against upstream failures, whose messages are the likeliest to leak.
        let failing = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(hanging.port)") { $0.upstreamTimeoutSeconds = 0.3 }
        answers.append(try failing.get("/v0/workflows/w/jobs", token: failing.readToken))
        await failing.stop()

        for answer in answers {
            let text = answer.text + answer.headers.map { "\($0.0): \($0.1)" }.joined(separator: "\n")
            for secret in secrets { #expect(!text.contains(secret)) }
        }
        let logText = (proxy.logs.all + failing.logs.all).joined(separator: "\n")
        #expect(!logText.isEmpty)
        for secret in secrets { #expect(!logText.contains(secret)) }
        // The store holds what was cached (the list), and neither the key nor a token.
        let cacheFiles = (FileManager.default.enumerator(atPath: proxy.directory.path + "/cache")?.allObjects ?? []).compactMap { $0 as? String }
        var stored = Data()
        for file in cacheFiles { stored += FileManager.default.contents(atPath: proxy.directory.path + "/cache/" + file) ?? Data() }
        #expect(stored.range(of: Data(workflow.utf8)) != nil, "the cache files were read")
        for secret in secrets { #expect(stored.range(of: Data(secret.utf8)) == nil) }
    }
}

@Suite struct ClientsReloadTests {
    @Test func reloadPicksUpNewClientsAndKeepsOldOnesWhenBroken() async throws {
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:9")
        let clientsFile = proxy.server.settings.clientsFile
        let newToken = try ClientsFileWriter.add(name: "newcomer", scopesText: "read", path: clientsFile)
        // Unknown before the reload: 401 (the upstream is never reached for a 401).
        #expect(try proxy.get("/v0/workflows/w/jobs/j", token: newToken).status == 401)
        proxy.server.reloadClients()
        #expect(try eventually { try proxy.get("/v0/workflows/w/jobs/j", token: newToken).status != 401 })

        try "this line is broken\n".write(toFile: clientsFile, atomically: true, encoding: .utf8)
        proxy.server.reloadClients()
        #expect(try eventually { proxy.logs.all.contains { $0.contains("clients file not reloaded") } })
        #expect(try proxy.get("/v0/workflows/w/jobs/j", token: newToken).status != 401, "the previous clients stay")
        await proxy.stop()
    }
}

@Suite struct ClientDisconnectTests {
    @Test func aClientLeavingBeforeTheAnswerHarmsNothing() async throws {
        let (sim, simPort) = try startSimulator { $0.faults.latencyMilliseconds = 300 }
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)")
        let target = "/v0/workflows/\(sim.workflowIDs[0])/jobs"
        for index in 0..<5 {
            // Distinct resources, so that each one is its own upstream call (no coalescing).
            let fd = try RawHTTPClient.connect(port: proxy.port, timeoutSeconds: 5)
            let request = Array("GET \(target)/job-\(index) HTTP/1.1\r\nHost: x\r\nAuthorization: \(proxy.readToken)\r\n\r\n".utf8)
            _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            close(fd)
        }
        #expect(try eventually { sim.stats.total == 5 })
        // The late answers go nowhere; the proxy carries on serving.
        #expect(try eventually { proxy.server.inFlightRequests == 0 })
        #expect(try proxy.get(target, token: proxy.readToken).status == 200)
        await proxy.stop()
    }

    /// A request with a body is authenticated at its admission, from its head. A token revoked
    /// (clients file reloaded) while the body arrives is refused once the body is in: it
    /// creates nothing, and the caller decided before the reload is not remembered for hits.
    @Test func aTokenRevokedWhileItsBodyArrivesCreatesNothingAndIsNotRemembered() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)")
        let list = "/v0/workflows/\(sim.workflowIDs[0])/jobs"
        for _ in 0..<2 { #expect(try proxy.get(list, token: proxy.writeToken).status == 200) }
        #expect(proxy.server.cacheStatistics.preparedHits >= 1, "the token's hits take the hit path")
        let body = Array("{}".utf8)
        let fd = try RawHTTPClient.connect(port: proxy.port, timeoutSeconds: Int(awaitedSeconds))
        defer { close(fd) }
        // `100 Continue` comes once the head is admitted, before any of the body is sent.
        let head = "POST \(list)?project_id=p HTTP/1.1\r\nHost: h\r\nAuthorization: \(proxy.writeToken)\r\nExpect: 100-continue\r\n"
            + "Content-Type: application/json\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        #expect(RawSocket.send(fd, head))
        #expect(String(decoding: RawSocket.read(fd, until: Array("\r\n\r\n".utf8)), as: UTF8.self).hasPrefix("HTTP/1.1 100"))
        let callsBefore = sim.stats.total
        let clientsFile = proxy.server.settings.clientsFile
        let kept = try String(contentsOfFile: clientsFile, encoding: .utf8).split(separator: "\n").filter { !$0.hasPrefix("writer ") }
        try (kept.joined(separator: "\n") + "\n").write(toFile: clientsFile, atomically: true, encoding: .utf8)
        proxy.server.reloadClients()
        #expect(try eventually { try proxy.get(list, token: proxy.writeToken).status == 401 }, "the reload is done")
        #expect(RawSocket.send(fd, "{}"))
        let reply = try RawHTTPClient.parse(RawSocket.readUntilClosed(fd, seconds: awaitedSeconds).bytes)
        #expect(reply.status == 401, "a revoked token created a job (upstream calls: \(sim.stats.total - callsBefore))")
        #expect(try proxy.get(list, token: proxy.writeToken).status == 401, "the revoked token was remembered for hits")
        await proxy.stop()
    }
}
