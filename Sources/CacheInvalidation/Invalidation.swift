/// The `updated_at` rules, pure: no I/O, no clock. Given what is cached and what the upstream
/// just answered, they say what may renew, invalidate or replace what. Instants are seconds
/// since 1970 (UTC), already parsed; nil means missing or unparseable, which falls back to plain
/// TTL and is never treated as newer.
public enum Invalidation {
    /// What a sighting of a job (in a list or detail answer) does to its cached detail.
    public enum DetailEffect: Sendable, Equatable {
        /// Same `updated_at`: the cached detail is current; its freshness restarts now.
        case renew
        /// Newer `updated_at` upstream: the cached detail is stale (next read goes upstream).
        case invalidate
        /// Older, or not comparable: nothing changes (never go backwards; plain TTL applies).
        case keep
    }

    /// A job seen in a list answer with `seen`, against the cached detail's `cached`.
    public static func effectOfSighting(cached: Double?, seen: Double?) -> DetailEffect {
        guard let cached, let seen else { return .keep }
        if seen > cached { return .invalidate }
        if seen == cached { return .renew }
        return .keep
    }

    /// Whether a detail answer may replace the cached detail: yes unless both are dated and
    /// the answer is older (an out-of-order answer or a lagging replica).
    public static func answerMayReplace(cached: Double?, answer: Double?) -> Bool {
        guard let cached, let answer else { return true }
        return answer >= cached
    }

    /// Whether a detail answer is newer than the job's entry in the cached list, so the entry
    /// should be updated from it and list and detail agree.
    public static func detailUpdatesListEntry(listEntry: Double?, detail: Double?) -> Bool {
        guard let listEntry, let detail else { return false }
        return detail > listEntry
    }

    /// Cached details of a workflow whose jobs a fresh list answer no longer shows: they are
    /// marked stale (the job may have been deleted or moved).
    public static func vanished(cachedJobIDs: Set<String>, listedJobIDs: Set<String>) -> Set<String> {
        cachedJobIDs.subtracting(listedJobIDs)
    }

    /// Freshness of a detail after `effect`, as (validated at, invalidated).
    public static func apply(_ effect: DetailEffect, validatedAt: Double, invalidated: Bool, now: Double) -> (validatedAt: Double, invalidated: Bool) {
        switch effect {
        case .renew: (invalidated ? validatedAt : now, invalidated)
        case .invalidate: (validatedAt, true)
        case .keep: (validatedAt, invalidated)
        }
    }
}
