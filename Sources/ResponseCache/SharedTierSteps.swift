import EventHTTP
import JobCache
import SharedTier

/// The shared tier as the cache uses it: the Redis tier, the requests waiting for another
/// instance's fetch, and the timers that keep this instance's leases. Loop-bound.
public final class SharedTierState {
    let tier: SharedCacheTier
    /// Requests waiting for another instance's fetch of a resource, by its disk key: woken by
    /// that instance's message, or by their own poll.
    var leaseWaiters: [String: [Int: () -> Void]] = [:]
    private var lastWaiterID = 0
    /// Timers that keep this instance's leases while its fetches run, by hold (one per fetch).
    var leaseTimers: [Int: LoopTimer] = [:]
    var lastLeaseHold = 0

    /// How long a fetch's lease lasts; the leader extends it while its call runs, so a leader
    /// that dies frees the resource within this time, and one waiter takes over.
    public static let leaseSeconds = 2.0
    /// How often a waiter looks again without a message (a lost message, a dead leader).
    static let pollSeconds = 0.25
    /// How far ahead of this instance's clock another instance's may be (an entry confirmed
    /// later than that, or a supersession mark further ahead, is not taken in).
    static let clockTolerance = 60.0
    /// How far ahead the upstream's `updated_at` values may be (its clock is not ours): a
    /// version further ahead is not remembered as known.
    static let upstreamClockTolerance = DiskStore.futureTolerance

    public init(tier: SharedCacheTier) {
        self.tier = tier
    }

    /// Runs `look` once: on a message about `diskKey` (`wakeWaiters`), or after the poll,
    /// whichever comes first.
    func awaitLanding(_ diskKey: String, loop: EventLoop, look: @escaping () -> Void) {
        lastWaiterID += 1
        let id = lastWaiterID
        let poll = loop.schedule(after: Self.pollSeconds) { [weak self] in
            guard let self, leaseWaiters[diskKey]?.removeValue(forKey: id) != nil else { return }
            if leaseWaiters[diskKey]?.isEmpty == true { leaseWaiters[diskKey] = nil }
            look()
        }
        leaseWaiters[diskKey, default: [:]][id] = {
            poll.cancel()
            look()
        }
    }

    /// Wakes every request waiting on `diskKey`.
    func wakeWaiters(_ diskKey: String) {
        guard let waiters = leaseWaiters.removeValue(forKey: diskKey) else { return }
        for (_, waiter) in waiters.sorted(by: { $0.key < $1.key }) { waiter() }
    }

    /// Confirmed in the future: another instance's clock is wrong, or the entry was forged.
    static func isPlausiblyConfirmed(_ record: DiskRecord, now: Double) -> Bool {
        record.validatedAt <= now + clockTolerance
    }
}

/// The shared tier's steps: look in Redis after memory, keep a lease while fetching, share what
/// was stored, and take in what the other instances announce. Every step falls through to
/// acting alone when Redis is away or slow.
extension ResponseCache {
    /// Looks `key` up in the shared tier; `completion` gets a fresh answer (adopted into this
    /// instance's tiers by the `updated_at` rules) or nil.
    func lookInShared(_ key: CacheKey, completion: @escaping (CachedAnswer?) -> Void) {
        guard let shared, shared.tier.isUp else { return completion(nil) }
        shared.tier.load(diskKey: key.diskKey, workflowID: key.workflow, jobID: key.job) { [self] read in
            let now = clock()
            switch read {
            case .found(let record) where !SharedTierState.isPlausiblyConfirmed(record, now: now):
                completion(nil)
            case .found(let record):
                // What memory holds is as recent: nothing to take in.
                if holdsCurrent(key, validatedAt: record.validatedAt), let held = memory.peek(key) {
                    return completion(held.remaining(now: now) > 0 ? current(held, key: key) : nil)
                }
                adopt(key, record: record) { [self] result in
                    switch result {
                    case .stored(let answer), .keptNewer(let answer):
                        learnNewerListed(answer, key: key) { [self] in
                            completion(answer.remaining(now: clock()) > 0 ? current(answer, key: key) : nil)
                        }
                    case .olderThanListed, .unparseable, .diskUnreadable:
                        completion(nil)
                    }
                }
            case .superseded(let newestSeen):
                noteSupersededFromShared(key, newestSeen: newestSeen)
                completion(nil)
            case .missing, .unavailable:
                completion(nil)
            }
        }
    }

    /// A supersession mark from Redis, believed unless it is ahead of this clock by more than
    /// instances' clocks may differ: a mark from the future would make every answer for the job
    /// look older than it (a whole list refused with it), for as long as this process runs.
    /// Redis is untrusted; an upstream whose clock runs further ahead only loses this help.
    func noteSupersededFromShared(_ key: CacheKey, newestSeen: Double) {
        guard newestSeen <= clock() + SharedTierState.clockTolerance else { return }
        noteSuperseded(key, newestSeen: newestSeen)
    }

