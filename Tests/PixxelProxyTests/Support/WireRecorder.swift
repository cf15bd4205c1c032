import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// An upstream on 127.0.0.1 that records the exact bytes it receives, per connection, and
/// reads them as a strict HTTP/1.1 server would: one `Content-Length`, or chunked alone.
/// It keeps connections open (so the proxy reuses them, where smuggled bytes would be read as
/// the next request) and answers each request with what `answer` returns.
final class WireRecorder: @unchecked Sendable {
    /// One request as this upstream read it.
    struct Request: Sendable {
        let connection: Int
        let method: String
        let target: String
        let headers: [(name: String, value: String)]
        let body: [UInt8]
        /// The head's bytes, as received.
        let rawHead: [UInt8]
        /// When the whole request had arrived (wall clock).
        var at: Double = Date().timeIntervalSince1970

        func header(_ name: String) -> String? { headers.first { $0.name.lowercased() == name.lowercased() }?.value }
        func values(_ name: String) -> [String] { headers.filter { $0.name.lowercased() == name.lowercased() }.map(\.value) }
    }

    let port: UInt16
    private let listener: Int32
    private let state = Mutex<(requests: [Request], raw: [Int: [UInt8]], connections: Int, open: [Int32], stopped: Bool)>(([], [:], 0, [], false))
    private let answer: @Sendable (Request) -> [UInt8]

    /// `answer` gives the whole answer's bytes (status line to body); by default 200 with
    /// `{"ok":true,"target":...}`.
    init(answer: @escaping @Sendable (Request) -> [UInt8] = WireRecorder.okAnswer) throws {
        self.answer = answer
        (listener, port) = try listenOnLoopback()
        Thread { [self] in acceptLoop() }.start()
    }

    static func okAnswer(_ request: Request) -> [UInt8] {
        json(200, #"{"ok":true,"method":"\#(request.method)"}"#)
    }

    /// A keep-alive JSON answer.
    static func json(_ status: Int, _ body: String, extraHeaders: String = "") -> [UInt8] {
        Array("HTTP/1.1 \(status) X\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\(extraHeaders)\r\n\(body)".utf8)
    }

    var requests: [Request] { state.withLock { $0.requests } }
    /// Every byte received, connection by connection.
    var rawStreams: [[UInt8]] { state.withLock { s in s.raw.keys.sorted().map { s.raw[$0]! } } }
    var connectionCount: Int { state.withLock { $0.connections } }

    func stop() {
        let open = state.withLock { s -> [Int32] in
            s.stopped = true
            return s.open
        }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        for fd in open { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    private func acceptLoop() {
        while true {
            let fd = accept(listener, nil, nil)
            if fd < 0 { return }
            let index: Int? = state.withLock { s in
                if s.stopped { return nil }
                s.connections += 1
                s.open.append(fd)
                s.raw[s.connections] = []
                return s.connections
            }
            guard let index else { close(fd); return }
            Thread { [self] in serve(fd, connection: index) }.start()
        }
    }

    private func serve(_ fd: Int32, connection: Int) {
        // Forgotten before it is closed: `stop` must never shut down a number reused since.
        defer {
            state.withLock { $0.open.removeAll { $0 == fd } }
            close(fd)
        }
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        func receive() -> Bool {
            let n = recv(fd, &buffer, buffer.count, 0)
            guard n > 0 else { return false }
            pending += buffer[0..<n]
            state.withLock { $0.raw[connection, default: []] += buffer[0..<n] }
            return true
        }
        while true {
            var headEnd = RawHTTPClient.find([13, 10, 13, 10], in: pending)
            while headEnd == nil {
                guard receive() else { return }
                headEnd = RawHTTPClient.find([13, 10, 13, 10], in: pending)
            }
            let rawHead = Array(pending[0..<(headEnd! + 4)])
            var lines = String(decoding: pending[0..<headEnd!], as: UTF8.self).components(separatedBy: "\r\n")
            let requestLine = lines.removeFirst().split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            let headers = lines.map { line -> (name: String, value: String) in
                guard let colon = line.firstIndex(of: ":") else { return (line, "") }
                return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
            }
            let lengths = headers.filter { $0.name.lowercased() == "content-length" }.map(\.value)
            let codings = headers.filter { $0.name.lowercased() == "transfer-encoding" }.map(\.value)
            // Anything but one plain Content-Length (or none), or exactly "chunked" alone, is a
            // framing this reader refuses.
            let chunked = codings == ["chunked"] && lengths.isEmpty
            guard lengths.count <= 1, codings.isEmpty || chunked, let bodyLength = lengths.isEmpty ? 0 : Int(lengths[0]) else {
                record(Request(connection: connection, method: requestLine.first ?? "", target: "(unframed)",
                               headers: headers, body: [], rawHead: rawHead))
                return
            }
            pending.removeFirst(headEnd! + 4)
            var body: [UInt8] = []
            if chunked {
                // Strict chunked: size line (hex, no extension), data, CRLF; last chunk, no trailers.
                while true {
                    var lineEnd = RawHTTPClient.find([13, 10], in: pending)
                    while lineEnd == nil {
                        guard receive() else { return }
                        lineEnd = RawHTTPClient.find([13, 10], in: pending)
                    }
                    guard let size = Int(String(decoding: pending[0..<lineEnd!], as: UTF8.self), radix: 16) else {
                        record(Request(connection: connection, method: requestLine.first ?? "", target: "(bad chunk)", headers: headers,
                                       body: body, rawHead: rawHead))
                        return
                    }
                    while pending.count < lineEnd! + 2 + size + 2 {
                        guard receive() else { return }
                    }
                    guard pending[lineEnd! + 2 + size] == 13, pending[lineEnd! + 3 + size] == 10 else { return }
                    body += pending[(lineEnd! + 2)..<(lineEnd! + 2 + size)]
                    pending.removeFirst(lineEnd! + 2 + size + 2)
                    if size == 0 { break }
                }
            } else {
                while pending.count < bodyLength {
                    guard receive() else { return }
                }
                body = Array(pending[0..<bodyLength])
                pending.removeFirst(bodyLength)
            }
            let request = Request(connection: connection, method: requestLine.first ?? "",
                                  target: requestLine.count == 3 ? requestLine[1] : "(bad request line)",
                                  headers: headers, body: body, rawHead: rawHead)
            record(request)
            let reply = answer(request)
            var sent = 0
            while sent < reply.count {
                let n = reply[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                guard n > 0 else { return }
                sent += n
            }
        }
    }

    private func record(_ request: Request) {
        state.withLock { $0.requests.append(request) }
    }
}

/// The answers in `reply`, in order (status and body, bodies framed by Content-Length).
func answers(in reply: [UInt8]) -> [RawResponse] {
    var out: [RawResponse] = []
    var rest = reply
    while let end = RawHTTPClient.find([13, 10, 13, 10], in: rest) {
        let head = String(decoding: rest[0..<end], as: UTF8.self)
        let length = head.components(separatedBy: "\r\n").compactMap { line -> Int? in
            guard line.lowercased().hasPrefix("content-length:") else { return nil }
            return Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces))
        }.first ?? 0
        let total = min(rest.count, end + 4 + length)
        if let parsed = try? RawHTTPClient.parse(Array(rest[0..<total])) { out.append(parsed) }
        rest = Array(rest[total...])
    }
    return out
}
