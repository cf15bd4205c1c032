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
