import EventHTTP
import JobCache
import ResponseCache
import SharedTier
import Upstream

/// The shared tier's steps in answering a cached route: look in Redis after memory, make one
/// instance fetch for all (a lease), share what was fetched, and take in what the others
/// announce. Every step falls through to acting alone when Redis is away or slow.
extension ProxyServer {
    /// How far ahead of this instance's clock another instance's may be (an entry confirmed
    /// later than that is not taken in).
    static let sharedClockTolerance = 60.0
    /// How far ahead the upstream's `updated_at` values may be (its clock is not ours): a
    /// supersession mark from Redis beyond it is not believed.
    static let upstreamClockTolerance = 86_400.0

    /// Looks `key` up in the shared tier; `completion` gets a fresh answer (adopted into this
    /// instance's tiers by the `updated_at` rules) or nil.
    func lookInShared(_ key: CacheKey, completion: @escaping (CachedAnswer?) -> Void) {
        guard let shared, shared.tier.isUp else { return completion(nil) }
        shared.tier.load(diskKey: key.diskKey, workflowID: key.workflow, jobID: key.job) { [self] read in
            let now = clock()
            switch read {
            case .found(let record) where !Self.isPlausiblyConfirmed(record, now: now):
                completion(nil)
            case .found(let record):
                // What memory holds is as recent: nothing to take in.
                if cache.holdsCurrent(key, validatedAt: record.validatedAt), let held = cache.memory.peek(key) {
                    return completion(held.remaining(now: now) > 0 ? held : nil)
                }
                cache.adopt(key, record: record) { [self] result in
                    switch result {
                    case .stored(let answer), .keptNewer(let answer):
                        completion(answer.remaining(now: clock()) > 0 ? answer : nil)
                    case .olderThanListed, .unparseable:
                        completion(nil)
                    }
                }
            case .superseded(let newestSeen):
                noteSuperseded(key, newestSeen: newestSeen)
                completion(nil)
            case .missing, .unavailable:
                completion(nil)
            }
        }
    }

    /// Confirmed in the future: another instance's clock is wrong, or the entry was forged.
    static func isPlausiblyConfirmed(_ record: DiskRecord, now: Double) -> Bool {
        record.validatedAt <= now + sharedClockTolerance
    }

    /// A supersession mark from Redis, believed unless it is from over a day ahead: that would
    /// make every answer for the job look older than it, for as long as this process runs.
    private func noteSuperseded(_ key: CacheKey, newestSeen: Double) {
        guard newestSeen <= clock() + Self.upstreamClockTolerance else { return }
        cache.noteSuperseded(key, newestSeen: newestSeen)
    }

    /// The upstream fetch of a cached resource, made by one instance for all: this one takes
    /// the resource's lease and fetches, or waits for the instance that holds it (bounded by
    /// the request's deadline) and takes over when that one dies or stores nothing.
    func fetchOnceForAll(_ flight: FlightKey, requestID: String, client: String, priority: UpstreamBudget.Priority,
                         hasFallback: Bool? = nil, deadline: Double? = nil) {
        guard let shared, shared.tier.isUp else {
            return fetch(flight, requestID: requestID, client: client, priority: priority, hasFallback: hasFallback, deadline: deadline)
        }
        let deadline = deadline ?? gateway.newDeadline()
        let diskKey = flight.key.diskKey
        shared.tier.takeLease(diskKey: diskKey, seconds: SharedLink.leaseSeconds) { [self] answer in
            switch answer {
            case .acquired:
                fetch(flight, requestID: requestID, client: client, priority: priority, hasFallback: hasFallback, deadline: deadline,
                      leased: true)
            case .unavailable:
                fetch(flight, requestID: requestID, client: client, priority: priority, hasFallback: hasFallback, deadline: deadline)
            case .heldElsewhere:
                shared.tier.countLeaseWait()
                // A client that asked for revalidation takes only an answer fetched after it asked.
                waitForOtherInstance(flight, requestID: requestID, client: client, priority: priority, hasFallback: hasFallback,
                                     deadline: deadline, notBefore: flight.revalidates ? clock() : -.infinity)
            }
        }
    }

