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

/// The freshness of one cached job detail, as both tiers keep it: what a list answer changes.
public struct DetailFreshness: Sendable, Equatable {
    /// When the upstream last confirmed the detail; its TTL counts from here.
    public var validatedAt: Double
    /// The newest `updated_at` seen for the job in any answer, when newer than the detail's:
    /// an answer older than this is never stored (a lagging replica would take clients back).
    public var newestSeen: Double?
    /// Known to be stale whatever its TTL says: a newer `updated_at` was seen, or the job left
    /// its list. A detail in this state is never served, not even stale. (Declared last: after
    /// the optional's tag byte it takes no padding, and every cached entry holds one of these.)
    public var invalidated: Bool

    public init(validatedAt: Double, invalidated: Bool, newestSeen: Double? = nil) {
        self.validatedAt = validatedAt
        self.invalidated = invalidated
        self.newestSeen = newestSeen
    }
}

/// What one list answer showed: each listed job's `updated_at` (nil when missing or
/// unparseable), keyed by the job's id as the cache keys it, and when the answer came.
/// Applied to every cached detail of the workflow, in memory and on disk, by the same function.
public struct ListSightings: Sendable {
    public let updatedAt: [String: Double?]
    public let answeredAt: Double

    public init(updatedAt: [String: Double?], answeredAt: Double) {
        self.updatedAt = updatedAt
        self.answeredAt = answeredAt
    }

    /// A detail's freshness once a list is known to have shown its job at `listed`: superseded
    /// when that is newer than the detail.
    public static func superseding(_ freshness: DetailFreshness, detailUpdatedAt: Double?, listed: Double) -> DetailFreshness {
        guard Invalidation.effectOfSighting(cached: detailUpdatedAt, seen: listed) == .invalidate else { return freshness }
        var result = freshness
        result.invalidated = true
        result.newestSeen = max(freshness.newestSeen ?? listed, listed)
        return result
    }

    /// The detail's freshness after this list: renewed (same `updated_at`), invalidated (newer,
    /// or the job is no longer listed), or as it was (older or not comparable).
    public func applied(to freshness: DetailFreshness, jobID: String, detailUpdatedAt: Double?) -> DetailFreshness {
        var result = freshness
        guard let entry = updatedAt[jobID] else {
            result.invalidated = true  // no longer listed
            return result
        }
        let effect = Invalidation.effectOfSighting(cached: detailUpdatedAt, seen: entry)
        (result.validatedAt, result.invalidated) = Invalidation.apply(effect, validatedAt: freshness.validatedAt,
                                                                      invalidated: freshness.invalidated, now: answeredAt)
        if effect == .invalidate, let entry { result.newestSeen = max(freshness.newestSeen ?? entry, entry) }
        return result
    }
}

extension Invalidation {
    /// Whether a detail answer may be stored over what is cached: not when it is older than the
    /// cached detail, nor older than the newest `updated_at` a list has shown for the job.
    /// An answer without a usable `updated_at` cannot show it is not older than what a list
    /// showed, so it does not replace anything once a newer version has been seen.
    public static func answerMayReplace(cached: Double?, newestSeen: Double?, answer: Double?) -> Bool {
        guard answerMayReplace(cached: cached, answer: answer) else { return false }
        guard let newestSeen else { return true }
        guard let answer else { return false }
        return answer >= newestSeen
    }
}

/// How an expired job detail is revalidated: on its own, or through its workflow's list.
///
/// One list call confirms every job it shows: a detail whose `updated_at` the list repeats is
/// renewed from it (`ListSightings.applied`), so the detail costs no call of its own. The list
/// route is taken when the list is about to be fetched anyway (expired, or within
/// `listDueSoonSeconds` of it), so the call is shared with the list's readers and every other
/// detail of the workflow; a changed or missing job then costs its own detail call after the
/// list's (one more round trip, only for a version the list has shown to be new).
/// Pure: the cache supplies what it holds.
public enum Revalidation {
    public enum Route: Sendable, Equatable {
        case detail
        case list
    }

    /// A list this close to its expiry counts as due: a detail renewed by a list expires at the
    /// same instant as that list when their TTLs are equal, and a read a moment before the
    /// list's end would otherwise cost a detail call the list refresh makes moot.
    public static let listDueSoonSeconds = 1.0

    /// - Parameters:
    ///   - detailSuperseded: a newer version is known; only the detail can give it.
    ///   - detailUpdatedAt: the cached detail's `updated_at`.
    ///   - listedUpdatedAt: the job's `updated_at` in the cached list (nil: not in it, or no list).
    ///   - listRemaining: seconds of freshness the cached list has left (nil: no list cached).
    public static func route(detailSuperseded: Bool, detailUpdatedAt: Double?, listedUpdatedAt: Double?, listRemaining: Double?) -> Route {
        guard !detailSuperseded, let detailUpdatedAt, let listedUpdatedAt, let listRemaining,
              listedUpdatedAt == detailUpdatedAt, listRemaining <= listDueSoonSeconds else { return .detail }
        return .list
    }
}

/// What storing an upstream answer comes to, decided by the rules before any tier is touched
/// (the cache then applies it to every tier).
public enum StorePlan: Sendable, Equatable {
    /// Store the answer (a list's sightings then renew or invalidate the workflow's details).
    case store
    /// Older than the cached answer, which is still current: that one stays and is served.
    case keepCached
    /// Older than a version already shown, and nothing current is cached: refused (the client
    /// gets an error, never an older job).
    case refuse
}

extension Invalidation {
    /// A detail answer dated `answer`, against the cached detail (nil: none; its `updatedAt`
    /// and whether a list superseded it) and the newest `updated_at` any answer has shown.
    public static func planDetail(answer: Double?, cached: (updatedAt: Double?, superseded: Bool)?, newestSeen: Double?) -> StorePlan {
        if answerMayReplace(cached: cached?.updatedAt, newestSeen: newestSeen, answer: answer) { return .store }
        if let cached, !cached.superseded, !answerMayReplace(cached: cached.updatedAt, answer: answer) { return .keepCached }
        return .refuse
    }

    /// A list answer showing each job at `listed` (keyed as `newestKnown` is), against the
    /// newest `updated_at` this instance has shown or learned per job. A job shown older is
    /// patched with the newer versions held (`canPatch`); when they are not all held, it is a
    /// lagging answer, and the cached list (if any) stays. An entry without a usable
    /// `updated_at` is not comparable: neither newer nor older.
    public static func planList(listed: [String: Double?], newestKnown: (String) -> Double?, canPatch: ([String]) -> Bool,
                                hasCached: Bool) -> ListPlan {
        let regressed = listed.compactMap { job, updatedAt -> String? in
            guard let updatedAt, let known = newestKnown(job) else { return nil }
            return updatedAt < known ? job : nil
        }
        guard !regressed.isEmpty else { return .store }
        let sorted = regressed.sorted()
        if canPatch(sorted) { return .patch(sorted) }
        return hasCached ? .keepCached : .refuse
    }
}

/// What storing a list answer comes to (`Invalidation.planList`).
public enum ListPlan: Sendable, Equatable {
    case store
    /// Store it with these jobs' entries replaced by the newer versions held.
    case patch([String])
    /// Older than the cached list, which stays and is served.
    case keepCached
    /// Older than a version already shown, and nothing current to serve: refused.
    case refuse
}
