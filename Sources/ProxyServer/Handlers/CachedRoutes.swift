import EventHTTP
import JobCache
import ResponseCache

extension ProxyServer {
    /// Answers a cached route: the cache's journey (`ResponseCache.serve`) decides where the
    /// answer comes from; the server answers what it delivers.
    func serveCached(_ exchange: Exchange, _ request: CacheRequest) {
        let box = ExchangeBox(exchange)
        cache.serve(request) { [self] delivery in
            var exchange = box.exchange
            answer(&exchange, with: delivery, key: request.key, filters: request.filters)
        }
    }

    /// Answers what the cache delivered, with what it did (`Cache-Status`) and the upstream
    /// call it came from.
    func answer(_ exchange: inout Exchange, with delivery: CacheDelivery, key: CacheKey, filters: JobListFilters) {
        exchange.cacheOutcome = delivery.outcome
        exchange.upstreamStatus = delivery.upstreamStatus
        exchange.upstreamDuration = delivery.upstreamDuration
        switch delivery.content {
        case .cached(let answer, let age):
            finish(&exchange, cached: answer, age: age, key: key, filters: filters)
        case .passedOn(let response):
            finish(&exchange, status: response.status, headers: response.headers, body: response.body)
        case .failed(let failure):
            finish(&exchange, failure: failure)
        case .busy:
            finish(&exchange, error: ProxyError(status: 503, code: "upstream_busy", message: "too many requests are waiting for this resource"))
        case .streamThrough:
            // Only a routed request reaches the cache, so its target is there.
            guard let target = exchange.target else { return finish(&exchange, error: .notFound) }
            var headers = exchange.request.headers
            headers.set("X-Request-Id", exchange.requestID)
            relayPassThrough(exchange, target: target, headers: headers)
        }
    }

    /// `Cache-Control: no-cache` or `max-age=0` (or `Pragma: no-cache`) from the client.
    static func asksForRevalidation(_ headers: HTTPHeaders) -> Bool {
        let directives = headers.values("Cache-Control").flatMap { $0.lowercased().split(separator: ",") }
            .map { String($0.filter { $0 != " " }) }
        return directives.contains("no-cache") || directives.contains("max-age=0")
            || headers.values("Pragma").contains { $0.lowercased().contains("no-cache") }
    }
}
