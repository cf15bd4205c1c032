import EventHTTP
import JobCache

/// What a client asks of a cached route, decided once at admission.
public struct CacheRequest {
    public let key: CacheKey
    public let filters: JobListFilters
    /// The client asked for revalidation (`Cache-Control: no-cache` or `max-age=0`, `Pragma: no-cache`).
    public let revalidate: Bool
    public let requestID: String
    /// The client's name, for the budget's fairness.
    public let client: String

    public init(key: CacheKey, filters: JobListFilters, revalidate: Bool, requestID: String, client: String) {
        self.key = key
        self.filters = filters
        self.revalidate = revalidate
        self.requestID = requestID
        self.client = client
    }
}

/// What the cache gives a request. Every answer of a cached route, fresh or stale, from any
/// tier or from the upstream, leaves the cache as one of these, through `deliver`.
public struct CacheDelivery {
    public enum Content {
        /// A cached entry: its body for the request's filters, `age` seconds old.
        case cached(CachedAnswer, age: Int)
        /// An upstream answer that is not cached (an error status), as it came.
        case passedOn(ClientResponse)
        case failed(FetchFailure)
        /// Too many requests wait on this resource's fetch.
        case busy
        /// Too large to cache: the server streams it through from the upstream.
        case streamThrough
    }

    public let content: Content
    public let outcome: CacheOutcome
    /// The upstream's status, when the answer came from (or after) an upstream call.
    public let upstreamStatus: Int?
    /// How long the one upstream call this answer came from took (shared by every waiter).
    public let upstreamDuration: Duration?

    init(_ content: Content, _ outcome: CacheOutcome, upstreamStatus: Int? = nil, upstreamDuration: Duration? = nil) {
        self.content = content
        self.outcome = outcome
        self.upstreamStatus = upstreamStatus
        self.upstreamDuration = upstreamDuration
    }
}

/// One request's way through the cache, as explicit steps (after Varnish's `cache_req_fsm.c`):
/// each step does its work and names the next, at once or from a completion. The fetch a
/// request leads runs the flight's own steps (`FlightStep`).
enum JourneyStep {
    /// Memory. Fresh: deliver. Stale within stale-while-revalidate: deliver, and one refresh
    /// runs in the background. Expired: revalidate (through the list when it is due, else a
    /// flight). Nothing: a flight.
    case lookup
    /// An expired detail whose list is due: wait on the list's flight, which renews the detail
    /// when it shows it unchanged. `deadline` bounds this call and the detail's own, if needed.
    case throughList(deadline: Double)
    /// Wait on the resource's one fetch, leading it or joining it. `cached`: what memory held.
    case flight(cached: CachedAnswer?, deadline: Double?)
    case deliver(CacheDelivery)
}

/// A request in the cache. Counted once, as a hit or a miss, where a step decides it.
final class Journey {
    let request: CacheRequest
    let deliver: (CacheDelivery) -> Void
    /// Waited on another request's fetch.
    var collapsed = false
    var counted = false

    init(_ request: CacheRequest, deliver: @escaping (CacheDelivery) -> Void) {
        self.request = request
        self.deliver = deliver
    }
}

extension ResponseCache {
    /// Answers a cached route: `deliver` runs on the loop, once (at once for a memory hit).
    public func serve(_ request: CacheRequest, deliver: @escaping (CacheDelivery) -> Void) {
        loop.assertOnLoop()
        advance(Journey(request, deliver: deliver), .lookup)
    }

    /// The journey's first step on its own, for the hit path (a request whose target and token
    /// were seen before): a fresh memory hit's delivery, counted as a prepared hit, or nil
    /// with nothing counted, and the request then takes `serve`.
    public func serveFromMemory(_ key: CacheKey) -> CacheDelivery? {
        let now = clock()
        guard case .fresh(let answer) = lookInMemory(key, now: now) else { return nil }
        counters.hits += 1
        counters.preparedHits += 1
        return CacheDelivery(.cached(answer, age: answer.ageSeconds(now: now)), .hit(ttl: answer.cacheStatusTTL(now: now)))
    }