    /// Waits for the instance that holds the lease: its message or a poll, then a look in
    /// Redis; past the deadline (or with Redis gone) this instance fetches itself.
    private func waitForOtherInstance(_ flight: FlightKey, requestID: String, client: String, priority: UpstreamBudget.Priority,
                                      hasFallback: Bool?, deadline: Double, notBefore: Double) {
        guard let shared else { return }
        let diskKey = flight.key.diskKey
        let fetchAlone = { [self] in
            fetch(flight, requestID: requestID, client: client, priority: priority, hasFallback: hasFallback, deadline: deadline)
        }
        // Woken once: by a message about the key, or by the poll, whichever comes first.
        let id = shared.nextWaiterID()
        let poll = loop.schedule(after: SharedLink.pollSeconds) { [weak shared] in
            guard shared?.leaseWaiters[diskKey]?.removeValue(forKey: id) != nil else { return }
            if shared?.leaseWaiters[diskKey]?.isEmpty == true { shared?.leaseWaiters[diskKey] = nil }
            look()
        }
        shared.leaseWaiters[diskKey, default: [:]][id] = {
            poll.cancel()
            look()
        }

        func look() {
            lookInShared(flight.key) { [self] answer in
                if let answer, answer.validatedAt >= notBefore {
                    shared.tier.countLeaseWaitHit()
                    return cache.flights.land(flight, .fromShared(answer))
                }
                guard shared.tier.isUp, budgetClock() < deadline else { return fetchAlone() }
                shared.tier.takeLease(diskKey: diskKey, seconds: SharedLink.leaseSeconds) { [self] answer in
                    switch answer {
                    case .acquired:
                        shared.tier.countTakeover()
                        fetch(flight, requestID: requestID, client: client, priority: priority, hasFallback: hasFallback,
                              deadline: deadline, leased: true)
                    case .heldElsewhere:
                        waitForOtherInstance(flight, requestID: requestID, client: client, priority: priority, hasFallback: hasFallback,
                                             deadline: deadline, notBefore: notBefore)
                    case .unavailable:
                        fetchAlone()
                    }
                }
            }
        }
    }

    /// Keeps this instance's lease while its fetch runs, until `releaseLeaseHold` with the
    /// returned number. Each fetch has its own hold: a second leased fetch of the same resource
    /// (the lease lost in between) neither cancels nor orphans the first one's.
    func holdLease(_ diskKey: String) -> Int {
        nextLeaseHold += 1
        let hold = nextLeaseHold
        scheduleLeaseExtension(diskKey, hold: hold)
        return hold
    }

    private func scheduleLeaseExtension(_ diskKey: String, hold: Int) {
        guard let shared else { return }
        leaseTimers[hold] = loop.schedule(after: SharedLink.leaseSeconds / 2) { [weak self] in
            guard let self, leaseTimers[hold] != nil else { return }
            shared.tier.extendLease(diskKey: diskKey, seconds: SharedLink.leaseSeconds)
            scheduleLeaseExtension(diskKey, hold: hold)
        }
    }

    func releaseLeaseHold(_ hold: Int) {
        leaseTimers.removeValue(forKey: hold)?.cancel()
    }

    /// Puts a stored answer in the shared tier (a list's sightings first, so that the details
    /// it supersedes are marked before it is announced), then ends the lease, if held.
    /// `answer` nil: only the lease ends.
    func share(_ key: CacheKey, _ answer: CachedAnswer?, releasingLease leased: Bool, written: Bool = false) {
        guard let shared else { return }
        let release = {
            guard leased else { return }
            shared.tier.releaseLease(diskKey: key.diskKey)
            // Requests of this instance that waited on its own lease (the channel does not
            // bring an instance its own messages).
            shared.wakeWaiters(key.diskKey)
        }
        guard let answer, shared.tier.isUp else { return release() }
        if case .list(let workflow) = key {
            let listed = cache.listedDetails(of: answer, workflow: workflow).map { (diskKey: $0.key.diskKey, updatedAt: $0.updatedAt) }
            shared.tier.applySightings(listed, answeredAt: answer.validatedAt)
        }
        let keep = answer.lifetime + max(settings.staleWhileRevalidateSeconds, settings.staleIfErrorSeconds)
        shared.tier.save(answer.record(for: key), keep: keep, written: written) { _ in release() }
    }

    /// A job created through this instance: its detail and its workflow's list, as cached
    /// here, go to the shared tier (and so to the others).
    func shareWriteThrough(workflowID: String, body: [UInt8]) {
        guard shared != nil, let detail = JobDetailDocument(body: body) else { return }
        let detailKey = CacheKey.detail(workflowID: workflowID, jobID: detail.job.id)
        // Announced as written: every instance adds the job to the list it holds, including one
        // this instance does not hold (yet), which is the list a client of the other reads.
        if let answer = cache.memory.peek(detailKey) { share(detailKey, answer, releasingLease: false, written: true) }
        let listKey = CacheKey.list(workflow: detailKey.workflow)
        if let list = cache.memory.peek(listKey) { share(listKey, list, releasingLease: false, written: true) }
    }

