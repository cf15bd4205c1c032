import Foundation
import PixxelSim

#if canImport(Glibc)
import Glibc
#endif

/// One answer read as it arrives: its head, how many body bytes came, whether the body ended
/// as its framing says it should (the length reached, or the last chunk seen), and the bytes
/// of the ranges the caller asked to keep.
struct StreamedAnswer {
    let status: Int
    let headers: [(String, String)]
    var bodyBytes = 0
    var complete = false
    var kept: [Int: [UInt8]] = [:]

    func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
}

/// A client for large transfers on 127.0.0.1: it never holds a body whole. Downloads go piece
/// by piece (at a set pace, or stopping early to leave), uploads are generated as they are sent.
enum StreamingHTTPClient {
    /// GETs (or HEADs) `target` and reads the answer as it comes. `keep`: body offsets from
    /// which to keep `keepLength` bytes each; `bytesPerSecond`: read no faster; `leaveAfter`:
    /// close the connection after that many body bytes; `progress` is told the count now and then.
    static func download(port: UInt16, target: String, method: String = "GET", headers: [(String, String)] = [], keep: [Int] = [],
                         keepLength: Int = 4096, bytesPerSecond: Int? = nil, leaveAfter: Int? = nil,
                         progress: ((Int) -> Void)? = nil) throws -> StreamedAnswer {
        let fd = try RawHTTPClient.connect(port: port, timeoutSeconds: 30)
        defer { close(fd) }
        var head = "\(method) \(target) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        try sendAll(fd, Array((head + "\r\n").utf8))
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var pending: [UInt8] = []
        var headEnd: Int?
        while headEnd == nil {
            let n = recv(fd, &buffer, buffer.count, 0)
            guard n > 0 else { throw RawHTTPError(description: "no answer head") }
            pending += buffer[0..<n]
            headEnd = RawHTTPClient.find([13, 10, 13, 10], in: pending)
        }
        let parsed = try RawHTTPClient.parse(Array(pending[0..<(headEnd! + 4)]))
        var answer = StreamedAnswer(status: parsed.status, headers: parsed.headers)
        var body = Array(pending[(headEnd! + 4)...])
        let length = answer.header("Content-Length").flatMap(Int.init)
        let chunked = answer.header("Transfer-Encoding")?.lowercased() == "chunked"
        if method == "HEAD" || parsed.status == 304 || parsed.status == 204 {
            answer.complete = true
            return answer
        }
        var decoder = ChunkReader()
        let started = Date()
        var lastReport = 0
        func take(_ bytes: ArraySlice<UInt8>) {
            let data: [UInt8] = chunked ? decoder.feed(bytes) : Array(bytes)
            for start in keep where start + keepLength > answer.bodyBytes && start < answer.bodyBytes + data.count {
                let from = max(start, answer.bodyBytes), to = min(start + keepLength, answer.bodyBytes + data.count)
                answer.kept[start, default: []] += data[(from - answer.bodyBytes)..<(to - answer.bodyBytes)]
            }
            answer.bodyBytes += data.count
            if answer.bodyBytes - lastReport >= 1 << 20 {
                lastReport = answer.bodyBytes
                progress?(answer.bodyBytes)
            }
        }
        var done: Bool { chunked ? decoder.finished : answer.bodyBytes >= (length ?? .max) }
        if let length { body = Array(body.prefix(length)) }
        take(body[...])
        while !done {
            if let leaveAfter, answer.bodyBytes >= leaveAfter { return answer }
            if let bytesPerSecond {
                let due = Double(answer.bodyBytes) / Double(bytesPerSecond) - Date().timeIntervalSince(started)
                if due > 0 { usleep(UInt32(min(due, 1) * 1_000_000)) }
            }
            let want = bytesPerSecond.map { min(buffer.count, max(1024, $0 / 20)) } ?? buffer.count
            let n = recv(fd, &buffer, want, 0)
            if n == 0 { break }
            if n < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK { throw RawHTTPError(description: "the answer stalled") }
                break
            }
            var piece = buffer[0..<n]
            if !chunked, let length { piece = piece.prefix(length - answer.bodyBytes) }
            take(piece)
        }
        answer.complete = done
        return answer
    }

    /// Sends a body of `size` bytes of `payload` (Content-Length, or chunked in 64 KiB chunks)
    /// and reads the answer.
    static func upload(port: UInt16, target: String, headers: [(String, String)], payload: SimPayload, chunked: Bool,
                       bytesPerSecond: Int? = nil, progress: ((Int) -> Void)? = nil) throws -> RawResponse {
        let started = Date()
        let fd = try RawHTTPClient.connect(port: port, timeoutSeconds: 30)
        defer { close(fd) }
        var head = "PUT \(target) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        head += chunked ? "Transfer-Encoding: chunked\r\n\r\n" : "Content-Length: \(payload.size)\r\n\r\n"
        try sendAll(fd, Array(head.utf8))
        let piece = 64 << 10
        var offset = 0
        // A server may answer (413) and close before the body is all sent: then read its answer.
        sending: do {
            while offset < payload.size {
                let count = min(piece, payload.size - offset)
                let bytes = payload.bytes(offset..<(offset + count))
                if chunked { try sendAll(fd, Array("\(String(count, radix: 16))\r\n".utf8)) }
                try sendAll(fd, bytes)
                if chunked { try sendAll(fd, [13, 10]) }
                offset += count
                if offset % (1 << 20) == 0 { progress?(offset) }
                if let bytesPerSecond {
                    // The pace of a slow link: this client is the scenario, not a wait for a condition.
                    let due = Double(offset) / Double(bytesPerSecond) - Date().timeIntervalSince(started)
                    if due > 0 { usleep(UInt32(due * 1_000_000)) }
                }
            }
            if chunked { try sendAll(fd, Array("0\r\n\r\n".utf8)) }
        } catch {
            break sending
        }
        var reply: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            reply += buffer[0..<n]
        }
        return try RawHTTPClient.parse(reply)
    }

    static func sendAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw RawHTTPError(description: "send failed after \(sent) bytes") }
            sent += n
        }
    }

    /// FNV-1a 64 of a payload, as pixxel-sim answers an upload.
    static func fnv(_ payload: SimPayload) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        var offset = 0
        while offset < payload.size {
            let count = min(1 << 20, payload.size - offset)
            for byte in payload.bytes(offset..<(offset + count)) { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
            offset += count
        }
        return String(hash, radix: 16)
    }
}

/// A chunked body decoded as it arrives (strict enough for what the proxy writes).
struct ChunkReader {
    private var pending: [UInt8] = []
    private var remaining = 0
    private var inData = false
    private(set) var finished = false

    mutating func feed(_ bytes: ArraySlice<UInt8>) -> [UInt8] {
        pending += bytes
        var out: [UInt8] = []
        var index = 0
        while !finished {
            if inData {
                let take = min(remaining, pending.count - index)
                out += pending[index..<(index + take)]
                index += take
                remaining -= take
                if remaining > 0 { break }
                guard pending.count - index >= 2 else { break }
                index += 2
                inData = false
            } else {
                guard let lineEnd = RawHTTPClient.find([13, 10], in: Array(pending[index...])) else { break }
                let size = Int(String(decoding: pending[index..<(index + lineEnd)], as: UTF8.self), radix: 16) ?? -1
                index += lineEnd + 2
                if size == 0 {
                    finished = true
                } else if size > 0 {
                    remaining = size
                    inData = true
                } else {
                    break
                }
            }
        }
        pending.removeFirst(index)
        return out
    }
}
