/// HTTP/1.x request parsing over bytes, with no socket: the request line and header block, and
/// chunked bodies. Strict where laxness lets requests be smuggled or misread (RFC 9112):
/// one line ending throughout a head (CRLF, or bare LF from start to end, never mixed), no bare
/// CR, no obs-fold, no space before a colon, no control bytes, header values that are valid
/// UTF-8 (forwarded as they are, never rewritten), exactly one `Host` on HTTP/1.1, at most one
/// `Content-Length`, never together with `Transfer-Encoding`, chunked as the only transfer
/// coding, and chunk lines exactly as RFC 9112 section 7.1 writes them.
public enum RequestParser {
    /// A request line and its header fields.
    public struct Head: Sendable, Equatable {
        /// The method as sent, and the known one it names (nil for an extension method).
        public var methodName: String
        public var knownMethod: HTTPMethod?
        /// The request target in origin form (`/path?query`), or `*` for OPTIONS. An
        /// absolute-form target (`http://host/path?query`) is reduced to its path and query.
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
        // A client may send an empty line or two before a request (RFC 9112, 2.2).
        while start < 16 {
            if start + 1 < bytes.count, bytes[start] == cr, bytes[start + 1] == lf { start += 2 }
            else if start < bytes.count, bytes[start] == lf { start += 1 }
            else { break }
        }
        guard let end = headEnd(bytes, from: start) else {
            return bytes.count > maxHeadBytes ? .invalid(status: 431, message: "the request head is larger than \(maxHeadBytes) bytes")
                                              : .incomplete
        }
        guard end <= maxHeadBytes else { return .invalid(status: 431, message: "the request head is larger than \(maxHeadBytes) bytes") }
        var lines = HeadLines(bytes: bytes, position: start, end: end)
        guard let requestLine = lines.next() else { return .invalid(status: 400, message: "no request line") }
        // The request line sets the line ending; a head that mixes CRLF and bare LF is two
        // requests to one reader and one to another (RFC 9112, 2.2).
        let usesCRLF = requestLine.endedWithCR
        var head: Head
        switch parseRequestLine(bytes, requestLine.range) {
        case .success(let parsed): head = parsed
        case .failure(let invalid): return .invalid(status: invalid.status, message: invalid.message)
        }
        var fields: [(name: String, value: String)] = []
        fields.reserveCapacity(8)  // one allocation for a usual head, not one per doubling
        var connectionClose = false, connectionKeepAlive = false
        var hostCount = 0
        var sawAuthorization = false
        var sawEmptyLine = false
        while let line = lines.next() {
            guard line.endedWithCR == usesCRLF else { return .invalid(status: 400, message: "mixed line endings in the request head") }
            if line.range.isEmpty {
                sawEmptyLine = true
                break
            }
            guard fields.count < maxHeaderFields else {
                return .invalid(status: 431, message: "more than \(maxHeaderFields) header fields")
            }
            guard let field = parseField(bytes, line.range) else { return .invalid(status: 400, message: "invalid header field") }
            fields.append(field)
            let name = field.name
            if name.caseInsensitiveEquals("content-length") {
                // Even two equal values are refused: a reader that takes the list as one value
                // ("3, 3") would frame the body differently (RFC 9112, 6.3).
                guard head.contentLength == nil, let length = decimal(field.value) else {
                    return .invalid(status: 400, message: "invalid Content-Length")
                }
                head.contentLength = length
            } else if name.caseInsensitiveEquals("transfer-encoding") {
                // Only "chunked", once, as the final coding (RFC 9112, 6.1).
                guard !head.isChunked, field.value.caseInsensitiveEquals("chunked") else {
                    return .invalid(status: 501, message: "unsupported Transfer-Encoding")
                }
                head.isChunked = true
            } else if name.caseInsensitiveEquals("host") {
                hostCount += 1
                guard hostCount == 1, isValidHost(field.value) else { return .invalid(status: 400, message: "invalid or repeated Host") }
            } else if name.caseInsensitiveEquals("connection") {
                for token in field.value.split(separator: ",") {
                    let option = String(token.trimmingSpaces)
                    if option.caseInsensitiveEquals("close") { connectionClose = true }
                    if option.caseInsensitiveEquals("keep-alive") { connectionKeepAlive = true }
                }
            } else if name.caseInsensitiveEquals("authorization") {
                // Two credentials: which one a server (or the upstream behind it) takes is
                // anyone's guess, so neither is (found by an outside HTTP test run).
                guard !sawAuthorization else { return .invalid(status: 400, message: "repeated Authorization") }
                sawAuthorization = true
            } else if name.caseInsensitiveEquals("expect") {
                guard field.value.caseInsensitiveEquals("100-continue") else {
                    return .invalid(status: 417, message: "unsupported Expect")
                }
                head.expectsContinue = true
            } else if isFramingLookalike(name) {
                // `Content_Length` and the like: some servers read `_` as `-`.
                return .invalid(status: 400, message: "invalid header field name")
            }
        }
        guard sawEmptyLine else { return .invalid(status: 400, message: "invalid request head") }
        if head.minorVersion == 1, hostCount == 0 {
            return .invalid(status: 400, message: "an HTTP/1.1 request must have a Host header")
        }
        if head.isChunked && head.contentLength != nil {
            return .invalid(status: 400, message: "both Content-Length and Transfer-Encoding")
        }
        if head.isChunked, head.minorVersion == 0 {
            // HTTP/1.0 has no transfer codings: the framing is faulty (RFC 9112, 6.1).
            return .invalid(status: 400, message: "Transfer-Encoding in an HTTP/1.0 request")
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
        guard let (method, target, version) = line.threeParts(bytes, separatedBy: space) else {
            return .failure(Invalid(status: 400, message: "invalid request line"))
        }
        guard !method.isEmpty, method.count <= 32, bytes[method].allSatisfy(isTokenByte) else {
            return .failure(Invalid(status: 400, message: "invalid method"))
        }
        // Visible ASCII only: no control bytes, no spaces, nothing non-ASCII unescaped.
        guard !target.isEmpty, bytes[target].allSatisfy(isVisibleASCII) else {
            return .failure(Invalid(status: 400, message: "invalid request target"))
        }
        // HTTP-version = "HTTP/" DIGIT "." DIGIT, the name case-sensitive (RFC 9112, 2.3):
        // anything else is not HTTP (400); another version is one this server does not speak (505).
        let versionBytes = bytes[version]
        let at = version.lowerBound
        guard versionBytes.count == 8, versionBytes.starts(with: "HTTP/".utf8), isDigit(bytes[at + 5]),
              bytes[at + 6] == UInt8(ascii: "."), isDigit(bytes[at + 7]) else {
            return .failure(Invalid(status: 400, message: "invalid HTTP version"))
        }
        let minor = bytes[at + 7]
        guard bytes[at + 5] == UInt8(ascii: "1"), minor == UInt8(ascii: "0") || minor == UInt8(ascii: "1") else {
            return .failure(Invalid(status: 505, message: "only HTTP/1.0 and HTTP/1.1 are supported"))
        }
        let methodName = String(decoding: bytes[method], as: UTF8.self)
        let knownMethod = HTTPMethod(rawValue: methodName)
        let targetText: String
        if bytes[target.lowerBound] == slash {
            targetText = String(decoding: bytes[target], as: UTF8.self)
        } else if bytes[target].elementsEqual("*".utf8), knownMethod == .options {
            targetText = "*"
        } else if let originForm = originForm(ofAbsolute: bytes[target]) {
            targetText = originForm
        } else {
            return .failure(Invalid(status: 400, message: "the request target must be a path or an http(s) URL"))
        }
        return .success(Head(methodName: methodName, knownMethod: knownMethod, target: targetText,
                             minorVersion: Int(minor - UInt8(ascii: "0")), headers: HTTPHeaders(),
                             contentLength: nil, isChunked: false, keepAlive: true, expectsContinue: false))
    }

