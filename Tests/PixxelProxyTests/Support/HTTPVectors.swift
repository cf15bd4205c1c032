/// Request vectors written from the RFC 9112 grammar (request line, field lines, line ends,
/// Content-Length, Transfer-Encoding, chunk lines, trailers, Host), each with the verdict the
/// proxy must reach. Shared by the parser's unit tests, the replay against the real server and
/// the fuzz seeds. Every vector asks for the pass-through route `/v0/vector`.
///
/// In a vector's text, `{AUTH}` stands for an `Authorization` line ended by CRLF, `{AUTHLF}`
/// for one ended by a bare LF, and `<FF>` for the byte 0xFF (not valid UTF-8).
struct HTTPVector: Sendable, CustomStringConvertible {
    enum Verdict: Sendable, Equatable {
        /// Accepted: exactly one request goes upstream, with this body.
        case accept(body: String)
        /// Refused with this status; nothing goes upstream and the connection closes.
        case refuse(Int)
    }

    let name: String
    let text: String
    let verdict: Verdict
    /// Refused by the server after the parser accepted it (a limit, or the proxy's own rule).
    var parserAccepts = false

    var description: String { name }

    /// The vector's bytes with `authorization` (a header line's value) in place of `{AUTH}`.
    func bytes(authorization: String?) -> [UInt8] {
        var text = self.text
        text = text.replacingOccurrences(of: "{AUTH}", with: authorization.map { "Authorization: \($0)\r\n" } ?? "")
        text = text.replacingOccurrences(of: "{AUTHLF}", with: authorization.map { "Authorization: \($0)\n" } ?? "")
        var out: [UInt8] = []
        var rest = Substring(text)
        while let marker = rest.range(of: "<FF>") {
            out += Array(rest[..<marker.lowerBound].utf8) + [0xFF]
            rest = rest[marker.upperBound...]
        }
        return out + Array(rest.utf8)
    }

    static func accept(_ name: String, _ text: String, body: String = "") -> HTTPVector {
        HTTPVector(name: name, text: text, verdict: .accept(body: body))
    }

    static func refuse(_ name: String, _ status: Int, _ text: String) -> HTTPVector {
        HTTPVector(name: name, text: text, verdict: .refuse(status))
    }

    static func refuseAfterParsing(_ name: String, _ status: Int, _ text: String) -> HTTPVector {
        HTTPVector(name: name, text: text, verdict: .refuse(status), parserAccepts: true)
    }

    static let get = "GET /v0/vector HTTP/1.1\r\nHost: h\r\n{AUTH}"
    static let post = "POST /v0/vector HTTP/1.1\r\nHost: h\r\n{AUTH}"
    static let chunkedPost = post + "Transfer-Encoding: chunked\r\n\r\n"

    static let all: [HTTPVector] = requestLine + lineEnds + fields + host + contentLength + transferEncoding + chunks

