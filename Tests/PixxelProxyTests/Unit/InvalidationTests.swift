import Testing
import CacheInvalidation
import JobCache

@Suite struct InvalidationTests {
    static let t = Timestamp.parse("2026-11-20T10:00:00Z")!

    @Test(arguments: [
        // (cached, seen, effect)
        ("2026-11-20T10:00:00Z", "2026-11-20T10:00:05Z", Invalidation.DetailEffect.invalidate),
        ("2026-11-20T10:00:00Z", "2026-11-20T10:00:00Z", .renew),
        ("2026-11-20T10:00:00Z", "2026-11-20T15:30:00+05:30", .renew),          // same instant, other offset
        ("2026-11-20T10:00:00.500Z", "2026-11-20T10:00:00.25Z", .keep),          // older: never go back
        ("2026-11-20T10:00:00.25Z", "2026-11-20T10:00:00.500000Z", .invalidate), // fractions compared as numbers
        ("2026-11-20T10:00:00Z", "2026-11-20T05:00:01-05:00", .invalidate),     // later despite the smaller text
        ("2026-11-20T10:00:00Z", "garbage", .keep),
        ("garbage", "2026-11-20T10:00:00Z", .keep),
        ("", "", .keep),
    ])
    func aSightingRenewsInvalidatesOrKeeps(_ cached: String, _ seen: String, _ effect: Invalidation.DetailEffect) {
        #expect(Invalidation.effectOfSighting(cached: Timestamp.parse(cached), seen: Timestamp.parse(seen)) == effect)
    }

    @Test func anOlderAnswerNeverReplacesANewerDetail() {
        #expect(!Invalidation.answerMayReplace(cached: Self.t, answer: Self.t - 1))
        #expect(Invalidation.answerMayReplace(cached: Self.t, answer: Self.t))
        #expect(Invalidation.answerMayReplace(cached: Self.t, answer: Self.t + 1))
        #expect(Invalidation.answerMayReplace(cached: nil, answer: Self.t - 1))
        #expect(Invalidation.answerMayReplace(cached: Self.t, answer: nil), "unknown falls back to plain TTL")
    }

    @Test func aDetailAnswerIsStoredKeptBehindTheCachedOneOrRefusedByPlan() {
        let t = Self.t
        #expect(Invalidation.planDetail(answer: t, cached: nil, newestSeen: nil) == .store)
        #expect(Invalidation.planDetail(answer: t + 1, cached: (t, false), newestSeen: nil) == .store)
        #expect(Invalidation.planDetail(answer: t - 1, cached: (t, false), newestSeen: nil) == .keepCached, "a lagging replica")
        #expect(Invalidation.planDetail(answer: t - 1, cached: (t, true), newestSeen: t + 5) == .refuse,
                "the cached one is superseded: nothing current to keep")
        #expect(Invalidation.planDetail(answer: t, cached: (t, false), newestSeen: t + 5) == .refuse,
                "as old as the cached one, and both older than a list showed: neither is current")
        #expect(Invalidation.planDetail(answer: t, cached: nil, newestSeen: t + 5) == .refuse, "older than a list showed")
        #expect(Invalidation.planDetail(answer: nil, cached: nil, newestSeen: t) == .refuse, "undated after a dated version was shown")
    }

    @Test func aListShowingAJobOlderThanKnownIsPatchedOrNotStored() {
        let t = Self.t
        let known: [String: Double] = ["a": t, "b": t + 10]
        let none: ([String]) -> Bool = { _ in false }
        #expect(Invalidation.planList(listed: ["a": t, "b": t + 10, "c": nil], newestKnown: { known[$0] }, canPatch: none,
                                      hasCached: true) == .store)
        #expect(Invalidation.planList(listed: ["a": t + 1, "b": t + 9], newestKnown: { known[$0] }, canPatch: none,
                                      hasCached: true) == .keepCached)
        #expect(Invalidation.planList(listed: ["a": t + 1, "b": t + 9], newestKnown: { known[$0] }, canPatch: none,
                                      hasCached: false) == .refuse)
        // Found by review: an undated entry counted as older than any dated version, and a list
        // from an upstream that sends none was refused or kept for ever once a detail was seen.
        #expect(Invalidation.planList(listed: ["b": nil], newestKnown: { known[$0] }, canPatch: none, hasCached: false) == .store,
                "undated: not comparable, neither newer nor older")
        // A job shown older whose newer version is held (a detail, the cached list's entry) is
        // patched; the rest of the answer, newer news among it, is stored.
        #expect(Invalidation.planList(listed: ["a": t - 1, "b": t + 9, "c": t], newestKnown: { known[$0] }, canPatch: { _ in true },
                                      hasCached: true) == .patch(["a", "b"]))
        #expect(Invalidation.planList(listed: ["a": t - 1, "b": t + 9], newestKnown: { known[$0] }, canPatch: { $0 == ["a"] },
                                      hasCached: true) == .keepCached, "one job that cannot be patched keeps the cached list")
    }

    @Test func aNewerDetailUpdatesTheListEntry() {
        #expect(Invalidation.detailUpdatesListEntry(listEntry: Self.t, detail: Self.t + 0.5))
        #expect(!Invalidation.detailUpdatesListEntry(listEntry: Self.t, detail: Self.t))
        #expect(!Invalidation.detailUpdatesListEntry(listEntry: Self.t, detail: Self.t - 1))
        #expect(!Invalidation.detailUpdatesListEntry(listEntry: nil, detail: Self.t))
    }

    @Test func jobsMissingFromAListAreFound() {
        #expect(Invalidation.vanished(cachedJobIDs: ["a", "b", "c"], listedJobIDs: ["a", "c", "d"]) == ["b"])
    }

    @Test func applyingEffects() {
        #expect(Invalidation.apply(.renew, validatedAt: 10, invalidated: false, now: 50) == (50, false))
        #expect(Invalidation.apply(.renew, validatedAt: 10, invalidated: true, now: 50) == (10, true), "a stale detail stays stale")
        #expect(Invalidation.apply(.invalidate, validatedAt: 10, invalidated: false, now: 50) == (10, true))
        #expect(Invalidation.apply(.keep, validatedAt: 10, invalidated: false, now: 50) == (10, false))
    }
}
