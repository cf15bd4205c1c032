import EventHTTP
import Foundation
import JobCache
import Logging
import ProxyConfig
import Upstream

extension ProxyServer {
    /// Entry point for every request, on the loop thread.
    func handle(_ request: ServerRequest) {
        if serveFreshHit(request) { return }
        let started = ContinuousClock.now
        var exchange = Exchange(request: request, started: started, requestID: requestID(from: request.headers["X-Request-Id"]))
        if isDraining { exchange.closeConnection = true }

        guard request.knownMethod != nil else {
            exchange.extraHeaders.add("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
            return finish(&exchange, error: ProxyError(status: 405, code: "method_not_allowed", message: "unknown method"))
        }
        // A body on a read has no meaning (RFC 9110, 9.3.1-2) and is where smuggled requests
        // hide: refused before anything else, whatever the token.
        if request.method.isIdempotentRead, !request.body.isEmpty {
            return finish(&exchange, error: .badRequest("a \(request.method.rawValue) request may not carry a body"))
        }
        let target: RequestTarget
        switch RequestTarget.parse(request.uri) {
        case .success(let parsed): target = parsed
        case .failure(let invalid): return finish(&exchange, error: .badRequest(invalid.description))
        }
        exchange.route = Router.route(method: request.method, target: target)
        if request.method.isIdempotentRead, let problem = Self.methodOverrideProblem(request.headers, rawQuery: target.rawQuery) {
            return finish(&exchange, error: .badRequest(problem))
        }

        switch exchange.route {
        case .health:
            return finish(&exchange, status: 200, body: Array(#"{"status":"ok"}"#.utf8))
        case .ready:
            if isReady, cache.disk?.isHealthy ?? true {
                return finish(&exchange, status: 200, body: Array(#"{"status":"ready"}"#.utf8))
            }
            return finish(&exchange, error: ProxyError(status: 503, code: "not_ready", message: isDraining ? "draining" : "the cache store is not usable"))
        case .notFound:
            return finish(&exchange, error: .notFound)
        case .methodNotAllowed(let allowed):
            exchange.extraHeaders.add("Allow", allowed.map(\.rawValue).joined(separator: ", "))
            return finish(&exchange, error: ProxyError(status: 405, code: "method_not_allowed", message: "\(request.method.rawValue) is not allowed here"))
        default:
            break
        }

        // metrics.access: "auto" (open on a loopback listener, admin scope on any other), "open", "admin".
        if exchange.route == .metrics && (settings.metricsAccess == "open"
                                           || (settings.metricsAccess == "auto" && SettingsParser.isLoopback(settings.listenHost))) {
            return finish(&exchange, status: 200, headers: Self.metricsHeaders, body: renderMetrics())
        }
        let authorization = request.headers["Authorization"]
        exchange.caller = authenticator.authenticate(authorization: authorization)
        if let authorization { hitPath.remember(exchange.caller, for: authorization) }
        if exchange.caller == .rejected {
            exchange.extraHeaders.add("WWW-Authenticate", #"Bearer realm="pixxel-proxy""#)
            return finish(&exchange, error: .unauthorized)
        }
        let needed: Scopes
        switch exchange.route {
        case .adminPurge, .adminStats, .metrics: needed = .admin
        default: needed = request.method.isIdempotentRead ? .read : .write
        }
        guard exchange.caller.scopes.contains(needed) else {
            return finish(&exchange, error: .forbidden(needed.description))
        }

        var headers = request.headers
        headers.set("X-Request-Id", exchange.requestID)
        switch exchange.route {
        case .listJobs(let workflowID):
            switch JobListQuery.parse(target.rawQuery) {
            case .failure(let invalid):
                return finish(&exchange, error: .badRequest("invalid job list filter \(invalid)"))
            case .success(.filtered(let filters)):
                let resource = CachedResource.list(workflowID: workflowID)
                rememberCachedTarget(request.uri, resource: resource, filters: filters, route: exchange.route)
                return serveCached(exchange, resource: resource, filters: filters, clientHeaders: headers)
            case .success(.passThrough):
                // Other parameters: forwarded as they are, never cached; HEAD answered from a GET.
                exchange.cacheStatus = "pixxel-proxy; fwd=uri-miss"
                headers.remove("Accept-Encoding")
            }
        case .getJob(let workflowID, let jobID):
            let resource = CachedResource.job(workflowID: workflowID, jobID: jobID)
            rememberCachedTarget(request.uri, resource: resource, filters: JobListFilters(), route: exchange.route)
            return serveCached(exchange, resource: resource, filters: JobListFilters(), clientHeaders: headers)
        case .adminPurge:
            return purge(exchange, rawQuery: target.rawQuery)
        case .adminStats:
            return reportStatistics(exchange)
        case .metrics:
            return finish(&exchange, status: 200, headers: Self.metricsHeaders, body: renderMetrics())
        case .createJob:
            if let problem = Self.projectIDProblem(target.rawQuery) {
                return finish(&exchange, error: .badRequest(problem))
            }
        default:
            break
        }

        exchange.forwarded = true
        let exchangeBox = ExchangeBox(exchange)
        let upstreamStarted = ContinuousClock.now
        let upstreamMethod: HTTPMethod = exchange.route.isCachedRoute ? .get : request.method
        callUpstream(route: exchange.route.template, method: upstreamMethod, path: target.encodedPath, rawQuery: target.rawQuery,
                     clientHeaders: headers, body: request.body, client: exchange.caller.logName) { [self] result in
            exchangeBox.exchange.upstreamDuration = ContinuousClock.now - upstreamStarted
            guard case .createJob(let workflowID) = exchangeBox.exchange.route else {
                return answerForwarded(result, exchangeBox)
            }
            if case .success(let response) = result, (200..<300).contains(response.status), Self.isJSONObject(response.body) {
                writeThrough(workflowID: workflowID, response: response)
            }
            // The audit entry is durable before the client hears back: a crash cannot lose the
            // record of a job that was created.
            let entry = auditEntry(for: result, exchange: exchangeBox.exchange, workflowID: workflowID, rawQuery: target.rawQuery)
            audit.record(entry) { [self] error in
                loop.execute { [self] in
                    if let error { logger.error("audit entry not recorded", metadata: ["request_id": "\(entry.requestID)", "error": "\(error)"]) }
                    answerForwarded(result, exchangeBox)
                }
            }
        }
    }

    /// Admission of a request that has a body, on its head alone, before the body is read: a
    /// read with a body, a caller without a valid token, or one that may not write is refused
    /// at once (and the connection closed), so no unauthenticated body is ever buffered.
    func admit(_ head: RequestParser.Head) -> HeadRefusal? {
        func refusal(_ error: ProxyError, _ extra: [(name: String, value: String)] = []) -> HeadRefusal {
            HeadRefusal(status: error.status, headers: HTTPHeaders([("Content-Type", "application/json")] + extra), body: error.body)
        }
        if head.knownMethod?.isIdempotentRead == true {
            return refusal(.badRequest("a \(head.methodName) request may not carry a body"))
        }
        let caller = authenticator.authenticate(authorization: head.headers["Authorization"])
        if caller == .rejected { return refusal(.unauthorized, [("WWW-Authenticate", #"Bearer realm="pixxel-proxy""#)]) }
        if caller.scopes.isDisjoint(with: [.write, .admin]) { return refusal(.forbidden(Scopes.write.description)) }
        return nil
    }

    /// Why a read must not go upstream as it is, or nil: a field or parameter that asks the
    /// upstream (or a framework in front of it) to treat the request as another method.
    static func methodOverrideProblem(_ headers: HTTPHeaders, rawQuery: String?) -> String? {
        for field in headers where methodOverrideFields.contains(normalizedFieldName(field.name)) {
            return "\(field.name) is not allowed on a read"
        }
        if QueryDecoding.pairs(rawQuery)?.contains(where: { $0.name.lowercased() == "_method" }) == true {
            return "_method is not allowed on a read"
        }
        return nil
    }

    static let methodOverrideFields: Set<String> = ["x-http-method-override", "x-http-method", "x-method-override"]

    /// A field name lowercased with `_` read as `-`, as some servers read it.
    static func normalizedFieldName(_ name: String) -> String {
        String(name.lowercased().map { $0 == "_" ? "-" : $0 })
    }

    private func answerForwarded(_ result: Result<ClientResponse, UpstreamFailure>, _ exchangeBox: ExchangeBox) {
        var exchange = exchangeBox.exchange
        switch result {
        case .success(let response):
            exchange.upstreamStatus = response.status
            if exchange.route.isJobRoute, (200..<300).contains(response.status), !Self.isJSONObject(response.body) {
                return finish(&exchange, error: ProxyError(status: 502, code: "bad_gateway", message: "the upstream answered something that is not a JSON object"))
            }
            // A HEAD answer tells the length the GET would have had, or none when the
            // upstream did not say (a chunked answer).
            let headLength: HeadContentLength = exchange.request.method == .head
                ? response.declaredContentLength.map(HeadContentLength.declared) ?? .unknown : .ofBody
            finish(&exchange, status: response.status, headers: response.headers, body: response.body, headContentLength: headLength)
        case .failure(let failure):
            finish(&exchange, failure: failure)
        }
    }

    private func auditEntry(for result: Result<ClientResponse, UpstreamFailure>, exchange: Exchange, workflowID: String,
                            rawQuery: String?) -> AuditEntry {
        let project = QueryDecoding.values(of: "project_id", in: rawQuery).first ?? ""
        var status = 0
        var jobID: String?
        switch result {
        case .success(let response):
            status = response.status
            if (200..<300).contains(response.status) { jobID = JobDetailDocument(body: response.body)?.job.id }
        case .failure(let failure):
            status = failure.status
        }
        return AuditEntry(time: clock(), client: exchange.caller.logName, workflowID: workflowID, projectID: project,
                          jobID: jobID, upstreamStatus: status, requestID: exchange.requestID)
    }

    /// Answers and writes the access line.
    func finish(_ exchange: inout Exchange, status: Int, headers: HTTPHeaders = HTTPHeaders(), body: [UInt8], age: Int = 0,
                headContentLength: HeadContentLength = .ofBody) {
        var headers = headers
        if headers["Content-Type"] == nil { headers.add("Content-Type", "application/json") }
        for field in exchange.extraHeaders { headers.add(field.name, field.value) }
        if exchange.route.isCachedRoute {
            var cacheStatus = exchange.cacheStatus ?? "pixxel-proxy; fwd=\(exchange.forwarded ? "miss" : "bypass")"
            if exchange.cacheStatus == nil, let upstreamStatus = exchange.upstreamStatus { cacheStatus += "; fwd-status=\(upstreamStatus)" }
            headers.set("Cache-Status", cacheStatus)
            headers.set("Age", String(age))
        }
        if exchange.closeConnection { headers.set("Connection", "close") }
        headers.set("X-Request-Id", exchange.requestID)
        exchange.request.respond(status: status, headers: headers, body: body, headContentLength: headContentLength)
        let elapsed = ContinuousClock.now - exchange.started
        let outcome = exchange.cacheOutcome
        metrics.requestFinished(route: exchange.route.template, status: status, cache: outcome, duration: elapsed)
        logAccess(method: exchange.knownMethodName, route: exchange.route.template, status: status, client: exchange.caller.logName,
                  peer: exchange.request.peer, requestID: exchange.requestID, cache: outcome, elapsed: elapsed,
                  upstreamDuration: exchange.upstreamDuration, upstreamStatus: exchange.upstreamStatus)
    }

    /// The access line: names and templates only, never a token, key or id.
    func logAccess(method: String, route: String, status: Int, client: String, peer: String, requestID: String, cache: String,
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

    /// Lets the hit path find this target's resource without parsing it again.
    private func rememberCachedTarget(_ uri: String, resource: CachedResource, filters: JobListFilters, route: Route) {
        guard hitPath.targets[uri] == nil else { return }
        hitPath.remember(CachedTarget(resource: resource, key: resource.key, filters: filters, routeTemplate: route.template,
                                      metrics: metrics.hitRecorder(route: route.template)), for: uri)
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
    func finish(_ exchange: inout Exchange, failure: UpstreamFailure) {
        if let retryAfter = failure.retryAfter {
            exchange.extraHeaders.set("Retry-After", String(max(1, Int(retryAfter.rounded(.up)))))
        }
        finish(&exchange, error: ProxyError(status: failure.status, code: failure.code, message: failure.message))
    }

    /// Every upstream call goes through here: the budget first (which may queue or refuse it
    /// with 429), then the call, counted once by route and outcome. An upstream 429 or 503 with
    /// `Retry-After` pauses the budget. A GET or HEAD whose connection broke before an answer is
    /// tried once more, after a little jitter (POSTs never are).
    func callUpstream(route: String, method: HTTPMethod, path: String, rawQuery: String?, clientHeaders: HTTPHeaders, body: [UInt8],
                      client: String, priority: UpstreamBudget.Priority = .interactive, retried: Bool = false,
                      completion: @escaping (Result<ClientResponse, UpstreamFailure>) -> Void) {
        let deadline = clock() + settings.upstreamTimeoutSeconds
        budget.acquire(client: client, priority: priority, deadline: deadline, grant: { [self] in
            let started = ContinuousClock.now
            upstream.send(method: method, path: path, rawQuery: rawQuery, clientHeaders: clientHeaders, body: body) { [self] result in
                let duration = ContinuousClock.now - started
                switch result {
                case .success(let response):
                    metrics.upstreamRequest(route: route, outcome: String(response.status), duration: duration)
                    if response.status == 429 || response.status == 503, let value = response.headers["Retry-After"],
                       let seconds = RetryAfter.seconds(value, now: clock(), cap: settings.upstreamMaxRetryAfterSeconds) {
                        budget.pause(until: clock() + seconds)
                        logger.warning("upstream asked to wait", metadata: ["status": "\(response.status)", "seconds": "\(seconds)"])
                    }
                case .failure(let failure):
                    metrics.upstreamRequest(route: route, outcome: failure.code, duration: duration)
                    if failure.retryable, !retried, method.isIdempotentRead {
                        loop.schedule(after: Double.random(in: 0.01...0.05)) { [self] in
                            callUpstream(route: route, method: method, path: path, rawQuery: rawQuery, clientHeaders: clientHeaders,
                                         body: body, client: client, priority: priority, retried: true, completion: completion)
                        }
                        return
                    }
                }
                completion(result)
            }
        }, refuse: { [self] retryAfter in
            metrics.upstreamRequest(route: route, outcome: "budget_refused")
            completion(.failure(UpstreamFailure(status: 429, code: "rate_limited",
                                                message: "the upstream budget is spent; retry later", retryAfter: retryAfter)))
        })
    }

    static let metricsHeaders = HTTPHeaders([("Content-Type", "text/plain; version=0.0.4; charset=utf-8")])

    func renderMetrics() -> [UInt8] {
        metrics.render(
            counts: [
                ("pixxel_proxy_cache_hits_total", cache.hits), ("pixxel_proxy_cache_misses_total", cache.misses),
                ("pixxel_proxy_cache_disk_hits_total", cache.diskHits), ("pixxel_proxy_cache_evictions_total", cache.memory.evictions),
                ("pixxel_proxy_cache_collapsed_total", cache.flights.collapsed),
                ("pixxel_proxy_invalidation_renewals_total", cache.renewals),
                ("pixxel_proxy_invalidation_invalidations_total", cache.invalidations),
                ("pixxel_proxy_invalidation_rejected_out_of_order_total", cache.rejectedOutOfOrder),
                ("pixxel_proxy_invalidation_list_entry_updates_total", cache.listEntryUpdates),
                ("pixxel_proxy_cache_write_throughs_total", cache.writeThroughs),
                ("pixxel_proxy_cache_stale_served_total", cache.staleServed),
                ("pixxel_proxy_cache_background_refreshes_total", cache.backgroundRefreshes),
                ("pixxel_proxy_upstream_retry_after_pauses_total", budget.pauses),
                ("pixxel_proxy_upstream_budget_refused_total", budget.refused),
                ("pixxel_proxy_cache_disk_dropped_writes_total", cache.disk?.droppedWrites ?? 0),
            ],
            gaugeValues: [
                ("pixxel_proxy_cache_entries", [("tier", "memory")], Double(cache.memory.count)),
                ("pixxel_proxy_cache_bytes", [("tier", "memory")], Double(cache.memory.totalBytes)),
                ("pixxel_proxy_upstream_connections_open", [], Double(upstream.openConnections)),
                ("pixxel_proxy_upstream_budget_tokens", [], budget.tokens),
                ("pixxel_proxy_upstream_budget_queue_length", [], Double(budget.queued)),
                ("pixxel_proxy_upstream_retry_after_remaining_seconds", [], budget.pauseRemaining()),
                ("pixxel_proxy_cache_bytes", [("tier", "disk")], Double(cache.disk?.knownBytes ?? 0)),
                ("pixxel_proxy_cache_entries", [("tier", "disk")], Double(cache.disk?.knownEntries ?? 0)),
                ("pixxel_proxy_requests_in_flight", [], Double(httpServer?.inFlight ?? 0)),
            ])
    }

    /// Why a job-creation query is refused, or nil when it has exactly one non-empty `project_id`.
    static func projectIDProblem(_ rawQuery: String?) -> String? {
        let values = QueryDecoding.values(of: "project_id", in: rawQuery)
        if values.isEmpty { return "project_id is required to create a job" }
        if values.count > 1 { return "project_id is given more than once" }
        if values[0].isEmpty { return "project_id is empty" }
        return nil
    }

    static func isJSONObject(_ body: [UInt8]) -> Bool {
        guard body.first(where: { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }) == UInt8(ascii: "{") else { return false }
        return (try? JSONSerialization.jsonObject(with: Data(body))) is [String: Any]
    }
}

/// The state of one request while it is handled.
struct Exchange {
    let request: ServerRequest
    let started: ContinuousClock.Instant

    init(request: ServerRequest, started: ContinuousClock.Instant, requestID: String) {
        self.request = request
        self.started = started
        self.requestID = requestID
    }

    var knownMethodName: String { request.knownMethod?.rawValue ?? "UNKNOWN" }
    var route: Route = .notFound
    var caller: Caller = .rejected
    var forwarded = false
    /// Waited on another request's upstream fetch.
    var collapsed = false
    var upstreamStatus: Int?
    /// Time spent on the upstream call this answer came from.
    var upstreamDuration: Duration?
    let requestID: String
    /// The Cache-Status value, when the cache decided it.
    var cacheStatus: String?

    /// A bounded label for metrics: hit, miss, stale, request, uri-miss, bypass or none.
    var cacheOutcome: String {
        guard route.isCachedRoute else { return "none" }
        guard let cacheStatus else { return "bypass" }
        if cacheStatus.contains("; hit") { return "hit" }
        for outcome in ["miss", "stale", "request", "uri-miss"] where cacheStatus.contains("fwd=\(outcome)") { return outcome }
        return "bypass"
    }
    var extraHeaders = HTTPHeaders()
    var closeConnection = false
}

/// Carries an `Exchange` into a completion. It may travel through another thread (a disk
/// queue) but is only ever read or written on the loop thread, hence the unchecked Sendable.
final class ExchangeBox: @unchecked Sendable {
    var exchange: Exchange
    init(_ exchange: Exchange) { self.exchange = exchange }
}
