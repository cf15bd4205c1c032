import EventHTTP
import JobCache

/// A request target checked for safety: decoded path segments (no `.`/`..`, no encoded
/// slashes or control characters, in any encoding), and the query as sent (with the visible
/// characters RFC 3986 wants escaped percent-encoded).
public struct RequestTarget: Sendable, Equatable {
    /// Path segments, percent-decoded.
    public let segments: [String]
    /// Whether the path ended with `/`.
    public let trailingSlash: Bool
    /// The query string after `?`, percent-encoded (as sent, plus escapes for the visible
    /// characters RFC 3986 does not allow raw); nil when there was no `?`.
    public let rawQuery: String?

    /// Why a target is refused with 400.
    public struct Invalid: Error, Sendable, Equatable, CustomStringConvertible {
        public let description: String
    }

    /// Characters allowed raw in a path segment (RFC 3986 pchar, less `%` handled apart).
    private static let pathCharacters: Set<UInt8> = Set(
        Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@".utf8))
    /// Characters allowed raw in a query.
    private static let queryCharacters: Set<UInt8> = pathCharacters.union("/?".utf8)

    public static func parse(_ uri: String) -> Result<RequestTarget, Invalid> {
        guard uri.first == "/" else { return .failure(Invalid(description: "the request target must be a path starting with /")) }
        guard !uri.contains("#") else { return .failure(Invalid(description: "fragments are not allowed in a request target")) }
        let path: Substring
        var rawQuery: String?
        if let mark = uri.firstIndex(of: "?") {
            path = uri[..<mark]
            let query = uri[uri.index(after: mark)...]
            guard query.utf8.allSatisfy(RequestParser.isVisibleASCII), hasValidEscapes(query) else {
                return .failure(Invalid(description: "the query has characters that must be percent-encoded, or a bad escape"))
            }
            rawQuery = encodeQuery(query)
        } else {
            path = Substring(uri)
        }
        var pieces = path.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        var trailingSlash = false
        if pieces.count > 1, pieces.last == "" {
            trailingSlash = true
            pieces.removeLast()
        }
        if pieces == [""] { pieces = [] }
        var segments: [String] = []
        for piece in pieces {
            guard !piece.isEmpty else { return .failure(Invalid(description: "empty path segment")) }
            guard piece.utf8.allSatisfy({ pathCharacters.contains($0) || $0 == UInt8(ascii: "%") }) else {
                return .failure(Invalid(description: "the path has characters that must be percent-encoded"))
            }
            guard let decoded = percentDecode(piece) else {
                return .failure(Invalid(description: "invalid percent-encoding in the path"))
            }
            if decoded == "." || decoded == ".." {
                return .failure(Invalid(description: "dot segments are not allowed in the path"))
            }
            if decoded.unicodeScalars.contains(where: { $0 == "/" || $0 == "\\" || $0.value < 0x20 || $0.value == 0x7F }) {
                return .failure(Invalid(description: "encoded slashes, backslashes and control characters are not allowed in the path"))
            }
            segments.append(decoded)
        }
        return .success(RequestTarget(segments: segments, trailingSlash: trailingSlash, rawQuery: rawQuery))
    }

    /// The path re-encoded for the upstream: every byte outside RFC 3986 "unreserved" escaped.
    public var encodedPath: String {
        "/" + segments.map(Self.encodeSegment).joined(separator: "/") + (trailingSlash ? "/" : "")
    }

    /// Percent-encodes one path segment (an id) for the upstream.
    public static func encodeSegment(_ segment: String) -> String {
        PercentEncoding.segment(segment)
    }

    /// The query as forwarded: what RFC 3986 allows raw stays as sent; other visible ASCII
    /// that clients send unencoded (curl and httpx send `|` and `[]`) is percent-encoded.
    static func encodeQuery(_ query: Substring) -> String {
        PercentEncoding.encode(query.utf8) { queryCharacters.contains($0) || $0 == UInt8(ascii: "%") }
    }

    static func hasValidEscapes(_ text: Substring) -> Bool {
        var bytes = text.utf8.makeIterator()
        while let byte = bytes.next() {
            if byte == UInt8(ascii: "%") {
                guard let a = bytes.next(), let b = bytes.next(), a.isHexDigit, b.isHexDigit else { return false }
            }
        }
        return true
    }

    static func percentDecode(_ text: Substring) -> String? {
        guard hasValidEscapes(text) else { return nil }
        var out: [UInt8] = []
        var bytes = text.utf8.makeIterator()
        while let byte = bytes.next() {
            if byte == UInt8(ascii: "%"), let a = bytes.next(), let b = bytes.next() {
                out.append(a.hexValue << 4 | b.hexValue)
            } else {
                out.append(byte)
            }
        }
        return String(validating: out, as: UTF8.self)
    }
}

extension UInt8 {
    var isHexDigit: Bool { (0x30...0x39).contains(self) || (0x41...0x46).contains(self) || (0x61...0x66).contains(self) }
    var hexValue: UInt8 {
        switch self {
        case 0x30...0x39: self - 0x30
        case 0x41...0x46: self - 0x41 + 10
        default: self - 0x61 + 10
        }
    }
}
