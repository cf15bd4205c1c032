import CacheInvalidation
import EventHTTP
import JobCache
import Upstream

/// A stored upstream answer on a cached route, ready to send.
final class CachedAnswer {
    enum Document {
        case list(JobListDocument)
        case detail(JobDetailDocument)
    }

    let document: Document
    /// The upstream's end-to-end headers (Content-Type and whatever else it sent).
    let headers: HTTPHeaders
    /// When the upstream answered (wall clock, so it holds across restarts).
    let storedAt: Double
    let lifetime: Double
    /// When the upstream last confirmed it: its answer, or a list showing the same `updated_at`.
    var validatedAt: Double
    /// Set when a newer `updated_at` was seen elsewhere: stale whatever the TTL says.
    var invalidated: Bool

    init(document: Document, headers: HTTPHeaders, storedAt: Double, lifetime: Double,
         validatedAt: Double? = nil, invalidated: Bool = false) {
        self.document = document
        self.headers = headers
        self.storedAt = storedAt
        self.lifetime = lifetime
        self.validatedAt = validatedAt ?? storedAt
        self.invalidated = invalidated
    }

    /// The job's `updated_at` (details only).
    var updatedAt: Double? {
        if case .detail(let detail) = document { return detail.job.updatedAt }
        return nil
    }

    /// When a newer `updated_at` was seen (memory only; after a restart the TTL's end stands in).
    var invalidatedAt: Double?

    /// What the hit path sends, made on first use (see `sharedBody(for:)`).
    private var wholeBody: SharedBytes?
    private var filteredBodies: [JobListFilters: SharedBytes] = [:]
    private var filteredBytes = 0
    private var prepared: PreparedHeaderLines?

    /// Seconds since the answer went stale: since its TTL ended, or since it was invalidated
    /// if that came first. 0 while fresh.
    func staleness(now: Double) -> Double {
        var staleSince = validatedAt + lifetime
        if invalidated { staleSince = min(staleSince, invalidatedAt ?? staleSince) }
        return max(0, now - staleSince)
    }

    /// Whether it may still be served stale within a window of `seconds` (0 disables).
    func isWithinStaleWindow(_ seconds: Double, now: Double) -> Bool {
        seconds > 0 && staleness(now: now) <= seconds
    }

    /// Cache-Status's `ttl`: whole seconds of freshness left, or minus those since it went stale.
    func cacheStatusTTL(now: Double) -> Int {
        let remaining = remaining(now: now)
        return Int(remaining > 0 ? remaining.rounded(.down) : -staleness(now: now).rounded(.up))
    }

    /// The `Age` header: whole seconds since the upstream last confirmed it.
    func ageSeconds(now: Double) -> Int {
        max(0, Int((now - validatedAt).rounded(.down)))
    }

    /// Seconds of freshness left; negative once expired or invalidated.
    func remaining(now: Double) -> Double {
        invalidated ? -1 : FreshnessPolicy.remaining(storedAt: validatedAt, lifetime: lifetime, now: now)
    }

    /// Bytes held, for the memory budget: the body plus a fixed allowance per job and entry
    /// (a list also keeps filtered bodies of up to twice its own size).
    var cost: Int {
        switch document {
        case .list(let list): 3 * list.body.count + list.jobs.count * 160 + 512
        case .detail(let detail): detail.body.count + 512
        }
    }

    func body(for filters: JobListFilters) -> [UInt8] {
        sharedBody(for: filters).array
    }