    static let requestLine: [HTTPVector] = [
        accept("origin form", get + "\r\n"),
        accept("HTTP/1.0 without Host", "GET /v0/vector HTTP/1.0\r\n{AUTH}\r\n"),
        accept("absolute form", "GET http://api.example/v0/vector?x=1 HTTP/1.1\r\nHost: h\r\n{AUTH}\r\n"),
        accept("absolute form, upper-case scheme and a port", "GET HTTPS://API.EXAMPLE:8443/v0/vector HTTP/1.1\r\nHost: h\r\n{AUTH}\r\n"),
        accept("leading empty line", "\r\n" + get + "\r\n"),
        accept("query with characters curl sends raw", "GET /v0/vector?a=1|2&b[]=3&c={x}^\"y\" HTTP/1.1\r\nHost: h\r\n{AUTH}\r\n"),
        refuse("absolute form with userinfo", 400, "GET http://u:p@api.example/v0/vector HTTP/1.1\r\nHost: h\r\n{AUTH}\r\n"),
        refuse("absolute form of another scheme", 400, "GET ftp://api.example/v0/vector HTTP/1.1\r\nHost: h\r\n{AUTH}\r\n"),
        refuse("authority form", 400, "GET api.example:443 HTTP/1.1\r\nHost: h\r\n{AUTH}\r\n"),
        refuse("asterisk form on GET", 400, "GET * HTTP/1.1\r\nHost: h\r\n{AUTH}\r\n"),
        refuse("two spaces", 400, "GET  /v0/vector HTTP/1.1\r\nHost: h\r\n{AUTH}\r\n"),
        refuse("tab for space", 400, "GET\t/v0/vector HTTP/1.1\r\nHost: h\r\n{AUTH}\r\n"),
        refuse("space after the version", 400, "GET /v0/vector HTTP/1.1 \r\nHost: h\r\n{AUTH}\r\n"),
        refuse("space before the method", 400, " GET /v0/vector HTTP/1.1\r\nHost: h\r\n{AUTH}\r\n"),
        refuse("no version", 400, "GET /v0/vector\r\nHost: h\r\n{AUTH}\r\n"),
        refuse("lower-case version", 400, "GET /v0/vector http/1.1\r\nHost: h\r\n{AUTH}\r\n"),
        refuse("version that is not digits", 400, "GET /v0/vector HTTP/1.x\r\nHost: h\r\n{AUTH}\r\n"),
        refuse("HTTP/1.2", 505, "GET /v0/vector HTTP/1.2\r\nHost: h\r\n{AUTH}\r\n"),
        refuse("HTTP/2.0", 505, "GET /v0/vector HTTP/2.0\r\nHost: h\r\n{AUTH}\r\n"),
        refuse("method with a separator", 400, "GE/T /v0/vector HTTP/1.1\r\nHost: h\r\n{AUTH}\r\n"),
        refuse("non-ASCII target", 400, "GET /v0/vé HTTP/1.1\r\nHost: h\r\n{AUTH}\r\n"),
        refuse("NUL in the target", 400, "GET /v0/v\u{0}ector HTTP/1.1\r\nHost: h\r\n{AUTH}\r\n"),
    ]

    static let lineEnds: [HTTPVector] = [
        accept("bare LF throughout", "POST /v0/vector HTTP/1.1\nHost: h\n{AUTHLF}Content-Length: 3\n\nabc", body: "abc"),
        refuse("bare LF inside a CRLF head", 400, post + "Dummy: x\nContent-Length: 3\r\n\r\nabc"),
        refuse("CRLF inside a bare-LF head", 400, "POST /v0/vector HTTP/1.1\nHost: h\r\n{AUTHLF}Content-Length: 3\n\nabc"),
        refuse("bare LF ending a CRLF head", 400, get + "X: y\r\n\n"),
        refuse("bare CR inside a field", 400, get + "X: a\rb\r\n\r\n"),
        refuse("CR CR LF", 400, get + "X: a\r\r\n\r\n"),
    ]

    static let fields: [HTTPVector] = [
        accept("UTF-8 in a value", get + "X-Name: café ☃\r\n\r\n"),
        accept("tab inside a value", get + "X-Name: a\tb\r\n\r\n"),
        accept("underscore in an ordinary name", get + "X_Custom: 1\r\n\r\n"),
        refuse("obs-fold", 400, get + "X-A: 1\r\n folded\r\n\r\n"),
        refuse("space before the colon", 400, get + "X-A : 1\r\n\r\n"),
        refuse("empty field name", 400, get + ": 1\r\n\r\n"),
        refuse("no colon", 400, get + "X-A 1\r\n\r\n"),
        refuse("NUL in a value", 400, get + "X-A: a\u{0}b\r\n\r\n"),
        refuse("DEL in a value", 400, get + "X-A: a\u{7F}b\r\n\r\n"),
        refuse("invalid UTF-8 in a value", 400, get + "X-A: caf<FF>\r\n\r\n"),
        refuse("Transfer_Encoding", 400, post + "Content-Length: 3\r\nTransfer_Encoding: chunked\r\n\r\nabc"),
        refuse("Content_Length", 400, post + "Content_Length: 3\r\n\r\nabc"),
        refuse("X_Request_Id", 400, get + "X_Request_Id: chosen\r\n\r\n"),
        refuse("Proxy_Authorization", 400, get + "Proxy_Authorization: x\r\n\r\n"),
        refuse("X_HTTP_Method_Override", 400, get + "X_HTTP_Method_Override: DELETE\r\n\r\n"),
        refuseAfterParsing("X-HTTP-Method-Override on a read", 400, get + "X-HTTP-Method-Override: DELETE\r\n\r\n"),
        refuseAfterParsing("X-Method-Override on a read", 400, get + "X-Method-Override: PUT\r\n\r\n"),
        refuseAfterParsing("_method on a read", 400, "GET /v0/vector?_method=DELETE HTTP/1.1\r\nHost: h\r\n{AUTH}\r\n"),
    ]

