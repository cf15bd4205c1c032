import EventHTTP
import ResponseCache

/// One phase of a request's way through the server, as a middleware in Hummingbird's chain
/// (`Middleware.handle(_:context:next:)`): it answers the exchange itself (the answer writer
/// and the recording step run there), or passes it on to `next`.
protocol RequestPhase: Sendable {
    func handle(_ exchange: inout Exchange, in server: ProxyServer, next: (inout Exchange) -> Void)
}

/// A request's way through the proxy: the hit path's shortcut (`HitPath.swift`), else the
/// request id (`identify`), then the chain: route (`RoutePhase.swift`: method, body, target,
/// route; answers what needs no token), authorize (`AuthorizePhase.swift`: token and scope),
/// respond (`RespondPhase.swift`: the cache, an admin route or the upstream). Every answer
/// leaves through `writeAnswer`, then `record`. Routing comes before authentication, so that
/// what needs no token (health, readiness, 404, 405) hashes none.
extension ProxyServer {
    static let requestChain: [any RequestPhase] = [RoutePhase(), AuthorizePhase(), RespondPhase()]

    /// Entry point for every request, on the loop thread.
    func handle(_ request: ServerRequest) {
        loop.assertOnLoop()
        if serveFreshHit(request) { return }
        var exchange = identify(request)
        run(&exchange, from: 0)
    }

    private func run(_ exchange: inout Exchange, from index: Int) {
        guard index < Self.requestChain.count else { return }
        Self.requestChain[index].handle(&exchange, in: self) { run(&$0, from: index + 1) }
    }

    /// The request id (the client's when sane, else a new one) and whether the
    /// connection must close after the answer (draining).
    private func identify(_ request: ServerRequest) -> Exchange {
        // A request with a body got its id at its admission.
        let requestID = (request.admission as? AdmittedHead)?.requestID ?? requestID(from: request.headers["X-Request-Id"])
        var exchange = Exchange(request: request, started: .now, requestID: requestID)
        if isDraining { exchange.closeConnection = true }
        return exchange
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
    /// `ProxyServer.clientsGeneration` when the caller was decided: an answer that waits (held,
    /// a stream opening) looks at the caller again if the clients file was reloaded since.
    var callerGeneration = 0
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
    /// Held by `Prefer: wait` once already: answered now, whatever its bytes.
    var hasWaited = false
    /// Since when the answer waits by the client's own asking (held, or a change stream open).
    var waitingSince: ContinuousClock.Instant?

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
