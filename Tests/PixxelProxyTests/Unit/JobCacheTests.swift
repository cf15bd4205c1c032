import Foundation
import Testing
@testable import JobCache

@Suite struct TimestampTests {
    @Test(arguments: [
        ("2026-11-20T10:15:30Z", 1_795_169_730.0),
        ("2026-11-20T10:15:30.250Z", 1_795_169_730.25),
        ("2026-11-20T15:45:30+05:30", 1_795_169_730.0),
        ("2026-11-20T05:15:30-0500", 1_795_169_730.0),
        ("2026-11-20T10:15:30.123456+00:00", 1_795_169_730.123456),
        ("2026-11-20 10:15:30", 1_795_169_730.0),
        ("2026-11-20T10:15Z", 1_795_169_700.0),
    ])
    func parsesEveryFormTheUpstreamMaySend(_ text: String, _ expected: Double) throws {
        let value = try #require(Timestamp.parse(text))
        #expect(abs(value - expected) < 0.000_01)
    }

    @Test(arguments: ["", "2026-11-20", "2026-11-20T25:00:00Z", "2026-02-30T00:00:00Z", "2026-11-20T10:15:30+5", "yesterday", "2026-11-20T10:15:30Zjunk"])
    func refusesEverythingElse(_ text: String) {
        #expect(Timestamp.parse(text) == nil)
    }

    @Test func utcDaysAcrossOffsetsAndDayBoundaries() {
        #expect(Timestamp.utcDate(of: Timestamp.parse("2026-11-20T23:30:00-05:00")!)?.description == "2026-11-21")
        #expect(Timestamp.utcDate(of: Timestamp.parse("2026-11-21T02:00:00+05:30")!)?.description == "2026-11-20")
        #expect(Timestamp.utcDate(of: Timestamp.parse("2024-02-29T23:59:59.999Z")!)?.description == "2024-02-29")
        #expect(Timestamp.utcDate(of: Timestamp.parse("2025-01-01T00:00:00+14:00")!)?.description == "2024-12-31")
        #expect(Timestamp.utcDate(of: 0)?.description == "1970-01-01")
    }

    /// Once a force unwrap that stopped the process on an upstream's `created_at`.
    @Test func daysTheCalendarCannotHoldAreNil() {
        #expect(Timestamp.utcDate(of: Timestamp.parse("0001-01-01T00:00:00+14:00")!) == nil)
        #expect(Timestamp.utcDate(of: Timestamp.parse("9999-12-31T23:00:00-05:00")!) == nil)
        #expect(Timestamp.utcDate(of: .infinity) == nil && Timestamp.utcDate(of: .nan) == nil && Timestamp.utcDate(of: 1e300) == nil)
    }
}

@Suite struct JobListDocumentTests {
    static let body = Array("""
    { "total_hint": 3, "jobs" : [
      {"id":"a","status":"Running","created_by":"u1","created_at":"2026-11-20T23:30:00-05:00","updated_at":"2026-11-21T04:31:00Z","x":{"nested":["]","}"]}},
      {"id":"b","status":"completed","created_by":"u2","created_at":"2026-11-20T10:00:00Z","updated_at":"2026-11-20T10:05:00Z","note":"with \\"quotes\\" and [brackets]"},
      {"id":"c","status":"failed","created_by":"u1","created_at":"2026-11-21T01:00:00+05:30","updated_at":"2026-11-21T01:00:00+05:30"}
    ], "next": null }
    """.utf8)

    @Test func anUnfilteredAnswerIsTheUpstreamBodyByteForByte() throws {
        let document = try #require(JobListDocument(body: Self.body))
        #expect(document.rendered(JobListFilters()) == Self.body)
        #expect(document.jobs.map(\.id) == ["a", "b", "c"])
    }

