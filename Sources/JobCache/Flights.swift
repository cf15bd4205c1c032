/// Single flight per upstream resource: the first request for a key goes upstream, later ones
/// wait on it (a bounded waiting list, as Varnish's busy objects) and are woken with its result.
public final class Flights<Key: Hashable, Result> {
    public let maxWaitersPerFlight: Int
    private var waiting: [Key: [(Result) -> Void]] = [:]
    /// Waiters that joined a flight rather than starting one.
    public private(set) var collapsed = 0

    public init(maxWaitersPerFlight: Int) {
        self.maxWaitersPerFlight = maxWaitersPerFlight
    }

    public enum Join {
        /// No flight for the key: the caller must fetch and then `land` it.
        case leader
        /// Waiting on the flight in the air.
        case follower
        /// The flight's waiting list is full.
        case full
    }

    /// Joins the flight for `key`; the leader's own `waiter` is called on landing too.
    public func join(_ key: Key, _ waiter: @escaping (Result) -> Void) -> Join {
        if var list = waiting[key] {
            guard list.count < maxWaitersPerFlight else { return .full }
            list.append(waiter)
            waiting[key] = list
            collapsed += 1
            return .follower
        }
        waiting[key] = [waiter]
        return .leader
    }

    public func isInFlight(_ key: Key) -> Bool { waiting[key] != nil }

    public var inFlight: Int { waiting.count }

    /// Ends the flight for `key` and wakes every waiter, in arrival order.
    public func land(_ key: Key, _ result: Result) {
        guard let list = waiting.removeValue(forKey: key) else { return }
        for waiter in list { waiter(result) }
    }
}
