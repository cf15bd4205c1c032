import EventHTTP
import JobCache
import ResponseCache

/// When each watched resource (one with held requests or change streams) is asked for again.
/// A fresh one is revalidated just before it expires (`lead`), by a timer of its own: asked
/// for only once expired, as a poller would, a resource was seen up to a sweep's second past
/// its freshness bound, and a version that lived one bound could be missed (found by the watch
/// bench: lateness up to 6.0 s with a 5 s bound). One that stays expired (the upstream fails,
/// or a refresh is still on its way) is asked for after 1, 2, 4... up to 30 seconds.
struct RefreshSchedule {
    private var next: [CacheKey: (at: ContinuousClock.Instant, pause: Double)] = [:]
    /// Revalidations timed for just before expiry, one per resource.
    var timed: [CacheKey: LoopTimer] = [:]

    /// How long before expiry a watched resource is revalidated: the upstream's answer (on
    /// loopback, milliseconds; far away, a round trip) lands while the old one is still fresh.
    static let lead = 0.25

    /// Whether to ask for an expired `key` now.
    mutating func isDue(_ key: CacheKey, now: ContinuousClock.Instant) -> Bool {
        if let at = next[key]?.at, at > now { return false }
        let pause = min(30, max(1, (next[key]?.pause ?? 0) * 2))
        next[key] = (now + .milliseconds(Int(pause * 1000)), pause)
        return true
    }

    mutating func noteFresh(_ key: CacheKey) { next[key] = nil }

    /// `key` is watched no more.
    mutating func forget(_ key: CacheKey) {
        next[key] = nil
        timed.removeValue(forKey: key)?.cancel()
    }

    mutating func cancelAll() {
        for timer in timed.values { timer.cancel() }
        timed = [:]
    }
}

/// Entries memory took for watched resources since they were last looked at: the watchers are
/// looked at once the current event is done, not inside the cache's own step.
struct StoredSinceLook<Key: Hashable> {
    private var stored: [Key: CachedAnswer] = [:]
    private var scheduled = false

    /// Notes an entry; true when a look is to be scheduled (none is yet).
    mutating func note(_ key: Key, _ answer: CachedAnswer) -> Bool {
        stored[key] = answer
        defer { scheduled = true }
        return !scheduled
    }

    /// What was stored since, superseded entries left out; the next note schedules a new look.
    mutating func take() -> [(key: Key, answer: CachedAnswer)] {
        defer {
            stored = [:]
            scheduled = false
        }
        return stored.filter { !$0.value.isSuperseded }.map { ($0.key, $0.value) }
    }
}

extension ProxyServer {
    /// Keeps watched resources fresh, as one poller would at the cost of one revalidation per
    /// freshness window for all who watch each (coalesced, budgeted, through the list where the
    /// economy rule says so): a fresh one due to expire before the next sweep is revalidated
    /// `RefreshSchedule.lead` before it does; an expired one is asked for now (with backoff).
    /// `client` names the watchers to the budget's fairness. Called once a second.
    /// `fired`: a timed revalidation has fired (its owner forgets the timer).
    func refreshWatched(_ keys: [CacheKey], schedule: inout RefreshSchedule, client: String,
                        fired: @escaping (CacheKey) -> Void) {
        let now = ContinuousClock.now
        for key in keys {
            guard let remaining = cache.remainingFreshness(key), remaining > 0 else {
                if schedule.isDue(key, now: now) { askForWatched(key, revalidate: false, client: client) }
                continue
            }
            schedule.noteFresh(key)
            // Due before the next sweep (a second from now), and not timed yet.
            guard remaining <= 1 + RefreshSchedule.lead, schedule.timed[key] == nil else { continue }
            schedule.timed[key] = loop.schedule(after: max(0, remaining - RefreshSchedule.lead)) { [weak self] in
                guard let self else { return }
                fired(key)
                // Renewed meanwhile (a client asked, another instance shared it): not yet.
                let remaining = cache.remainingFreshness(key)
                if let remaining, remaining > RefreshSchedule.lead + 0.1 { return }
                askForWatched(key, revalidate: remaining.map { $0 > 0 } ?? false, client: client)
            }
        }
    }

    private func askForWatched(_ key: CacheKey, revalidate: Bool, client: String) {
        cache.serve(CacheRequest(key: key, filters: JobListFilters(), revalidate: revalidate, requestID: hitPath.requestIDs.next(),
                                 client: client)) { _ in }
    }
}