    /// The body for `filters`, ready to send by reference: the stored bytes themselves when
    /// nothing is filtered, else assembled from the list's fragments once per filter set and
    /// kept with the entry (a bounded number of them), so a repeated filtered read copies nothing.
    func sharedBody(for filters: JobListFilters) -> SharedBytes {
        if filters.isEmpty {
            if let wholeBody { return wholeBody }
            let made: SharedBytes
            switch document {
            case .list(let list): made = SharedBytes(list.body)
            case .detail(let detail): made = SharedBytes(detail.body)
            }
            wholeBody = made
            return made
        }
        if let rendered = filteredBodies[filters] { return rendered }
        guard case .list(let list) = document else { return sharedBody(for: JobListFilters()) }
        let made = SharedBytes(list.rendered(filters))
        // Kept within twice the list's own bytes, which `cost` counts.
        if filteredBytes + made.count > 2 * list.body.count {
            filteredBodies.removeAll()
            filteredBytes = 0
        }
        if made.count <= 2 * list.body.count {
            filteredBodies[filters] = made
            filteredBytes += made.count
        }
        return made
    }

    /// Header lines for the hit path, made at the first hit.
    var preparedHeaderLines: PreparedHeaderLines {
        if let prepared { return prepared }
        let made = Self.prepareHeaderLines(headers)
        prepared = made
        return made
    }
}

/// What one upstream fetch for a cached route ended with; every waiter gets it.
enum FetchOutcome {
    /// Found fresh in the disk tier and promoted to memory.
    case fromDisk(CachedAnswer)
    case stored(CachedAnswer)
    /// An upstream answer that is not cached (an error status), passed on as it is.
    case passedOn(ClientResponse)
    case failed(UpstreamFailure)
}

/// A cached resource: a workflow's full job list or one job.
enum CachedResource: Sendable {
    case list(workflowID: String)
    case job(workflowID: String, jobID: String)

    var key: String {
        switch self {
        case .list(let workflow): "list \(workflow)"
        case .job(let workflow, let job): "job \(workflow) \(job)"
        }
    }

    var workflowID: String {
        switch self {
        case .list(let workflow), .job(let workflow, _): workflow
        }
    }

    /// The route template for metrics, as the client route that reads this resource.
    var routeTemplate: String {
        switch self {
        case .list(let workflow): Route.listJobs(workflowID: workflow).template
        case .job(let workflow, let job): Route.getJob(workflowID: workflow, jobID: job).template
        }
    }

    var upstreamPath: String {
        switch self {
        case .list(let workflow): "/v0/workflows/\(RequestTarget.encodeSegment(workflow))/jobs"
        case .job(let workflow, let job):
            "/v0/workflows/\(RequestTarget.encodeSegment(workflow))/jobs/\(RequestTarget.encodeSegment(job))"
        }
    }
}

extension ProxyServer {
    /// Answers a cached route: from memory while fresh; stale at once within
    /// `cache.stale_while_revalidate_seconds` while one background refresh runs; else through
    /// one upstream fetch shared by every concurrent request for the same resource, with the
    /// stale answer as the fallback within `cache.stale_if_error_seconds` when that fetch fails.
    func serveCached(_ exchange: Exchange, resource: CachedResource, filters: JobListFilters, clientHeaders: HTTPHeaders) {
        var exchange = exchange
        let now = clock()
        let forceRevalidation = Self.asksForRevalidation(clientHeaders)
        let cached = cache.memory.get(resource.key)
        if let cached, !forceRevalidation {
            let remaining = cached.remaining(now: now)
            if remaining > 0 || cached.isWithinStaleWindow(settings.staleWhileRevalidateSeconds, now: now) {
                cache.hits += 1
                exchange.cacheStatus = "pixxel-proxy; hit; ttl=\(cached.cacheStatusTTL(now: now))"
                finish(&exchange, from: cached, filters: filters, now: now)
                if remaining <= 0 {
                    cache.staleServed += 1
                    refreshInBackground(resource, clientHeaders: clientHeaders, client: exchange.caller.logName)
                }
                return
            }
        }
        cache.misses += 1
        let forward = forceRevalidation ? "request" : (cached == nil ? "miss" : "stale")
        let box = ExchangeBox(exchange)
        let join = cache.flights.join(resource.key) { [self] outcome in
            var exchange = box.exchange
            exchange.upstreamDuration = cache.landingUpstreamDuration
            deliver(outcome, to: &exchange, forward: forward, resource: resource, filters: filters)
        }
        switch join {
        case .leader:
            box.exchange.forwarded = true
            if cached == nil, !forceRevalidation, let disk = cache.disk {
                let client = exchange.caller.logName
                disk.load(resource.key) { [self] record in
                    loop.execute { [self] in promote(record, resource: resource, clientHeaders: clientHeaders, client: client) }
                }
            } else {
                fetch(resource, clientHeaders: clientHeaders, client: exchange.caller.logName, priority: .interactive)
            }
        case .follower:
            box.exchange.collapsed = true
            box.exchange.forwarded = true
        case .full:
            finish(&box.exchange, error: ProxyError(status: 503, code: "upstream_busy",
                                                     message: "too many requests are waiting for this resource"))
        }
    }

