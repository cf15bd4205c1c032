import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A change stream (Server-Sent Events) read off a raw socket as it arrives: the head, then one
/// event at a time from the chunked body. Comment lines (heartbeats) are counted, not returned.
final class EventStreamClient {
    struct Event {
        let name: String
        let id: String?
        let data: String

        var json: [String: Any]? { (try? JSONSerialization.jsonObject(with: Data(data.utf8))) as? [String: Any] }
        var jobID: String? { json?["id"] as? String }
    }

    let fd: Int32
    let timeoutSeconds: Int
    private(set) var status = 0
    private(set) var headers: [(String, String)] = []
    /// The body of an answer that is not a stream (an error).
    private(set) var body: [UInt8] = []
    private(set) var comments = 0
    private(set) var ended = false
    private var chunks = ChunkReader()
    private var text: [UInt8] = []
    private var raw: [UInt8] = []
    /// How much of `text` is known to hold no blank line (a large event arrives in many reads).
    private var scanned = 0
    /// Events read while awaiting comments, handed out first.
    private var pending: [Event] = []

    /// Connects and sends the request; `receiveBuffer` shrinks the socket's receive buffer (a
    /// slow reader whose kernel takes little).
    init(port: UInt16, target: String, headers: [(String, String)], receiveBuffer: Int? = nil, timeoutSeconds: Int = Int(awaitedSeconds)) throws {
        fd = try RawHTTPClient.connect(port: port, timeoutSeconds: timeoutSeconds, receiveBuffer: receiveBuffer)
        self.timeoutSeconds = timeoutSeconds
        var head = "GET \(target) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        RawHTTPClient.send(Array((head + "\r\n").utf8), to: fd)
    }

    deinit { Glibc.close(fd) }

    /// Reads the head (and, for an answer that is not a stream, its whole body).
    func readHead() throws {
        while RawHTTPClient.find([13, 10, 13, 10], in: raw) == nil {
            guard try receive() else { throw RawHTTPError(description: "closed before a head (\(raw.count) bytes)") }
        }
        let end = RawHTTPClient.find([13, 10, 13, 10], in: raw)!
        let parsed = try RawHTTPClient.parse(Array(raw[..<(end + 4)]))
        status = parsed.status
        headers = parsed.headers
        let rest = Array(raw[(end + 4)...])
        raw = []
        if header("Transfer-Encoding")?.lowercased() == "chunked" {
            text += chunks.feed(rest[...])
        } else {
            var all = rest
            let length = header("Content-Length").flatMap(Int.init) ?? 0
            while all.count < length, try receive() {
                all += raw
                raw = []
            }
            body = Array(all.prefix(length))
            ended = true
        }
    }

    func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }

    /// The next event; nil once the stream has ended (the chunked terminator, or the
    /// connection closed). Throws when none comes within `timeoutSeconds` (heartbeats do not
    /// count: a stream that only beats would otherwise keep a failing test waiting for ever).
    func next() throws -> Event? {
        if !pending.isEmpty { return pending.removeFirst() }
        let deadline = Date().addingTimeInterval(Double(timeoutSeconds))
        while true {
            if let event = takeEvent() { return event }
            if ended || chunks.finished {
                ended = true
                return nil
            }
            if Date() > deadline { throw RawHTTPError(description: "no event within \(timeoutSeconds) s") }
            guard try receive() else {
                ended = true
                return takeEvent()
            }
            text += chunks.feed(raw[...])
            raw = []
        }
    }

    /// Reads until `count` comment lines (heartbeats) have come in all; events read meanwhile
    /// are kept for `next`.
    func awaitComments(_ count: Int) throws {
        let deadline = Date().addingTimeInterval(Double(timeoutSeconds))
        while comments < count {
            if Date() > deadline { throw RawHTTPError(description: "no comment within \(timeoutSeconds) s") }
            while let event = takeEvent() { pending.append(event) }
            if comments >= count || ended || chunks.finished { return }
            guard try receive() else {
                ended = true
                return
            }
            text += chunks.feed(raw[...])
            raw = []
        }
    }

    /// Events until `count` have come (or the stream ends).
    func events(_ count: Int) throws -> [Event] {
        var events: [Event] = []
        while events.count < count, let event = try next() { events.append(event) }
        return events
    }

    /// Everything until the stream ends.
    func rest() throws -> [Event] {
        var events: [Event] = []
        while let event = try next() { events.append(event) }
        return events
    }

    /// Shuts the sending side (a FIN), as a client leaving does.
    func finishSending() { shutdown(fd, Int32(SHUT_WR)) }

    private func receive() throws -> Bool {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        let count = recv(fd, &buffer, buffer.count, 0)
        if count == 0 { return false }
        if count < 0 {
            if errno == EAGAIN || errno == EWOULDBLOCK { throw RawHTTPError(description: "no event within the timeout") }
            return false
        }
        raw += buffer[0..<count]
        return true
    }

    private func blockEnd() -> Int? {
        var index = max(0, scanned - 1)
        while index + 1 < text.count {
            if text[index] == 10 && text[index + 1] == 10 { return index }
            index += 1
        }
        scanned = text.count
        return nil
    }

    /// One event from the decoded text, if a whole one is there; comment-only blocks are counted.
    private func takeEvent() -> Event? {
        while let end = blockEnd() {
            let block = String(decoding: text[..<end], as: UTF8.self)
            text.removeFirst(end + 2)
            scanned = 0
            var name = "message", id: String?, data: [String] = []
            var fields = 0
            for line in block.split(separator: "\n", omittingEmptySubsequences: false) {
                if line.hasPrefix(":") {
                    comments += 1
                    continue
                }
                fields += 1
                let (field, value) = line.firstIndex(of: ":").map { (line[..<$0], line[line.index(after: $0)...]) } ?? (line[...], ""[...])
                let trimmed = value.hasPrefix(" ") ? String(value.dropFirst()) : String(value)
                switch field {
                case "event": name = trimmed
                case "id": id = trimmed
                case "data": data.append(trimmed)
                default: break
                }
            }
            if fields > 0 { return Event(name: name, id: id, data: data.joined(separator: "\n")) }
        }
        return nil
    }
}
