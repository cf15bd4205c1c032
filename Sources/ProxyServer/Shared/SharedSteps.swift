import EventHTTP
import JobCache
import ResponseCache
import SharedTier

/// The shared tier's server-side steps: purges reach Redis (and are replayed when it was away),
/// messages from the other instances reach the cache (entries) or the budget (pauses), and one
/// log line marks each change of Redis's health. The cache's own use of the tier (look-ups,
/// leases, sharing what it stored) is the cache's (`ResponseCache`'s shared-tier steps).
extension ProxyServer {
    /// A purge reaches the shared tier and, through it, the other instances (ids as decoded
    /// from the request). `completion` runs once Redis has it (so the local purge that follows
    /// cannot be undone by a read from Redis), with what became of it: `purged`, `queued`
    /// (Redis is away: done when it is back), or nil without a shared tier.
    func sharePurge(workflowID: String, jobID: String?, completion: @escaping (String?) -> Void) {
        let workflow = PercentEncoding.segment(workflowID)
        let job = jobID.map(PercentEncoding.segment)
        let purge = if let job {
            SharedLink.PendingPurge(diskKey: CacheKey.detail(workflow: workflow, encodedJob: job).diskKey, diskKeyPrefix: nil,
                                    announcement: SharedMessage.purge(workflow: workflow, job: job).text)
        } else {
            SharedLink.PendingPurge(diskKey: CacheKey.list(workflow: workflow).diskKey, diskKeyPrefix: "detail/\(workflow)/",
                                    announcement: SharedMessage.purge(workflow: workflow, job: nil).text)
        }
        sharePurge(purge, completion: completion)
    }

    /// The same for `cache.routes` entries under an (encoded) path prefix: `prefix` itself and
    /// what lies under it, segment by segment, as `CachedRouteResource.isUnder` has it.
    func sharePurge(routesUnder prefix: String, completion: @escaping (String?) -> Void) {
        sharePurge(SharedLink.PendingPurge(diskKey: nil, diskKeyPrefix: "route" + prefix,
                                           announcement: SharedMessage.purgeRoutes(prefix: prefix).text), completion: completion)
    }

    private func sharePurge(_ purge: SharedLink.PendingPurge, completion: @escaping (String?) -> Void) {
        guard let shared else { return completion(nil) }
        guard shared.tier.isUp else {
            shared.keep(purge)
            return completion("queued")
        }
        shared.tier.purge(diskKey: purge.diskKey, diskKeyPrefix: purge.diskKeyPrefix, announcement: purge.announcement) { done in
            if !done { shared.keep(purge) }
            completion(done ? "purged" : "queued")
        }
    }

    /// Purges answered while Redis was away, done now that it is back (in order; one that
    /// fails again waits for the next time).
    func replayPurges() {
        guard let shared else { return }
        for purge in shared.takePendingPurges() {
            shared.tier.purge(diskKey: purge.diskKey, diskKeyPrefix: purge.diskKeyPrefix, announcement: purge.announcement) { done in
                if !done { shared.keep(purge) }
            }
        }
    }

    /// Takes in another instance's message: entries it changed go to the cache, which decides
    /// what they change here; purges are done here too; a pause holds this instance's budget.
    func received(_ message: SharedMessage) {
        switch message {
        case .stored, .written, .landed:
            cache.takeIn(message)
        case .purge(let workflow, let job):
            cache.purge(workflow: workflow, job: job) { _, _ in }
        case .purgeRoutes(let prefix):
            cache.purgeRoutes(pathPrefix: prefix) { _, _ in }
        case .pause(let seconds):
            budget.pauseHere(seconds: min(seconds, settings.upstreamMaxRetryAfterSeconds))
        }
    }

    /// Connects the link's events to this server: messages, and one log line per change of
    /// health. `joined` runs once, on the loop: when the first connection attempt has ended
    /// (up, or failed: then the instance acts alone, as when Redis goes away), or past
    /// `joinBoundSeconds` with Redis still silent.
    func startShared(joined: @escaping () -> Void) {
        guard let shared else { return }
        var waiting = true
        let joinedOnce = {
            guard waiting else { return }
            waiting = false
            joined()
        }
        let bound = loop.schedule(after: Self.joinBoundSeconds(timeoutMilliseconds: settings.sharedTimeoutMilliseconds)) { [logger] in
            guard waiting else { return }
            logger.warning("shared tier: Redis has not answered; accepting connections and acting alone until it does")
            joinedOnce()
        }
        shared.redis.onMessage = { [weak self] text in
            guard let message = SharedMessage(text) else { return }
            self?.received(message)
        }
        let share = settings.upstreamRequestsPerSecond / Double(settings.sharedInstances)
        shared.redis.onHealthChange = { [weak self, logger, settings] up, problem in
            bound.cancel()
            joinedOnce()
            if up {
                self?.replayPurges()
                // After a time away, or a start that did not wait for Redis, messages were
                // missed (nothing to do when nothing is held).
                self?.scheduleCatchUp()
            }
            if up {
                logger.notice("shared tier: Redis is up; cache tier, budget and coalescing shared",
                              metadata: ["redis": "\(settings.sharedRedisURL.map { "\($0)" } ?? "")"])
            } else {
                logger.warning("shared tier: Redis unreachable; this instance acts alone until it is back",
                               metadata: ["problem": "\(problem ?? "unknown")",
                                          "budget_share_per_second": "\(settings.upstreamRequestsPerSecond > 0 ? "\(share)" : "unlimited")"])
            }
        }
        shared.redis.start()
    }

    /// How long a starting instance keeps connections waiting for Redis to answer: twice a
    /// command's timeout, at least 2 s (a Redis that refuses ends the wait at once).
    static func joinBoundSeconds(timeoutMilliseconds: Int) -> Double {
        max(2, 2 * Double(timeoutMilliseconds) / 1000)
    }

    /// Runs the cache's catch-up now, or, within `catchUpInterval` of the last one, once that
    /// has passed: a link that flaps (its heartbeat timing out behind a large catch-up, say)
    /// must not rewrite every list into Redis at each return.
    func scheduleCatchUp() {
        guard let shared, !shared.catchUpScheduled else { return }
        shared.catchUpScheduled = true
        let since = shared.lastCatchUp.map { ContinuousClock.now - $0 } ?? .seconds(SharedLink.catchUpInterval)
        let wait = max(0, SharedLink.catchUpInterval - Double(since.components.seconds) - Double(since.components.attoseconds) / 1e18)
        _ = loop.schedule(after: wait) { [weak self] in
            guard let self, let shared = self.shared else { return }
            shared.catchUpScheduled = false
            shared.lastCatchUp = ContinuousClock.now
            if shared.tier.isUp { cache.catchUpOnLists() }
        }
    }
}