    /// Keeps this instance's lease while its fetch runs, until `releaseLeaseHold` with the
    /// returned number. Each fetch has its own hold: a second leased fetch of the same resource
    /// (the lease lost in between) neither cancels nor orphans the first one's.
    func holdLease(_ diskKey: String) -> Int? {
        guard let shared else { return nil }
        shared.lastLeaseHold += 1
        let hold = shared.lastLeaseHold
        scheduleLeaseExtension(diskKey, hold: hold)
        return hold
    }

    private func scheduleLeaseExtension(_ diskKey: String, hold: Int) {
        guard let shared else { return }
        shared.leaseTimers[hold] = loop.schedule(after: SharedTierState.leaseSeconds / 2) { [weak self, weak shared] in
            guard let self, let shared, shared.leaseTimers[hold] != nil else { return }
            shared.tier.extendLease(diskKey: diskKey, seconds: SharedTierState.leaseSeconds)
            scheduleLeaseExtension(diskKey, hold: hold)
        }
    }

    func releaseLeaseHold(_ hold: Int) {
        shared?.leaseTimers.removeValue(forKey: hold)?.cancel()
    }

    /// Puts a stored answer in the shared tier (a list's sightings first, so that the details
    /// it supersedes are marked before it is announced), then ends the lease, if held.
    /// `answer` nil: only the lease ends. `done` runs on the loop once Redis has it and the
    /// announcement is sent, or has failed or timed out (at once with no Redis to use).
    func share(_ key: CacheKey, _ answer: CachedAnswer?, releasingLease leased: Bool, written: Bool = false,
               done: @escaping () -> Void = {}) {
        guard let shared else { return done() }
        let release = {
            defer { done() }
            guard leased else { return }
            shared.tier.releaseLease(diskKey: key.diskKey)
            // Requests of this instance that waited on its own lease (the channel does not
            // bring an instance its own messages).
            shared.wakeWaiters(key.diskKey)
        }
        guard let answer, shared.tier.isUp else { return release() }
        if case .list(let workflow) = key {
            let listed = listedDetails(of: answer, workflow: workflow).map { (diskKey: $0.key.diskKey, updatedAt: $0.updatedAt) }
            shared.tier.applySightings(listed, answeredAt: answer.validatedAt)
        }
        let keep = answer.lifetime + max(staleWindows.whileRevalidate, staleWindows.ifError)
        shared.tier.save(answer.record(for: key), keep: keep, written: written) { _ in release() }
    }

    /// After a time away, messages were missed both ways: every list held here is read again
    /// from Redis and taken in (with the newer versions Redis knows of its jobs), so the
    /// details the others learnt were superseded meanwhile stop being served here too; and
    /// every list held here goes to Redis (kept there only if newer than what it holds), so
    /// that what this instance showed while alone reaches the others, even when Redis came
    /// back empty.
    public func catchUpOnLists() {
        let lists = memory.keys { if case .list = $0 { true } else { false } }
        for key in lists {
            takeIn(.stored(diskKey: key.diskKey))
            guard let held = memory.peek(key) else { continue }
            learnNewerListed(held, key: key) {}
            if !held.isSuperseded { share(key, held, releasingLease: false) }
        }
    }

