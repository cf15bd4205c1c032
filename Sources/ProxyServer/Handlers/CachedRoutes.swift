import EventHTTP
import JobCache
import ResponseCache
import Upstream

extension ProxyServer {
    /// Answers a cached route: from memory while fresh; stale at once within
    /// `cache.stale_while_revalidate_seconds` while one background refresh runs; else through
    /// one upstream fetch shared by every concurrent request for the same resource (after a
    /// look at the disk tier when memory has nothing), with the stale answer as the fallback
    /// within `cache.stale_if_error_seconds` when that fetch fails. What is fresh, stale or
    /// superseded is the cache's to decide (`ResponseCache`); this is the orchestration.
    func serveCached(_ exchange: Exchange, key: CacheKey, filters: JobListFilters, requestID: String) {
        var exchange = exchange
        let now = clock()
        let forceRevalidation = Self.asksForRevalidation(exchange.request.headers)
        var cached: CachedAnswer?
        if !forceRevalidation {
            switch cache.lookup(key, now: now, staleWhileRevalidate: settings.staleWhileRevalidateSeconds) {
            case .fresh(let answer):
                exchange.cacheOutcome = .hit(ttl: answer.cacheStatusTTL(now: now))
                return finish(&exchange, from: answer, filters: filters, now: now)
            case .stale(let answer):
                exchange.cacheOutcome = .hit(ttl: answer.cacheStatusTTL(now: now))
                finish(&exchange, from: answer, filters: filters, now: now)
                if cache.revalidationRoute(for: key, cached: answer, now: now) == .list {
                    return refreshThroughList(key, requestID: requestID, client: exchange.caller.logName)
                }
                return refreshInBackground(key, requestID: requestID, client: exchange.caller.logName)
            case .expired(let answer):
                if cache.revalidationRoute(for: key, cached: answer, now: now) == .list {
                    return revalidateThroughList(exchange, key: key, filters: filters, requestID: requestID)
                }
                cached = answer
            case .miss:
                break
            }
        } else {
            cache.countMiss()
            cached = cache.memory.peek(key)
        }
        fetchThroughFlight(exchange, key: key, filters: filters, cached: cached, forceRevalidation: forceRevalidation, requestID: requestID)
    }

    /// The request waits on the one upstream fetch of its resource (leading it, or joining it).
    /// `deadline`: the request's own, when it already waited on an upstream call.
    private func fetchThroughFlight(_ exchange: Exchange, key: CacheKey, filters: JobListFilters, cached: CachedAnswer?,
                                    forceRevalidation: Bool, requestID: String, deadline: Double? = nil) {
        let forward: CacheOutcome.Forward = forceRevalidation ? .request : (cached == nil ? .miss : .stale)
        let box = ExchangeBox(exchange)
        let flight = FlightKey(key, revalidates: forceRevalidation)
        let join = cache.flights.join(flight) { [self] outcome in
            var exchange = box.exchange
            exchange.upstreamDuration = landingUpstreamDuration
            deliver(outcome, to: &exchange, forward: forward, key: key, filters: filters)
        }
        switch join {
        case .leader:
            let client = exchange.caller.logName
            let fromDiskOrUpstream = { [self] in
                guard cached == nil, cache.memory.peek(key) == nil, cache.disk != nil else {
                    return fetchOnceForAll(flight, requestID: requestID, client: client, priority: .interactive, deadline: deadline)
                }
                // Memory has nothing: the disk may, and a newer detail there must never be
                // replaced by an older answer, so it is read even when revalidation is asked for.
                cache.loadFromDisk(key, now: clock, servable: !forceRevalidation) { [self] entry, fresh in
                    if fresh, !forceRevalidation, let entry { return cache.flights.land(flight, .fromDisk(entry)) }
                    fetchOnceForAll(flight, requestID: requestID, client: client, priority: .interactive, deadline: deadline)
                }
            }
            // Memory, then the shared tier (another instance may have fetched it), then disk.
            guard !forceRevalidation, shared != nil else { return fromDiskOrUpstream() }
            lookInShared(key) { [self] answer in
                guard let answer else { return fromDiskOrUpstream() }
                cache.countSharedHit()
                cache.flights.land(flight, .fromShared(answer))
            }
        case .follower:
            box.exchange.collapsed = true
        case .full:
            finish(&box.exchange, error: ProxyError(status: 503, code: "upstream_busy",
                                                     message: "too many requests are waiting for this resource"))
        }
    }

