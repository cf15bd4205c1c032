import EventHTTP
import JobCache
import ProxyConfig
import ResponseCache
import SharedTier

/// The shared tier as this server holds it: the Redis link, the cache tier over it (which the
/// cache uses), the budget's token source, and the purges Redis has not had yet.
/// Loop-bound; nil in the server when `shared.redis_url` is empty.
final class SharedLink {
    let redis: SharedRedis
    let tier: SharedCacheTier
    let budget: SharedBudgetLink

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

    /// When the cache last caught up after Redis came back, and whether one is scheduled.
    var lastCatchUp: ContinuousClock.Instant?
    var catchUpScheduled = false
    static let catchUpInterval = 10.0

    /// Sixteen random hex digits: this process's name on the channel and in leases.
    static func newInstanceID() -> String {
        var generator = SystemRandomNumberGenerator()
        return String(generator.next() as UInt64, radix: 16)
    }
}
