import EventHTTP

/// The way every upstream call goes: the budget first (which may queue it or refuse it with
/// 429), then the call; an upstream 429 or 503 with `Retry-After` pauses the budget, and a GET
/// or HEAD whose connection broke before an answer is tried once more after a little jitter
/// (never a write). Loop-bound, like the budget and the client it drives. The server observes
/// outcomes (metrics, a log line) through the two callbacks; it decides nothing here.
public final class UpstreamGateway {
    private let loop: EventLoop
    private let client: UpstreamClient
    public let budget: UpstreamBudget
    /// Monotonic seconds, the budget's clock: deadlines.
    private let clock: @Sendable () -> Double
    /// Seconds since 1970: a `Retry-After` HTTP-date is read against it.
    private let wallClock: @Sendable () -> Double
    private let timeoutSeconds: Double
    private let maxRetryAfterSeconds: Double

    /// Each call's outcome by route: the upstream's status, a failure code, or
    /// `budget_refused`; with the call's duration when it was made.
    public var onOutcome: ((_ route: String, _ outcome: String, _ duration: Duration?) -> Void)?
    /// The upstream asked to wait (status, seconds).
    public var onPause: ((_ status: Int, _ seconds: Double) -> Void)?

    public init(loop: EventLoop, client: UpstreamClient, budget: UpstreamBudget, clock: @escaping @Sendable () -> Double,
                wallClock: @escaping @Sendable () -> Double, timeoutSeconds: Double, maxRetryAfterSeconds: Double) {
        self.loop = loop
        self.client = client
        self.budget = budget
        self.clock = clock
        self.wallClock = wallClock
        self.timeoutSeconds = timeoutSeconds
        self.maxRetryAfterSeconds = maxRetryAfterSeconds
    }

    /// One upstream call. `hasFallback`: the caller has stale data to give, so it does not
    /// wait out an upstream pause. `deadline` (the budget's clock, `deadline(from:)`): a request
    /// that already made a call (a detail revalidated through its list) keeps its first
    /// deadline; by default one starts now. `completion` runs once, on the loop.
    /// `maxResponseBytes`: a smaller bound on the answer than the client's (a larger one fails
    /// with `tooLarge`).
    public func call(route: String, method: HTTPMethod, path: String, rawQuery: String?, headers: HTTPHeaders, body: [UInt8],
                     client caller: String, priority: UpstreamBudget.Priority, hasFallback: Bool, deadline: Double? = nil,
                     maxResponseBytes: Int? = nil, completion: @escaping (Result<ClientResponse, UpstreamFailure>) -> Void) {
        // One deadline covers the wait for the budget, the call and its one retry: the client
        // hears by `upstream.timeout_seconds` whatever happens.
        call(route: route, method: method, path: path, rawQuery: rawQuery, headers: headers, body: body, caller: caller,
             priority: priority, hasFallback: hasFallback, deadline: deadline ?? newDeadline(), maxResponseBytes: maxResponseBytes,
             retried: false, completion: completion)
    }

    /// A request's deadline if it started now: `upstream.timeout_seconds` on the budget's clock.
    public func newDeadline() -> Double { clock() + timeoutSeconds }

    private func call(route: String, method: HTTPMethod, path: String, rawQuery: String?, headers: HTTPHeaders, body: [UInt8],
                      caller: String, priority: UpstreamBudget.Priority, hasFallback: Bool, deadline: Double, maxResponseBytes: Int?, retried: Bool,
                      completion: @escaping (Result<ClientResponse, UpstreamFailure>) -> Void) {
        loop.assertOnLoop()
        budget.acquire(client: caller, priority: priority, deadline: deadline, waitsDuringPause: !hasFallback, grant: { [self] in
            let started = ContinuousClock.now
            let remaining = max(deadline - clock(), 0.001)
            client.send(method: method, path: path, rawQuery: rawQuery, clientHeaders: headers, body: body,
                        timeoutSeconds: remaining, maxResponseBytes: maxResponseBytes) { [self] result in
                let duration = ContinuousClock.now - started
                switch result {
                case .success(let response):
                    onOutcome?(route, String(response.status), duration)
                    if response.status == 429 || response.status == 503, let value = response.headers["Retry-After"],
                       let seconds = RetryAfter.seconds(value, now: wallClock(), cap: maxRetryAfterSeconds) {
                        budget.pause(seconds: seconds)
                        onPause?(response.status, seconds)
                    }
                case .failure(let failure):
                    onOutcome?(route, failure.code, duration)
                    if failure.retryable, !retried, method.isIdempotentRead, deadline - clock() > 0.1 {
                        _ = loop.schedule(after: Double.random(in: 0.01...0.05)) { [self] in
                            call(route: route, method: method, path: path, rawQuery: rawQuery, headers: headers, body: body, caller: caller,
                                 priority: priority, hasFallback: hasFallback, deadline: deadline, maxResponseBytes: maxResponseBytes,
                                 retried: true, completion: completion)
                        }
                        return
                    }
                }
                completion(result)
            }
        }, refuse: { [self] refusal in
            completion(.failure(failure(for: refusal, route: route)))
        })
    }