    /// One background refresh per resource, joined with any foreground fetch in the air.
    private func refreshInBackground(_ resource: CachedResource, clientHeaders: HTTPHeaders, client: String) {
        guard cache.flights.join(resource.key, { _ in }) == .leader else { return }
        cache.backgroundRefreshes += 1
        fetch(resource, clientHeaders: clientHeaders, client: client, priority: .background)
    }

    /// Answers with a cached entry's body for `filters`.
    private func finish(_ exchange: inout Exchange, from answer: CachedAnswer, filters: JobListFilters, now: Double) {
        finish(&exchange, status: 200, headers: answer.headers, body: answer.body(for: filters), age: answer.ageSeconds(now: now))
    }

    private func deliver(_ outcome: FetchOutcome, to exchange: inout Exchange, forward: String, resource: CachedResource,
                         filters: JobListFilters) {
        let collapsed = exchange.collapsed ? "; collapsed" : ""
        let now = clock()
        // Stale-if-error: an upstream 5xx, 429, timeout or broken connection, with a stale
        // answer still within its window, gets the stale answer rather than the error.
        var failedStatus: Int?
        switch outcome {
        case .failed(let failure): failedStatus = failure.status
        case .passedOn(let response) where response.status >= 500 || response.status == 429: failedStatus = response.status
        default: break
        }
        if let failedStatus, let stale = cache.memory.peek(resource.key), stale.isWithinStaleWindow(settings.staleIfErrorSeconds, now: now) {
            cache.staleServed += 1
            exchange.upstreamStatus = failedStatus
            exchange.cacheStatus = "pixxel-proxy; fwd=stale; fwd-status=\(failedStatus)\(collapsed)"
            return finish(&exchange, from: stale, filters: filters, now: now)
        }
        switch outcome {
        case .fromDisk(let answer):
            exchange.cacheStatus = "pixxel-proxy; hit; ttl=\(answer.cacheStatusTTL(now: now))"
            finish(&exchange, from: answer, filters: filters, now: now)
        case .stored(let answer):
            exchange.upstreamStatus = 200
            exchange.cacheStatus = "pixxel-proxy; fwd=\(forward); fwd-status=200; stored\(collapsed)"
            finish(&exchange, from: answer, filters: filters, now: now)
        case .passedOn(let response):
            exchange.upstreamStatus = response.status
            exchange.cacheStatus = "pixxel-proxy; fwd=\(forward); fwd-status=\(response.status)\(collapsed)"
            finish(&exchange, status: response.status, headers: response.headers, body: response.body)
        case .failed(let failure):
            exchange.cacheStatus = "pixxel-proxy; fwd=\(forward); detail=\(failure.code)\(collapsed)"
            finish(&exchange, failure: failure)
        }
    }