    /// The path and query of an absolute-form target (RFC 9112, 3.2.2): `http` or `https`, an
    /// authority without userinfo, then an optional path and query. The authority plays no
    /// part in routing; nil when the target is not of that form.
    static func originForm(ofAbsolute target: Slice<UnsafeRawBufferPointer>) -> String? {
        let text = String(decoding: target, as: UTF8.self)
        let lowered = text.lowercased()
        let schemeLength: Int
        if lowered.hasPrefix("http://") { schemeLength = 7 } else if lowered.hasPrefix("https://") { schemeLength = 8 } else { return nil }
        let rest = text.utf8.dropFirst(schemeLength)
        let authorityEnd = rest.firstIndex { $0 == slash || $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") } ?? rest.endIndex
        let authority = String(decoding: rest[rest.startIndex..<authorityEnd], as: UTF8.self)
        guard !authority.isEmpty, isValidHost(authority) else { return nil }
        let remainder = String(decoding: rest[authorityEnd...], as: UTF8.self)
        if remainder.isEmpty { return "/" }
        return remainder.hasPrefix("/") ? remainder : "/" + remainder
    }

    /// A `Host` value: `uri-host [ ":" port ]` (RFC 9110, 7.2; RFC 3986, 3.2.2). Empty is valid.
    static func isValidHost(_ value: String) -> Bool {
        var bytes = Substring(value).utf8[...]
        if bytes.first == UInt8(ascii: "[") {
            guard let close = bytes.firstIndex(of: UInt8(ascii: "]")) else { return false }
            let literal = bytes[bytes.index(after: bytes.startIndex)..<close]
            guard !literal.isEmpty, literal.allSatisfy({ hexValue($0) != nil || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: ".") }) else {
                return false
            }
            bytes = bytes[bytes.index(after: close)...]
        } else {
            let nameEnd = bytes.firstIndex(of: UInt8(ascii: ":")) ?? bytes.endIndex
            guard bytes[bytes.startIndex..<nameEnd].allSatisfy(isRegNameByte),
                  TargetEscapes.areValid(bytes[bytes.startIndex..<nameEnd]) else { return false }
            bytes = bytes[nameEnd...]
        }
        guard let colon = bytes.first else { return true }
        guard colon == UInt8(ascii: ":") else { return false }
        let port = bytes.dropFirst()
        return port.count <= 5 && port.allSatisfy(isDigit) && (Int(String(decoding: port, as: UTF8.self)) ?? 0) <= 65_535
    }