    /// Several jobs added in one rebuild, where new jobs belong (last in an oldest-first list,
    /// first in a newest-first one, newest first), each job's other bytes untouched.
    @Test func jobsAreInsertedInOneRebuildWhereNewJobsBelong() throws {
        let oldestFirst = try #require(JobListDocument(body: Array(#"{"jobs":[{"id":"a","created_at":"2026-11-20T09:00:00Z"},{"id":"b","created_at":"2026-11-20T10:00:00Z"}]}"#.utf8)))
        let new = [["id": "n1", "created_at": "2026-11-20T11:00:00Z", "tasks": [] as [Any]], ["id": "n2", "created_at": "2026-11-20T12:00:00Z"]]
        let appended = try #require(oldestFirst.inserting(new, fields: ["id", "created_at"]))
        #expect(appended.jobs.map(\.id) == ["a", "b", "n1", "n2"])
        #expect(appended.body.starts(with: Array(#"{"jobs":[{"id":"a","created_at":"2026-11-20T09:00:00Z"},"#.utf8)))
        let newestFirst = try #require(JobListDocument(body: Array(#"{"jobs":[{"id":"b","created_at":"2026-11-20T10:00:00Z"},{"id":"a","created_at":"2026-11-20T09:00:00Z"}]}"#.utf8)))
        let prepended = try #require(newestFirst.inserting(new, fields: ["id", "created_at"]))
        #expect(prepended.jobs.map(\.id) == ["n2", "n1", "b", "a"])
        #expect(prepended.fieldNames(at: 0)?.sorted() == ["created_at", "id"], "projected to the list's fields")
    }

    /// A list too short to tell its order appends, in order, as one write-through at a time
    /// does (found by review: an empty list took several jobs newest first).
    @Test func jobsInsertedIntoAnEmptyListKeepTheirOrder() throws {
        let empty = try #require(JobListDocument(body: Array(#"{"jobs":[]}"#.utf8)))
        let new = [["id": "n1", "created_at": "2026-11-20T11:00:00Z"], ["id": "n2", "created_at": "2026-11-20T12:00:00Z"]]
        #expect(try #require(empty.inserting(new, fields: ["id", "created_at"])).jobs.map(\.id) == ["n1", "n2"])
    }

    func ids(_ filters: JobListFilters) throws -> [String] {
        let document = try #require(JobListDocument(body: Self.body))
        let rendered = document.rendered(filters)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(rendered)) as? [String: Any])
        #expect(object["total_hint"] as? Int == 3, "other top-level fields are kept")
        #expect(object.keys.contains("next"))
        return (object["jobs"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }
    }

    @Test func filtersCombineWithAndKeepTheUpstreamsOrder() throws {
        #expect(try ids(JobListFilters(status: "running")) == ["a"])
        #expect(try ids(JobListFilters(createdBy: "u1")) == ["a", "c"])
        #expect(try ids(JobListFilters(status: "failed", createdBy: "u1")) == ["c"])
        #expect(try ids(JobListFilters(id: "b")) == ["b"])
        #expect(try ids(JobListFilters(id: "zz")) == [])
        // a: 2026-11-21 in UTC; b: 2026-11-20; c: 2026-11-20 in UTC (19:30Z the day before).
        #expect(try ids(JobListFilters(createdOn: CalendarDate(year: 2026, month: 11, day: 21))) == ["a"])
        #expect(try ids(JobListFilters(createdOn: CalendarDate(year: 2026, month: 11, day: 20))) == ["b", "c"])
    }

    @Test func fragmentsAreTheJobsBytesAsSent() throws {
        let document = try #require(JobListDocument(body: Self.body))
        let text = String(decoding: document.rendered(JobListFilters(id: "b")), as: UTF8.self)
        #expect(text.contains(#""note":"with \"quotes\" and [brackets]""#))
    }

    @Test(arguments: [
        "[]", "{}", #"{"jobs": {}}"#, #"{"jobs": [1, 2]}"#, #"{"jobs": [{"no_id": 1}]}"#, #"{"jobs": [{"id": "a"}"#,
        #"{"jobs": [], "jobs": []}"#, #"{"jobs": [{"id": "a"}]} trailing"#, "not json",
    ])
    func refusesDocumentsItCannotServe(_ text: String) {
        #expect(JobListDocument(body: Array(text.utf8)) == nil)
    }

    @Test func anEmptyListIsFine() throws {
        let document = try #require(JobListDocument(body: Array(#"{"jobs": []}"#.utf8)))
        #expect(String(decoding: document.rendered(JobListFilters(status: "x")), as: UTF8.self) == #"{"jobs": []}"#)
    }
}

