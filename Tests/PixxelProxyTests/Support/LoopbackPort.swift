import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A port on 127.0.0.1 for a server that must be told its port (redis-server, nginx), where
/// the tests' own servers bind port 0 and read back what they got.
///
/// A port freed after a probe bind can be taken before the child binds it: by another test's
/// port-0 bind, or as the local port of any outgoing connection. Both draw from the kernel's
/// ephemeral range (`net.ipv4.ip_local_port_range`), so these ports come from below it, where
/// the kernel never hands one out; each is given once per test process, and probed free.
enum LoopbackPort {
    private static let given = Mutex<Set<UInt16>>([])

    static func unused() throws -> UInt16 {
        let ephemeralLow = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8))
            .flatMap { Int($0.split(whereSeparator: \.isWhitespace).first ?? "") } ?? 32768
        // Below the ephemeral range and above the privileged ports; not the fixed ports
        // `make bench` uses, which may run beside a test run.
        let range = 1024..<ephemeralLow
        guard range.count > 100 else {
            throw RawHTTPError(description: "net.ipv4.ip_local_port_range starts at \(ephemeralLow): no ports below it for the tests' servers")
        }
        for _ in 0..<1000 {
            let port = UInt16(Int.random(in: range))
            if (18800...18810).contains(port) { continue }
            let isNew = given.withLock { $0.insert(port).inserted }
            if isNew && isFree(port) { return port }
        }
        throw RawHTTPError(description: "no unused port in \(range) on 127.0.0.1")
    }

    private static func isFree(_ port: UInt16) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = port.bigEndian
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}
