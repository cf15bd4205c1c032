import EventHTTP
import Foundation
import Synchronization
import Testing
import Upstream

@Suite struct BudgetTests {
    @Test func aBucketAllowsItsBurstThenItsRate() {
        var bucket = TokenBucket(rate: 2, burst: 3, now: 0)
        var granted = (0..<4).map { _ in bucket.take(now: 0) }
        #expect(granted == [true, true, true, false])
        #expect(bucket.secondsUntilToken(now: 0) == 0.5)
        granted = [bucket.take(now: 0.5), bucket.take(now: 0.6)]
        #expect(granted == [true, false])
        granted = (0..<4).map { _ in bucket.take(now: 100) }
        #expect(granted == [true, true, true, false], "refills up to the burst only")
        var unlimited = TokenBucket(rate: 0, burst: 1, now: 0)
        granted = (0..<1000).map { _ in unlimited.take(now: 0) }
        #expect(!granted.contains(false))
    }

    @Test(arguments: [
        ("3", 3.0), (" 120 ", 120.0), ("100000", 300.0), ("0", 0.0),
        ("Sun, 22 Nov 2026 10:00:10 GMT", 10.0), ("Sun, 22 Nov 2026 09:00:00 GMT", 0.0),
    ])
    func retryAfterTakesSecondsOrADateCapped(_ value: String, _ expected: Double) {
        let now = 1_795_341_600.0  // 2026-11-22T10:00:00Z
        #expect(RetryAfter.seconds(value, now: now, cap: 300) == expected)
    }

    /// Absurd years from a hostile upstream once overflowed the day arithmetic and stopped the process.
    @Test(arguments: ["soon", "-1", "22 Nov 2026", "", "nan", "1e400", "Sun, 06 Nov 99999999999999 08:49:37 GMT",
                      "Sun, 06 Nov -99999999999999 08:49:37 GMT", "Sun, 06 Nov 0 08:49:37 GMT", "Sun, 06 Nov 10000 08:49:37 GMT"])
    func retryAfterRefusesGarbage(_ value: String) {
        #expect(RetryAfter.seconds(value, now: 0, cap: 300) == nil)
    }

    @Test func interactiveFirstThenClientsInTurn() {
        var queue = FairQueue<String>()
        queue.push("greedy-1", client: "greedy", priority: .interactive)
        queue.push("greedy-2", client: "greedy", priority: .interactive)
        queue.push("greedy-3", client: "greedy", priority: .interactive)
        queue.push("refresh", client: "greedy", priority: .background)
        queue.push("polite-1", client: "polite", priority: .interactive)
        var order: [String] = []
        while let item = queue.pop() { order.append(item) }
        #expect(order == ["greedy-1", "polite-1", "greedy-2", "greedy-3", "refresh"])
    }

    @Test func expiredWaitersCanBeRemoved() {
        var queue = FairQueue<Int>()
        for value in 0..<6 { queue.push(value, client: value % 2 == 0 ? "a" : "b", priority: .interactive) }
        let removed = queue.removeAll { $0 < 3 }
        #expect(removed.sorted() == [0, 1, 2])
        #expect(queue.count == 3)
        var rest: [Int] = []
        while let item = queue.pop() { rest.append(item) }
        #expect(rest.sorted() == [3, 4, 5])
    }
}

/// The budget's queue on a real event loop: nobody waits past its deadline, and a caller with
/// stale data to give does not wait out an upstream pause.
@Suite struct BudgetDeadlineTests {
    final class Outcomes: @unchecked Sendable {
        let value = Mutex<[String]>([])
        func add(_ text: String) { value.withLock { $0.append(text) } }
        var all: [String] { value.withLock { $0 } }
    }

    /// 0.2 calls a second: the next token is 5 s away, the waiter's deadline 0.3 s. It once
    /// waited for the token (and was refused then, 5 s late).
    @Test func aWaiterIsRefusedAtItsDeadlineNotAtTheNextToken() throws {
        let running = RunningLoop()
        defer { running.stop() }
        let outcomes = Outcomes()
        let clock: @Sendable () -> Double = { Date().timeIntervalSince1970 }
        running.loop.execute {
            let budget = UpstreamBudget(loop: running.loop, rate: 0.2, burst: 1, maxQueued: 10, clock: clock)
            let now = clock()
            budget.acquire(client: "a", priority: .interactive, deadline: now + 10, grant: { outcomes.add("first granted") },
                           refuse: { _ in outcomes.add("first refused") })
            budget.acquire(client: "a", priority: .interactive, deadline: now + 0.3, grant: { outcomes.add("second granted") },
                           refuse: { _ in outcomes.add("second refused") })
            // Kept alive by the loop's timer until it fires.
            running.loop.schedule(after: 6) { _ = budget }
        }
        #expect(eventually(seconds: 3) { outcomes.all == ["first granted", "second refused"] }, "\(outcomes.all)")
    }

    @Test func duringAPauseACallerWithAFallbackIsRefusedAtOnce() throws {
        let running = RunningLoop()
        defer { running.stop() }
        let outcomes = Outcomes()
        let clock: @Sendable () -> Double = { 1000 }  // time stands still: only "at once" can pass
        running.loop.execute {
            let budget = UpstreamBudget(loop: running.loop, rate: 1, burst: 1, maxQueued: 10, clock: clock)
            budget.pause(until: 1005)
            budget.acquire(client: "a", priority: .interactive, deadline: 1010, waitsDuringPause: false,
                           grant: { outcomes.add("granted") }, refuse: { refusal in
                               if case .rateLimited(let seconds) = refusal { outcomes.add("refused \(seconds)") } else { outcomes.add("\(refusal)") }
                           })
            budget.acquire(client: "b", priority: .interactive, deadline: 1010,
                           grant: { outcomes.add("waiter granted") }, refuse: { _ in outcomes.add("waiter refused") })
            outcomes.add("queued \(budget.queued)")
        }
        #expect(eventually(seconds: 3) { outcomes.all == ["refused 5.0", "queued 1"] }, "\(outcomes.all)")
    }

    /// Waiting for a connection, not for the budget: a full queue is "busy" (503), not a
    /// 429 with a Retry-After computed from a rate (found by review: unlimited budgets answered
    /// 429 with Retry-After 1024 s).
    @Test func aFullQueueOfCallsWaitingForConnectionsIsBusyNotRateLimited() throws {
        let running = RunningLoop()
        defer { running.stop() }
        let outcomes = Outcomes()
        running.loop.execute {
            let budget = UpstreamBudget(loop: running.loop, rate: 0, burst: 1, maxQueued: 1, clock: { 1000 })
            budget.canStart = { false }
            budget.acquire(client: "a", priority: .interactive, deadline: 1010, grant: {}, refuse: { outcomes.add("first \($0)") })
            budget.acquire(client: "b", priority: .interactive, deadline: 1010, grant: {}, refuse: { outcomes.add("second \($0)") })
        }
        #expect(eventually(seconds: 3) { outcomes.all == ["second busy"] }, "\(outcomes.all)")
    }
}
