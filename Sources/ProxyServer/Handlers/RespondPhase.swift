import Foundation
import EventHTTP
import JobCache
import ResponseCache

/// The respond phase: the answer's source, by route: the cache, an admin route, or the
/// upstream. The chain's last phase.
struct RespondPhase: RequestPhase {
    func handle(_ exchange: inout Exchange, in server: ProxyServer, next: (inout Exchange) -> Void) {
        guard let target = exchange.target else { return server.finish(&exchange, error: .notFound) }
        server.respond(exchange, target: target)
    }
}

extension ProxyServer {
    /// The answer's source: the cache, an admin route, or the upstream.
    func respond(_ exchange: Exchange, target: RequestTarget) {
        var exchange = exchange
        var headers = exchange.request.headers
        headers.set("X-Request-Id", exchange.requestID)
        switch exchange.route {
        case .listJobs(let workflowID):
            switch JobListQuery.parse(target.rawQuery) {
            case .failure(let invalid):
                return finish(&exchange, error: .badRequest("invalid job list filter \(invalid)"))
            case .success(.watch(let filters)):
                return startChangeStream(exchange, workflowID: workflowID, filters: filters)
            case .success(.filtered(let filters)) where Self.asksForEventStream(exchange.request.headers):
                return startChangeStream(exchange, workflowID: workflowID, filters: filters)
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

    /// `Accept: text/event-stream`: an EventSource asking for a change stream (a list's JSON is
    /// not what it can read).
    static func asksForEventStream(_ headers: HTTPHeaders) -> Bool {
        headers.fields.contains { $0.name.caseInsensitiveEquals("accept") && namesEventStream($0.value) }
    }

    /// Whether an `Accept` value asks for `text/event-stream` (any case): a media range naming
    /// it, not with `q=0` (which refuses it; found by review). A value that does not contain
    /// the name is told apart without allocating (the hit path reads every `Accept`).
    static func namesEventStream(_ value: String) -> Bool {
        guard containsEventStreamName(value) else { return false }
        return value.split(separator: ",").contains { range in
            let parts = range.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
            guard parts.first == "text/event-stream" else { return false }
            let quality = parts.dropFirst().first { $0.hasPrefix("q=") }.flatMap { Double($0.dropFirst(2)) }
            return quality.map { $0 > 0 } ?? true
        }
    }

    private static func containsEventStreamName(_ value: String) -> Bool {
        let wanted = eventStreamType
        return value.utf8.withContiguousStorageIfAvailable { bytes in
            guard bytes.count >= wanted.count else { return false }
            for start in 0...(bytes.count - wanted.count) {
                var index = 0
                while index < wanted.count, lowerASCII(bytes[start + index]) == wanted[index] { index += 1 }
                if index == wanted.count { return true }
            }
            return false
        } ?? value.lowercased().contains("text/event-stream")
    }

    private static func lowerASCII(_ byte: UInt8) -> UInt8 {
        (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) ? byte + 32 : byte
    }

    private static let eventStreamType = Array("text/event-stream".utf8)

    /// A cached route's request, as the cache takes it; the hit path remembers the target's
    /// resource, so that it is not parsed again.
    private func serveCached(_ exchange: Exchange, key: CacheKey, filters: JobListFilters) {
        let uri = exchange.request.uri
        if hitPath.targets[uri] == nil {
            hitPath.remember(CachedTarget(key: cache.sharingWorkflow(key), filters: filters, routeTemplate: exchange.route.template,
                                          metrics: metrics.hitRecorder(route: exchange.route.template)), for: uri)
        }
        serveCached(exchange, CacheRequest(key: key, filters: filters, revalidate: Self.asksForRevalidation(exchange.request.headers),
                                           requestID: exchange.requestID, client: exchange.caller.logName))
    }
}