    /// Whether memory holds `key` fresh, as the journey would judge it (not superseded, not
    /// older than what this instance has shown).
    public func holdsFresh(_ key: CacheKey) -> Bool {
        (remainingFreshness(key) ?? 0) > 0
    }

    /// How long memory's answer for `key` stays fresh, in seconds (0 or less: expired); nil when
    /// memory holds none that is current.
    public func remainingFreshness(_ key: CacheKey) -> Double? {
        guard let held = memory.peek(key), let cached = current(held, key: key) else { return nil }
        return cached.remaining(now: clock())
    }

    /// The body an answer from `answer` sends for `filters`: in gzip form when `gzip` and worth
    /// it, with its `ETag`. Bytes made for it (a filtered body, a gzip form: once each) count
    /// against the memory budget while memory holds the entry.
    public func served(_ answer: CachedAnswer, key: CacheKey, filters: JobListFilters, gzip: Bool) -> CachedAnswer.ServedBody {
        let (body, added) = answer.served(for: filters, gzip: gzip)
        if added > 0 { memory.addCost(added, to: key) { $0 === answer } }
        return body
    }

    /// What memory holds for a key, by freshness: the lookup step's decision, which the hit
    /// path takes too.
    enum MemoryLookup {
        case fresh(CachedAnswer)
        /// Expired, within stale-while-revalidate: served while one refresh runs.
        case stale(CachedAnswer)
        /// Expired past it, or superseded: revalidated (kept for stale-if-error unless superseded).
        case expired(CachedAnswer)
        case miss
    }

    func lookInMemory(_ key: CacheKey, now: Double) -> MemoryLookup {
        guard let held = memory.get(key) else { return .miss }
        // Older than something this instance has shown or learned: revalidated, never served.
        guard let cached = current(held, key: key) else { return .expired(held) }
        if cached.remaining(now: now) > 0 { return .fresh(cached) }
        if cached.isWithinStaleWindow(staleWindows.whileRevalidate, now: now) { return .stale(cached) }
        return .expired(cached)
    }