    /// A purge reaches the shared tier and, through it, the other instances (ids as decoded
    /// from the request). `completion` runs once Redis has it (so the local purge that follows
    /// cannot be undone by a read from Redis), with what became of it: `purged`, `queued`
    /// (Redis is away: done when it is back), or nil without a shared tier.
    func sharePurge(workflowID: String, jobID: String?, completion: @escaping (String?) -> Void) {
        let workflow = PercentEncoding.segment(workflowID)
        let job = jobID.map(PercentEncoding.segment)
        let purge = if let job {
            SharedLink.PendingPurge(diskKey: CacheKey.detail(workflow: workflow, job: job).diskKey, diskKeyPrefix: nil,
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

    /// After a time away, messages were missed: every list held here is read again from Redis
    /// and taken in, so the details the others learnt were superseded meanwhile stop being
    /// served here too (a detail another instance refetched meanwhile is only found when this
    /// one's copy expires).
    func catchUpOnLists() {
        guard shared?.redis.counters.connects ?? 0 > 1 else { return }
        let lists = cache.memory.keys { if case .list = $0 { true } else { false } }
        for key in lists { received(.stored(diskKey: key.diskKey)) }
    }

    /// Takes in another instance's message: entries it changed (a list always, since it may
    /// renew or invalidate details held here; a detail when held here), purges, pauses.
    func received(_ message: SharedMessage) {
        guard let shared else { return }
        switch message {
        case .stored(let diskKey), .written(let diskKey):
            shared.wakeWaiters(diskKey)
            let written = if case .written = message { true } else { false }
            // A written detail is a job created through another instance: taken in whether held
            // here or not. Any other detail only matters here when held here.
            guard let key = CacheKey(diskKey: diskKey), key.job == nil || written || cache.memory.peek(key) != nil else { return }
            shared.tier.countInvalidationReceived()
            let purgeGeneration = cache.purgeGeneration
            shared.tier.load(diskKey: diskKey, workflowID: key.workflow, jobID: key.job) { [self] read in
                switch read {
                case .found(let record) where written && key.job != nil:
                    guard Self.isPlausiblyConfirmed(record, now: clock()) else { return }
                    cache.takeInWrittenJob(key, record: record, now: clock(), purgeGeneration: purgeGeneration)
                case .found(let record):
                    guard written || !cache.holdsCurrent(key, validatedAt: record.validatedAt),
                          Self.isPlausiblyConfirmed(record, now: clock()) else { return }
                    cache.adopt(key, record: record) { _ in }
                case .superseded(let newestSeen):
                    noteSuperseded(key, newestSeen: newestSeen)
                case .missing, .unavailable:
                    break
                }
            }
        case .landed(let diskKey):
            shared.wakeWaiters(diskKey)
        case .purge(let workflow, let job):
            cache.purge(workflow: workflow, job: job) { _, _ in }
        case .purgeRoutes(let prefix):
            cache.purgeRoutes(pathPrefix: prefix) { _, _ in }
        case .pause(let seconds):
            budget.pauseHere(seconds: min(seconds, settings.upstreamMaxRetryAfterSeconds))
        }
    }

    /// Connects the link's events to this server: messages, and one log line per change of health.
    func startShared() {
        guard let shared else { return }
        shared.redis.onMessage = { [weak self] text in
            guard let message = SharedMessage(text) else { return }
            self?.received(message)
        }
        let share = settings.upstreamRequestsPerSecond / Double(settings.sharedInstances)
        shared.redis.onHealthChange = { [weak self, logger, settings] up, problem in
            if up {
                self?.replayPurges()
                self?.catchUpOnLists()
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
}

extension CacheKey {
    /// A job route's key from its disk form (`list/W`, `detail/W/J`); nil for anything else
    /// (a `cache.routes` key needs its rule, which a message does not carry).
    init?(diskKey: String) {
        let parts = diskKey.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        switch (parts.first, parts.count) {
        case ("list", 2) where !parts[1].isEmpty: self = .list(workflow: parts[1])
        case ("detail", 3) where !parts[1].isEmpty && !parts[2].isEmpty: self = .detail(workflow: parts[1], job: parts[2])
        default: return nil
        }
    }
}