    static let host: [HTTPVector] = [
        accept("Host with a port", "GET /v0/vector HTTP/1.1\r\nHost: api.example:8080\r\n{AUTH}\r\n"),
        accept("IPv6 Host", "GET /v0/vector HTTP/1.1\r\nHost: [::1]:8080\r\n{AUTH}\r\n"),
        accept("empty Host", "GET /v0/vector HTTP/1.1\r\nHost:\r\n{AUTH}\r\n"),
        refuse("HTTP/1.1 without Host", 400, "GET /v0/vector HTTP/1.1\r\n{AUTH}\r\n"),
        refuse("two Host fields", 400, get + "Host: other\r\n\r\n"),
        refuse("two equal Host fields", 400, get + "Host: h\r\n\r\n"),
        refuse("Host with a path", 400, "GET /v0/vector HTTP/1.1\r\nHost: h/x\r\n{AUTH}\r\n"),
        refuse("Host with userinfo", 400, "GET /v0/vector HTTP/1.1\r\nHost: u@h\r\n{AUTH}\r\n"),
        refuse("Host with a space", 400, "GET /v0/vector HTTP/1.1\r\nHost: h x\r\n{AUTH}\r\n"),
        refuse("Host with a bad port", 400, "GET /v0/vector HTTP/1.1\r\nHost: h:8x\r\n{AUTH}\r\n"),
        refuse("Host with a port beyond 65535", 400, "GET /v0/vector HTTP/1.1\r\nHost: h:99999\r\n{AUTH}\r\n"),
        refuse("Host with an open IPv6 literal", 400, "GET /v0/vector HTTP/1.1\r\nHost: [::1\r\n{AUTH}\r\n"),
    ]

