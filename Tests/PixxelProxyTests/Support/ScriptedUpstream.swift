import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// An upstream on 127.0.0.1 scripted per connection: the script gets the connection, reads
/// what it wants and writes what it wants, byte for byte (interim answers, stalls, early
/// answers, broken framing). Counts connections accepted, open and closed by the peer.
final class ScriptedUpstream: @unchecked Sendable {
    final class Connection: @unchecked Sendable {
        let fd: Int32
        let index: Int
        var pending: [UInt8] = []
        init(fd: Int32, index: Int) {
            self.fd = fd
            self.index = index
        }

        /// Reads until a whole head has arrived; nil if the peer closed first.
        func readHead() -> String? {
            var buffer = [UInt8](repeating: 0, count: 65_536)
            while RawHTTPClient.find([13, 10, 13, 10], in: pending) == nil {
                let n = recv(fd, &buffer, buffer.count, 0)
                if n <= 0 { return nil }
                pending += buffer[0..<n]
            }
            let end = RawHTTPClient.find([13, 10, 13, 10], in: pending)!
            let head = String(decoding: pending[0..<end], as: UTF8.self)
            pending.removeFirst(end + 4)
            return head
        }

        func send(_ text: String) { send(Array(text.utf8)) }

        func send(_ bytes: [UInt8]) {
            var sent = 0
            while sent < bytes.count {
                let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if n <= 0 { return }
                sent += n
            }
        }

        /// Reads and drops whatever comes until the peer closes (true) or `seconds` pass (false).
        func drainUntilClosed(seconds: Double) -> Bool {
            var buffer = [UInt8](repeating: 0, count: 65_536)
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let ready = poll(&poller, 1, 50)
                if ready > 0 {
                    let n = recv(fd, &buffer, buffer.count, 0)
                    if n <= 0 { return true }
                    pending += buffer[0..<n]
                }
            }
            return false
        }
    }

    let port: UInt16
    private let listener: Int32
    private let state = Mutex<(accepted: Int, open: Int, maxOpen: Int, closedByPeer: Int, heads: [String], fds: [Int32], stopped: Bool)>(
        (0, 0, 0, 0, [], [], false))
    private let script: @Sendable (Connection, ScriptedUpstream) -> Void

    /// `script` runs on a thread of its own for each connection; the connection is closed after it returns.
    init(script: @escaping @Sendable (Connection, ScriptedUpstream) -> Void) throws {
        self.script = script
        (listener, port) = try listenOnLoopback()
        Thread { [self] in acceptLoop() }.start()
    }

    var accepted: Int { state.withLock { $0.accepted } }
    var open: Int { state.withLock { $0.open } }
    var maxOpen: Int { state.withLock { $0.maxOpen } }
    var closedByPeer: Int { state.withLock { $0.closedByPeer } }
    var heads: [String] { state.withLock { $0.heads } }
    /// When each recorded head arrived (monotonic seconds), in order.
    var headInstants: [Double] { headTimes.withLock { $0 } }
    private let headTimes = Mutex<[Double]>([])
    var url: String { "http://127.0.0.1:\(port)" }

    func record(head: String) {
        headTimes.withLock { $0.append(Double(DispatchTime.now().uptimeNanoseconds) / 1e9) }
        state.withLock { $0.heads.append(head) }
    }
    func notePeerClosed() { state.withLock { $0.closedByPeer += 1 } }

    func stop() {
        let fds = state.withLock { s -> [Int32] in
            s.stopped = true
            return s.fds
        }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        for fd in fds { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    private func acceptLoop() {
        while true {
            let fd = accept(listener, nil, nil)
            if fd < 0 { return }
            let index: Int? = state.withLock { s in
                if s.stopped { return nil }
                s.accepted += 1
                s.open += 1
                s.maxOpen = max(s.maxOpen, s.open)
                s.fds.append(fd)
                return s.accepted
            }
            guard let index else { close(fd); return }
            Thread { [self] in
                script(Connection(fd: fd, index: index), self)
                state.withLock { s in
                    s.open -= 1
                    s.fds.removeAll { $0 == fd }
                }
                close(fd)
            }.start()
        }
    }
}

enum RawSocket {
    /// Reads from `fd` until the peer closes or `seconds` pass; returns the bytes and whether it closed.
    static func readUntilClosed(_ fd: Int32, seconds: Double) -> (bytes: [UInt8], closed: Bool) {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&poller, 1, 50) > 0 {
                let n = recv(fd, &buffer, buffer.count, 0)
                if n <= 0 { return (out, true) }
                out += buffer[0..<n]
            }
        }
        return (out, false)
    }

    /// Reads from `fd` until what was read ends with `terminator`, the peer closes, or `seconds` pass.
    static func read(_ fd: Int32, until terminator: [UInt8], seconds: Double = awaitedSeconds) -> [UInt8] {
        var out: [UInt8] = []
        var byte: UInt8 = 0
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline, !out.ends(with: terminator) {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 50) > 0 else { continue }
            guard recv(fd, &byte, 1, 0) == 1 else { break }
            out.append(byte)
        }
        return out
    }

    /// Whether the peer has closed `fd` (a read that returns 0 or fails), without waiting.
    static func peerClosed(_ fd: Int32) -> Bool {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, 0) > 0 else { return false }
        var byte: UInt8 = 0
        return recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT)) <= 0
    }

    static func send(_ fd: Int32, _ text: String) -> Bool { send(fd, Array(text.utf8)) }

    static func send(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            sent += n
        }
        return true
    }
}

extension Array where Element == UInt8 {
    func ends(with suffix: [UInt8]) -> Bool { count >= suffix.count && self[(count - suffix.count)...].elementsEqual(suffix) }
}