@Suite struct FreshnessPolicyTests {
    let policy = FreshnessPolicy(activeJobSeconds: 10, terminalJobSeconds: 86_400, jobListSeconds: 15,
                                 terminalStatuses: ["completed", "failed", "Cancelled"])

    @Test func terminalStatusesAreCaseInsensitive() {
        #expect(policy.lifetime(ofJobWithStatus: "COMPLETED") == 86_400)
        #expect(policy.lifetime(ofJobWithStatus: "cancelled") == 86_400)
        #expect(policy.lifetime(ofJobWithStatus: "running") == 10)
        #expect(policy.lifetime(ofJobWithStatus: nil) == 10)
    }

    @Test func remainingFreshnessCountsFromStorage() {
        #expect(FreshnessPolicy.remaining(storedAt: 100, lifetime: 10, now: 104) == 6)
        #expect(FreshnessPolicy.remaining(storedAt: 100, lifetime: 10, now: 111) < 0)
    }
}

@Suite struct MemoryTierTests {
    @Test func staysWithinItsByteBudgetEvictingLeastRecentlyUsed() {
        let tier = MemoryTier<String, Int>(budgetBytes: 1000)
        for index in 0..<10 { tier.set("k\(index)", index, cost: 100) }
        #expect(tier.totalBytes == 1000)
        _ = tier.get("k0")  // now the most recently used
        tier.set("k10", 10, cost: 250)
        #expect(tier.totalBytes <= 1000)
        #expect(tier.peek("k0") == 0)
        #expect(tier.peek("k1") == nil && tier.peek("k2") == nil && tier.peek("k3") == nil)
        #expect(tier.evictions == 3)
    }

    @Test func manyEntriesNeverExceedTheBudget() {
        let tier = MemoryTier<String, [UInt8]>(budgetBytes: 64 << 10)
        for index in 0..<10_000 {
            let cost = 1 + (index * 37) % 3000
            tier.set("k\(index)", [], cost: cost)
            #expect(tier.totalBytes <= 64 << 10)
        }
        #expect(tier.count > 0)
    }

    @Test func replacingAndRemovingKeepTheAccounts() {
        let tier = MemoryTier<String, Int>(budgetBytes: 100)
        tier.set("a", 1, cost: 40)
        tier.set("a", 2, cost: 60)
        #expect(tier.totalBytes == 60 && tier.count == 1)
        tier.set("huge", 3, cost: 101)
        #expect(tier.peek("huge") == nil && tier.peek("a") == 2)
        #expect(tier.removeAll { $0 == "a" } == 1)
        #expect(tier.totalBytes == 0)
    }

    /// A slot counts a value's cost in 32 bits: exactly below 2 GiB, in 64 KiB units rounded
    /// up above. A list within a large budget is held however much it costs (a 1.5 GB list
    /// costs over 4 GiB: three times its body), and the tier's total is the sum of what its
    /// slots count, never less than what they hold.
    @Test func costsPastThirtyTwoBitsAreHeldAndCountedAtLeastInFull() {
        let tier = MemoryTier<String, Int>(budgetBytes: 8 << 30)
        let listCost = 3 * 1_500_000_000 + 50 * 160 + 512
        tier.set("list", 1, cost: listCost)
        #expect(tier.peek("list") == 1)
        #expect(tier.totalBytes >= listCost && tier.totalBytes < listCost + 65536)
        tier.set("exact", 2, cost: (1 << 31) - 1)
        #expect(tier.totalBytes - (1 << 31) + 1 >= listCost)
        #expect(tier.remove("list") == 1 && tier.totalBytes == (1 << 31) - 1)
        tier.set("negative", 3, cost: -1)
        #expect(tier.peek("negative") == nil && tier.remove("exact") == 2 && tier.totalBytes == 0)
    }

