import EventHTTP
import JobCache
import ProxyConfig
import ResponseCache

/// A request's way through the proxy, in named phases (as nginx's phases or a middleware
/// chain): the hit path's shortcut, then identify (request id), route (method, body, target,
/// route; answers that need no token), authorize (token and scope), respond (cache, admin or
/// upstream), and the answer phase shared with the hit path (`writeAnswer`, then `record`).
extension ProxyServer {
    /// Entry point for every request, on the loop thread.
    func handle(_ request: ServerRequest) {
        loop.assertOnLoop()
        if serveFreshHit(request) { return }
        var exchange = identify(request)
        guard let target = route(&exchange) else { return }
        exchange.target = target
        guard authorize(&exchange) else { return }
        respond(exchange, target: target)
    }

    /// Phase 1: the request id (the client's when sane, else a new one) and whether the
    /// connection must close after the answer (draining).
    private func identify(_ request: ServerRequest) -> Exchange {
        // A request with a body got its id at its admission.
        let requestID = (request.admission as? AdmittedHead)?.requestID ?? requestID(from: request.headers["X-Request-Id"])
        var exchange = Exchange(request: request, started: .now, requestID: requestID)
        if isDraining { exchange.closeConnection = true }
        return exchange
    }

    /// Phase 2: method, body and target checks, then the route. Answers (and returns nil for)
    /// what is refused here and the routes that need no token.
    private func route(_ exchange: inout Exchange) -> RequestTarget? {
        let request = exchange.request
        guard request.knownMethod != nil else {
            exchange.extraHeaders.add("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
            finish(&exchange, error: ProxyError(status: 405, code: "method_not_allowed", message: "unknown method"))
            return nil
        }
        // A body on a read has no meaning (RFC 9110, 9.3.1-2) and is where smuggled requests
        // hide: refused before anything else, whatever the token.
        if request.method.isIdempotentRead, !request.body.isEmpty {
            finish(&exchange, error: .badRequest("a \(request.method.rawValue) request may not carry a body"))
            return nil
        }
        // A request with a body was parsed and routed at its admission.
        let admitted = request.admission as? AdmittedHead
        let target: RequestTarget
        switch admitted?.target ?? RequestTarget.parse(request.uri) {
        case .success(let parsed): target = parsed
        case .failure(let invalid):
            finish(&exchange, error: .badRequest(invalid.description))
            return nil
        }
        exchange.route = admitted?.route ?? Router.route(method: request.method, target: target, rules: settings.cacheRoutes)
        if request.method.isIdempotentRead, let problem = Self.methodOverrideProblem(request.headers, rawQuery: target.rawQuery) {
            finish(&exchange, error: .badRequest(problem))
            return nil
        }
        switch exchange.route {
        case .health:
            finish(&exchange, status: 200, body: Array(#"{"status":"ok"}"#.utf8))
        case .ready:
            if isReady, cache.isDiskHealthy {
                finish(&exchange, status: 200, body: Array(#"{"status":"ready"}"#.utf8))
            } else {
                finish(&exchange, error: ProxyError(status: 503, code: "not_ready", message: isDraining ? "draining" : "the cache store is not usable"))
            }
        case .adminPage:
            finish(&exchange, status: 200, headers: Self.statusPageHeaders, body: StatusPage.bytes)
        case .notFound:
            finish(&exchange, error: .notFound)
        case .methodNotAllowed(let allowed):
            exchange.extraHeaders.add("Allow", allowed.map(\.rawValue).joined(separator: ", "))
            finish(&exchange, error: ProxyError(status: 405, code: "method_not_allowed", message: "\(request.method.rawValue) is not allowed here"))
        // metrics.access: "auto" (open on a loopback listener, admin scope on any other), "open", "admin".
        case .metrics where settings.metricsAccess == "open" || (settings.metricsAccess == "auto" && SettingsParser.isLoopback(settings.listenHost)):
            finish(&exchange, status: 200, headers: Self.metricsHeaders, body: renderMetrics())
        default:
            return target
        }
        return nil
    }

    /// Phase 3: the caller and its scope for the route. Answers 401 or 403 and returns false.
    private func authorize(_ exchange: inout Exchange) -> Bool {
        let authorization = exchange.request.headers["Authorization"]
        // A request with a body was authenticated at its admission, unless the clients file
        // was reloaded since (a token revoked while the body arrived is refused).
        if let admitted = exchange.request.admission as? AdmittedHead, admitted.clientsGeneration == clientsGeneration {
            exchange.caller = admitted.caller
        } else {
            exchange.caller = authenticator.authenticate(authorization: authorization)
        }
        if let authorization { hitPath.remember(exchange.caller, for: authorization) }
        if exchange.caller == .rejected {
            exchange.extraHeaders.add("WWW-Authenticate", #"Bearer realm="pixxel-proxy""#)
            finish(&exchange, error: .unauthorized)
            return false
        }
        let needed: Scopes
        switch exchange.route {
        case .adminPurge, .adminStats, .metrics: needed = .admin
        default: needed = exchange.request.method.isIdempotentRead ? .read : .write
        }
        guard exchange.caller.scopes.contains(needed) else {
            finish(&exchange, error: .forbidden(needed.description))
            return false
        }
        return true
    }

    /// Phase 4: the answer's source: the cache, an admin route, or the upstream.
    private func respond(_ exchange: Exchange, target: RequestTarget) {
        var exchange = exchange
        var headers = exchange.request.headers
        headers.set("X-Request-Id", exchange.requestID)
        switch exchange.route {
        case .listJobs(let workflowID):
            switch JobListQuery.parse(target.rawQuery) {
            case .failure(let invalid):
                return finish(&exchange, error: .badRequest("invalid job list filter \(invalid)"))
            case .success(.filtered(let filters)):
                return serveCached(exchange, key: .list(workflowID: workflowID), filters: filters)
            case .success(.passThrough):
                // Other parameters: forwarded as they are, never cached; HEAD answered from a GET.
                exchange.cacheOutcome = .uriMiss
                headers.remove("Accept-Encoding")
                var get = exchange
                get.upstreamMethod = .get
                return forward(get, target: target, headers: headers)
            }
        case .getJob(let workflowID, let jobID):
            return serveCached(exchange, key: .detail(workflowID: workflowID, jobID: jobID), filters: JobListFilters())
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
            return forward(exchange, target: target, headers: headers)
        case .cachedRoute(let rule):
            let key = CacheKey.route(CachedRouteResource(path: target.encodedPath, query: target.rawQuery, template: rule.pattern,
                                                         lifetime: rule.seconds))
            return serveCached(exchange, key: key, filters: JobListFilters())
        case .passThrough:
            return relayPassThrough(exchange, target: target, headers: headers)
        default:
            return forward(exchange, target: target, headers: headers)
        }
    }

    /// A cached route's request, as the cache takes it; the hit path remembers the target's
    /// resource, so that it is not parsed again.
    private func serveCached(_ exchange: Exchange, key: CacheKey, filters: JobListFilters) {
        let uri = exchange.request.uri
        if hitPath.targets[uri] == nil {
            hitPath.remember(CachedTarget(key: key, filters: filters, routeTemplate: exchange.route.template,
                                          metrics: metrics.hitRecorder(route: exchange.route.template)), for: uri)
        }
        serveCached(exchange, CacheRequest(key: key, filters: filters, revalidate: Self.asksForRevalidation(exchange.request.headers),
                                           requestID: exchange.requestID, client: exchange.caller.logName))
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
    /// The request target as parsed once, by the route phase (nil before it).
    var target: RequestTarget?
    var caller: Caller = .rejected
    /// The method sent upstream when it is not the client's (a HEAD answered from a GET).
    var upstreamMethod: HTTPMethod?
    var upstreamStatus: Int?
    /// Time spent on the upstream call this answer came from.
    var upstreamDuration: Duration?
    let requestID: String
    /// What the cache did, once it decided.
    var cacheOutcome: CacheOutcome?
    var extraHeaders = HTTPHeaders()
    var closeConnection = false

    /// The cache outcome the answer reports: nil off the cached routes; on them, what the cache
    /// decided, or `bypass` when the answer came before any decision.
    var finalCacheOutcome: CacheOutcome? {
        route.isCachedRoute ? cacheOutcome ?? .bypass : nil
    }
}

/// Carries an `Exchange` into a completion. It may travel through another thread (a disk
/// queue) but is only ever read or written on the loop thread, hence the unchecked Sendable.
final class ExchangeBox: @unchecked Sendable {
    var exchange: Exchange
    init(_ exchange: Exchange) { self.exchange = exchange }
}