    /// Before a list taken from a tier (Redis, or the disk) is served, or after a time away:
    /// whatever Redis knows of its jobs newer than the list shows is learned. An instance back
    /// from a restart or a time away missed the messages that kept the others' lists current.
    /// A newer detail in Redis is taken in (the list is then patched with it); a newer sighting
    /// alone makes the list refetched. `done` runs on the loop (at once with no Redis to ask).
    func learnNewerListed(_ answer: CachedAnswer, key: CacheKey, done: @escaping () -> Void) {
        guard case .list(let workflow) = key, let shared, shared.tier.isUp, case .list(let list) = answer.document else { return done() }
        var listed: [String: Double] = [:]
        for job in list.jobs {
            guard let updatedAt = job.updatedAt else { continue }
            let diskKey = CacheKey.detail(workflow: workflow, jobID: job.compactID).diskKey
            listed[diskKey] = min(listed[diskKey] ?? .infinity, updatedAt)
        }
        let generation = purgeGeneration
        shared.tier.newestVersions(diskKeys: Array(listed.keys)) { [self] versions, complete in
            if !complete { counters.learningsIncomplete += 1 }
            var newer = versions.filter { diskKey, version in version > listed[diskKey]! }.keys.sorted()[...]
            guard !newer.isEmpty else { return done() }
            // The newer entries are read a few at a time (each carries its payload): fired all
            // at once, thousands of them would time out behind each other.
            var reading = 0, ended = false
            // Taken in once every read is back: taking each in (a list rebuilt per detail) while
            // the others are in flight would make them wait on this loop past their timeout.
            var found: [(CacheKey, DiskRecord)] = []
            func adoptFound() {
                guard !found.isEmpty else { return done() }
                var left = found.count
                for (detailKey, record) in found {
                    adopt(detailKey, record: record) { _ in
                        left -= 1
                        if left == 0 { done() }
                    }
                }
            }
            // Once, whether the last read completes at once (Redis away) or later.
            func endIfDone() {
                guard newer.isEmpty, reading == 0, !ended else { return }
                ended = true
                adoptFound()
            }
            var looping = false
            // Not reentered: a read that completes at once (Redis gone meanwhile) lets the loop
            // go on, rather than nest one call deeper per key.
            func readNext() {
                guard !looping else { return }
                looping = true
                defer { looping = false }
                while reading < Self.learningReads, let diskKey = newer.popFirst() {
                    guard let detailKey = CacheKey(diskKey: diskKey), let job = detailKey.job else { continue }
                    reading += 1
                    let version = versions[diskKey]!
                    shared.tier.load(diskKey: diskKey, workflowID: workflow, jobID: job) { [self] read in
                        let finished = {
                            reading -= 1
                            readNext()
                        }
                        // A purge since the learning began: what Redis said is not to come back.
                        guard purgeGeneration == generation else { return finished() }
                        switch read {
                        case .found(let record) where SharedTierState.isPlausiblyConfirmed(record, now: clock()):
                            // Through the store's rules, as any entry from Redis: the body must be
                            // the job its key names, and only storable headers are kept.
                            found.append((detailKey, record))
                            finished()
                        case .superseded(let newestSeen):
                            noteSupersededFromShared(detailKey, newestSeen: newestSeen)
                            finished()
                        default:
                            // Gone, or not read in time: the version Redis just told of is
                            // still known (the list is patched if a copy is held, else refetched).
                            counters.learningsIncomplete += 1
                            noteSupersededFromShared(detailKey, newestSeen: version)
                            finished()
                        }
                    }
                }
                endIfDone()
            }
            readNext()
        }
    }

    /// Newer entries a list's learning reads from Redis at once.
    static let learningReads = 16

    /// Takes in another instance's message about an entry: a list always (it may renew or
    /// invalidate details held here), a detail when held here, a written job always; a landed
    /// fetch wakes the requests waiting on it. Purges and pauses are not the cache's to take.
    public func takeIn(_ message: SharedMessage) {
        guard let shared else { return }
        switch message {
        case .stored(let diskKey), .written(let diskKey):
            shared.wakeWaiters(diskKey)
            let written = if case .written = message { true } else { false }
            // A written detail is a job created through another instance: taken in whether held
            // here or not. Any other detail matters here when held here, or when its workflow's
            // list is: the list must not show the job older than another instance has shown it.
            guard let key = CacheKey(diskKey: diskKey),
                  key.job == nil || written || memory.peek(key) != nil || memory.peek(.list(workflow: key.workflow)) != nil else { return }
            shared.tier.countInvalidationReceived()
            let purgeGeneration = purgeGeneration
            shared.tier.load(diskKey: diskKey, workflowID: key.workflow, jobID: key.job) { [self] read in
                switch read {
                case .found(let record) where written && key.job != nil:
                    guard SharedTierState.isPlausiblyConfirmed(record, now: clock()) else { return }
                    takeInWrittenJob(key, record: record, now: clock(), purgeGeneration: purgeGeneration)
                case .found(let record):
                    guard written || !holdsCurrent(key, validatedAt: record.validatedAt),
                          SharedTierState.isPlausiblyConfirmed(record, now: clock()) else { return }
                    adopt(key, record: record) { _ in }
                case .superseded(let newestSeen):
                    noteSupersededFromShared(key, newestSeen: newestSeen)
                case .missing, .unavailable:
                    break
                }
            }
        case .landed(let diskKey):
            shared.wakeWaiters(diskKey)
        case .purge, .purgeRoutes, .pause:
            break
        }
    }
}

extension CacheKey {
    /// A job route's key from its disk form (`list/W`, `detail/W/J`); nil for anything else
    /// (a `cache.routes` key needs its rule, which a message does not carry).
    init?(diskKey: String) {
        let parts = diskKey.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        switch (parts.first, parts.count) {
        case ("list", 2) where !parts[1].isEmpty: self = .list(workflow: parts[1])
        case ("detail", 3) where !parts[1].isEmpty && !parts[2].isEmpty: self = .detail(workflow: parts[1], encodedJob: parts[2])
        default: return nil
        }
    }
}
