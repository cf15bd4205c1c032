import JobCache
import ResponseCache

/// When each watched resource (one with held requests or change streams) may be asked for
/// again: a resource that stays expired (the upstream fails, or a refresh is still on its way)
/// is asked for after 1, 2, 4... up to 30 seconds, not every second.
struct RefreshSchedule {
    private var next: [CacheKey: (at: ContinuousClock.Instant, pause: Double)] = [:]

    /// Whether to ask for `key` now, given whether the cache holds it fresh.
    mutating func isDue(_ key: CacheKey, fresh: Bool, now: ContinuousClock.Instant) -> Bool {
        if fresh {
            next[key] = nil
            return false
        }
        if let at = next[key]?.at, at > now { return false }
        let pause = min(30, max(1, (next[key]?.pause ?? 0) * 2))
        next[key] = (now + .milliseconds(Int(pause * 1000)), pause)
        return true
    }

    /// `key` is watched no more.
    mutating func forget(_ key: CacheKey) { next[key] = nil }
}

extension ProxyServer {
    /// Asks the cache for watched resources that have expired, as a client would: one
    /// revalidation per freshness window for all who watch each (coalesced, budgeted, through
    /// the list where the economy rule says so), none while it is fresh. `client` names the
    /// watchers to the budget's fairness.
    func refreshWatched(_ keys: [CacheKey], schedule: inout RefreshSchedule, client: String) {
        let now = ContinuousClock.now
        for key in keys where schedule.isDue(key, fresh: cache.holdsFresh(key), now: now) {
            cache.serve(CacheRequest(key: key, filters: JobListFilters(), revalidate: false, requestID: hitPath.requestIDs.next(),
                                     client: client)) { _ in }
        }
    }
}