    func advance(_ journey: Journey, _ step: JourneyStep) {
        let request = journey.request, key = request.key
        switch step {
        case .lookup:
            let now = clock()
            // An answer found too large to cache is streamed through until the rule's time passes.
            if tooLargeToCache.contains(key, now: now) {
                return advance(journey, .deliver(CacheDelivery(.streamThrough, .tooLargeToCache)))
            }
            if request.revalidate {
                count(journey, hit: false)
                return advance(journey, .flight(cached: memory.peek(key), deadline: nil))
            }
            switch lookInMemory(key, now: now) {
            case .fresh(let cached):
                count(journey, hit: true)
                advance(journey, .deliver(CacheDelivery(.cached(cached, age: cached.ageSeconds(now: now)), .hit(ttl: cached.cacheStatusTTL(now: now)))))
            case .stale(let cached):
                count(journey, hit: true)
                counters.staleServed += 1
                advance(journey, .deliver(CacheDelivery(.cached(cached, age: cached.ageSeconds(now: now)), .hit(ttl: cached.cacheStatusTTL(now: now)))))
                refresh(key, throughList: revalidationRoute(for: key, cached: cached, now: now) == .list,
                        requestID: request.requestID, client: request.client)
            case .expired(let cached) where revalidationRoute(for: key, cached: cached, now: now) == .list:
                advance(journey, .throughList(deadline: fetcher.newDeadline()))
            case .expired(let cached):
                advance(journey, .flight(cached: cached, deadline: nil))
            case .miss:
                advance(journey, .flight(cached: nil, deadline: nil))
            }

        case .throughList(let deadline):
            let listFlight = FlightKey(.list(workflow: key.workflow), revalidates: false)
            let join = flights.join(listFlight) { [self] landing in
                let now = clock()
                // Renewed by the list, or stale on its failure: a miss (it cost a call); going
                // on to a flight of its own, the flight decides.
                if let renewed = memory.peek(key).flatMap({ current($0, key: key) }), renewed.remaining(now: now) > 0 {
                    count(journey, hit: false)
                    counters.listRevalidations += 1
                    return advance(journey, .deliver(CacheDelivery(
                        .cached(renewed, age: renewed.ageSeconds(now: now)), .revalidatedThroughList(collapsed: journey.collapsed),
                        upstreamStatus: 200, upstreamDuration: landing.upstreamDuration)))
                }
                // The upstream failed on the list: the detail's stale answer, as its own fetch
                // failing would give, without a second call to a failing upstream.
                if let failedStatus = landing.outcome.failedStatus, let stale = staleAnswer(for: key, now: now) {
                    count(journey, hit: false)
                    return advance(journey, .deliver(CacheDelivery(
                        .cached(stale, age: stale.ageSeconds(now: now)), .staleOnError(upstreamStatus: failedStatus, collapsed: journey.collapsed),
                        upstreamStatus: failedStatus, upstreamDuration: landing.upstreamDuration)))
                }
                journey.collapsed = false
                advance(journey, .flight(cached: memory.peek(key), deadline: deadline))
            }
            switch join {
            case .leader:
                // Whether the call may skip waiting out an upstream pause is the detail's to say:
                // its stale answer is what the client gets instead.
                let hasFallback = memory.peek(key)?.isWithinStaleWindow(staleWindows.ifError, now: clock()) ?? false
                runFlight(FlightRun(listFlight, requestID: request.requestID, client: request.client, background: false,
                                    hasFallback: hasFallback, deadline: deadline), .lease)
            case .follower:
                journey.collapsed = true
            case .full:
                advance(journey, .flight(cached: memory.peek(key), deadline: deadline))
            }

        case .flight(let cached, let deadline):
            let forward: CacheOutcome.Forward = request.revalidate ? .request : (cached == nil ? .miss : .stale)
            let flight = FlightKey(key, revalidates: request.revalidate)
            let join = flights.join(flight) { [self] landing in
                // The leader learns here whether its flight found the answer in a tier.
                count(journey, hit: landing.foundInTier)
                advance(journey, .deliver(delivery(of: landing, for: journey, forward: forward)))
            }
            switch join {
            case .leader:
                // Memory, then the shared tier (another instance may have fetched it), then disk.
                runFlight(FlightRun(flight, requestID: request.requestID, client: request.client, background: false,
                                    hasFallback: nil, deadline: deadline, memoryHeld: cached != nil), .lookupShared)
            case .follower:
                journey.collapsed = true
                count(journey, hit: false)
            case .full:
                count(journey, hit: false)
                advance(journey, .deliver(CacheDelivery(.busy, .bypass)))
            }

        case .deliver(let delivery):
            journey.deliver(delivery)
        }
    }

    private func count(_ journey: Journey, hit: Bool) {
        guard !journey.counted else { return }
        journey.counted = true
        if hit { counters.hits += 1 } else { counters.misses += 1 }
    }

