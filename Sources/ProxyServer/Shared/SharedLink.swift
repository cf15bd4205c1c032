import EventHTTP
import JobCache
import ProxyConfig
import ResponseCache
import SharedTier

/// The shared tier as this server uses it: the Redis link, the cache tier and leases over it,
/// the budget's token source, and the requests waiting for another instance's fetch.
/// Loop-bound; nil in the server when `shared.redis_url` is empty.
final class SharedLink {
    let redis: SharedRedis
    let tier: SharedCacheTier
    let budget: SharedBudgetLink
    /// Requests waiting for another instance's fetch of a resource, by its disk key: woken by
    /// that instance's message, or by their own poll.
    var leaseWaiters: [String: [Int: () -> Void]] = [:]
    private var lastWaiterID = 0

    func nextWaiterID() -> Int {
        lastWaiterID += 1
        return lastWaiterID
    }

    /// How long a fetch's lease lasts; the leader extends it while its call runs, so a leader
    /// that dies frees the resource within this time, and one waiter takes over.
    static let leaseSeconds = 2.0
    /// How often a waiter looks again without a message (a lost message, a dead leader).
    static let pollSeconds = 0.25

    init(loop: EventLoop, settings: ProxySettings, url: RedisURL) {
        let options = SharedRedis.Options(
            host: url.host, port: url.port, user: url.user, password: url.password?.value, database: url.database,
            keyPrefix: settings.sharedKeyPrefix, commandTimeout: Double(settings.sharedTimeoutMilliseconds) / 1000,
            instanceID: Self.newInstanceID())
        redis = SharedRedis(loop: loop, options: options)
        tier = SharedCacheTier(redis: redis)
        budget = SharedBudgetLink(redis: redis, rate: settings.upstreamRequestsPerSecond, burst: settings.upstreamBurst)
    }

    /// A purge Redis has not had yet (it was away): done when it is back.
    struct PendingPurge {
        let diskKey: String?
        let diskKeyPrefix: String?
        let announcement: String
    }

    private var pendingPurges: [PendingPurge] = []
    /// Bounded: past it the oldest are dropped (and counted), as the entries they named expire anyway.
    static let maxPendingPurges = 1024
    private(set) var droppedPurges = 0

    func keep(_ purge: PendingPurge) {
        if pendingPurges.count >= Self.maxPendingPurges {
            pendingPurges.removeFirst()
            droppedPurges += 1
        }
        pendingPurges.append(purge)
    }

    func takePendingPurges() -> [PendingPurge] {
        defer { pendingPurges = [] }
        return pendingPurges
    }

    var pendingPurgeCount: Int { pendingPurges.count }

    /// Wakes every request waiting on `diskKey`.
    func wakeWaiters(_ diskKey: String) {
        guard let waiters = leaseWaiters.removeValue(forKey: diskKey) else { return }
        for (_, waiter) in waiters.sorted(by: { $0.key < $1.key }) { waiter() }
    }

    /// Sixteen random hex digits: this process's name on the channel and in leases.
    static func newInstanceID() -> String {
        var generator = SystemRandomNumberGenerator()
        return String(generator.next() as UInt64, radix: 16)
    }
}
