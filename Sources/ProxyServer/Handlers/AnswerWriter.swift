import EventHTTP
import ResponseCache

/// An answer's own fields, before those every answer carries: as the upstream or the proxy
/// gave them, or prepared once with a cached entry (then nothing is rendered per answer).
enum AnswerFields {
    case headers(HTTPHeaders)
    case prepared(CachedAnswer.PreparedHeaderLines)
}

extension ProxyServer {
    /// The one writer of an answer's head, for every answer the proxy writes whole (the hit
    /// path's, the cache's, the upstream's passed on, the proxy's own errors): the answer's
    /// fields, `Content-Type` when they lack one, the request's extra fields (`Allow`,
    /// `Retry-After`, ...), `Cache-Status` and `Age` on a cached route, then `X-Request-Id`.
    /// A streamed answer's head takes the same rules in `streamedAnswerHeaders`.
    func writeAnswer(_ request: ServerRequest, status: Int, fields: AnswerFields, body: ResponseBody, requestID: String,
                     outcome: CacheOutcome?, age: Int, extra: HTTPHeaders?, close: Bool, headContentLength: HeadContentLength = .ofBody) {
        var lines: [UInt8]
        let addDate: Bool
        var close = close
        switch fields {
        case .prepared(let prepared):
            lines = prepared.lines
            lines.reserveCapacity(lines.count + 128)
            addDate = !prepared.hasDate
        case .headers(let headers):
            // What is made per answer replaces what the fields say of it.
            let wire = headers.wireLines(omitting: outcome == nil ? Self.madePerAnswer : Self.madePerCachedAnswer)
            lines = wire.lines
            addDate = !wire.hasDate
            if headers["Content-Type"] == nil { lines += Self.jsonContentTypeLine }
            if headers.values("Connection").contains(where: { $0.caseInsensitiveEquals("close") }) { close = true }
        }
        if let extra, !extra.fields.isEmpty { lines += extra.wireLines().lines }
        if let outcome {
            lines += Self.cacheStatusLinePrefix
            outcome.appendCacheStatus(to: &lines)
            lines += Self.ageLinePrefix
            lines += String(age).utf8
            lines += Self.lineEnd
        }
        lines += Self.requestIDLinePrefix
        lines += requestID.utf8
        lines += Self.lineEnd
        request.respond(status: status, headerLines: lines, addDate: addDate, body: body, close: close, headContentLength: headContentLength)
    }

    /// A streamed answer's head (a pass-through, or a `cache.routes` answer too large to
    /// cache), by `writeAnswer`'s rules, as fields: the relay writes it when the upstream's head is in.
    func streamedAnswerHeaders(_ upstream: HTTPHeaders, exchange: Exchange) -> HTTPHeaders {
        var headers = upstream
        for field in exchange.extraHeaders { headers.add(field.name, field.value) }
        if let outcome = exchange.finalCacheOutcome {
            headers.set("Cache-Status", outcome.cacheStatus)
            headers.set("Age", "0")
        }
        headers.set("X-Request-Id", exchange.requestID)
        if exchange.closeConnection || isDraining { headers.set("Connection", "close") }
        return headers
    }

    private static let madePerAnswer: Set<String> = ["x-request-id"]
    private static let madePerCachedAnswer: Set<String> = ["x-request-id", "cache-status", "age"]
    private static let jsonContentTypeLine = Array("Content-Type: application/json\r\n".utf8)
    private static let cacheStatusLinePrefix = Array("Cache-Status: ".utf8)
    private static let ageLinePrefix = Array("\r\nAge: ".utf8)
    private static let requestIDLinePrefix = Array("X-Request-Id: ".utf8)
    private static let lineEnd = Array("\r\n".utf8)
}