    /// A disk lookup came back (on the loop): a fresh record answers the flight; a stale one is
    /// kept in memory (for stale serving) and refreshed; none means an upstream fetch.
    private func promote(_ record: DiskRecord?, resource: CachedResource, clientHeaders: HTTPHeaders, client: String) {
        guard let record, let answer = CachedAnswer(record: record) else {
            return fetch(resource, clientHeaders: clientHeaders, client: client, priority: .interactive)
        }
        if cache.memory.peek(resource.key) == nil {
            cache.memory.set(resource.key, answer, cost: answer.cost)
        }
        guard answer.remaining(now: clock()) > 0 else {
            return fetch(resource, clientHeaders: clientHeaders, client: client, priority: .interactive)
        }
        // A disk hit is a hit: the miss counted before the lookup is taken back.
        cache.diskHits += 1
        cache.misses -= 1
        cache.hits += 1
        cache.disk?.touch(resource.key)
        cache.flights.land(resource.key, .fromDisk(answer))
    }

    /// One upstream GET for `resource`, always unfiltered and uncompressed; stores a 200 that
    /// parses, and lands the flight.
    private func fetch(_ resource: CachedResource, clientHeaders: HTTPHeaders, client: String, priority: UpstreamBudget.Priority) {
        var headers = clientHeaders
        for name in ["Accept-Encoding", "Cache-Control", "Pragma", "If-None-Match", "If-Modified-Since", "Range"] {
            headers.remove(name)
        }
        cache.upstreamFetches += 1
        let upstreamStarted = ContinuousClock.now
        callUpstream(route: resource.routeTemplate, method: .get, path: resource.upstreamPath, rawQuery: nil, clientHeaders: headers, body: [],
                     client: client, priority: priority) { [self] result in
            let outcome: FetchOutcome
            switch result {
            case .failure(let failure):
                outcome = .failed(failure)
            case .success(let response) where response.status != 200:
                outcome = .passedOn(response)
            case .success(let response):
                outcome = store(resource, response)
            }
            // Every waiter's access line shows the time of the one upstream call it shared.
            cache.landingUpstreamDuration = ContinuousClock.now - upstreamStarted
            cache.flights.land(resource.key, outcome)
            cache.landingUpstreamDuration = nil
        }
    }

    private func store(_ resource: CachedResource, _ response: ClientResponse) -> FetchOutcome {
        let now = clock()
        let document: CachedAnswer.Document
        let lifetime: Double
        switch resource {
        case .list:
            guard let list = JobListDocument(body: response.body) else { return .failed(Self.garbage) }
            document = .list(list)
            lifetime = cache.policy.jobListSeconds
        case .job:
            guard let detail = JobDetailDocument(body: response.body) else { return .failed(Self.garbage) }
            document = .detail(detail)
            lifetime = cache.policy.lifetime(ofJobWithStatus: detail.job.status)
        }
        let answer = CachedAnswer(document: document, headers: CachedAnswer.storableHeaders(response.headers), storedAt: now,
                                  lifetime: lifetime)
        switch document {
        case .list(let list):
            applyListSightings(list, workflowID: resource.workflowID, now: now)
        case .detail(let detail):
            if let cached = cache.memory.peek(resource.key),
               !Invalidation.answerMayReplace(cached: cached.updatedAt, answer: detail.job.updatedAt) {
                // An out-of-order answer (a lagging replica): the newer cached detail stays.
                cache.rejectedOutOfOrder += 1
                return .stored(cached)
            }
            updateListEntry(workflowID: resource.workflowID, from: detail, now: now)
        }
        cache.memory.set(resource.key, answer, cost: answer.cost)
        cache.disk?.save(answer.record(key: resource.key, resource: resource))
        return .stored(answer)
    }

    static let garbage = UpstreamFailure(status: 502, code: "bad_gateway", message: "the upstream answered something that is not a Pixxel job document")

    /// `Cache-Control: no-cache` or `max-age=0` (or `Pragma: no-cache`) from the client.
    static func asksForRevalidation(_ headers: HTTPHeaders) -> Bool {
        let directives = headers.values("Cache-Control").flatMap { $0.lowercased().split(separator: ",") }
            .map { String($0.filter { $0 != " " }) }
        return directives.contains("no-cache") || directives.contains("max-age=0")
            || headers.values("Pragma").contains { $0.lowercased().contains("no-cache") }
    }
}

