import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A TCP socket bound to a free port on 127.0.0.1 that does not listen: connecting to it is
/// refused, and no other server can take the port while it is open.
func boundButNotListening(reuseAddress: Bool = false) throws -> (Int32, UInt16) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    // Not for the refusing socket: Linux lets another SO_REUSEADDR socket bind a port whose
    // holder does not listen.
    if reuseAddress {
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
    }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard ok else {
        close(fd)
        throw RawHTTPError(description: "cannot bind on 127.0.0.1")
    }
    return (fd, UInt16(bigEndian: address.sin_port))
}

/// A listening TCP socket on 127.0.0.1 with a free port.
func listenOnLoopback() throws -> (Int32, UInt16) {
    let (listener, port) = try boundButNotListening(reuseAddress: true)
    guard listen(listener, 128) == 0 else {
        close(listener)
        throw RawHTTPError(description: "cannot listen on 127.0.0.1")
    }
    return (listener, port)
}

/// A TCP server on 127.0.0.1 that the test scripts byte for byte: it records each request
/// and answers with whatever `behaviour` says, including garbage, a hang or a broken connection.
final class FakeUpstream: @unchecked Sendable {
    enum Behaviour: Sendable {
        /// Raw bytes to send, then close.
        case reply([UInt8])
        /// Read the request and never answer.
        case hang
        /// Close without answering.
        case close
    }

    struct Received: Sendable {
        let head: String
        var requestLine: String { head.components(separatedBy: "\r\n").first ?? "" }
        func header(_ name: String) -> String? {
            for line in head.components(separatedBy: "\r\n").dropFirst() {
                if let colon = line.firstIndex(of: ":"), line[..<colon].lowercased() == name.lowercased() {
                    return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                }
            }
            return nil
        }
    }

    let port: UInt16
    private let listener: Int32
    private let state = Mutex<(received: [Received], open: Int, maxOpen: Int, hung: [Int32], stopped: Bool)>(([], 0, 0, [], false))
    private let behaviour: @Sendable (Received) -> Behaviour

    init(behaviour: @escaping @Sendable (Received) -> Behaviour) throws {
        self.behaviour = behaviour
        (listener, port) = try listenOnLoopback()
        let thread = Thread { [self] in acceptLoop() }
        thread.start()
    }

    /// A complete HTTP answer with a JSON body.
    static func json(_ status: Int, _ body: String, extraHeaders: String = "") -> Behaviour {
        .reply(Array("HTTP/1.1 \(status) X\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\(extraHeaders)Connection: close\r\n\r\n\(body)".utf8))
    }

    var received: [Received] { state.withLock { $0.received } }
    /// The most connections that were open at once.
    var maxConcurrentConnections: Int { state.withLock { $0.maxOpen } }

    func stop() {
        let hung = state.withLock { s -> [Int32] in
            s.stopped = true
            return s.hung
        }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        for fd in hung { close(fd) }
    }

    private func acceptLoop() {
        while true {
            let fd = accept(listener, nil, nil)
            if fd < 0 { return }
            if state.withLock({ $0.stopped }) { close(fd); return }
            state.withLock { s in
                s.open += 1
                s.maxOpen = max(s.maxOpen, s.open)
            }
            Thread { [self] in serve(fd) }.start()
        }
    }

    private func serve(_ fd: Int32) {
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            // Read one request head and its body (Content-Length only).
            var headEnd: Int?
            while headEnd == nil {
                headEnd = RawHTTPClient.find([13, 10, 13, 10], in: pending)
                if headEnd != nil { break }
                let n = recv(fd, &buffer, buffer.count, 0)
                if n <= 0 { return finish(fd) }
                pending += buffer[0..<n]
            }
            let head = String(decoding: pending[0..<headEnd!], as: UTF8.self)
            let request = Received(head: head)
            let bodyLength = request.header("Content-Length").flatMap(Int.init) ?? 0
            while pending.count < headEnd! + 4 + bodyLength {
                let n = recv(fd, &buffer, buffer.count, 0)
                if n <= 0 { return finish(fd) }
                pending += buffer[0..<n]
            }
            pending.removeFirst(headEnd! + 4 + bodyLength)
            state.withLock { $0.received.append(request) }
            switch behaviour(request) {
            case .reply(let bytes):
                _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                return finish(fd)
            case .hang:
                state.withLock { $0.hung.append(fd) }
                return
            case .close:
                return finish(fd)
            }
        }
    }

    private func finish(_ fd: Int32) {
        state.withLock { $0.open -= 1 }
        close(fd)
    }
}
