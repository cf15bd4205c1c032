/// HTTP/1.x request parsing over bytes, with no socket: the request line and header block, and
/// chunked bodies. Strict where laxness lets requests be smuggled or misread (RFC 9112):
/// no obs-fold, no space before a colon, no control bytes, one Content-Length, no
/// Content-Length together with Transfer-Encoding, chunked as the only transfer coding.
public enum RequestParser {
    /// A request line and its header fields.
    public struct Head: Sendable {
        /// The method as sent, and the known one it names (nil for an extension method).
        public var methodName: String
        public var knownMethod: HTTPMethod?
        /// The request target as sent (origin form, or `*` for OPTIONS).
        public var target: String
        /// 0 for HTTP/1.0, 1 for HTTP/1.1.
        public var minorVersion: Int
        public var headers: HTTPHeaders
        /// The body's framing.
        public var contentLength: Int?
        public var isChunked: Bool
        /// Whether the client asked to keep the connection open after this exchange.
        public var keepAlive: Bool
        public var expectsContinue: Bool

        public var hasBody: Bool { isChunked || (contentLength ?? 0) > 0 }
    }

    public enum HeadResult: Sendable {
        /// More bytes are needed.
        case incomplete
        /// A head, and how many bytes it took (including the blank line).
        case complete(Head, length: Int)
        /// An answer to send before closing the connection.
        case invalid(status: Int, message: String)
    }

    /// At most this many header fields.
    public static let maxHeaderFields = 100

    /// Parses a head from the start of `bytes`; `maxHeadBytes` bounds the head's length.
    public static func parseHead(_ bytes: UnsafeRawBufferPointer, maxHeadBytes: Int) -> HeadResult {
        var start = 0
        // A client may send blank lines before a request (RFC 9112, 2.2).
        while start < bytes.count, bytes[start] == cr || bytes[start] == lf, start < 16 { start += 1 }
        guard let end = headEnd(bytes, from: start) else {
            return bytes.count > maxHeadBytes ? .invalid(status: 431, message: "the request head is larger than \(maxHeadBytes) bytes")
                                              : .incomplete
        }
        guard end <= maxHeadBytes else { return .invalid(status: 431, message: "the request head is larger than \(maxHeadBytes) bytes") }
        var lines = LineScanner(bytes: bytes, position: start, end: end)
        guard let requestLine = lines.next() else { return .invalid(status: 400, message: "no request line") }
        var head: Head
        switch parseRequestLine(bytes, requestLine) {
        case .success(let parsed): head = parsed
        case .failure(let invalid): return .invalid(status: invalid.status, message: invalid.message)
        }
        var fields: [(name: String, value: String)] = []
        var connectionClose = false, connectionKeepAlive = false
        while let line = lines.next() {
            if line.isEmpty { break }
            guard fields.count < maxHeaderFields else {
                return .invalid(status: 431, message: "more than \(maxHeaderFields) header fields")
            }
            guard let field = parseField(bytes, line) else { return .invalid(status: 400, message: "invalid header field") }
            fields.append(field)
            let name = field.name
            if name.caseInsensitiveEquals("content-length") {
                guard let length = decimal(field.value), head.contentLength == nil || head.contentLength == length else {
                    return .invalid(status: 400, message: "invalid Content-Length")
                }
                head.contentLength = length
            } else if name.caseInsensitiveEquals("transfer-encoding") {
                // Only "chunked", once, as the final coding (RFC 9112, 6.1).
                guard !head.isChunked, field.value.caseInsensitiveEquals("chunked") else {
                    return .invalid(status: 501, message: "unsupported Transfer-Encoding")
                }
                head.isChunked = true
            } else if name.caseInsensitiveEquals("connection") {
                for token in field.value.split(separator: ",") {
                    let option = String(token.trimmingSpaces)
                    if option.caseInsensitiveEquals("close") { connectionClose = true }
                    if option.caseInsensitiveEquals("keep-alive") { connectionKeepAlive = true }
                }
            } else if name.caseInsensitiveEquals("expect") {
                guard field.value.caseInsensitiveEquals("100-continue") else {
                    return .invalid(status: 417, message: "unsupported Expect")
                }
                head.expectsContinue = true
            }
        }
        if head.isChunked && head.contentLength != nil {
            return .invalid(status: 400, message: "both Content-Length and Transfer-Encoding")
        }
        head.headers = HTTPHeaders(fields)
        head.keepAlive = !connectionClose && (head.minorVersion == 1 || connectionKeepAlive)
        return .complete(head, length: end)
    }

