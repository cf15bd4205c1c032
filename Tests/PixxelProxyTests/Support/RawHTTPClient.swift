import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// An answer read off the wire.
struct RawResponse {
    let status: Int
    let headers: [(String, String)]
    let body: [UInt8]

    func header(_ name: String) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }

    var text: String { String(decoding: body, as: UTF8.self) }

    var json: [String: Any]? { (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] }

    /// `error.code` of an error body in the upstream's shape.
    var errorCode: String? { (json?["error"] as? [String: Any])?["code"] as? String }
}

struct RawHTTPError: Error, CustomStringConvertible { let description: String }

/// A deliberately plain HTTP/1.1 client over a TCP socket to 127.0.0.1: it sends the request
/// target byte for byte (no normalisation of `..`, unlike URLSession or curl), so tests can
/// send hostile requests.
enum RawHTTPClient {
    static func request(port: UInt16, method: String = "GET", target: String, headers: [(String, String)] = [],
                        body: [UInt8] = [], timeoutSeconds: Int = 20) throws -> RawResponse {
        var head = "\(method) \(target) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        if !body.isEmpty || method == "POST" { head += "Content-Length: \(body.count)\r\n" }
        head += "\r\n"
        let reply = try exchange(port: port, bytes: Array(head.utf8) + body, timeoutSeconds: timeoutSeconds)
        return try parse(reply)
    }

    /// Sends `bytes`, then reads until the server closes the connection.
    static func exchange(port: UInt16, bytes: [UInt8], timeoutSeconds: Int = 20) throws -> [UInt8] {
        let fd = try connect(port: port, timeoutSeconds: timeoutSeconds)
        defer { close(fd) }
        send(bytes, to: fd)
        return try readUntilClosed(fd, timeoutSeconds: timeoutSeconds)
    }

    static func send(_ bytes: [UInt8], to fd: Int32) {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { break }  // the server may answer and close before reading everything
            sent += n
        }
    }

    /// Reads what the server sends on `fd` (connected with `connect`) until it closes.
    static func readUntilClosed(_ fd: Int32, timeoutSeconds: Int) throws -> [UInt8] {
        var reply: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n == 0 { break }
            if n < 0 {
                // A timeout is not a close: the server is hanging, and the caller must know.
                if errno == EAGAIN || errno == EWOULDBLOCK { throw RawHTTPError(description: "no answer within \(timeoutSeconds) s") }
                break  // reset by the server: treated as closed
            }
            reply += buffer[0..<n]
        }
        return reply
    }

    /// `receiveBuffer`: the socket's receive buffer, shrunk (a slow reader whose kernel takes little).
    static func connect(port: UInt16, timeoutSeconds: Int, receiveBuffer: Int? = nil) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw RawHTTPError(description: "socket failed") }
        if var size = receiveBuffer.map(Int32.init) {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            close(fd)
            throw RawHTTPError(description: "connect to 127.0.0.1:\(port) failed")
        }
        return fd
    }

    static func parse(_ reply: [UInt8]) throws -> RawResponse {
        guard let end = find([13, 10, 13, 10], in: reply) else {
            throw RawHTTPError(description: "no complete answer (\(reply.count) bytes)")
        }
        let headText = String(decoding: reply[0..<end], as: UTF8.self)
        var lines = headText.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst().split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else { throw RawHTTPError(description: "bad status line") }
        let headers = lines.compactMap { line -> (String, String)? in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        var body = Array(reply[(end + 4)...])
        if let length = headers.first(where: { $0.0.lowercased() == "content-length" }).flatMap({ Int($0.1) }) {
            body = Array(body.prefix(length))
        } else if headers.contains(where: { $0.0.lowercased() == "transfer-encoding" && $0.1.lowercased().contains("chunked") }) {
            body = dechunk(body)
        }
        return RawResponse(status: status, headers: headers, body: body)
    }

    static func dechunk(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var index = 0
        while let lineEnd = find([13, 10], in: Array(data[index...])) {
            let sizeText = String(decoding: data[index..<(index + lineEnd)], as: UTF8.self)
            guard let size = Int(sizeText.split(separator: ";")[0], radix: 16), size > 0 else { break }
            let start = index + lineEnd + 2
            out += data[start..<min(data.count, start + size)]
            index = start + size + 2
            if index >= data.count { break }
        }
        return out
    }

    static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for i in 0...(haystack.count - needle.count) where haystack[i..<(i + needle.count)].elementsEqual(needle) {
            return i
        }
        return nil
    }
}
