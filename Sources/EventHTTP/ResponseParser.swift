/// HTTP/1.x response heads over bytes, with no socket: the status line, the header block, and
/// how the body that follows is framed (RFC 9112, 6.3). As strict as `RequestParser` where a
/// lax reading would let one answer be read as two: one line ending throughout, at most one
/// `Content-Length`, never together with `Transfer-Encoding`, chunked as the only coding.
public enum ResponseParser {
    /// How the body after a head ends.
    public enum Framing: Sendable, Equatable {
        /// No body (an answer to HEAD, 1xx, 204, 304).
        case none
        case length(Int)
        case chunked
        /// The body runs until the connection closes.
        case untilClose
    }

    public struct Head: Sendable {
        public var status: Int
        public var reason: String
        public var minorVersion: Int
        public var headers: HTTPHeaders
        public var framing: Framing
        /// The `Content-Length` the peer declared (for an answer to HEAD: the GET's length).
        public var declaredLength: Int?
        /// Whether the peer keeps the connection open after this answer.
        public var keepAlive: Bool
    }

    public enum HeadResult: Sendable {
        case incomplete
        case complete(Head, length: Int)
        case invalid(String)
    }

    /// Parses the head at the start of `bytes`. `requestMethod` decides whether a body follows.
    public static func parseHead(_ bytes: UnsafeRawBufferPointer, maxHeadBytes: Int, requestMethod: HTTPMethod) -> HeadResult {
        guard let end = RequestParser.headEnd(bytes, from: 0) else {
            return bytes.count > maxHeadBytes ? .invalid("the answer's head is larger than \(maxHeadBytes) bytes") : .incomplete
        }
        guard end <= maxHeadBytes else { return .invalid("the answer's head is larger than \(maxHeadBytes) bytes") }
        var lines = RequestParser.HeadLines(bytes: bytes, position: 0, end: end)
        guard let statusLine = lines.next(), let parsed = parseStatusLine(bytes, statusLine.range) else {
            return .invalid("invalid status line")
        }
        let usesCRLF = statusLine.endedWithCR
        var fields: [(name: String, value: String)] = []
        var contentLength: Int?
        var chunked = false
        var close = false, keepAliveAsked = false
        var sawEmptyLine = false
        while let line = lines.next() {
            guard line.endedWithCR == usesCRLF else { return .invalid("mixed line endings in the answer's head") }
            if line.range.isEmpty {
                sawEmptyLine = true
                break
            }
            guard fields.count < RequestParser.maxHeaderFields else { return .invalid("too many header fields in the answer") }
            guard let field = RequestParser.parseField(bytes, line.range) else {
                // A value that cannot be passed on unchanged (not UTF-8, a control byte) is
                // dropped, as the buffered client does; a name that is not a token, or such a
                // value in a field that frames the answer, makes the head unreadable.
                guard let name = fieldName(bytes, line.range), !isFraming(name) else { return .invalid("invalid header field in the answer") }
                continue
            }
            fields.append(field)
            if field.name.caseInsensitiveEquals("content-length") {
                guard contentLength == nil, let length = RequestParser.decimal(field.value) else { return .invalid("invalid Content-Length") }
                contentLength = length
            } else if field.name.caseInsensitiveEquals("transfer-encoding") {
                guard !chunked, field.value.caseInsensitiveEquals("chunked") else { return .invalid("unsupported Transfer-Encoding") }
                chunked = true
            } else if field.name.caseInsensitiveEquals("connection") {
                for token in field.value.split(separator: ",") {
                    let option = String(token.trimmingSpaces)
                    if option.caseInsensitiveEquals("close") { close = true }
                    if option.caseInsensitiveEquals("keep-alive") { keepAliveAsked = true }
                }
            }
        }
        guard sawEmptyLine else { return .invalid("invalid answer head") }
        if chunked && contentLength != nil { return .invalid("both Content-Length and Transfer-Encoding in the answer") }
        if chunked && parsed.minor == 0 { return .invalid("Transfer-Encoding in an HTTP/1.0 answer") }
        let framing: Framing
        if requestMethod == .head || (100..<200).contains(parsed.status) || parsed.status == 204 || parsed.status == 304 {
            framing = .none
        } else if chunked {
            framing = .chunked
        } else if let contentLength {
            framing = .length(contentLength)
        } else {
            framing = .untilClose
        }
        let keepAlive = !close && (parsed.minor == 1 || keepAliveAsked) && framing != .untilClose
        return .complete(Head(status: parsed.status, reason: parsed.reason, minorVersion: parsed.minor, headers: HTTPHeaders(fields),
                              framing: framing, declaredLength: contentLength, keepAlive: keepAlive), length: end)
    }

    /// The name of a field line whose name is a token, or nil.
    static func fieldName(_ bytes: UnsafeRawBufferPointer, _ line: Range<Int>) -> String? {
        guard let colon = bytes[line].firstIndex(of: UInt8(ascii: ":")), colon > line.lowerBound,
              bytes[line.lowerBound..<colon].allSatisfy(RequestParser.isTokenByte) else { return nil }
        return String(decoding: bytes[line.lowerBound..<colon], as: UTF8.self)
    }

    static func isFraming(_ name: String) -> Bool {
        name.caseInsensitiveEquals("content-length") || name.caseInsensitiveEquals("transfer-encoding")
            || name.caseInsensitiveEquals("connection")
    }

    /// `HTTP/1.x SP 3DIGIT SP reason`.
    static func parseStatusLine(_ bytes: UnsafeRawBufferPointer, _ line: Range<Int>) -> (status: Int, reason: String, minor: Int)? {
        let text = Array(bytes[line])
        guard text.count >= 12, text.starts(with: "HTTP/1.".utf8), text[7] == UInt8(ascii: "0") || text[7] == UInt8(ascii: "1"),
              text[8] == UInt8(ascii: " "), text[9...11].allSatisfy(RequestParser.isDigit),
              text.count == 12 || text[12] == UInt8(ascii: " ") else { return nil }
        let status = Int(text[9] - 0x30) * 100 + Int(text[10] - 0x30) * 10 + Int(text[11] - 0x30)
        guard status >= 100 else { return nil }
        let reasonBytes = text.count > 13 ? Array(text[13...]) : []
        guard reasonBytes.allSatisfy(RequestParser.isFieldValueByte) else { return nil }
        return (status, String(decoding: reasonBytes, as: UTF8.self), Int(text[7] - 0x30))
    }
}