    /// An expired detail whose list is due: the request waits on one fetch of the list (shared
    /// with every other request for the list or its details), which renews the detail when it
    /// shows the same `updated_at`; then the detail is served. A changed or missing job, or a
    /// list that could not renew it, goes on to a fetch of its own (`Revalidation`).
    private func revalidateThroughList(_ exchange: Exchange, key: CacheKey, filters: JobListFilters, requestID: String) {
        let box = ExchangeBox(exchange)
        let listFlight = FlightKey(.list(workflow: key.workflow), revalidates: false)
        // One deadline for the list call and the detail's own, if it needs one: the client
        // waits at most one timeout, not one per call.
        let deadline = gateway.newDeadline()
        let join = cache.flights.join(listFlight) { [self] outcome in
            var exchange = box.exchange
            let now = clock()
            if let renewed = cache.memory.peek(key), renewed.remaining(now: now) > 0 {
                exchange.upstreamDuration = landingUpstreamDuration
                exchange.upstreamStatus = 200
                exchange.cacheOutcome = .revalidatedThroughList(collapsed: exchange.collapsed)
                cache.countListRevalidation()
                return finish(&exchange, from: renewed, filters: filters, now: now)
            }
            // The upstream failed on the list: the detail's stale answer, as its own fetch
            // failing would give, without a second call to a failing upstream.
            if let failedStatus = outcome.failedStatus, let stale = cache.staleAnswer(for: key, now: now, window: settings.staleIfErrorSeconds) {
                exchange.upstreamStatus = failedStatus
                exchange.cacheOutcome = .staleOnError(upstreamStatus: failedStatus, collapsed: exchange.collapsed)
                return finish(&exchange, from: stale, filters: filters, now: now)
            }
            exchange.collapsed = false
            fetchThroughFlight(exchange, key: key, filters: filters, cached: cache.memory.peek(key), forceRevalidation: false,
                               requestID: requestID, deadline: deadline)
        }
        switch join {
        case .leader:
            // Whether the call may skip waiting out an upstream pause is the detail's to say:
            // its stale answer is what the client gets instead.
            let hasFallback = cache.memory.peek(key)?.isWithinStaleWindow(settings.staleIfErrorSeconds, now: clock()) ?? false
            fetchOnceForAll(listFlight, requestID: requestID, client: exchange.caller.logName, priority: .interactive,
                            hasFallback: hasFallback, deadline: deadline)
        case .follower:
            box.exchange.collapsed = true
        case .full:
            fetchThroughFlight(exchange, key: key, filters: filters, cached: cache.memory.peek(key), forceRevalidation: false,
                               requestID: requestID, deadline: deadline)
        }
    }

    /// The background refresh of a detail served stale whose list is due: the list is fetched
    /// (or its fetch in the air joined); the detail on its own only if the list showed it changed.
    private func refreshThroughList(_ key: CacheKey, requestID: String, client: String) {
        let listFlight = FlightKey(.list(workflow: key.workflow), revalidates: false)
        let join = cache.flights.join(listFlight) { [self] outcome in
            guard case .stored = outcome, let entry = cache.memory.peek(key), entry.remaining(now: clock()) <= 0 else { return }
            refreshInBackground(key, requestID: requestID, client: client)
        }
        if join == .leader { fetchOnceForAll(listFlight, requestID: requestID, client: client, priority: .background) }
    }

    /// One background refresh per resource, joined with any foreground fetch in the air.
    private func refreshInBackground(_ key: CacheKey, requestID: String, client: String) {
        let flight = FlightKey(key, revalidates: false)
        guard cache.flights.join(flight, { _ in }) == .leader else { return }
        fetchOnceForAll(flight, requestID: requestID, client: client, priority: .background)
    }

    /// Answers with a cached entry's body for `filters`.
    private func finish(_ exchange: inout Exchange, from answer: CachedAnswer, filters: JobListFilters, now: Double) {
        finish(&exchange, status: 200, headers: answer.headers, body: answer.body(for: filters), age: answer.ageSeconds(now: now))
    }

    private func deliver(_ outcome: FetchOutcome, to exchange: inout Exchange, forward: CacheOutcome.Forward, key: CacheKey,
                         filters: JobListFilters) {
        let collapsed = exchange.collapsed
        let now = clock()
        // Too large to cache: every waiter is streamed through on its own, and so is every
        // request for it until the rule's lifetime has passed.
        if case .failed(let failure) = outcome, failure.tooLarge, case .route(let resource) = key,
           case .success(let target) = RequestTarget.parse(exchange.request.uri) {
            tooLargeToCache.insert(key, until: now + resource.lifetime)
            exchange.cacheOutcome = .tooLargeToCache
            var headers = exchange.request.headers
            headers.set("X-Request-Id", exchange.requestID)
            return relayPassThrough(exchange, target: target, headers: headers)
        }
        // Stale-if-error: an upstream 5xx, 429, timeout or broken connection, with a stale
        // answer still within its window (never a superseded one), gets that answer.
        if let failedStatus = outcome.failedStatus, let stale = cache.staleAnswer(for: key, now: now, window: settings.staleIfErrorSeconds) {
            exchange.upstreamStatus = failedStatus
            exchange.cacheOutcome = .staleOnError(upstreamStatus: failedStatus, collapsed: collapsed)
            return finish(&exchange, from: stale, filters: filters, now: now)
        }
        switch outcome {
        case .fromDisk(let answer):
            exchange.cacheOutcome = .hit(ttl: answer.cacheStatusTTL(now: now))
            finish(&exchange, from: answer, filters: filters, now: now)
        case .fromShared(let answer):
            exchange.cacheOutcome = .sharedHit(ttl: answer.cacheStatusTTL(now: now))
            finish(&exchange, from: answer, filters: filters, now: now)
        case .stored(let answer):
            exchange.upstreamStatus = 200
            exchange.cacheOutcome = .forwarded(forward, upstreamStatus: 200, stored: true, collapsed: collapsed)
            finish(&exchange, from: answer, filters: filters, now: now)
        case .passedOn(let response):
            exchange.upstreamStatus = response.status
            exchange.cacheOutcome = .forwarded(forward, upstreamStatus: response.status, collapsed: collapsed)
            finish(&exchange, status: response.status, headers: response.headers, body: response.body)
        case .failed(let failure):
            exchange.cacheOutcome = .forwarded(forward, upstreamStatus: nil, collapsed: collapsed, failure: failure.code)
            finish(&exchange, failure: failure)
        }
    }