/// The cache's state, owned by the loop thread (the disk store has its own queues).
final class CacheState {
    let memory: MemoryTier<CachedAnswer>
    let disk: DiskStore?
    let flights: Flights<FetchOutcome>
    let policy: FreshnessPolicy
    var hits = 0
    /// Hits the hit path answered (see `serveFreshHit`).
    var preparedHits = 0
    var diskHits = 0
    var misses = 0
    var upstreamFetches = 0
    /// Details renewed, invalidated, answers refused as older, list entries updated from a
    /// newer detail, and jobs written through from a POST (see `Invalidation`).
    var renewals = 0
    var invalidations = 0
    var rejectedOutOfOrder = 0
    /// Stale answers served (while revalidating, or because the upstream failed).
    var staleServed = 0
    /// While a flight lands: how long its upstream call took.
    var landingUpstreamDuration: Duration?
    var backgroundRefreshes = 0
    var listEntryUpdates = 0
    var writeThroughs = 0

    init(memoryBudgetBytes: Int, disk: DiskStore?, policy: FreshnessPolicy, maxWaitersPerFlight: Int) {
        memory = MemoryTier(budgetBytes: memoryBudgetBytes)
        self.disk = disk
        flights = Flights(maxWaitersPerFlight: maxWaitersPerFlight)
        self.policy = policy
    }

    /// Drops a workflow's entries (or one job's) from memory; the disk is purged by the caller.
    func purgeMemory(workflowID: String, jobID: String?) -> Int {
        if let jobID { return memory.remove(CachedResource.job(workflowID: workflowID, jobID: jobID).key) == nil ? 0 : 1 }
        let list = CachedResource.list(workflowID: workflowID).key
        let jobsPrefix = "job \(workflowID) "
        return memory.removeAll { $0 == list || $0.hasPrefix(jobsPrefix) }
    }
}

extension CachedAnswer {
    /// Headers made for each answer (by `finish` and the hit path), never kept with a document.
    static let perAnswerHeaderNames = ["Age", "Cache-Status", "X-Request-Id"]

    /// The upstream's headers as kept with a cached document: without cookies and without
    /// what is made per answer.
    static func storableHeaders(_ headers: HTTPHeaders, alsoRemoving extra: [String] = []) -> HTTPHeaders {
        var headers = headers
        for name in ["Set-Cookie"] + perAnswerHeaderNames + extra { headers.remove(name) }
        return headers
    }

    /// Rebuilds an answer read from the disk tier; nil if the stored body no longer parses.
    convenience init?(record: DiskRecord) {
        let document: Document
        switch record.kind {
        case .list:
            guard let list = JobListDocument(body: record.body) else { return nil }
            document = .list(list)
        case .detail:
            guard let detail = JobDetailDocument(body: record.body) else { return nil }
            document = .detail(detail)
        }
        var headers = HTTPHeaders()
        for line in record.headers {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers.add(String(line[..<colon]), String(line[line.index(after: colon)...]))
        }
        self.init(document: document, headers: headers, storedAt: record.storedAt, lifetime: record.lifetime,
                  validatedAt: record.validatedAt, invalidated: record.invalidated)
    }

    func record(key: String, resource: CachedResource) -> DiskRecord {
        let body: [UInt8]
        let kind: DiskRecord.Kind
        switch document {
        case .list(let list): body = list.body; kind = .list
        case .detail(let detail): body = detail.body; kind = .detail
        }
        var jobID: String?
        if case .job(_, let id) = resource { jobID = id }
        return DiskRecord(key: key, kind: kind, workflowID: resource.workflowID, jobID: jobID, body: body,
                          headers: headers.fields.map { "\($0.name):\($0.value)" }, storedAt: storedAt, lifetime: lifetime,
                          updatedAt: updatedAt, validatedAt: validatedAt, invalidated: invalidated)
    }
}
