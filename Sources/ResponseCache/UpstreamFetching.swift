import EventHTTP

/// The cache's one way to the upstream: a GET of a cached resource, made by whatever the server
/// injects (its gateway: the budget, pauses, retries). The cache owns this protocol, so it
/// depends on no upstream machinery; a test can inject a fetcher of its own.
public protocol UpstreamFetching: AnyObject {
    /// Fetches `request.key`'s resource, unfiltered; `completion` runs on the loop.
    func fetch(_ request: FetchRequest, completion: @escaping (Result<ClientResponse, FetchFailure>) -> Void)
    /// A deadline for a request that may wait on more than one call (on the budget's clock).
    func newDeadline() -> Double
    /// Whether `deadline` (from `newDeadline`) has passed.
    func hasPassed(_ deadline: Double) -> Bool
}

/// One upstream GET the cache asks for.
public struct FetchRequest {
    public let key: CacheKey
    public let requestID: String
    /// The client's name, for the budget's fairness.
    public let client: String
    /// A refresh nobody waits on: it yields to calls somebody waits on.
    public let background: Bool
    /// The cache has a stale answer to give if the call fails: it need not wait out an upstream pause.
    public let hasFallback: Bool
    /// The waiting request's own deadline, when it already waited on another call.
    public let deadline: Double?
    /// Past this many bytes the call fails as too large (nil: the upstream's own bound).
    public let maxResponseBytes: Int?
}

/// Why a fetch gave nothing to store or pass on, with the status the client gets.
public struct FetchFailure: Error, Sendable, Equatable {
    /// 429, 502, 503 or 504.
    public let status: Int
    public let code: String
    public let message: String
    /// For 429: seconds the client should wait.
    public let retryAfter: Double?
    /// The answer was larger than the call allowed.
    public let tooLarge: Bool

    public init(status: Int, code: String, message: String, retryAfter: Double? = nil, tooLarge: Bool = false) {
        self.status = status
        self.code = code
        self.message = message
        self.retryAfter = retryAfter
        self.tooLarge = tooLarge
    }
}
