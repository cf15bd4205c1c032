import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The peer `make bench` measures the proxy against: nginx with `bench/nginx.conf.in` as
/// `bench/run.sh` fills it in, in front of the simulator. If that configuration stopped
/// loading, or stopped caching, every ratio in bench/RESULTS.md would compare against nothing.
@Suite(.needs(.nginx)) struct BenchPeerTests {
    @Test func theBenchsNginxServesAListFromItsCacheOnTheSecondRead() async throws {
        let nginx = try RequiredTool.nginx.require()
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let directory = TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: directory.path + "/temp", withIntermediateDirectories: true)
        let port = try LoopbackPort.unused()
        let template = try String(contentsOfFile: ScriptTests.repository + "/bench/nginx.conf.in", encoding: .utf8)
        let configuration = directory.file("nginx.conf", template
            .replacingOccurrences(of: "@DIR@", with: directory.path).replacingOccurrences(of: "@WORKERS@", with: "1")
            .replacingOccurrences(of: "@SIM_PORT@", with: "\(simPort)").replacingOccurrences(of: "@NGINX_PORT@", with: "\(port)")
            .replacingOccurrences(of: "@TOKEN@", with: "bench-token").replacingOccurrences(of: "@API_KEY@", with: ProxyHarness.apiKey))
        let check = try runProcess(nginx, ["-t", "-p", directory.path, "-c", configuration, "-e", directory.path + "/error.log"])
        #expect(check.status == 0, "\(check.output)")
        // One process (no master and worker): the kill below then leaves nothing behind.
        let server = try ChildProcess(nginx, ["-p", directory.path, "-c", configuration, "-e", directory.path + "/error.log",
                                              "-g", "master_process off;"],
                                      environment: [:], stdout: .null, stderr: .null)
        defer {
            server.signal(SIGKILL)
            server.waitUntilExit()
        }
        let target = "/v0/workflows/\(sim.workflowIDs[0])/jobs"
        let auth = [("Authorization", "Bearer bench-token")]
        #expect(eventually { (try? RawHTTPClient.request(port: port, target: "/", timeoutSeconds: 5)) != nil }, "nginx listens")
        #expect(try RawHTTPClient.request(port: port, target: target, headers: [("Authorization", "Bearer wrong")]).status == 401)
        let first = try RawHTTPClient.request(port: port, target: target, headers: auth)
        #expect(first.status == 200 && first.header("Cache-Status") == "MISS")
        let second = try RawHTTPClient.request(port: port, target: target, headers: auth)
        #expect(second.status == 200 && second.header("Cache-Status") == "HIT")
        #expect(second.body == first.body)
        #expect(sim.stats.requests["GET list"] == 1, "\(sim.stats.requests)")
    }
}