    /// What a caller the budget refused gets, counted by route.
    private func failure(for refusal: UpstreamBudget.Refusal, route: String) -> UpstreamFailure {
        let failure: UpstreamFailure
        switch refusal {
        case .rateLimited(let retryAfter):
            onOutcome?(route, "budget_refused", nil)
            return UpstreamFailure(status: 429, code: "rate_limited", message: "the upstream budget is spent; retry later", retryAfter: retryAfter)
        case .busy: failure = UpstreamClient.failure(for: .queueFull)
        case .timedOut: failure = UpstreamClient.failure(for: .timedOut)
        }
        onOutcome?(route, failure.code, nil)
        return failure
    }

    /// How a streamed transfer ended (see `RelayOutcome`); `failed` and `bodyRefused` leave
    /// the answer to the caller.
    public enum RelayResult: Sendable, Equatable {
        case relayed(status: Int, bytes: Int)
        case failed(UpstreamFailure)
        case bodyRefused(BodyStreamError)
        case broken(status: Int, reason: String)
        case clientGone
    }

    /// A pass-through request, streamed both ways (never retried: its body has been read).
    /// A connection is held first, then a budget token, so the budget holds at the door as for
    /// every other call; a 429 or 503 with `Retry-After` pauses the budget. `answerHead`
    /// makes the client's head from the upstream's end-to-end fields. `completion` runs once.
    public func relay(route: String, method: HTTPMethod, path: String, rawQuery: String?, headers: HTTPHeaders, from request: ServerRequest,
                      client caller: String, answerHead: @escaping (HTTPHeaders) -> AnswerHead,
                      completion: @escaping (RelayResult) -> Void) {
        loop.assertOnLoop()
        let deadline = newDeadline()
        let relayRequest = client.relayRequest(method: method, path: path, rawQuery: rawQuery, clientHeaders: headers)
        client.reserveStream(client: caller, timeoutSeconds: timeoutSeconds, granted: { [self] slot in
            guard !request.isClientGone else {
                slot.release()
                return completion(.clientGone)
            }
            budget.acquire(client: caller, priority: .interactive, deadline: deadline, waitsDuringPause: true, holdsConnection: true,
                           grant: { [self] in
                let started = ContinuousClock.now
                slot.relay(relayRequest, from: request, secondsLeft: deadline - clock(), answerHead: { [self] head in
                    onOutcome?(route, String(head.status), ContinuousClock.now - started)
                    if head.status == 429 || head.status == 503, let value = head.headers["Retry-After"],
                       let seconds = RetryAfter.seconds(value, now: wallClock(), cap: maxRetryAfterSeconds) {
                        budget.pause(seconds: seconds)
                        onPause?(head.status, seconds)
                    }
                    return answerHead(UpstreamClient.passedBackHeaders(head.headers))
                }, completion: { [self] outcome in
                    switch outcome {
                    case .relayed(let status, let bytes): completion(.relayed(status: status, bytes: bytes))
                    case .failed(let error):
                        let failure = UpstreamClient.failure(for: error)
                        onOutcome?(route, failure.code, ContinuousClock.now - started)
                        completion(.failed(failure))
                    case .bodyRefused(let error): completion(.bodyRefused(error))
                    case .broken(let status, let reason): completion(.broken(status: status, reason: reason))
                    case .clientGone: completion(.clientGone)
                    }
                })
            }, refuse: { [self] refusal in
                slot.release()
                completion(.failed(failure(for: refusal, route: route)))
            })
        }, refused: { [self] failure in
            onOutcome?(route, failure.code, nil)
            completion(.failed(failure))
        })
    }
}
