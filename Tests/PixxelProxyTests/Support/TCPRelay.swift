import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A byte relay on 127.0.0.1 in front of another local port that counts connections, to see
/// how many upstream connections the proxy really opens.
final class TCPRelay: @unchecked Sendable {
    let port: UInt16
    private let listener: Int32
    private let target: UInt16
    private let counts = Mutex<(open: Int, max: Int, total: Int, stopped: Bool)>((0, 0, 0, false))

    init(to target: UInt16) throws {
        self.target = target
        (listener, port) = try listenOnLoopback()
        Thread { [self] in acceptLoop() }.start()
    }

    var maxConcurrentConnections: Int { counts.withLock { $0.max } }
    var totalConnections: Int { counts.withLock { $0.total } }

    func stop() {
        counts.withLock { $0.stopped = true }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 || counts.withLock({ $0.stopped }) { return }
            guard let server = try? RawHTTPClient.connect(port: target, timeoutSeconds: 60) else {
                close(client)
                continue
            }
            counts.withLock { c in
                c.open += 1
                c.total += 1
                c.max = max(c.max, c.open)
            }
            let done = Mutex(0)
            let finish: @Sendable () -> Void = { [self] in
                let both = done.withLock { value -> Bool in
                    value += 1
                    return value == 2
                }
                if both {
                    close(client)
                    close(server)
                    counts.withLock { $0.open -= 1 }
                }
            }
            Thread { Self.pump(from: client, to: server); finish() }.start()
            Thread { Self.pump(from: server, to: client); finish() }.start()
        }
    }

    private static func pump(from source: Int32, to destination: Int32) {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = recv(source, &buffer, buffer.count, 0)
            if n <= 0 { break }
            if send(destination, buffer, n, Int32(MSG_NOSIGNAL)) <= 0 { break }
        }
        shutdown(destination, Int32(SHUT_WR))
    }
}

/// Runs `body` on `count` threads at once and returns the results in order.
func concurrently<T: Sendable>(_ count: Int, _ body: @escaping @Sendable (Int) -> T) -> [T] {
    let results = Mutex<[Int: T]>([:])
    let group = DispatchGroup()
    for index in 0..<count {
        group.enter()
        Thread {
            let value = body(index)
            results.withLock { $0[index] = value }
            group.leave()
        }.start()
    }
    group.wait()
    return (0..<count).map { index in results.withLock { $0[index]! } }
}

/// Runs `body` on a thread of its own (not the test's cooperative pool, which blocking waits
/// such as `eventually` can starve on two cores); `value()` waits for its result.
final class BackgroundCall<T: Sendable>: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private var result: Result<T, Error>?

    init(_ body: @escaping @Sendable () throws -> T) {
        Thread { [self] in
            result = Result(catching: body)
            done.signal()
        }.start()
    }

    func value() throws -> T {
        done.wait()
        done.signal()
        return try result!.get()
    }

    /// Whether the call ends within `seconds` (for "not before X" checks: the call must still
    /// be waiting after giving a wrong implementation ample time to answer).
    func ends(within seconds: Double) -> Bool {
        guard done.wait(timeout: .now() + seconds) == .success else { return false }
        done.signal()
        return true
    }
}