    /// What a flight's landing gives one of its waiters.
    private func delivery(of landing: FlightLanding, for journey: Journey, forward: CacheOutcome.Forward) -> CacheDelivery {
        let key = journey.request.key, collapsed = journey.collapsed, duration = landing.upstreamDuration
        let now = clock()
        // Too large to cache: every waiter is streamed through on its own, and so is every
        // request for it until the rule's lifetime has passed.
        if case .failed(let failure) = landing.outcome, failure.tooLarge, case .route(let resource) = key {
            tooLargeToCache.insert(key, until: now + resource.lifetime)
            return CacheDelivery(.streamThrough, .tooLargeToCache)
        }
        // Stale-if-error: an upstream 5xx, 429, timeout or broken connection, with a stale
        // answer still within its window (never a superseded one), gets that answer.
        if let failedStatus = landing.outcome.failedStatus, let stale = staleAnswer(for: key, now: now) {
            return CacheDelivery(.cached(stale, age: stale.ageSeconds(now: now)),
                                 .staleOnError(upstreamStatus: failedStatus, collapsed: collapsed),
                                 upstreamStatus: failedStatus, upstreamDuration: duration)
        }
        // What the flight brought passes the "never older" rule too (something newer may have
        // been learned while it flew); an answer that cannot be made current is refused.
        let outcome: FetchOutcome
        switch landing.outcome {
        case .fromDisk(let answer), .fromShared(let answer), .stored(let answer):
            // Superseded while the flight landed (a newer copy stored meanwhile): the newer copy
            // memory holds is the answer.
            let newest = current(answer, key: key) ?? memory.peek(key).flatMap { $0 === answer ? nil : current($0, key: key) }
            outcome = newest.map { landing.outcome.carrying($0) } ?? .failed(Self.olderThanListed)
        default:
            outcome = landing.outcome
        }
        // What the cache held is older than a version already shown: the client is told so, not
        // a bare miss (a detail superseded on disk, after a restart, is a miss in memory).
        let superseded = landing.refetchedSuperseded || memory.peek(key)?.isSuperseded == true
        let supersededForward: CacheOutcome.Forward? = superseded && forward != .request ? .stale : nil
        switch outcome {
        case .fromDisk(let answer):
            return CacheDelivery(.cached(answer, age: answer.ageSeconds(now: now)), .hit(ttl: answer.cacheStatusTTL(now: now)))
        case .fromShared(let answer):
            return CacheDelivery(.cached(answer, age: answer.ageSeconds(now: now)), .sharedHit(ttl: answer.cacheStatusTTL(now: now)))
        case .stored(let answer):
            return CacheDelivery(.cached(answer, age: answer.ageSeconds(now: now)),
                                 .forwarded(supersededForward ?? forward, upstreamStatus: 200, stored: true, collapsed: collapsed,
                                            detail: supersededForward.map { _ in "superseded" }),
                                 upstreamStatus: 200, upstreamDuration: duration)
        case .passedOn(let response):
            return CacheDelivery(.passedOn(response), .forwarded(supersededForward ?? forward, upstreamStatus: response.status,
                                                                 collapsed: collapsed, detail: supersededForward.map { _ in "superseded" }),
                                 upstreamStatus: response.status, upstreamDuration: duration)
        case .failed(let failure):
            let refused = supersededForward != nil || failure == Self.olderThanListed
            return CacheDelivery(.failed(failure), .forwarded(supersededForward ?? forward, upstreamStatus: nil, collapsed: collapsed,
                                                              detail: refused ? "superseded" : failure.code),
                                 upstreamDuration: duration)
        }
    }

    /// A stale answer to serve instead of an upstream failure, within stale-if-error of its
    /// TTL's end; never one that is superseded.
    private func staleAnswer(for key: CacheKey, now: Double) -> CachedAnswer? {
        guard let held = memory.peek(key), held.isWithinStaleWindow(staleWindows.ifError, now: now),
              let stale = current(held, key: key) else { return nil }
        counters.staleServed += 1
        return stale
    }

    /// The background refresh of an answer served stale: one flight per resource, joined with
    /// any foreground fetch in the air. `throughList`: a detail whose list is due; the list is
    /// fetched (or its fetch joined), and the detail on its own only if the list showed it changed.
    private func refresh(_ key: CacheKey, throughList: Bool, requestID: String, client: String) {
        let flight = FlightKey(throughList ? .list(workflow: key.workflow) : key, revalidates: false)
        let join = flights.join(flight) { [self] landing in
            guard throughList, case .stored = landing.outcome, let entry = memory.peek(key), entry.remaining(now: clock()) <= 0 else { return }
            refresh(key, throughList: false, requestID: requestID, client: client)
        }
        guard join == .leader else { return }
        runFlight(FlightRun(flight, requestID: requestID, client: client, background: true, hasFallback: nil, deadline: nil), .lease)
    }
}

extension FetchOutcome {
    /// The same kind of outcome with `answer` (a cached answer made current).
    func carrying(_ answer: CachedAnswer) -> FetchOutcome {
        switch self {
        case .fromDisk: .fromDisk(answer)
        case .fromShared: .fromShared(answer)
        case .stored: .stored(answer)
        default: self
        }
    }

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