    /// A value grown past 4 GiB by `addCost` (a large list's gzip form) is counted in full: what
    /// the tier really holds stays within its budget, the larger value evicting the other.
    @Test func bytesReallyHeldStayWithinTheBudgetWhenAValueGrowsPastFourGiB() {
        let budget = 6 << 30
        let tier = MemoryTier<String, Int>(budgetBytes: budget)
        var held: [String: Int] = [:]  // what each value really holds
        tier.set("other", 2, cost: 2 << 30)
        held["other"] = 2 << 30
        tier.set("list", 1, cost: (4 << 30) - 4096)
        held["list"] = (4 << 30) - 4096
        tier.addCost(1 << 30, to: "list") { _ in true }
        held["list", default: 0] += 1 << 30
        for key in Array(held.keys) where tier.peek(key) == nil { held[key] = nil }
        #expect(held.values.reduce(0, +) <= budget, "held \(held), counted \(tier.totalBytes)")
        #expect(tier.peek("list") == 1 && tier.peek("other") == nil && tier.totalBytes >= held["list"] ?? 0)
        // Grown past what a slot can count at all (128 TiB): let go, not undercounted.
        let huge = MemoryTier<String, Int>(budgetBytes: Int.max)
        huge.set("list", 1, cost: 1 << 40)
        huge.addCost(1 << 47, to: "list") { _ in true }
        #expect(huge.peek("list") == nil && huge.totalBytes == 0 && huge.count == 0)
    }

    /// Keys whose hashes are equal exactly when their lengths are: the tier finds entries by
    /// hash first, so keys that share one must still keep their own values.
    struct CollidingKey: Hashable {
        let name: String
        static func == (lhs: Self, rhs: Self) -> Bool { lhs.name == rhs.name }
        func hash(into hasher: inout Hasher) { hasher.combine(name.utf8.count) }
    }

    @Test func keysWhoseHashesCollideKeepTheirOwnValues() {
        let tier = MemoryTier<CollidingKey, Int>(budgetBytes: 1000)
        let (a, b, c) = (CollidingKey(name: "a"), CollidingKey(name: "b"), CollidingKey(name: "c"))
        tier.set(a, 1, cost: 10)
        tier.set(b, 2, cost: 10)
        tier.set(c, 3, cost: 10)
        #expect(tier.count == 3 && tier.peek(a) == 1 && tier.peek(b) == 2 && tier.peek(c) == 3)
        #expect(tier.peek(CollidingKey(name: "d")) == nil)
        // The key in the hash's bucket goes; the others are still found, and replace in place.
        #expect(tier.remove(a) == 1)
        #expect(tier.peek(a) == nil && tier.peek(b) == 2 && tier.peek(c) == 3)
        tier.set(c, 30, cost: 10)
        #expect(tier.peek(c) == 30 && tier.count == 2 && tier.totalBytes == 20)
        #expect(Set(tier.keys { _ in true }.map(\.name)) == ["b", "c"])
        // Eviction by the budget reaches collided keys too.
        let small = MemoryTier<CollidingKey, Int>(budgetBytes: 20)
        small.set(a, 1, cost: 10)
        small.set(b, 2, cost: 10)
        small.set(c, 3, cost: 10)
        #expect(small.peek(a) == nil && small.peek(b) == 2 && small.peek(c) == 3 && small.evictions == 1)
        #expect(small.removeAll { _ in true } == 2 && small.count == 0 && small.totalBytes == 0)
    }

