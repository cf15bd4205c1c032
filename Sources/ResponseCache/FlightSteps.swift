import EventHTTP
import JobCache

/// What one fetch for a cached resource ended with; every waiter on the flight gets it.
public enum FetchOutcome {
    /// Found fresh in the disk tier and promoted to memory.
    case fromDisk(CachedAnswer)
    /// Found fresh in the shared tier (another instance fetched it) and adopted.
    case fromShared(CachedAnswer)
    /// Stored (or a newer cached answer kept over an older one).
    case stored(CachedAnswer)
    /// An upstream answer that is not cached (an error status), passed on as it is.
    case passedOn(ClientResponse)
    case failed(FetchFailure)
}

/// A flight's result as its waiters receive it: typed, nothing read from elsewhere.
struct FlightLanding {
    let outcome: FetchOutcome
    /// How long the flight's upstream call took (nil: it made none).
    let upstreamDuration: Duration?
    /// The leader's own look in the shared tier or the disk found it: the leader's request is a hit.
    let foundInTier: Bool
    /// The upstream was asked because what the cache held was superseded (older than a version
    /// already shown): `Cache-Status` says so.
    var refetchedSuperseded = false
}

/// One upstream fetch of a resource, which later requests for it wait on. A request that asked
/// for revalidation waits only on a fetch of its kind, which always goes upstream (a plain
/// flight may be answered from the disk tier).
public struct FlightKey: Hashable, Sendable {
    public let key: CacheKey
    public let revalidates: Bool

    public init(_ key: CacheKey, revalidates: Bool) {
        self.key = key
        self.revalidates = revalidates
    }
}

/// The steps a flight's leader runs for everyone waiting on it, in order; each names the next.
enum FlightStep {
    /// The shared tier: another instance may have fetched it (skipped by a revalidation, and
    /// with no shared tier).
    case lookupShared
    /// The disk, when memory has nothing: it may hold the answer, and a newer detail there must
    /// never be replaced by an older answer, so it is read even for a revalidation.
    case lookupDisk
    /// One instance fetches for all: this one takes the resource's lease, or waits for the one
    /// that holds it.
    case lease
    /// Another instance fetches: its message or a poll, then a look in the shared tier; past the
    /// deadline (or with Redis gone) this instance fetches itself. `notBefore`: a revalidation
    /// takes only an answer fetched after it asked.
    case waitForOtherInstance(deadline: Double, notBefore: Double)
    /// The upstream call, through the injected fetcher. `leased`: this instance holds the lease
    /// (kept while the call runs).
    case fetch(leased: Bool, deadline: Double?)
    /// Plan and apply: the upstream's 200 decoded once, planned by the pure `updated_at` rules
    /// (`Invalidation.planDetail`, `planList`), then applied to memory and disk (`store`).
    case store(ClientResponse, duration: Duration, leaseHold: Int?, leased: Bool)
    /// Every waiter gets the result; what was fetched goes to the shared tier, and the lease ends.
    case land(FlightLanding, leaseHold: Int?, leased: Bool)
}

/// A flight's leader at work.
final class FlightRun {
    let flight: FlightKey
    let requestID: String
    let client: String
    let background: Bool
    /// nil: decided when the call goes (a stale answer within stale-if-error in memory).
    let hasFallback: Bool?
    let deadline: Double?
    /// Memory held an entry when the flight began (the disk need not be read).
    let memoryHeld: Bool
    /// The disk was read and had no row, as it stood then: `store` need not read it again.
    var diskSeenEmpty: ResponseCache.DiskSeenEmpty?
    /// What the cache held when the upstream was asked was superseded (its landing says so).
    var refetchesSuperseded = false
    /// The cache's purge generation when the upstream was asked: a purge since, and what the
    /// flight stored is not shared (it would put the purged entry back in the others).
    var purgeAtFetch: Int?

    init(_ flight: FlightKey, requestID: String, client: String, background: Bool, hasFallback: Bool?, deadline: Double?,
         memoryHeld: Bool = true) {
        self.flight = flight
        self.requestID = requestID
        self.client = client
        self.background = background
        self.hasFallback = hasFallback
        self.deadline = deadline
        self.memoryHeld = memoryHeld
    }
}

extension ResponseCache {
    /// The largest `cache.routes` answer kept; a larger one is streamed through instead.
    public static let maxCachedRouteBytes = 1 << 20

