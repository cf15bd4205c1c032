/// Keys remembered until a time each, at most `capacity` of them (the soonest to expire go
/// first when full). For `cache.routes` answers found too large to cache: those are streamed
/// through until their rule's lifetime has passed, not fetched for the cache again and again.
public struct ExpiringSet<Key: Hashable> {
    private var until: [Key: Double] = [:]
    public let capacity: Int

    public init(capacity: Int) {
        self.capacity = capacity
    }

    public var count: Int { until.count }

    public mutating func insert(_ key: Key, until instant: Double) {
        if until[key] == nil, until.count >= capacity, let soonest = until.min(by: { $0.value < $1.value })?.key {
            until.removeValue(forKey: soonest)
        }
        until[key] = instant
    }

    /// Whether `key` is remembered at `now` (an expired one is forgotten).
    public mutating func contains(_ key: Key, now: Double) -> Bool {
        guard let instant = until[key] else { return false }
        if instant > now { return true }
        until.removeValue(forKey: key)
        return false
    }
}
