import Foundation
import PixxelSim
import Testing

/// HTTPS to the upstream, verified for real against a CA made in the test.
@Suite struct UpstreamTLSTests {
    @Test func succeedsWithTheExtraCAFile() async throws {
        let tls = try TLSFixtures()
        let (cert, key) = try tls.serverCertificate(named: "localhost", subjectAltName: "DNS:localhost,IP:127.0.0.1")
        let (sim, simPort) = try startSimulator { $0.tlsCertificateFile = cert; $0.tlsKeyFile = key }
        defer { sim.stop() }
        for host in ["localhost", "127.0.0.1"] {
            let proxy = try ProxyHarness(upstreamURL: "https://\(host):\(simPort)") { $0.upstreamCAFile = tls.caFile }
            let answer = try proxy.get("/v0/workflows/\(sim.workflowIDs[0])/jobs", token: proxy.readToken)
            #expect(answer.status == 200, "via \(host): \(answer.text)")
            #expect((answer.json?["jobs"] as? [Any])?.count == 20)
            await proxy.stop()
        }
    }

    @Test func anUntrustedCertificateGivesAClear502() async throws {
        let tls = try TLSFixtures()
        let (cert, key) = try tls.serverCertificate(named: "localhost", subjectAltName: "DNS:localhost,IP:127.0.0.1", signedByThisCA: false)
        let (sim, simPort) = try startSimulator { $0.tlsCertificateFile = cert; $0.tlsKeyFile = key }
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "https://localhost:\(simPort)") { $0.upstreamCAFile = tls.caFile }
        let answer = try proxy.get("/v0/workflows/\(sim.workflowIDs[0])/jobs", token: proxy.readToken)
        #expect(answer.status == 502)
        #expect(answer.errorCode == "upstream_tls")
        #expect(answer.text.contains("certificate verification failed"), "\(answer.text)")
        #expect(sim.stats.total == 0, "no request was sent over the untrusted connection")
        await proxy.stop()
    }

    @Test func aCertificateForAnotherHostGivesAClear502() async throws {
        let tls = try TLSFixtures()
        let (cert, key) = try tls.serverCertificate(named: "other", subjectAltName: "DNS:api.example.org")
        let (sim, simPort) = try startSimulator { $0.tlsCertificateFile = cert; $0.tlsKeyFile = key }
        defer { sim.stop() }
        for host in ["localhost", "127.0.0.1"] {
            let proxy = try ProxyHarness(upstreamURL: "https://\(host):\(simPort)") { $0.upstreamCAFile = tls.caFile }
            let answer = try proxy.get("/v0/workflows/\(sim.workflowIDs[0])/jobs", token: proxy.readToken)
            #expect(answer.status == 502, "via \(host)")
            #expect(answer.errorCode == "upstream_tls")
            #expect(answer.text.contains("mismatch"), "\(answer.text)")
            await proxy.stop()
        }
        #expect(sim.stats.total == 0)
    }
}