    func runFlight(_ run: FlightRun, _ step: FlightStep) {
        let flight = run.flight, key = flight.key
        switch step {
        case .lookupShared:
            guard !flight.revalidates, let shared, shared.tier.isUp else { return runFlight(run, .lookupDisk) }
            lookInShared(key) { [self] answer in
                guard let answer else { return runFlight(run, .lookupDisk) }
                counters.sharedHits += 1
                runFlight(run, .land(FlightLanding(outcome: .fromShared(answer), upstreamDuration: nil, foundInTier: true),
                                     leaseHold: nil, leased: false))
            }

        case .lookupDisk:
            guard !run.memoryHeld, memory.peek(key) == nil, disk != nil else { return runFlight(run, .lease) }
            let before = diskSeenEmpty
            loadFromDisk(key) { [self] entry, fresh, readFailed in
                // No row, and the read did not fail: the disk is known empty for this key.
                if entry == nil, !readFailed, let before, before == diskSeenEmpty { run.diskSeenEmpty = before }
                guard fresh, !flight.revalidates, let read = entry else { return runFlight(run, .lease) }
                // What the disk holds may predate what the other instances showed meanwhile.
                learnNewerListed(read, key: key) { [self] in
                    guard let entry = current(read, key: key) else { return runFlight(run, .lease) }
                    counters.diskHits += 1
                    disk?.touch(key.diskKey)
                    runFlight(run, .land(FlightLanding(outcome: .fromDisk(entry), upstreamDuration: nil, foundInTier: true),
                                         leaseHold: nil, leased: false))
                }
            }

        case .lease:
            guard let shared, shared.tier.isUp else { return runFlight(run, .fetch(leased: false, deadline: run.deadline)) }
            let deadline = run.deadline ?? fetcher.newDeadline()
            shared.tier.takeLease(diskKey: key.diskKey, seconds: SharedTierState.leaseSeconds) { [self] answer in
                switch answer {
                case .acquired:
                    runFlight(run, .fetch(leased: true, deadline: deadline))
                case .unavailable:
                    runFlight(run, .fetch(leased: false, deadline: deadline))
                case .heldElsewhere:
                    shared.tier.countLeaseWait()
                    runFlight(run, .waitForOtherInstance(deadline: deadline, notBefore: flight.revalidates ? clock() : -.infinity))
                }
            }

        case .waitForOtherInstance(let deadline, let notBefore):
            guard let shared else { return runFlight(run, .fetch(leased: false, deadline: deadline)) }
            shared.awaitLanding(key.diskKey, loop: loop) { [self] in
                lookInShared(key) { [self] answer in
                    if let answer, answer.validatedAt >= notBefore {
                        shared.tier.countLeaseWaitHit()
                        return runFlight(run, .land(FlightLanding(outcome: .fromShared(answer), upstreamDuration: nil, foundInTier: false),
                                                    leaseHold: nil, leased: false))
                    }
                    guard shared.tier.isUp, !fetcher.hasPassed(deadline) else { return runFlight(run, .fetch(leased: false, deadline: deadline)) }
                    shared.tier.takeLease(diskKey: key.diskKey, seconds: SharedTierState.leaseSeconds) { [self] answer in
                        switch answer {
                        case .acquired:
                            shared.tier.countTakeover()
                            runFlight(run, .fetch(leased: true, deadline: deadline))
                        case .heldElsewhere:
                            runFlight(run, .waitForOtherInstance(deadline: deadline, notBefore: notBefore))
                        case .unavailable:
                            runFlight(run, .fetch(leased: false, deadline: deadline))
                        }
                    }
                }
            }

        case .fetch(let leased, let deadline):
            counters.upstreamFetches += 1
            run.purgeAtFetch = purgeGeneration
            if run.background { counters.backgroundRefreshes += 1 }
            // What the cache holds (memory, or the disk row the flight read into it) is superseded.
            run.refetchesSuperseded = memory.peek(key)?.isSuperseded == true
            // With a stale answer to give on failure, a request does not wait out an upstream pause.
            let hasFallback = run.hasFallback ?? memory.peek(key)?.isWithinStaleWindow(staleWindows.ifError, now: clock()) ?? false
            // A `cache.routes` answer is kept only up to a bound: past it the fetch fails as too large.
            let maxBytes = if case .route = key { Self.maxCachedRouteBytes } else { nil as Int? }
            let leaseHold = leased ? holdLease(key.diskKey) : nil
            let started = ContinuousClock.now
            let request = FetchRequest(key: key, requestID: run.requestID, client: run.client, background: run.background,
                                       hasFallback: hasFallback, deadline: deadline, maxResponseBytes: maxBytes)
            fetcher.fetch(request) { [self] result in
                let duration = ContinuousClock.now - started
                let land = { [self] (outcome: FetchOutcome) in
                    runFlight(run, .land(FlightLanding(outcome: outcome, upstreamDuration: duration, foundInTier: false,
                                                       refetchedSuperseded: run.refetchesSuperseded),
                                         leaseHold: leaseHold, leased: leased))
                }
                switch result {
                case .failure(let failure):
                    takeNewerFromShared(key) { land(.failed(failure)) }
                case .success(let response) where response.status != 200:
                    let outcome = FetchOutcome.passedOn(response)
                    guard outcome.failedStatus != nil else { return land(outcome) }
                    takeNewerFromShared(key) { land(outcome) }
                case .success(let response) where key.isRoute && Self.forbidsStoring(response.headers):
                    // The upstream says not to keep it: those waiting now get it, nobody later.
                    land(.passedOn(response))
                case .success(let response):
                    runFlight(run, .store(response, duration: duration, leaseHold: leaseHold, leased: leased))
                }
            }

        case .store(let response, let duration, let leaseHold, let leased):
            store(key, body: response.body, headers: response.headers, now: clock(),
                  diskEmpty: run.diskSeenEmpty) { [self] stored in
                let outcome: FetchOutcome = switch stored {
                case .stored(let answer), .keptNewer(let answer): .stored(answer)
                case .olderThanListed: .failed(Self.olderThanListed)
                case .unparseable: .failed(Self.garbage)
                case .diskUnreadable: .failed(Self.diskUnreadable)
                }
                runFlight(run, .land(FlightLanding(outcome: outcome, upstreamDuration: duration, foundInTier: false,
                                                   refetchedSuperseded: run.refetchesSuperseded),
                                     leaseHold: leaseHold, leased: leased))
            }

        case .land(let landing, let leaseHold, let leased):
            flights.land(flight, landing)
            if let leaseHold { releaseLeaseHold(leaseHold) }
            // What this call fetched goes to the other instances (and wakes their waiters);
            // a failure only ends the lease, and one of them takes it over.
            if case .stored(let answer) = landing.outcome, run.purgeAtFetch.map({ $0 == purgeGeneration }) ?? true {
                share(key, answer, releasingLease: leased)
            } else if leased {
                share(key, nil, releasingLease: true)
            }
        }
    }

