import EventHTTP
import ResponseCache
import Upstream

/// The cache's fetches, made through the one door to the upstream (`UpstreamGateway`: the
/// budget, the call, Retry-After, one retry): always a GET of the unfiltered resource with a
/// fixed set of fields, since the answer serves every client and no client's fields may shape it.
final class GatewayFetcher: UpstreamFetching {
    private let gateway: UpstreamGateway
    /// The budget's clock, which deadlines are on.
    private let clock: @Sendable () -> Double

    init(gateway: UpstreamGateway, clock: @escaping @Sendable () -> Double) {
        self.gateway = gateway
        self.clock = clock
    }

    func fetch(_ request: FetchRequest, completion: @escaping (Result<ClientResponse, FetchFailure>) -> Void) {
        let key = request.key
        let headers = HTTPHeaders([("Accept", "application/json"), ("X-Request-Id", request.requestID)])
        gateway.call(route: key.routeTemplate, method: .get, path: key.upstreamPath, rawQuery: key.upstreamQuery, headers: headers, body: [],
                     client: request.client, priority: request.background ? .background : .interactive, hasFallback: request.hasFallback,
                     deadline: request.deadline, maxResponseBytes: request.maxResponseBytes) { result in
            completion(result.mapError(FetchFailure.init))
        }
    }

    func newDeadline() -> Double { gateway.newDeadline() }

    func hasPassed(_ deadline: Double) -> Bool { clock() >= deadline }
}

extension FetchFailure {
    init(_ failure: UpstreamFailure) {
        self.init(status: failure.status, code: failure.code, message: failure.message, retryAfter: failure.retryAfter,
                  tooLarge: failure.tooLarge)
    }
}
