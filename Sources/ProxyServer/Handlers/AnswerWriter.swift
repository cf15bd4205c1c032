import EventHTTP
import ResponseCache

/// An answer's own fields, before those every answer carries: as the upstream or the proxy
/// gave them, or prepared once with a cached entry (then nothing is rendered per answer).
enum AnswerFields {
    case headers(HTTPHeaders)
    case prepared(CachedAnswer.PreparedHeaderLines)
}

extension ProxyServer {
    /// Writes an answer whole: its head (`answerHead`, made in a buffer reused from answer to
    /// answer), then its body.
    func writeAnswer(_ request: ServerRequest, status: Int, fields: AnswerFields, body: ResponseBody, requestID: String,
                     outcome: CacheOutcome?, age: Int, extra: HTTPHeaders?, close: Bool, headContentLength: HeadContentLength = .ofBody,
                     representation: Representation? = nil) {
        var lines = hitPath.takeLinesBuffer()
        let made = appendAnswerHead(to: &lines, fields: fields, requestID: requestID, outcome: outcome, age: age, extra: extra, close: close,
                                    representation: representation)
        request.respond(status: status, headerLines: lines, addDate: made.addDate, body: body, close: made.close,
                        headContentLength: headContentLength)
        hitPath.returnLinesBuffer(lines)
    }

    /// The one function that makes an answer's head, for every answer (the hit path's, the
    /// cache's, the upstream's passed on or streamed through, the proxy's own errors): the
    /// answer's fields, `Content-Type` when they lack one (`defaultContentType`: not for a
    /// stream passed through as it is), the request's extra fields (`Allow`, `Retry-After`, ...),
    /// the representation's fields (`Content-Encoding`, `Vary`, `ETag`), `Cache-Status` and
    /// `Age` on a cached route, then `X-Request-Id`.
    func answerHead(fields: AnswerFields, requestID: String, outcome: CacheOutcome?, age: Int, extra: HTTPHeaders?, close: Bool,
                    defaultContentType: Bool = true) -> AnswerHead {
        var lines: [UInt8] = []
        let made = appendAnswerHead(to: &lines, fields: fields, requestID: requestID, outcome: outcome, age: age, extra: extra,
                                    close: close, defaultContentType: defaultContentType)
        return AnswerHead(lines: lines, addDate: made.addDate, close: made.close)
    }

    /// `answerHead`'s lines appended to `lines`; whether `Date` is still to add and whether the
    /// connection closes after the answer.
    private func appendAnswerHead(to lines: inout [UInt8], fields: AnswerFields, requestID: String, outcome: CacheOutcome?, age: Int,
                                  extra: HTTPHeaders?, close: Bool, defaultContentType: Bool = true,
                                  representation: Representation? = nil) -> (addDate: Bool, close: Bool) {
        let addDate: Bool
        var close = close
        switch fields {
        case .prepared(let prepared):
            lines += prepared.lines
            addDate = !prepared.hasDate
        case .headers(let headers):
            // What is made per answer replaces what the fields say of it.
            let wire = headers.wireLines(omitting: outcome == nil ? Self.madePerAnswer : Self.madePerCachedAnswer)
            lines += wire.lines
            addDate = !wire.hasDate
            if defaultContentType, headers["Content-Type"] == nil { lines += Self.jsonContentTypeLine }
            if headers.values("Connection").contains(where: { $0.caseInsensitiveEquals("close") }) { close = true }
        }
        if let extra, !extra.fields.isEmpty { lines += extra.wireLines().lines }
        if let representation {
            if representation.isGzip { lines += Self.gzipEncodingLine }
            if representation.varies { lines += Self.varyLine }
            lines += Self.entityTagLinePrefix
            representation.entityTag.append(to: &lines)
            lines += Self.lineEnd
        }
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
        return (addDate, close)
    }

    private static let madePerAnswer: Set<String> = ["x-request-id"]
    private static let madePerCachedAnswer: Set<String> = ["x-request-id", "cache-status", "age", "etag"]
    private static let jsonContentTypeLine = Array("Content-Type: application/json\r\n".utf8)
    private static let entityTagLinePrefix = Array("ETag: ".utf8)
    private static let gzipEncodingLine = Array("Content-Encoding: gzip\r\n".utf8)
    private static let varyLine = Array("Vary: Accept-Encoding\r\n".utf8)
    private static let cacheStatusLinePrefix = Array("Cache-Status: ".utf8)
    private static let ageLinePrefix = Array("\r\nAge: ".utf8)
    private static let requestIDLinePrefix = Array("X-Request-Id: ".utf8)
    private static let lineEnd = Array("\r\n".utf8)
}

/// What an answer from the cache says of its body's form: its `ETag`, whether it is the gzip
/// form, and whether the form depends on `Accept-Encoding`.
struct Representation {
    let entityTag: EntityTag
    let isGzip: Bool
    let varies: Bool

    init(_ served: CachedAnswer.ServedBody) {
        entityTag = served.entityTag
        isGzip = served.isGzip
        varies = served.varies
    }
}
