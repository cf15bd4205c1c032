import EventHTTP
import Logging
import JobCache
import ResponseCache

/// The answer phase shared by every request: the answer itself (`writeAnswer`), then the one
/// recording step (`record`).
extension ProxyServer {
    /// Answers with fields and a body of the proxy's or the upstream's, and records the answer.
    func finish(_ exchange: inout Exchange, status: Int, headers: HTTPHeaders = HTTPHeaders(), body: [UInt8],
                headContentLength: HeadContentLength = .ofBody) {
        finish(&exchange, status: status, fields: .headers(headers), body: .bytes(body), age: 0, headContentLength: headContentLength)
    }

    /// Answers with a cached entry: its prepared fields, its body for `filters` by reference (in
    /// gzip form when accepted) and its `ETag`; `304 Not Modified` (no body) when the request's
    /// `If-None-Match` names those bytes, or held until they change (`Prefer: wait`).
    func finish(_ exchange: inout Exchange, cached answer: CachedAnswer, age: Int, key: CacheKey, filters: JobListFilters) {
        let headers = exchange.request.headers
        var encodings = AcceptEncoding()
        for field in headers where field.name.caseInsensitiveEquals("accept-encoding") { encodings.read(field.value) }
        let served = cache.served(answer, key: key, filters: filters, gzip: encodings.acceptsGzip)
        let notModified = Self.isNotModified(headers, entityTag: served.entityTag)
        if notModified, holdsUntilChanged(exchange, key: key, filters: filters, gzip: encodings.acceptsGzip, entityTag: served.entityTag,
                                         varies: served.varies) {
            return
        }
        finish(&exchange, status: notModified ? 304 : 200, fields: .prepared(answer.preparedHeaderLines),
               body: notModified ? .bytes([]) : .shared(served.bytes), age: age, headContentLength: .ofBody,
               representation: Representation(served))
    }

    /// Whether any `If-None-Match` field names `entityTag` (RFC 9110 13.1.2). `If-Modified-Since`
    /// is not read: the proxy makes no `Last-Modified`, and If-None-Match takes precedence.
    static func isNotModified(_ headers: HTTPHeaders, entityTag: EntityTag) -> Bool {
        headers.fields.contains { $0.name.caseInsensitiveEquals("if-none-match") && entityTag.isMatched(byIfNoneMatch: $0.value) }
    }

    private func finish(_ exchange: inout Exchange, status: Int, fields: AnswerFields, body: ResponseBody, age: Int,
                        headContentLength: HeadContentLength, representation: Representation? = nil) {
        let outcome = exchange.finalCacheOutcome
        writeAnswer(exchange.request, status: status, fields: fields, body: body, requestID: exchange.requestID, outcome: outcome, age: age,
                    extra: exchange.extraHeaders, close: exchange.closeConnection, headContentLength: headContentLength,
                    representation: representation)
        record(exchange.answerRecord(status: status))
    }

    static func milliseconds(_ duration: Duration) -> Int {
        Int((Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15).rounded())
    }

    /// The client's `X-Request-Id` when it is a sane token (at most 128 characters of
    /// letters, digits, `-`, `_`, `.`, `:`), else a new one: it goes upstream and back.
    func requestID(from header: String?) -> String {
        if let header, !header.isEmpty, header.utf8.count <= 128, header.utf8.allSatisfy(Self.isRequestIDByte) {
            return header
        }
        return hitPath.requestIDs.next()
    }

    private static func isRequestIDByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
             UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: ":"): true
        default: false
        }
    }

    func finish(_ exchange: inout Exchange, error: ProxyError) {
        finish(&exchange, status: error.status, body: error.body)
    }

    /// An upstream failure as the proxy's own error; a 429 carries its Retry-After.
    func finish(_ exchange: inout Exchange, failure: FetchFailure) {
        if let retryAfter = failure.retryAfter {
            exchange.extraHeaders.set("Retry-After", String(max(1, Int(retryAfter.rounded(.up)))))
        }
        finish(&exchange, error: ProxyError(status: failure.status, code: failure.code, message: failure.message))
    }
}