    /// reg-name bytes: unreserved, sub-delims and `%` (escapes checked apart).
    static func isRegNameByte(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: true
        case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: "%"),
             UInt8(ascii: "!"), UInt8(ascii: "$"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "("), UInt8(ascii: ")"),
             UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: ","), UInt8(ascii: ";"), UInt8(ascii: "="): true
        default: false
        }
    }

    /// A field name that some reader may take, once `_` is read as `-`, for a field that frames
    /// or routes the request or that a proxy sets or strips itself (`Transfer_Encoding`,
    /// `X_Request_Id`, `Proxy_Authorization`, `X_HTTP_Method_Override`).
    static func isFramingLookalike(_ name: String) -> Bool {
        guard name.utf8.contains(UInt8(ascii: "_")) else { return false }
        let normalized = String(decoding: name.utf8.map { $0 == UInt8(ascii: "_") ? UInt8(ascii: "-") : $0 }, as: UTF8.self).lowercased()
        return hopByHopHeaderNames.contains(normalized) || reservedFieldNames.contains(normalized) || normalized.hasPrefix("proxy-")
    }

    /// Names besides the hop-by-hop ones that a gateway sets, strips or reads specially.
    static let reservedFieldNames: Set<String> = [
        "expect", "authorization", "x-request-id", "x-http-method-override", "x-http-method", "x-method-override",
        "forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto",
    ]

    /// `name: OWS value OWS`; nil for anything else. A value must be valid UTF-8: it is
    /// forwarded byte for byte, and a `String` would replace what is not.
    static func parseField(_ bytes: UnsafeRawBufferPointer, _ line: Range<Int>) -> (name: String, value: String)? {
        guard let colon = bytes[line].firstIndex(of: UInt8(ascii: ":")), colon > line.lowerBound else { return nil }
        let name = line.lowerBound..<colon
        // A name must be a token: this also refuses obs-fold (a line starting with a space).
        guard bytes[name].allSatisfy(isTokenByte) else { return nil }
        var valueStart = colon + 1, valueEnd = line.upperBound
        while valueStart < valueEnd, bytes[valueStart] == space || bytes[valueStart] == tab { valueStart += 1 }
        while valueEnd > valueStart, bytes[valueEnd - 1] == space || bytes[valueEnd - 1] == tab { valueEnd -= 1 }
        let value = valueStart..<valueEnd
        guard bytes[value].allSatisfy(isFieldValueByte),
              let valueText = String(validating: bytes[value], as: UTF8.self) else { return nil }
        return (String(decoding: bytes[name], as: UTF8.self), valueText)
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
        guard !text.isEmpty, text.utf8.count <= 15, text.utf8.allSatisfy(isDigit) else { return nil }
        return Int(text)
    }

    static func isDigit(_ byte: UInt8) -> Bool { byte >= 0x30 && byte <= 0x39 }

    // MARK: Chunked bodies

    public enum ChunkedResult: Equatable, Sendable {
        case incomplete
        /// The decoded body and how many bytes of input it took (trailers included).
        case complete([UInt8], length: Int)
        case invalid
        case tooLarge
    }

    /// The longest chunk-size line or trailer line waited for.
    static let maxChunkLineBytes = 4096

    /// Decodes a whole chunked body from the start of `bytes` (see `ChunkedDecoder`).
    public static func decodeChunked(_ bytes: UnsafeRawBufferPointer, maxBodyBytes: Int) -> ChunkedResult {
        var decoder = ChunkedDecoder(maxBodyBytes: maxBodyBytes)
        let consumed = decoder.feed(bytes)
        switch decoder.progress {
        case .done: return .complete(decoder.body, length: consumed)
        case .needMore: return .incomplete
        case .invalid: return .invalid
        case .tooLarge: return .tooLarge
        }
    }

    /// A chunked body decoded as it arrives, exactly as RFC 9112 section 7.1 writes it:
    /// `chunk-size [chunk-ext] CRLF chunk-data CRLF`, with `chunk-ext` as
    /// `*( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )`, then the last chunk,
    /// trailer fields and an empty line, every line ended by CRLF. Trailer fields are checked
    /// and dropped (the proxy frames what it forwards with a Content-Length); one that would
    /// change the framing or the routing (`Content-Length`, `Transfer-Encoding`, `Host`) is
    /// refused. Each byte is looked at once however the body is split into reads: the caller
    /// drains what `feed` consumed and feeds the rest with what comes next.
    public struct ChunkedDecoder: Sendable {
        public enum Progress: Equatable, Sendable { case needMore, done, invalid, tooLarge }

        private enum Stage: Sendable {
            case sizeLine
            case data(remaining: Int)
            case dataEnd
            case trailerLine(count: Int)
        }

        public let maxBodyBytes: Int
        /// The body decoded so far (empty when `feed` is given an `emit` closure).
        public private(set) var body: [UInt8] = []
        /// Bytes of body decoded so far.
        public private(set) var decodedBytes = 0
        public private(set) var progress = Progress.needMore
        private var stage = Stage.sizeLine

        public init(maxBodyBytes: Int) {
            self.maxBodyBytes = maxBodyBytes
        }

        /// Takes what it can from `bytes` (the unconsumed input, in order) and returns how
        /// many bytes it consumed; `progress` says what comes next. With `emit`, each piece of
        /// body data goes to it as it is decoded (a streamed body) instead of into `body`.
        public mutating func feed(_ bytes: UnsafeRawBufferPointer, emit: ((UnsafeRawBufferPointer) -> Void)? = nil) -> Int {
            var index = 0
            while progress == .needMore {
                switch stage {
                case .sizeLine:
                    guard let line = line(bytes, from: index) else { return index }
                    var position = line.lowerBound
                    // 1*HEXDIG; leading zeros are allowed and do not count towards the size's length.
                    while position < line.upperBound, bytes[position] == UInt8(ascii: "0") { position += 1 }
                    var size = 0
                    var significant = 0
                    while position < line.upperBound, let digit = hexValue(bytes[position]) {
                        significant += 1
                        guard significant <= 15 else { progress = .tooLarge; return index }
                        size = size * 16 + digit
                        position += 1
                    }
                    guard position > line.lowerBound, isValidChunkExtensions(bytes, position..<line.upperBound) else {
                        progress = .invalid
                        return index
                    }
                    guard size <= maxBodyBytes - decodedBytes else { progress = .tooLarge; return index }
                    index = line.upperBound + 2
                    stage = size == 0 ? .trailerLine(count: 0) : .data(remaining: size)
                case .data(let remaining):
                    let available = min(remaining, bytes.count - index)
                    guard available > 0 else { return index }
                    if let emit {
                        emit(UnsafeRawBufferPointer(rebasing: bytes[index..<(index + available)]))
                    } else {
                        body.append(contentsOf: bytes[index..<(index + available)])
                    }
                    decodedBytes += available
                    index += available
                    stage = remaining == available ? .dataEnd : .data(remaining: remaining - available)
                case .dataEnd:
                    guard bytes.count - index >= 2 else { return index }
                    guard bytes[index] == cr, bytes[index + 1] == lf else { progress = .invalid; return index }
                    index += 2
                    stage = .sizeLine
                case .trailerLine(let count):
                    guard let line = line(bytes, from: index) else { return index }
                    index = line.upperBound + 2
                    if line.isEmpty {
                        progress = .done
                        return index
                    }
                    guard count < maxHeaderFields, let field = parseField(bytes, line), !isFramingTrailer(field.name) else {
                        progress = .invalid
                        return index
                    }
                    stage = .trailerLine(count: count + 1)
                }
            }
            return index
        }

        /// The CRLF-ended line at `start` (without its CRLF), or nil while it has not all
        /// arrived; sets `progress` to `.invalid` for a bare CR or LF or an endless line.
        private mutating func line(_ bytes: UnsafeRawBufferPointer, from start: Int) -> Range<Int>? {
            switch crlfLine(bytes, from: start) {
            case .line(let range): return range
            case .incomplete: return nil
            case .invalid:
                progress = .invalid
                return nil
            }
        }
    }

    /// Trailer fields that would change the framing or the routing if a reader merged them.
    static func isFramingTrailer(_ name: String) -> Bool {
        name.caseInsensitiveEquals("content-length") || name.caseInsensitiveEquals("transfer-encoding")
            || name.caseInsensitiveEquals("host") || isFramingLookalike(name)
    }

    fileprivate enum LineResult {
        case incomplete, invalid
        /// The line's bytes, without its CRLF.
        case line(Range<Int>)
    }

    /// The line at `start`, which must end with CRLF and hold no other CR or LF.
    fileprivate static func crlfLine(_ bytes: UnsafeRawBufferPointer, from start: Int) -> LineResult {
        let limit = min(bytes.count, start + maxChunkLineBytes + 2)
        var index = start
        while index < limit {
            let byte = bytes[index]
            if byte == lf { return .invalid }
            if byte == cr {
                guard index + 1 < bytes.count else { return .incomplete }
                return bytes[index + 1] == lf ? .line(start..<index) : .invalid
            }
            index += 1
        }
        return limit - start > maxChunkLineBytes ? .invalid : .incomplete
    }

    /// `*( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )` over `range`.
    static func isValidChunkExtensions(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Bool {
        var index = range.lowerBound
        let end = range.upperBound
        func skipWhitespace() { while index < end, bytes[index] == space || bytes[index] == tab { index += 1 } }
        func token() -> Bool {
            let start = index
            while index < end, isTokenByte(bytes[index]) { index += 1 }
            return index > start
        }
        while index < end {
            skipWhitespace()
            guard index < end, bytes[index] == UInt8(ascii: ";") else { return false }
            index += 1
            skipWhitespace()
            guard token() else { return false }
            let beforeWhitespace = index
            skipWhitespace()
            guard index < end, bytes[index] == UInt8(ascii: "=") else {
                index = beforeWhitespace
                continue
            }
            index += 1
            skipWhitespace()
            if index < end, bytes[index] == UInt8(ascii: "\"") {
                guard let after = quotedStringEnd(bytes, from: index, end: end) else { return false }
                index = after
            } else {
                guard token() else { return false }
            }
        }
        return true
    }

    /// Just past the quoted-string that starts at `start` (RFC 9110, 5.6.4), or nil.
    static func quotedStringEnd(_ bytes: UnsafeRawBufferPointer, from start: Int, end: Int) -> Int? {
        var index = start + 1
        while index < end {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") { return index + 1 }
            if byte == UInt8(ascii: "\\") {
                guard index + 1 < end, isFieldValueByte(bytes[index + 1]) else { return nil }
                index += 2
                continue
            }
            guard isFieldValueByte(byte) else { return nil }
            index += 1
        }
        return nil
    }

    /// A byte a field value (and a quoted string, RFC 9110 5.6.4) may hold: HTAB, SP, visible
    /// ASCII and obs-text; no other control byte, no DEL.
    public static func isFieldValueByte(_ byte: UInt8) -> Bool { byte == tab || (byte >= 0x20 && byte != 0x7F) }

    /// A byte of a request target: visible ASCII, no space.
    public static func isVisibleASCII(_ byte: UInt8) -> Bool { byte > 0x20 && byte < 0x7F }

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

extension RequestParser {
/// The lines of a head, without their line endings (CRLF or LF), and which ending each had.
struct HeadLines {
    let bytes: UnsafeRawBufferPointer
    var position: Int
    let end: Int

    mutating func next() -> (range: Range<Int>, endedWithCR: Bool)? {
        guard position < end, let newline = bytes[position..<end].firstIndex(of: lf) else { return nil }
        var lineEnd = newline
        let endedWithCR = lineEnd > position && bytes[lineEnd - 1] == cr
        if endedWithCR { lineEnd -= 1 }
        defer { position = newline + 1 }
        return (position..<lineEnd, endedWithCR)
    }
}
}

/// Percent-escapes in a piece of a target or authority: each `%` followed by two hex digits.
enum TargetEscapes {
    static func areValid<C: Collection>(_ bytes: C) -> Bool where C.Element == UInt8 {
        var iterator = bytes.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else { continue }
            guard let a = iterator.next(), let b = iterator.next(),
                  RequestParser.hexValue(a) != nil, RequestParser.hexValue(b) != nil else { return false }
        }
        return true
    }
}

private extension Range<Int> {
    /// The three pieces between exactly two `separator` bytes (pieces may be empty, so a double
    /// space is an error the caller sees); nil for any other count. No array: it runs per request.
    func threeParts(_ bytes: UnsafeRawBufferPointer, separatedBy separator: UInt8) -> (Range<Int>, Range<Int>, Range<Int>)? {
        var first: Int?
        var second: Int?
        for index in self where bytes[index] == separator {
            if first == nil {
                first = index
            } else if second == nil {
                second = index
            } else {
                return nil
            }
        }
        guard let first, let second else { return nil }
        return (lowerBound..<first, (first + 1)..<second, (second + 1)..<upperBound)
    }
}

extension Substring {
    var trimmingSpaces: Substring {
        let start = firstIndex { $0 != " " && $0 != "\t" } ?? endIndex
        let end = lastIndex { $0 != " " && $0 != "\t" }.map { index(after: $0) } ?? start
        return self[start..<Swift.max(start, end)]
    }
}
