import EventHTTP
import Logging
import JobCache
import ResponseCache

/// The answer phase shared by every request: the answer itself (`writeAnswer`), then its
/// metrics and access line (`recordAnswer`, which the hit path calls too).
extension ProxyServer {
    /// Answers with fields and a body of the proxy's or the upstream's, and records the answer.
    func finish(_ exchange: inout Exchange, status: Int, headers: HTTPHeaders = HTTPHeaders(), body: [UInt8],
                headContentLength: HeadContentLength = .ofBody) {
        finish(&exchange, status: status, fields: .headers(headers), body: .bytes(body), age: 0, headContentLength: headContentLength)
    }

    /// Answers with a cached entry: its prepared fields, and its body for `filters` by reference.
    func finish(_ exchange: inout Exchange, cached answer: CachedAnswer, age: Int, filters: JobListFilters) {
        finish(&exchange, status: 200, fields: .prepared(answer.preparedHeaderLines), body: .shared(answer.sharedBody(for: filters)),
               age: age, headContentLength: .ofBody)
    }

    private func finish(_ exchange: inout Exchange, status: Int, fields: AnswerFields, body: ResponseBody, age: Int,
                        headContentLength: HeadContentLength) {
        let outcome = exchange.finalCacheOutcome
        writeAnswer(exchange.request, status: status, fields: fields, body: body, requestID: exchange.requestID, outcome: outcome, age: age,
                    extra: exchange.extraHeaders, close: exchange.closeConnection, headContentLength: headContentLength)
        recordAnswer(method: exchange.knownMethodName, route: exchange.route.template, status: status, client: exchange.caller.logName,
                     peer: exchange.request.peer, requestID: exchange.requestID, cache: outcome?.label ?? "none",
                     elapsed: ContinuousClock.now - exchange.started, upstreamDuration: exchange.upstreamDuration,
                     upstreamStatus: exchange.upstreamStatus,
                     // A refused request (401, 403) writes nothing the operator reads.
                     workflow: status == 401 || status == 403 ? nil : exchange.route.workflow)
    }

    /// `CacheOutcome` labels of answers that looked in the cache (the hit ratio's base, as
    /// `hit_ratio` counts hits and misses).
    static let lookupLabels: Set<String> = ["hit", "miss", "stale", "request", "revalidated"]

    /// The last phase of every request, the hit path's too: its metrics and its access line.
    func recordAnswer(method: String, route: String, status: Int, client: String, peer: String, requestID: String, cache: String,
                      elapsed: Duration, upstreamDuration: Duration?, upstreamStatus: Int?, hitRecorder: ProxyMetrics.HitRecorder? = nil,
                      workflow: String? = nil) {
        operatorStats.answered(at: Int(budgetClock()), hit: cache == "hit", lookup: Self.lookupLabels.contains(cache), client: client,
                               workflow: workflow)
        if let hitRecorder {
            hitRecorder.record(elapsed)
        } else {
            metrics.requestFinished(route: route, status: status, cache: cache, duration: elapsed)
        }
        logAccess(method: method, route: route, status: status, client: client, peer: peer, requestID: requestID, cache: cache,
                  elapsed: elapsed, upstreamDuration: upstreamDuration, upstreamStatus: upstreamStatus)
    }

    /// The access line: names and templates only, never a token, key or id.
    private func logAccess(method: String, route: String, status: Int, client: String, peer: String, requestID: String, cache: String,
                   elapsed: Duration, upstreamDuration: Duration?, upstreamStatus: Int?) {
        guard logger.logLevel <= .info else { return }
        let message = "\(method) \(route) \(status)"
        let fields: [(key: String, value: String)] = [
            ("cache", cache),
            ("client", client),
            ("duration_ms", String(Self.milliseconds(elapsed))),
            ("peer", peer),
            ("request_id", requestID),
            ("upstream_ms", upstreamDuration.map { String(Self.milliseconds($0)) } ?? "-"),
            ("upstream_status", upstreamStatus.map(String.init) ?? "-"),
        ]
        if let accessLogOutput {
            // Keys in order, as the handler sorts them; no log event or metadata dictionary.
            return accessLogOutput.append(level: .info, label: logger.label, fields: fields, source: "ProxyServer", message: message)
        }
        logger.info("\(message)", metadata: Dictionary(uniqueKeysWithValues: fields.map { ($0.key, .string($0.value)) }))
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