    public struct Invalid: Error, Sendable {
        public let status: Int
        public let message: String
    }

    /// `METHOD SP request-target SP HTTP/1.x`.
    static func parseRequestLine(_ bytes: UnsafeRawBufferPointer, _ line: Range<Int>) -> Result<Head, Invalid> {
        let parts = line.split(bytes, on: space)
        guard parts.count == 3 else { return .failure(Invalid(status: 400, message: "invalid request line")) }
        let method = parts[0], target = parts[1], version = parts[2]
        guard !method.isEmpty, method.count <= 32, bytes[method].allSatisfy(isTokenByte) else {
            return .failure(Invalid(status: 400, message: "invalid method"))
        }
        // Visible ASCII only: no control bytes, no spaces, nothing non-ASCII unescaped.
        guard !target.isEmpty, bytes[target].allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            return .failure(Invalid(status: 400, message: "invalid request target"))
        }
        let methodName = String(decoding: bytes[method], as: UTF8.self)
        let targetText = String(decoding: bytes[target], as: UTF8.self)
        let knownMethod = HTTPMethod(rawValue: methodName)
        // Origin form only (and `*` for OPTIONS): this is a server, not a forward proxy.
        guard bytes[target.lowerBound] == slash || (targetText == "*" && knownMethod == .options) else {
            return .failure(Invalid(status: 400, message: "the request target must be a path"))
        }
        let versionBytes = bytes[version]
        guard versionBytes.count == 8, versionBytes.starts(with: "HTTP/1.".utf8),
              let minor = versionBytes.last, minor == UInt8(ascii: "0") || minor == UInt8(ascii: "1") else {
            return .failure(Invalid(status: 505, message: "only HTTP/1.0 and HTTP/1.1 are supported"))
        }
        return .success(Head(methodName: methodName, knownMethod: knownMethod, target: targetText,
                             minorVersion: Int(minor - UInt8(ascii: "0")), headers: HTTPHeaders(),
                             contentLength: nil, isChunked: false, keepAlive: true, expectsContinue: false))
    }

    /// `name: OWS value OWS`; nil for anything else.
    static func parseField(_ bytes: UnsafeRawBufferPointer, _ line: Range<Int>) -> (name: String, value: String)? {
        guard let colon = bytes[line].firstIndex(of: UInt8(ascii: ":")), colon > line.lowerBound else { return nil }
        let name = line.lowerBound..<colon
        // A name must be a token: this also refuses obs-fold (a line starting with a space).
        guard bytes[name].allSatisfy(isTokenByte) else { return nil }
        var valueStart = colon + 1, valueEnd = line.upperBound
        while valueStart < valueEnd, bytes[valueStart] == space || bytes[valueStart] == tab { valueStart += 1 }
        while valueEnd > valueStart, bytes[valueEnd - 1] == space || bytes[valueEnd - 1] == tab { valueEnd -= 1 }
        let value = valueStart..<valueEnd
        guard bytes[value].allSatisfy({ $0 == tab || ($0 >= 0x20 && $0 != 0x7F) }) else { return nil }
        return (String(decoding: bytes[name], as: UTF8.self), String(decoding: bytes[value], as: UTF8.self))
    }

    /// Where the head ends: just past the first empty line (CRLF or bare LF line endings).
    static func headEnd(_ bytes: UnsafeRawBufferPointer, from start: Int) -> Int? {
        var index = start
        while index < bytes.count {
            guard let newline = bytes[index...].firstIndex(of: lf) else { return nil }
            // The line after this newline is empty when it is LF or CRLF.
            if newline + 1 < bytes.count, bytes[newline + 1] == lf { return newline + 2 }
            if newline + 2 < bytes.count, bytes[newline + 1] == cr, bytes[newline + 2] == lf { return newline + 3 }
            index = newline + 1
        }
        return nil
    }

    /// A non-negative decimal number of at most 15 digits.
    static func decimal(_ text: String) -> Int? {
        guard !text.isEmpty, text.utf8.count <= 15, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        return Int(text)
    }

    // MARK: Chunked bodies

    public enum ChunkedResult: Equatable, Sendable {
        case incomplete
        /// The decoded body and how many bytes of input it took (trailers included).
        case complete([UInt8], length: Int)
        case invalid
        case tooLarge
    }

    /// Decodes a whole chunked body from the start of `bytes`.
    public static func decodeChunked(_ bytes: UnsafeRawBufferPointer, maxBodyBytes: Int) -> ChunkedResult {
        var body: [UInt8] = []
        var index = 0
        while true {
            guard let lineEnd = bytes[index...].firstIndex(of: lf) else {
                return bytes.count - index > 1024 ? .invalid : .incomplete
            }
            // chunk-size [; extensions] CRLF
            var sizeEnd = index
            var size = 0
            while sizeEnd < lineEnd, let digit = hexValue(bytes[sizeEnd]) {
                size = size * 16 + digit
                sizeEnd += 1
                guard sizeEnd - index <= 8 else { return .tooLarge }
            }
            guard sizeEnd > index else { return .invalid }
            let rest = bytes[sizeEnd..<lineEnd]
            guard rest.isEmpty || rest.elementsEqual([cr]) || rest.first == UInt8(ascii: ";") || rest.first == space || rest.first == tab else { return .invalid }
            guard body.count + size <= maxBodyBytes else { return .tooLarge }
            index = lineEnd + 1
            if size == 0 {
                // Trailer fields (ignored) up to an empty line.
                while true {
                    guard let end = bytes[index...].firstIndex(of: lf) else { return .incomplete }
                    let line = bytes[index..<end]
                    index = end + 1
                    if line.isEmpty || line.elementsEqual([cr]) { return .complete(body, length: index) }
                }
            }
            guard bytes.count >= index + size + 1 else { return .incomplete }
            body.append(contentsOf: bytes[index..<(index + size)])
            index += size
            if bytes[index] == cr {
                guard bytes.count >= index + 2 else { return .incomplete }
                index += 1
            }
            guard bytes[index] == lf else { return .invalid }
            index += 1
        }
    }

    static func hexValue(_ byte: UInt8) -> Int? {
        switch byte {
        case 0x30...0x39: Int(byte - 0x30)
        case 0x41...0x46: Int(byte - 0x41 + 10)
        case 0x61...0x66: Int(byte - 0x61 + 10)
        default: nil
        }
    }

    /// tchar (RFC 9110, 5.6.2).
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
             UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
             UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"): true
        default: false
        }
    }
}

