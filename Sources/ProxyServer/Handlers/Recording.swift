import EventHTTP
import Logging
import ResponseCache

/// What the recording step is told of one answered request.
struct AnswerRecord {
    let method: String
    let route: String
    let status: Int
    let client: String
    let peer: String
    let requestID: String
    /// The `CacheOutcome` label, or "none" off the cached routes.
    let cache: String
    let elapsed: Duration
    let upstreamDuration: Duration?
    let upstreamStatus: Int?
    /// The workflow the request named, for the operator's busiest workflows (nil: none, or a
    /// refused request, which writes nothing the operator reads).
    let workflow: String?
    /// Of `elapsed`, the time the client chose to wait (held by `Prefer: wait`, a change stream's
    /// life): in the access line, left out of the request-duration histogram, whose p99 a
    /// minute-long wait would otherwise make meaningless.
    var unmeasured: Duration = .zero
}

extension Exchange {
    /// This request's record once answered with `status`.
    func answerRecord(status: Int) -> AnswerRecord {
        let now = ContinuousClock.now
        return AnswerRecord(method: knownMethodName, route: route.template, status: status, client: caller.logName, peer: request.peer,
                            requestID: requestID, cache: finalCacheOutcome?.label ?? "none", elapsed: now - started,
                            upstreamDuration: upstreamDuration, upstreamStatus: upstreamStatus,
                            workflow: status == 401 || status == 403 ? nil : route.workflow,
                            unmeasured: waitingSince.map { now - $0 } ?? .zero)
    }
}

extension ProxyServer {
    /// `CacheOutcome` labels of answers that looked in the cache (the hit ratio's base, as
    /// `hit_ratio` counts hits and misses).
    static let lookupLabels: Set<String> = ["hit", "miss", "stale", "request", "revalidated"]

    /// The one recording step, once per request, after its answer is written (whole, streamed,
    /// or refused on its head): the operator's figures, the metrics and the access line.
    /// `hitRecorder`: the hit path's own histogram handle (no label lookup per hit).
    func record(_ answer: AnswerRecord, hitRecorder: ProxyMetrics.HitRecorder? = nil) {
        operatorStats.answered(at: Int(budgetClock()), hit: answer.cache == "hit", lookup: Self.lookupLabels.contains(answer.cache),
                               client: answer.client, workflow: answer.workflow)
        if let hitRecorder {
            hitRecorder.record(answer.elapsed)
        } else {
            metrics.requestFinished(route: answer.route, status: answer.status, cache: answer.cache, duration: answer.elapsed - answer.unmeasured)
        }
        logAccess(answer)
    }

    /// Answers a request whose client has left or finished sending (a gone client is written
    /// nothing; the server still counts the request answered) and records it as `recorded`
    /// (nginx's 499, "client closed request", unless told otherwise).
    func answerDeparted(_ exchange: Exchange, status: Int, headers: HTTPHeaders = HTTPHeaders(), recordedAs recorded: Int = 499) {
        exchange.request.respond(status: status, headers: headers, body: [])
        record(exchange.answerRecord(status: recorded))
    }

    /// The access line: names and templates only, never a token, key or id.
    private func logAccess(_ answer: AnswerRecord) {
        guard logger.logLevel <= .info else { return }
        let upstreamMilliseconds = answer.upstreamDuration.map { Self.milliseconds($0) }
        if let accessLogOutput {
            // Keys in order, as the handler sorts them; written straight into the batch.
            return accessLogOutput.appendLine(level: .info, label: logger.label) { line in
                Self.field(&line, "cache", answer.cache)
                Self.field(&line, "client", answer.client)
                Self.field(&line, "duration_ms", String(Self.milliseconds(answer.elapsed)))
                Self.field(&line, "peer", answer.peer)
                Self.field(&line, "request_id", answer.requestID)
                Self.field(&line, "upstream_ms", upstreamMilliseconds.map { String($0) } ?? "-")
                Self.field(&line, "upstream_status", answer.upstreamStatus.map(String.init) ?? "-")
                line += " [ProxyServer] ".utf8
                line += answer.method.utf8
                line.append(UInt8(ascii: " "))
                line += answer.route.utf8
                line.append(UInt8(ascii: " "))
                line += String(answer.status).utf8
            }
        }
        logger.info("\(answer.method) \(answer.route) \(answer.status)", metadata: [
            "cache": .string(answer.cache),
            "client": .string(answer.client),
            "duration_ms": .string(String(Self.milliseconds(answer.elapsed))),
            "peer": .string(answer.peer),
            "request_id": .string(answer.requestID),
            "upstream_ms": .string(upstreamMilliseconds.map { String($0) } ?? "-"),
            "upstream_status": .string(answer.upstreamStatus.map(String.init) ?? "-"),
        ])
    }

    private static func field(_ line: inout [UInt8], _ key: StaticString, _ value: String) {
        line.append(UInt8(ascii: " "))
        key.withUTF8Buffer { line += $0 }
        line.append(UInt8(ascii: "="))
        line += value.utf8
    }
}
