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