    /// Thousands of entries, a third of them on seven hashes: the table grows past several
    /// sizes, removals in the middle of long runs move the rest of the run back, and the freed
    /// slots are taken again. Every entry stays found with its own value, and no removed one is.
    @Test func thousandsOfEntriesStayFoundThroughGrowthRemovalAndSlotReuse() {
        struct MostlyDistinct: Hashable {
            let number: Int
            static func == (lhs: Self, rhs: Self) -> Bool { lhs.number == rhs.number }
            func hash(into hasher: inout Hasher) { hasher.combine(number % 3 == 0 ? number % 7 : number) }
        }
        let tier = MemoryTier<MostlyDistinct, Int>(budgetBytes: 1 << 20)
        let keys = (0..<3000).map(MostlyDistinct.init)
        for key in keys { tier.set(key, key.number, cost: 1) }
        #expect(tier.count == 3000 && keys.allSatisfy { tier.peek($0) == $0.number })
        for key in keys where key.number % 2 == 0 { #expect(tier.remove(key) == key.number) }
        #expect(tier.count == 1500 && tier.totalBytes == 1500)
        #expect(keys.allSatisfy { tier.peek($0) == ($0.number % 2 == 0 ? nil : $0.number) })
        for key in keys where key.number % 2 == 0 { tier.set(key, -key.number, cost: 2) }
        #expect(tier.count == 3000 && tier.totalBytes == 4500)
        #expect(keys.allSatisfy { tier.peek($0) == ($0.number % 2 == 0 ? -$0.number : $0.number) })
        #expect(tier.removeAll { $0.number % 3 == 0 } == 1000)
        #expect(keys.allSatisfy { tier.peek($0) == ($0.number % 3 == 0 ? nil : $0.number % 2 == 0 ? -$0.number : $0.number) })
        #expect(tier.removeAll { _ in true } == 2000 && tier.count == 0 && tier.totalBytes == 0 && tier.evictions == 0)
    }

    /// A predicate that removes entries while the keys are listed (a purge deciding as it goes)
    /// still sees every key: the walk does not wander into the slots it freed.
    @Test func listingKeysSeesEveryKeyEvenWhenThePredicateRemovesEntries() {
        let tier = MemoryTier<Int, Int>(budgetBytes: 1 << 20)
        for key in 0..<50 { tier.set(key, key, cost: 1) }
        var seen: [Int] = []
        let chosen = tier.keys { key in
            seen.append(key)
            tier.remove(key)
            return key % 2 == 0
        }
        #expect(Set(seen) == Set(0..<50) && Set(chosen) == Set(stride(from: 0, to: 50, by: 2)) && tier.count == 0)
    }

    /// A tier emptied (a purge of everything) gives back its slots beyond the first chunk, and
    /// works as before afterwards.
    @Test func anEmptiedTierGivesBackItsSlots() {
        let tier = MemoryTier<Int, Int>(budgetBytes: 1 << 20)
        for key in 0..<5000 { tier.set(key, key, cost: 1) }
        #expect(tier.chunkCount >= 5)
        #expect(tier.removeAll { _ in true } == 5000)
        #expect(tier.chunkCount == 1 && tier.count == 0 && tier.totalBytes == 0)
        for key in 0..<3000 { tier.set(key, -key, cost: 1) }
        #expect(tier.count == 3000 && (0..<3000).allSatisfy { tier.peek($0) == -$0 } && tier.peek(4000) == nil)
    }

    /// Values the tier holds are released when they leave it (removed, replaced, evicted) and
    /// when the tier itself goes: slots are reused storage, and must not keep what they held.
    @Test func valuesAreReleasedWhenTheyLeaveTheTier() {
        final class Tracked { let id: Int; init(_ id: Int) { self.id = id } }
        weak var removed: Tracked?, replaced: Tracked?, evicted: Tracked?, heldToTheEnd: Tracked?
        var tier: MemoryTier<Int, Tracked>? = MemoryTier(budgetBytes: 30)
        do {
            let values = (0..<5).map(Tracked.init)
            (removed, replaced, evicted, heldToTheEnd) = (values[0], values[1], values[2], values[4])
            tier?.set(0, values[0], cost: 10)
            tier?.set(1, values[1], cost: 10)
            tier?.set(2, values[2], cost: 10)
            tier?.remove(0)
            tier?.set(1, values[3], cost: 10)
            tier?.set(4, values[4], cost: 10)
            tier?.set(5, Tracked(5), cost: 10)  // over budget: 2, the oldest, goes
        }
        #expect(removed == nil && replaced == nil && evicted == nil && heldToTheEnd != nil)
        tier = nil
        #expect(heldToTheEnd == nil)
    }

    /// The cache keeps a detail's version when the budget evicts it; a value replaced or
    /// removed by the caller is not reported (the caller knows, and a purge must not keep it).
    @Test func onlyValuesEvictedForTheBudgetAreReported() {
        let tier = MemoryTier<String, Int>(budgetBytes: 30)
        var evicted: [String] = []
        tier.onEvicted = { key, value in evicted.append("\(key)=\(value)") }
        tier.set("a", 1, cost: 10)
        tier.set("b", 2, cost: 10)
        tier.set("a", 3, cost: 10)  // replaced: not reported
        tier.set("c", 4, cost: 10)
        tier.set("d", 5, cost: 10)  // evicts b, the least recently used
        #expect(tier.remove("c") == 4)
        #expect(tier.removeAll { $0 == "d" } == 1)
        #expect(evicted == ["b=2"])
        #expect(tier.peek("a") == 3 && tier.count == 1)
    }

    /// Random operations on keys of which most share a hash, each step checked against a plain
    /// least-recently-used list: values, count, bytes, keys and eviction order.
    @Test func behavesAsAPlainLeastRecentlyUsedListUnderRandomOperations() {
        struct ThreeHashes: Hashable {
            let number: Int
            static func == (lhs: Self, rhs: Self) -> Bool { lhs.number == rhs.number }
            func hash(into hasher: inout Hasher) { hasher.combine(number % 3) }
        }
        /// SplitMix64: the same sequence on every run, so a failure reproduces.
        struct Sequence { var state: UInt64; mutating func next(_ bound: Int) -> Int {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return Int((z ^ (z >> 31)) % UInt64(bound))
        } }
        var random = Sequence(state: 2026)
        for _ in 0..<300 {
            let budget = 10 + random.next(51)
            let tier = MemoryTier<ThreeHashes, Int>(budgetBytes: budget)
            var model: [(key: ThreeHashes, value: Int, cost: Int)] = []  // oldest first
            for _ in 0..<200 {
                let key = ThreeHashes(number: random.next(8))
                switch random.next(6) {
                case 0, 1:
                    let (value, cost) = (random.next(1000), 1 + random.next(15))
                    tier.set(key, value, cost: cost)
                    model.removeAll { $0.key == key }
                    if cost <= budget {
                        model.append((key, value, cost))
                        while model.reduce(0, { $0 + $1.cost }) > budget { model.removeFirst() }
                    }
                case 2:
                    let index = model.firstIndex { $0.key == key }
                    #expect(tier.get(key) == index.map { model[$0].value })
                    if let index { model.append(model.remove(at: index)) }
                case 3:
                    #expect(tier.peek(key) == model.first { $0.key == key }?.value)
                case 4:
                    let index = model.firstIndex { $0.key == key }
                    #expect(tier.remove(key) == index.map { model[$0].value })
                    if let index { model.remove(at: index) }
                default:
                    let remainder = random.next(4)
                    let before = model.count
                    model.removeAll { $0.key.number % 4 == remainder }
                    #expect(tier.removeAll { $0.number % 4 == remainder } == before - model.count)
                }
                #expect(tier.count == model.count && tier.totalBytes == model.reduce(0) { $0 + $1.cost })
                #expect(Set(tier.keys { _ in true }.map(\.number)) == Set(model.map(\.key.number)))
                for entry in model { #expect(tier.peek(entry.key) == entry.value) }
            }
        }
    }
}

@Suite struct FlightsTests {
    @Test func oneLeaderManyFollowersAllWoken() {
        let flights = Flights<String, Int>(maxWaitersPerFlight: 3)
        var woken: [Int] = []
        #expect(flights.join("k") { woken.append($0) } == .leader)
        #expect(flights.join("k") { woken.append($0 * 10) } == .follower)
        #expect(flights.join("k") { woken.append($0 * 100) } == .follower)
        #expect(flights.join("k") { _ in } == .full)
        #expect(flights.join("other") { _ in } == .leader)
        flights.land("k", 1)
        #expect(woken == [1, 10, 100])
        #expect(!flights.isInFlight("k") && flights.isInFlight("other"))
        #expect(flights.collapsed == 2)
    }
}
