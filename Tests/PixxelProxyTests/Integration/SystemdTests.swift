import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The systemd side: notify messages on a fake NOTIFY_SOCKET, and the unit file verified.
@Suite struct SystemdTests {
    /// A datagram socket standing in for systemd's notify socket.
    final class FakeNotifySocket {
        let path: String
        let fd: Int32
        init(directory: TemporaryDirectory) {
            path = directory.path + "/notify.sock"
            fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
            }
            _ = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            var timeout = timeval(tv_sec: 10, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        }
        deinit { close(fd) }

        /// The next message, or nil after 10 s.
        func next() -> String? {
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = recv(fd, &buffer, buffer.count, 0)
            return n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self) : nil
        }
    }

    @Test func readyWatchdogAndStoppingAreSent() async throws {
        let directory = TemporaryDirectory()
        let socket = FakeNotifySocket(directory: directory)
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:9",
                                     environment: ["NOTIFY_SOCKET": socket.path, "WATCHDOG_USEC": "100000"])
        let ready = try #require(socket.next())
        #expect(ready.contains("READY=1"))
        #expect(ready.contains("STATUS=serving on 127.0.0.1:\(proxy.port)"))
        #expect(socket.next() == "WATCHDOG=1")
        #expect(socket.next() == "WATCHDOG=1", "pinged again, from the loop")
        await proxy.stop()
        var sawStopping = false
        while !sawStopping, let message = socket.next() {
            sawStopping = message.hasPrefix("STOPPING=1")
        }
        #expect(sawStopping)
    }

    @Test func theUnitFileVerifies() throws {
        let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"].first { FileManager.default.isExecutableFile(atPath: $0) }
        let tool = try #require(analyze, "systemd-analyze is installed by make test")
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().path
        let unit = try String(contentsOfFile: repository + "/deploy/pixxel-proxy.service", encoding: .utf8)
        #expect(unit.contains("Type=notify") && unit.contains("WatchdogSec=") && unit.contains("DynamicUser=yes"))
        // verify checks that ExecStart exists: point it at the binary this build made.
        let directory = TemporaryDirectory()
        let copy = directory.file("pixxel-proxy.service",
                                  unit.replacingOccurrences(of: "/usr/local/bin/pixxel-proxy", with: builtExecutable("pixxel-proxy")))
        let (status, output) = try runProcess(tool, ["verify", copy])
        #expect(status == 0, "\(output)")

        // With the Redis drop-in: ordered after redis-server, wanted, never required.
        let dropIn = try String(contentsOfFile: repository + "/deploy/pixxel-proxy-redis.conf", encoding: .utf8)
        let directives = dropIn.split(separator: "\n").filter { !$0.hasPrefix("#") }
        #expect(directives.contains("Wants=redis-server.service") && directives.contains("After=redis-server.service"))
        #expect(!directives.contains { $0.hasPrefix("Requires=") || $0.hasPrefix("BindsTo=") })
        let combined = directory.file("pixxel-proxy-with-redis.service",
                                      try String(contentsOfFile: copy, encoding: .utf8) + "\n" + dropIn)
        let (withRedis, withRedisOutput) = try runProcess(tool, ["verify", combined])
        #expect(withRedis == 0, "\(withRedisOutput)")
    }
}