    static let contentLength: [HTTPVector] = [
        accept("Content-Length", post + "Content-Length: 3\r\n\r\nabc", body: "abc"),
        accept("Content-Length zero", post + "Content-Length: 0\r\n\r\n"),
        accept("Content-Length with leading zeros", post + "Content-Length: 003\r\n\r\nabc", body: "abc"),
        accept("Content-Length with OWS", post + "Content-Length: \t3 \r\n\r\nabc", body: "abc"),
        refuse("two different Content-Length", 400, post + "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
        refuse("two equal Content-Length", 400, post + "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
        refuse("Content-Length list", 400, post + "Content-Length: 3, 3\r\n\r\nabc"),
        refuse("Content-Length with a sign", 400, post + "Content-Length: +3\r\n\r\nabc"),
        refuse("negative Content-Length", 400, post + "Content-Length: -3\r\n\r\nabc"),
        refuse("hex Content-Length", 400, post + "Content-Length: 0x3\r\n\r\nabc"),
        refuse("Content-Length with an inner space", 400, post + "Content-Length: 1 2\r\n\r\nabc"),
        refuse("empty Content-Length", 400, post + "Content-Length:\r\n\r\nabc"),
        refuse("overlong Content-Length", 400, post + "Content-Length: 99999999999999999999\r\n\r\nabc"),
        refuseAfterParsing("Content-Length beyond the body limit", 413, post + "Content-Length: 999999999\r\n\r\nabc"),
        refuseAfterParsing("a body on GET", 400, get + "Content-Length: 3\r\n\r\nabc"),
    ]

    static let transferEncoding: [HTTPVector] = [
        accept("chunked", chunkedPost + "3\r\nabc\r\n0\r\n\r\n", body: "abc"),
        accept("upper-case CHUNKED", post + "Transfer-Encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n", body: "abc"),
        accept("chunked after a tab", post + "Transfer-Encoding:\tchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", body: "abc"),
        refuse("Transfer-Encoding then Content-Length", 400, post + "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"),
        refuse("Content-Length then Transfer-Encoding", 400, post + "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        refuse("gzip, chunked", 501, post + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
        refuse("chunked, chunked", 501, post + "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
        refuse("two chunked fields", 501, post + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        refuse("identity", 501, post + "Transfer-Encoding: identity\r\n\r\n"),
        refuse("xchunked", 501, post + "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
        refuse("quoted chunked", 501, post + "Transfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n"),
        refuse("vertical tab before chunked", 400, post + "Transfer-Encoding:\u{0B}chunked\r\n\r\n0\r\n\r\n"),
        refuse("chunked on HTTP/1.0", 400, "POST /v0/vector HTTP/1.0\r\n{AUTH}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ]

    static let chunks: [HTTPVector] = [
        accept("extension", chunkedPost + "3;name=value\r\nabc\r\n0\r\n\r\n", body: "abc"),
        accept("extension without a value", chunkedPost + "3;flag\r\nabc\r\n0\r\n\r\n", body: "abc"),
        accept("quoted extension with a semicolon", chunkedPost + "3;a=\"b;c\\\"d\"\r\nabc\r\n0\r\n\r\n", body: "abc"),
        accept("BWS around ; and =", chunkedPost + "3 ; a = b\r\nabc\r\n0\r\n\r\n", body: "abc"),
        accept("two chunks", chunkedPost + "3\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n", body: "abc0123456789"),
        accept("leading zeros in a size", chunkedPost + "000000003\r\nabc\r\n0\r\n\r\n", body: "abc"),
        accept("several zeros as the last chunk", chunkedPost + "3\r\nabc\r\n000\r\n\r\n", body: "abc"),
        accept("last chunk with an extension", chunkedPost + "3\r\nabc\r\n0;a=b\r\n\r\n", body: "abc"),
        accept("a trailer field", chunkedPost + "3\r\nabc\r\n0\r\nX-Checksum: 1\r\n\r\n", body: "abc"),
        refuse("2 junk", 400, chunkedPost + "2 junk\r\nab\r\n0\r\n\r\n"),
        refuse("3<TAB>junk", 400, chunkedPost + "3\tjunk\r\nabc\r\n0\r\n\r\n"),
        refuse("size with trailing space", 400, chunkedPost + "a \r\n0123456789\r\n0\r\n\r\n"),
        refuse("empty extension", 400, chunkedPost + "2;\r\nab\r\n0\r\n\r\n"),
        refuse("extension with an empty value", 400, chunkedPost + "2;a=\r\nab\r\n0\r\n\r\n"),
        refuse("unbalanced quote", 400, chunkedPost + "3;a=\"b\r\nabc\r\n0\r\n\r\n"),
        refuse("bare CR in an extension", 400, chunkedPost + "3;a\rb\r\nabc\r\n0\r\n\r\n"),
        refuse("bare LF after a size", 400, chunkedPost + "3\nabc\r\n0\r\n\r\n"),
        refuse("bare LF after data", 400, chunkedPost + "3\r\nabc\n0\r\n\r\n"),
        refuse("data longer than its size", 400, chunkedPost + "3\r\nabcd\r\n0\r\n\r\n"),
        refuse("no size", 400, chunkedPost + "\r\nabc\r\n0\r\n\r\n"),
        refuse("negative size", 400, chunkedPost + "-3\r\nabc\r\n0\r\n\r\n"),
        refuse("0x prefix", 400, chunkedPost + "0x3\r\nabc\r\n0\r\n\r\n"),
        refuse("size beyond the body limit", 413, chunkedPost + "FFFFFFFFFFFFFFFFFF\r\n"),
        refuse("a trailer that is not a field", 400, chunkedPost + "3\r\nabc\r\n0\r\nnot a field\r\n\r\n"),
        refuse("a Content-Length trailer", 400, chunkedPost + "3\r\nabc\r\n0\r\nContent-Length: 3\r\n\r\n"),
        refuse("a Transfer-Encoding trailer", 400, chunkedPost + "3\r\nabc\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        refuse("a folded trailer", 400, chunkedPost + "3\r\nabc\r\n0\r\nX-A: 1\r\n 2\r\n\r\n"),
        refuse("a trailer ended by a bare LF", 400, chunkedPost + "3\r\nabc\r\n0\r\nX-A: 1\n\r\n"),
    ]

    /// Request smuggling mutations (CL.TE, TE.CL, TE.TE and line-end tricks): each hides
    /// `GET /v0/smuggled` where one reader or another would take it for the next request.
    /// All are refused; the request after them on the same connection must never be read.
    static let smuggled = "GET /v0/smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
    static let smuggling: [HTTPVector] = [
        refuse("CL.TE", 400, post + "Content-Length: 43\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled),
        refuse("TE.CL", 400, post + "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n26\r\n" + smuggled + "\r\n0\r\n\r\n"),
        refuse("TE.TE: a second, unknown coding", 501, post + "Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + smuggled),
        refuse("TE.TE: space before the colon", 400, post + "Transfer-Encoding : chunked\r\nContent-Length: 43\r\n\r\n0\r\n\r\n" + smuggled),
        refuse("TE.TE: folded", 400, post + "X: y\r\n Transfer-Encoding: chunked\r\nContent-Length: 43\r\n\r\n0\r\n\r\n" + smuggled),
        refuse("TE.TE: newline before the colon", 400, post + "Transfer-Encoding\r\n: chunked\r\nContent-Length: 43\r\n\r\n0\r\n\r\n" + smuggled),
        refuse("TE.TE: bare LF hides the field", 400, post + "X: y\nTransfer-Encoding: chunked\r\nContent-Length: 43\r\n\r\n0\r\n\r\n" + smuggled),
        refuse("TE.TE: xchunked", 501, post + "Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + smuggled),
        refuse("TE.TE: chunked, identity", 501, post + "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + smuggled),
        refuse("TE.TE: vertical tab", 400, post + "Transfer-Encoding:\u{0B}chunked\r\nContent-Length: 43\r\n\r\n0\r\n\r\n" + smuggled),
        refuse("TE.TE: underscore", 400, post + "Transfer_Encoding: chunked\r\nContent-Length: 43\r\n\r\n0\r\n\r\n" + smuggled),
        refuse("TE on HTTP/1.0", 400, "POST /v0/vector HTTP/1.0\r\n{AUTH}Transfer-Encoding: chunked\r\nContent-Length: 43\r\n\r\n0\r\n\r\n" + smuggled),
        refuse("CL.CL", 400, post + "Content-Length: 0\r\nContent-Length: 38\r\n\r\n" + smuggled),
        refuse("CL list", 400, post + "Content-Length: 0, 38\r\n\r\n" + smuggled),
        refuse("bare LF in the Content-Length line", 400, post + "Content-Length: 38\nX: y\r\n\r\n" + smuggled),
        refuse("chunk size with junk", 400, chunkedPost + "0 junk\r\n\r\n" + smuggled),
        refuse("chunk size ended by a bare LF", 400, chunkedPost + "0\n\r\n" + smuggled),
        refuse("Content-Length trailer", 400, chunkedPost + "0\r\nContent-Length: 38\r\n\r\n" + smuggled),
        refuseAfterParsing("a body on GET", 400, get + "Content-Length: 38\r\n\r\n" + smuggled),
    ]
}