private let cr = UInt8(ascii: "\r"), lf = UInt8(ascii: "\n"), space = UInt8(ascii: " "), tab = UInt8(ascii: "\t")
private let slash = UInt8(ascii: "/")

/// The lines of a head, without their line endings (CRLF or LF).
private struct LineScanner {
    let bytes: UnsafeRawBufferPointer
    var position: Int
    let end: Int

    mutating func next() -> Range<Int>? {
        guard position < end, let newline = bytes[position..<end].firstIndex(of: lf) else { return nil }
        var lineEnd = newline
        if lineEnd > position, bytes[lineEnd - 1] == cr { lineEnd -= 1 }
        defer { position = newline + 1 }
        return position..<lineEnd
    }
}

private extension Range<Int> {
    /// Splits on single `separator` bytes (empty pieces kept, so a double space is an error).
    func split(_ bytes: UnsafeRawBufferPointer, on separator: UInt8) -> [Range<Int>] {
        var pieces: [Range<Int>] = []
        var start = lowerBound
        for index in self where bytes[index] == separator {
            pieces.append(start..<index)
            start = index + 1
        }
        pieces.append(start..<upperBound)
        return pieces
    }
}

private extension Substring {
    var trimmingSpaces: Substring {
        let start = firstIndex { $0 != " " && $0 != "\t" } ?? endIndex
        let end = lastIndex { $0 != " " && $0 != "\t" }.map { index(after: $0) } ?? start
        return self[start..<Swift.max(start, end)]
    }
}
