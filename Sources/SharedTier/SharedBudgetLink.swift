import Upstream

/// The budget's tokens from Redis: one GCRA over every instance (`SharedScripts.token`), and
/// the `Retry-After` pause set there for all (`SharedScripts.pause`, plus a message so that
/// the others stop at once rather than at their next token).
public final class SharedBudgetLink: SharedTokenSource {
    private let redis: SharedRedis
    private let interval: Double
    private let burst: Double
    private let bucketKey: String
    private let pauseKey: String
    /// Tokens Redis granted, and answers that were a wait.
    public private(set) var tokensTaken = 0
    public private(set) var waits = 0

    /// `rate` calls a second with `burst` at once, over every instance; 0: unlimited, but
    /// still paused by the upstream's Retry-After.
    public init(redis: SharedRedis, rate: Double, burst: Double) {
        self.redis = redis
        interval = rate > 0 ? 1_000_000 / rate : 0
        self.burst = max(1, burst)
        bucketKey = redis.options.keyPrefix + "budget:tat"
        pauseKey = redis.options.keyPrefix + "budget:pause"
    }

    public var isAvailable: Bool { redis.isUp }

    public func takeToken(_ answer: @escaping (SharedTokenAnswer) -> Void) {
        redis.run(SharedScripts.token, keys: [bucketKey, pauseKey],
                  arguments: [Array(SharedEntryCodec.format6(interval).utf8), Array(SharedEntryCodec.format6(burst).utf8)]) { [self] result in
            guard case .success(let value) = result, value.elements.count == 3, let granted = value.elements[0].integer,
                  let wait = value.elements[1].integer, let paused = value.elements[2].integer else {
                return answer(.unavailable)
            }
            if granted == 1 {
                tokensTaken += 1
                return answer(.granted)
            }
            waits += 1
            answer(.wait(seconds: max(0.001, Double(wait) / 1_000_000), paused: paused == 1))
        }
    }

    public func sharePause(seconds: Double) {
        guard seconds > 0, seconds.isFinite else { return }
        redis.run(SharedScripts.pause, keys: [pauseKey], arguments: [Array(String(Int(seconds * 1_000_000)).utf8)]) { _ in }
        redis.publish(SharedMessage.pause(seconds: seconds).text)
    }
}