    /// Before a failed fetch's waiters get this instance's stale answer: a newer one another
    /// instance put in Redis is taken in (by the `updated_at` rules), so that it is the one
    /// served. `then` runs on the loop, at once when Redis is away or memory holds nothing
    /// stale to stand in (the waiters get the failure either way).
    func takeNewerFromShared(_ key: CacheKey, then: @escaping () -> Void) {
        guard let shared, shared.tier.isUp, let held = memory.peek(key) else { return then() }
        // A list also learns the newer versions of its jobs: Redis may hold no list at all
        // (back empty, or evicted) and yet newer details.
        let learn = { [self] in
            guard let list = memory.peek(key) else { return then() }
            learnNewerListed(list, key: key, done: then)
        }
        shared.tier.load(diskKey: key.diskKey, workflowID: key.workflow, jobID: key.job) { [self] read in
            switch read {
            case .found(let record) where record.validatedAt > held.validatedAt && SharedTierState.isPlausiblyConfirmed(record, now: clock()):
                adopt(key, record: record) { _ in learn() }
            case _ where key.job == nil:
                learn()
            case .superseded(let newestSeen):
                noteSupersededFromShared(key, newestSeen: newestSeen)
                then()
            default:
                then()
            }
        }
    }

    static let diskUnreadable = FetchFailure(
        status: 503, code: "store_unavailable", message: "the cache store could not be read to check the answer against; retry")
    static let garbage = FetchFailure(status: 502, code: "bad_gateway", message: "the upstream answered something that is not a Pixxel job document")
    static let olderThanListed = FetchFailure(
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
}
