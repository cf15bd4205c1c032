/// A token bucket: `rate` tokens a second up to `burst`. Pure: time comes in as a value.
public struct TokenBucket: Sendable {
    public let rate: Double
    public let burst: Double
    public private(set) var tokens: Double
    private var last: Double

    /// `rate` 0 means unlimited.
    public init(rate: Double, burst: Double, now: Double) {
        self.rate = rate
        self.burst = max(1, burst)
        tokens = max(1, burst)
        last = now
    }

    public var isUnlimited: Bool { rate <= 0 }

    mutating func refill(now: Double) {
        guard now > last else { return }
        tokens = min(burst, tokens + (now - last) * rate)
        last = now
    }

    /// Takes one token if there is one.
    public mutating func take(now: Double) -> Bool {
        if isUnlimited { return true }
        refill(now: now)
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }

    /// Seconds until one token is available (0 if one is).
    public mutating func secondsUntilToken(now: Double) -> Double {
        if isUnlimited { return 0 }
        refill(now: now)
        return tokens >= 1 ? 0 : (1 - tokens) / rate
    }
}

/// `Retry-After` values: delay-seconds or an HTTP-date (RFC 9110, 10.2.3).
public enum RetryAfter {
    /// Seconds to wait from `now`, capped at `cap`; nil when the value is neither form.
    public static func seconds(_ value: String, now: Double, cap: Double) -> Double? {
        let trimmed = Substring(value).trimmingCharacters(in: " ")
        if let seconds = Double(trimmed), seconds >= 0, seconds.isFinite { return min(seconds, cap) }
        guard let date = httpDate(trimmed) else { return nil }
        return min(max(0, date - now), cap)
    }

    /// IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`, as seconds since 1970.
    static func httpDate(_ text: String) -> Double? {
        let parts = text.split(separator: " ")
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        guard parts.count == 6, parts[5] == "GMT", let day = Int(parts[1]), let monthIndex = months.firstIndex(of: String(parts[2])),
              let year = Int(parts[3]), (1...9999).contains(year) else { return nil }
        let time = parts[4].split(separator: ":").compactMap { Int($0) }
        guard time.count == 3, (1...31).contains(day), time[0] < 24, time[1] < 60, time[2] <= 60 else { return nil }
        let month = monthIndex + 1
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
        return Double(days * 86_400 + time[0] * 3600 + time[1] * 60 + time[2])
    }
}

/// Who waits for the upstream budget, in which order: interactive requests before background
/// refreshes, and within each, clients in turn (round robin), so that no client can take the
/// whole budget when the queue is contended. Pure bookkeeping; `UpstreamBudget` drives it.
public struct FairQueue<Item> {
    public enum Priority: Int, Sendable, CaseIterable { case interactive = 0, background = 1 }

    private var queues: [[String: [Item]]] = [[:], [:]]
    private var turns: [[String]] = [[], []]
    public private(set) var count = 0

    public init() {}

    public mutating func push(_ item: Item, client: String, priority: Priority) {
        let p = priority.rawValue
        if queues[p][client] == nil { turns[p].append(client) }
        queues[p][client, default: []].append(item)
        count += 1
    }

    /// The next item: first priority class with anything, next client in turn.
    public mutating func pop() -> Item? {
        for p in 0..<queues.count {
            guard !turns[p].isEmpty else { continue }
            let client = turns[p].removeFirst()
            var items = queues[p][client]!
            let item = items.removeFirst()
            if items.isEmpty { queues[p][client] = nil } else {
                queues[p][client] = items
                turns[p].append(client)
            }
            count -= 1
            return item
        }
        return nil
    }

    /// The item `pop` would return, left in place.
    public func peek() -> Item? {
        for p in 0..<queues.count {
            guard let client = turns[p].first else { continue }
            return queues[p][client]?.first
        }
        return nil
    }

    /// The smallest value of `key` over the items queued (nil when empty).
    public func earliest(by key: (Item) -> Double) -> Double? {
        queues.flatMap { $0.values.flatMap { $0 } }.map(key).min()
    }

    /// Whether any queued item satisfies `predicate`.
    public func contains(where predicate: (Item) -> Bool) -> Bool {
        queues.contains { $0.values.contains { $0.contains(where: predicate) } }
    }

    /// Removes and returns every item for which `predicate` holds (expired waiters).
    public mutating func removeAll(where predicate: (Item) -> Bool) -> [Item] {
        var removed: [Item] = []
        for p in 0..<queues.count {
            for client in turns[p] {
                let items = queues[p][client]!
                let kept = items.filter { !predicate($0) }
                removed += items.filter(predicate)
                queues[p][client] = kept.isEmpty ? nil : kept
            }
            turns[p].removeAll { queues[p][$0] == nil }
        }
        count -= removed.count
        return removed
    }
}

/// Seconds on a clock that never steps backwards (CLOCK_MONOTONIC through `ContinuousClock`),
/// for the budget's bucket, pause and deadlines.
public enum MonotonicClock {
    private static let origin = ContinuousClock.now

    @Sendable public static func seconds() -> Double {
        let elapsed = ContinuousClock.now - origin
        let (whole, attoseconds) = elapsed.components
        return Double(whole) + Double(attoseconds) / 1e18
    }
}