    /// One upstream GET for `key`, always unfiltered and with a fixed set of fields (the
    /// answer serves every client, so no client's fields may shape it); the cache stores a
    /// 200, and the flight lands when the cache says the result may be told.
    /// `leased`: this instance holds the shared tier's lease on the resource (kept while the
    /// call runs, ended once what it fetched is shared).
    func fetch(_ flight: FlightKey, requestID: String, client: String, priority: UpstreamBudget.Priority,
               hasFallback: Bool? = nil, deadline: Double? = nil, leased: Bool = false) {
        let key = flight.key
        cache.countFetch(background: priority == .background)
        let headers = HTTPHeaders([("Accept", "application/json"), ("X-Request-Id", requestID)])
        let upstreamStarted = ContinuousClock.now
        let requestedAt = clock()
        // With a stale answer to give on failure, a request does not wait out an upstream pause.
        let hasFallback = hasFallback ?? cache.memory.peek(key)?.isWithinStaleWindow(settings.staleIfErrorSeconds, now: requestedAt) ?? false
        // A `cache.routes` answer is kept only up to a bound: past it the fetch fails as too large.
        let maxBytes = if case .route = key { Self.maxCachedRouteBytes } else { nil as Int? }
        let leaseHold = leased ? holdLease(key.diskKey) : nil
        callUpstream(route: key.routeTemplate, method: .get, path: key.upstreamPath, rawQuery: key.upstreamQuery, clientHeaders: headers, body: [],
                     client: client, priority: priority, hasFallback: hasFallback, deadline: deadline, maxResponseBytes: maxBytes) { [self] result in
            let duration = ContinuousClock.now - upstreamStarted
            let land: (FetchOutcome) -> Void = { [self] outcome in
                // Every waiter's access line shows the time of the one upstream call it shared.
                landingUpstreamDuration = duration
                cache.flights.land(flight, outcome)
                landingUpstreamDuration = nil
                if let leaseHold { releaseLeaseHold(leaseHold) }
                // What this call fetched goes to the other instances (and wakes their waiters);
                // a failure only ends the lease, and one of them takes it over.
                if case .stored(let answer) = outcome {
                    share(key, answer, releasingLease: leased)
                } else if leased {
                    share(key, nil, releasingLease: true)
                }
            }
            switch result {
            case .failure(let failure):
                land(.failed(failure))
            case .success(let response) where response.status != 200:
                land(.passedOn(response))
            case .success(let response) where key.isRoute && Self.forbidsStoring(response.headers):
                // The upstream says not to keep it: those waiting now get it, nobody later.
                land(.passedOn(response))
            case .success(let response):
                cache.store(key, body: response.body, headers: response.headers, requestedAt: requestedAt, now: clock()) { stored in
                    switch stored {
                    case .stored(let answer), .keptNewer(let answer): land(.stored(answer))
                    case .olderThanListed: land(.failed(Self.olderThanListed))
                    case .unparseable: land(.failed(Self.garbage))
                    }
                }
            }
        }
    }

    static let garbage = UpstreamFailure(status: 502, code: "bad_gateway", message: "the upstream answered something that is not a Pixxel job document")
    static let olderThanListed = UpstreamFailure(
        status: 502, code: "bad_gateway", message: "the upstream answered an older version of the job than it has already shown; retry")

    /// Whether an upstream answer's `Cache-Control` forbids a shared cache to store it or to
    /// serve it without revalidation (`no-store`, `private`, `no-cache`; RFC 9111 5.2.2). For
    /// `cache.routes` answers: the job routes' documents are the proxy's to keep by their rules.
    static func forbidsStoring(_ headers: HTTPHeaders) -> Bool {
        headers.values("Cache-Control").flatMap { $0.lowercased().split(separator: ",") }.contains { directive in
            let name = directive.split(separator: "=", maxSplits: 1).first.map { String($0.filter { $0 != " " && $0 != "\t" }) } ?? ""
            return name == "no-store" || name == "private" || name == "no-cache"
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

extension FetchOutcome {
    /// The upstream's failure status when the fetch failed in a way stale data may stand in
    /// for (a 5xx, a 429, a timeout or a broken connection); nil otherwise.
    var failedStatus: Int? {
        switch self {
        case .failed(let failure): failure.status
        case .passedOn(let response) where response.status >= 500 || response.status == 429: response.status
        default: nil
        }
    }
}
