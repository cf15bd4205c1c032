import CacheInvalidation
import EventHTTP
import JobCache
import SharedTier

/// The cache of the job routes, where every cached answer is decided: the typed keys, the
/// entries, the tiers (memory, the shared tier, disk), the single flights, freshness, the
/// `updated_at` rules of `CacheInvalidation` applied to every tier, purges and statistics. A
/// request's way through it is `serve` (`CacheJourney`); the upstream is reached only through
/// the injected `UpstreamFetching`.
///
/// Loop-bound: every method runs on the event loop's thread (checked in debug builds); the
/// disk tier works on its own queues and its completions come back here through the loop.
public final class ResponseCache {
    let memory: MemoryTier<CacheKey, CachedAnswer>
    /// nil: no disk tier (none configured, or the store could not be opened yet).
    private(set) var disk: DiskStore?
    let flights: Flights<FlightKey, FlightLanding>
    public let policy: FreshnessPolicy
    let staleWindows: StaleWindows
    let loop: EventLoop
    /// Wall-clock seconds since 1970 (injected: tests move time without sleeping).
    let clock: @Sendable () -> Double
    let fetcher: UpstreamFetching
    /// The tier several instances share through Redis (nil: none configured).
    let shared: SharedTierState?
    /// `cache.routes` resources whose answer was over `maxCachedRouteBytes`, until when.
    var tooLargeToCache = ExpiringSet<CacheKey>(capacity: 4096)
    public internal(set) var counters = Counters()
    /// The newest `updated_at` this instance has shown or learned per job (detail keys), beyond
    /// what the details held in memory say themselves: from lists, details, jobs written
    /// through, another instance's supersession marks and the disk's sightings. With those
    /// details it makes `known`: no answer leaves with a job older than that (`current`), and a
    /// detail answer older than it is never stored. A detail leaving memory leaves its version
    /// here. Bounded (least recently noted forgotten); the disk keeps what lists showed per
    /// workflow, read on a miss. Not repeating the held details' versions saves a node and a
    /// bucket per cached job (8 MB at 100k).
    private let newestKnown: MemoryTier<CacheKey, Double>
    /// Told of every entry memory takes (from the upstream, the disk, the shared tier, a list
    /// patched or a job written through): the server wakes requests waiting for it to change.
    public var onStored: ((CacheKey, CachedAnswer) -> Void)?
    /// Incremented whenever `newestKnown` rises: an answer checked at this generation needs no
    /// second look (`current` is one comparison on the hit path). Every entry holds one in 32
    /// bits (`CachedAnswer.checkedGeneration`): after `lastGeneration` they start again
    /// (`restartGenerations`). Settable here for the tests, which start near the last.
    var knownGeneration = 0
    static let lastGeneration = Int(Int32.max)
    /// The generation at which each workflow last learned a newer version: an answer checked
    /// since needs no second look either. Without it, with many running jobs the generation
    /// rises all the time, and every hit on a large list of a quiet workflow was planned again
    /// (found by review: 1.2 ms became 22 ms for 10,000 jobs). Bounded: past
    /// `maxWorkflowsTracked` it is cleared, and every workflow counts as having learned then.
    private var workflowLearnedAt: [String: Int] = [:]
    private var learnedAtFloor = 0
    static let maxWorkflowsTracked = 100_000
    /// "Never older" plans made for answers about to be served (a figure for tests).
    private(set) var deliveryPlans = 0
    static let listedEntryCost = 128
    /// Incremented by every purge: a disk read that began before it must not put back in
    /// memory what the purge removed.
    private var purgeEpoch = 0
    /// Incremented by every detail this process saves to disk: with `purgeEpoch`, it tells that
    /// the disk is as a read found it (only this process writes its store).
    private var detailSaves = 0
    /// Saves of details the disk has done (or dropped): while one is pending, a read that finds
    /// no row proves nothing (the row may be on its way).
    private var detailSavesCommitted = 0

    /// The disk's state as far as this process changed it, for `store`'s check that a read
    /// which found no row still holds.
    struct DiskSeenEmpty: Equatable {
        let saves: Int
        let purges: Int
    }

    /// nil while a detail save is pending.
    var diskSeenEmpty: DiskSeenEmpty? {
        detailSaves == detailSavesCommitted ? DiskSeenEmpty(saves: detailSaves, purges: purgeEpoch) : nil
    }
    /// Jobs created through the proxy lately (here or through another instance): a list answer
    /// that lacks one gets it added. A list fetched before the POST and landing after it would
    /// otherwise replace the list the POST was written into, and the creator's next read would
    /// lack its job.
    private var recentWrites = RecentWrites()

    /// What the cache counted since start, for `/admin/stats` and `/metrics`.
    public struct Counters: Sendable {
        public var hits = 0
        /// Hits the hit path answered with prepared bytes.
        public var preparedHits = 0
        public var diskHits = 0
        /// Answers found in the shared tier (another instance had fetched them).
        public var sharedHits = 0
        public var misses = 0
        public var upstreamFetches = 0
        public var backgroundRefreshes = 0
        /// Stale answers served (while revalidating, or because the upstream failed).
        public var staleServed = 0
        /// Details renewed or invalidated by a list, answers refused as older, list entries
        /// updated from a newer detail, jobs written through from a POST.
        public var renewals = 0
        public var invalidations = 0
        public var rejectedOutOfOrder = 0
        public var listEntryUpdates = 0
        /// Expired details renewed by a list fetch instead of a call of their own.
        public var listRevalidations = 0
        public var writeThroughs = 0
        /// Lists that learnt from Redis only part of what it knows of their jobs (Redis went
        /// away or was slow midway): they are served by what was learnt.
        public var learningsIncomplete = 0
    }

    /// How long past its TTL an answer may be served: while one refresh runs, and when the
    /// upstream fails.
    public struct StaleWindows: Sendable {
        public let whileRevalidate: Double
        public let ifError: Double

        public init(whileRevalidate: Double, ifError: Double) {
            self.whileRevalidate = whileRevalidate
            self.ifError = ifError
        }
    }

    public init(loop: EventLoop, memoryBudgetBytes: Int, disk: DiskStore?, policy: FreshnessPolicy, staleWindows: StaleWindows,
                maxWaitersPerFlight: Int, clock: @escaping @Sendable () -> Double, fetcher: UpstreamFetching, shared: SharedCacheTier?) {
        self.loop = loop
        memory = MemoryTier(budgetBytes: memoryBudgetBytes)
        newestKnown = MemoryTier(budgetBytes: 65_536 * Self.listedEntryCost)
        self.disk = disk
        flights = Flights(maxWaitersPerFlight: maxWaitersPerFlight)
        self.policy = policy
        self.staleWindows = staleWindows
        self.clock = clock
        self.fetcher = fetcher
        self.shared = shared.map(SharedTierState.init)
        memory.onEvicted = { [unowned self] key, answer in keepVersion(of: answer, for: key) }
    }

    // MARK: Lookups

    /// How an expired detail in memory is to be revalidated (`Revalidation.route`), from the
    /// workflow's cached list. Lists and superseded details go their own way.
    public func revalidationRoute(for key: CacheKey, cached: CachedAnswer, now: Double) -> Revalidation.Route {
        guard case .detail(let workflow, let job) = key, cached.isDetail,
              let list = memory.peek(.list(workflow: workflow)), case .list(let document) = list.document else { return .detail }
        let listed = Self.listedIndex(of: job, in: document).flatMap { document.jobs[$0].updatedAt }
        return Revalidation.route(detailSuperseded: cached.isSuperseded, detailUpdatedAt: cached.updatedAt, listedUpdatedAt: listed,
                                  listRemaining: list.remaining(now: now))
    }

    /// Reads `key` from the disk tier; `completion` runs on the loop with the entry, which is
    /// also put in memory when memory has none (so that a later answer is compared with it,
    /// and it can be served stale), whether it is fresh, and whether the read failed (then a
    /// missing entry proves nothing).
    func loadFromDisk(_ key: CacheKey, completion: @escaping (_ entry: CachedAnswer?, _ fresh: Bool, _ readFailed: Bool) -> Void) {
        loop.assertOnLoop()
        guard disk != nil else { return completion(nil, false, false) }
        let epoch = purgeEpoch
        readDisk(key) { [self] record, failed in
            // A `cache.routes` entry is fresh for its rule's lifetime as configured now, not as
            // when it was written (a rule shortened since must not keep old answers fresh).
            let ruleLifetime: Double? = if case .route(let resource) = key { resource.lifetime } else { nil }
            // A purge since the read began: what it read is gone.
            guard epoch == purgeEpoch, let record, let read = CachedAnswer.restored(from: record, lifetime: ruleLifetime) else {
                return completion(nil, false, failed)
            }
            let now = clock()
            // A list written before a job was created through this process (by the process
            // before a restart, say) gets the job, as a list fetched now would.
            let answer = withRecentWrites(read, key: key, now: now)
            // What lists have shown since the row was written (the disk may not have it yet).
            if let listed = known(key) {
                answer.freshness = ListSightings.superseding(answer.freshness, detailUpdatedAt: answer.updatedAt, listed: listed)
            }
            if memory.peek(key) == nil { hold(key, answer) }
            let entry = memory.peek(key) ?? answer
            completion(entry, entry.remaining(now: clock()) > 0, false)
        }
    }

    /// Reads a key's row on the disk's reader queue, and for a detail the newest `updated_at`
    /// its list showed (kept in `newestKnown`); `completion` runs on the loop.
    private func readDisk(_ key: CacheKey, completion: @escaping (_ record: DiskRecord?, _ failed: Bool) -> Void) {
        guard let disk else { return completion(nil, false) }
        // Reads are serial: a failure counted meanwhile may be this one's.
        let failuresBefore = disk.readFailures
        let onLoop = LoopBound({ [self] (record: DiskRecord?, listed: Double?) in
            if let listed { noteKnown(key, listed) }
            completion(record, disk.readFailures != failuresBefore)
        }, loop: loop)
        if case .list(let workflow) = key {
            let onLoop = LoopBound({ [self] (record: DiskRecord?, newer: [DiskRecord]) in
                takeInNewerDetails(newer, workflow: workflow)
                completion(record, disk.readFailures != failuresBefore)
            }, loop: loop)
            return disk.loadList(key.diskKey, workflowID: workflow) { [loop] record, newer in loop.execute { onLoop.value(record, newer) } }
        }
        guard case .detail(let workflow, let job) = key else {
            return disk.load(key.diskKey) { [loop] record in loop.execute { onLoop.value(record, nil) } }
        }
        disk.loadDetail(key.diskKey, workflowID: workflow, jobID: job.text) { [loop] record, listed in
            loop.execute { onLoop.value(record, listed) }
        }
    }

    /// Details the disk holds newer than the entries of the list read with them (saved after
    /// it, before a crash): known and held in memory, so that the list is patched from them
    /// before it is served (`current`), not shown with those jobs older.
    func takeInNewerDetails(_ records: [DiskRecord], workflow: String) {
        for record in records {
            guard let job = record.jobID, let detail = CachedAnswer.restored(from: record), let updatedAt = detail.updatedAt else { continue }
            let key = CacheKey.detail(workflow: workflow, encodedJob: job)
            let newer = (memory.peek(key)?.updatedAt ?? -.infinity) < updatedAt
            noteKnown(key, updatedAt)
            if newer, !detail.isSuperseded { hold(key, detail) }
        }
    }

    /// Remembers that `key`'s job was shown or learned at `updatedAt` (keeping the newest).
    /// A version from over a day ahead of this clock is not believed (found by review: one
    /// detail dated 2999 would otherwise pin the job in every list for as long as the process runs).
    /// `hold` calls it before memory has the detail, so that a rise is seen (`known` counts
    /// what memory holds).
    private func noteKnown(_ key: CacheKey, _ updatedAt: Double) {
        guard plausible(updatedAt) != nil else { return }
        if let known = known(key), known >= updatedAt { return }
        newestKnown.set(key, updatedAt, cost: Self.listedEntryCost)
        if knownGeneration >= Self.lastGeneration { restartGenerations() }
        knownGeneration += 1
        if workflowLearnedAt.count >= Self.maxWorkflowsTracked, workflowLearnedAt[key.workflow] == nil {
            workflowLearnedAt.removeAll(keepingCapacity: true)
            learnedAtFloor = knownGeneration
        }
        workflowLearnedAt[key.workflow] = knownGeneration
    }

    /// Starts the generations again from 0: every answer memory holds, and every workflow, is
    /// looked at afresh by `current` (a full look is always right, only slower). An answer
    /// outside memory checked before the restart (a flight's, for a moment) holds a generation
    /// past the new ones, which `current` does not trust either; it would have to outlive 2^31
    /// newer versions learned to be trusted again.
    private func restartGenerations() {
        memory.forEachValue { $0.checkedGeneration = -1 }
        workflowLearnedAt.removeAll(keepingCapacity: true)
        learnedAtFloor = 0
        knownGeneration = 0
    }

    /// The newest `updated_at` shown or learned for a detail key: `newestKnown`'s, or the
    /// version of the detail memory holds.
    private func known(_ key: CacheKey) -> Double? {
        Self.newer(newestKnown.peek(key), memory.peek(key).flatMap(Self.countedVersion))
    }

    /// The version a held detail stands for in `known` (`CachedAnswer.versionCounts`).
    private static func countedVersion(_ answer: CachedAnswer) -> Double? {
        answer.versionCounts ? answer.updatedAt : nil
    }

    /// Puts an answer in memory. A detail's version is noted first (a rise is then seen, and
    /// `current` looks again at what was checked before), and is then not repeated in
    /// `newestKnown` while memory holds it. A detail it replaces leaves its version there when
    /// the new one is older or not held (over the budget).
    private func hold(_ key: CacheKey, _ answer: CachedAnswer) {
        defer { onStored?(key, answer) }
        guard case .detail = key else {
            memory.set(key, answer, cost: answer.cost)
            return
        }
        if let updatedAt = answer.updatedAt { noteKnown(key, updatedAt) }
        answer.versionCounts = plausible(answer.updatedAt) != nil
        let replaced = memory.set(key, answer, cost: answer.cost)
        let held = memory.peek(key).flatMap(Self.countedVersion)
        if let replaced { keepVersion(of: replaced, over: held, for: key) }
        if let noted = newestKnown.peek(key), let held, held >= noted { newestKnown.remove(key) }
    }

    /// A detail evicted from memory (or replaced by one whose version is older or not `held`)
    /// leaves its version in `newestKnown`, which knew it through the entry until now: no rise,
    /// so nothing is looked at again. (A purge removes an entry itself, and what was known of it
    /// with it.)
    private func keepVersion(of answer: CachedAnswer, over held: Double? = nil, for key: CacheKey) {
        guard case .detail = key, let version = Self.countedVersion(answer), version > held ?? -.infinity else { return }
        if let noted = newestKnown.peek(key), noted >= version { return }
        newestKnown.set(key, version, cost: Self.listedEntryCost)
    }

    // MARK: Storing

    /// What storing an upstream 200 came to.
    public enum StoreResult {
        case stored(CachedAnswer)
        /// The answer was older than the cached detail, which stays (a lagging replica).
        case keptNewer(CachedAnswer)
        /// The answer was older than the newest `updated_at` a list showed for the job, and
        /// nothing newer is cached to serve: the client gets an error, not an older job.
        case olderThanListed
        /// Not a Pixxel job document.
        case unparseable
        /// The disk could not be read to compare with (locked by another process, an I/O
        /// error): it may hold a newer version, which this answer must not replace.
        case diskUnreadable
    }

    /// Stores an upstream 200 for `key` by the `updated_at` rules: a list renews or
    /// invalidates the workflow's cached details in both tiers; a detail never replaces a
    /// newer one and updates its list entry. `landed` runs on the loop once the result may be
    /// told to clients: for a list that invalidated anything on disk, once the disk has it, so
    /// that what a client was shown survives a crash.
    public func store(_ key: CacheKey, body: [UInt8], headers: HTTPHeaders, now: Double,
                      landed: @escaping (StoreResult) -> Void) {
        store(key, body: body, headers: headers, now: now, diskEmpty: nil, landed: landed)
    }

    /// The same for a flight. `diskEmpty`: the flight read the disk and found no row, at that
    /// point (`diskSeenEmpty`); unchanged since, the disk is not read again.
    func store(_ key: CacheKey, body: [UInt8], headers: HTTPHeaders, now: Double, diskEmpty: DiskSeenEmpty?,
               landed: @escaping (StoreResult) -> Void) {
        loop.assertOnLoop()
        let storable = CachedAnswer.storableHeaders(headers)
        let key = shared(key)
        switch key {
        case .list(let workflow):
            guard let list = JobListDocument(body: body) else { return landed(.unparseable) }
            storeList(key, list, workflow: workflow, headers: storable, now: now, landed: landed)
        case .detail(let workflow, let job):
            // A detail of another job than the one asked for is not this resource's answer.
            guard let detail = JobDetailDocument(body: body), CacheKey.encoded(detail.job.compactID) == job else {
                return landed(.unparseable)
            }
            let diskUnchangedSinceEmpty = diskEmpty != nil && diskEmpty == diskSeenEmpty
            guard memory.peek(key) == nil, disk != nil, !diskUnchangedSinceEmpty else {
                return storeDetail(key, detail, workflow: workflow, headers: storable, onDisk: nil, now: now, landed: landed)
            }
            // Memory has nothing to compare with (never read, or evicted during the fetch): the
            // disk may hold a newer version, which an older answer must not replace (unless a
            // purge removed it meanwhile).
            let epoch = purgeEpoch
            readDisk(key) { [self] record, failed in
                // Nothing read because the read failed proves nothing: the answer is not stored.
                // A store found corrupt is not waited for: it holds nothing to trust, and the
                // proxy serves from memory until it is replaced at the next start.
                if record == nil && failed && disk?.corruption == nil { return landed(.diskUnreadable) }
                storeDetail(key, detail, workflow: workflow, headers: storable, onDisk: epoch == purgeEpoch ? record : nil,
                            now: now, landed: landed)
            }
        case .route(let resource):
            // No document to read and no rule but time: the bytes as they came, for the rule's lifetime.
            let answer = CachedAnswer.make(document: .raw(body), headers: storable, storedAt: now, lifetime: resource.lifetime)
            hold(key, answer)
            disk?.save(answer.record(for: key))
            landed(.stored(answer))
        }
    }

    private func storeList(_ key: CacheKey, _ list: JobListDocument, workflow: String, headers: HTTPHeaders, now: Double,
                           landed: @escaping (StoreResult) -> Void) {
        var list = list
        // A job listed twice counts with its newest `updated_at`.
        var listed = Dictionary(list.jobs.map { ($0.compactID.percentEncoded, $0.updatedAt) }, uniquingKeysWith: Self.newer)
        // A list that shows a job older than this instance has shown or learned it (a lagging
        // answer, or one fetched before a newer detail landed) has those entries patched from
        // the newer versions held; failing that, the cached list stays (or, with none current
        // to serve, the client gets an error).
        let cached = memory.peek(key).flatMap { $0.isSuperseded ? nil : $0 }
        switch planPatch(list, workflow: workflow, hasCached: cached != nil) {
        case (.store, _):
            break
        case (.patch(let jobs), let patched?):
            list = patched
            counters.listEntryUpdates += jobs.count
            // What the upstream said of these jobs is older than what is held: no sighting of theirs
            // renews or invalidates a detail (listed, so not "no longer listed").
            for job in jobs { listed[job] = .some(nil) }
        case (.keepCached, _), (.refuse, _), (.patch, nil):
            counters.rejectedOutOfOrder += 1
            if let cached { return landed(.keptNewer(cached)) }
            return landed(.olderThanListed)
        }
        // Jobs created through the proxy that the list lacks are not news from the
        // upstream: their details are kept as they are (neither renewed by the proxy's own copy
        // nor marked as no longer listed).
        for write in recentWrites.missing(from: list, workflow: workflow, now: now) {
            listed[PercentEncoding.segment(write.jobID)] = .some(nil)
        }
        let sightings = ListSightings(updatedAt: listed, answeredAt: now)
        for case (let job, let updatedAt?) in sightings.updatedAt { noteKnown(.detail(workflow: workflow, encodedJob: job), updatedAt) }
        // Details it supersedes stop being served at once; the list itself is published (to
        // memory, so to the hit path, and to the waiting clients) once the disk has what it
        // showed, so that no client is shown a version that a crash could make it forget.
        applyToMemory(sightings, workflow: workflow)
        let publish = { [self] in
            // Merged when published, not before the disk transaction, so that a POST answered in
            // between is in the list too.
            let answer = withRecentWrites(CachedAnswer.make(document: .list(list), headers: headers, storedAt: now, lifetime: policy.jobListSeconds),
                                          key: key, now: now)
            hold(key, answer)
            disk?.save(answer.record(for: key))
            landed(.stored(answer))
        }
        guard let disk else { return publish() }
        let onLoop = LoopBound(publish, loop: loop)
        disk.applyListSightings(workflowID: workflow, sightings) { [loop] in
            loop.execute { onLoop.value() }
        }
    }

    private func storeDetail(_ key: CacheKey, _ detail: JobDetailDocument, workflow: String, headers: HTTPHeaders, onDisk: DiskRecord?,
                             now: Double, landed: @escaping (StoreResult) -> Void) {
        let cached = memory.peek(key) ?? onDisk.flatMap { CachedAnswer.restored(from: $0) }
        // The newest version any answer has shown: the cached detail's sightings, what lists
        // showed for the job (also from before a restart), and its entry in the cached list.
        // A version from over a day ahead of this clock counts as undated: believed, one
        // answer dated 2999 would keep every later one out for good (found by review).
        var newestSeen = Self.newer(plausible(cached?.freshness.newestSeen), known(key))
        if case .list(let list)? = memory.peek(.list(workflow: workflow))?.document, let index = list.index(of: detail.job.compactID) {
            newestSeen = Self.newer(newestSeen, plausible(list.jobs[index].updatedAt))
        }
        switch Invalidation.planDetail(answer: detail.job.updatedAt, cached: cached.map { (plausible($0.updatedAt), $0.isSuperseded) },
                                       newestSeen: newestSeen) {
        case .store:
            break
        case .keepCached:
            // Older than a cached detail that is still current: that one stays and is served.
            counters.rejectedOutOfOrder += 1
            if let cached {
                if memory.peek(key) == nil { hold(key, cached) }
                return landed(.keptNewer(cached))
            }
            return landed(.olderThanListed)
        case .refuse:
            counters.rejectedOutOfOrder += 1
            return landed(.olderThanListed)
        }
        let answer = CachedAnswer.make(document: .detail(detail), headers: headers, storedAt: now,
                                  lifetime: policy.lifetime(ofJobWithStatus: detail.job.status))
        hold(key, answer)
        // A version newer than any shown is answered once its row is on disk: answered
        // before, and the process killed with the save still queued behind a busy writer, the
        // lists on disk would show the job older after the restart than it was shown before
        // (found by review). A version already shown need not wait.
        let newVersion = (detail.job.updatedAt ?? -.infinity) > max(newestSeen ?? -.infinity, plausible(cached?.updatedAt) ?? -.infinity)
        var saved: () -> Void = {}
        if let disk {
            detailSaves += 1
            let committed = LoopBound({ [self] in
                detailSavesCommitted += 1
                saved()
            }, loop: loop)
            disk.save(answer.record(for: key)) { [loop] in loop.execute { committed.value() } }
        }
        updateListEntry(workflow: workflow, from: detail)
        if disk != nil && newVersion {
            saved = { landed(.stored(answer)) }
        } else {
            landed(.stored(answer))
        }
    }

    // MARK: Shared copies

    /// One copy of the workflow ids most entries' keys hold alike (Swift strings share storage
    /// when copied from one instance), so 100k entries do not hold 100k copies. Bounded:
    /// emptied when full (copies made since stay valid). The upstream's header sets are shared
    /// by the entries themselves (`CachedAnswer.PreparedHeaderLines`).
    private var sharedWorkflows: [String: String] = [:]
    private static let maxShared = 1024

    /// `key` with the copy of its workflow id that memory's keys hold (for keys kept elsewhere:
    /// the hit path's targets).
    public func sharingWorkflow(_ key: CacheKey) -> CacheKey { shared(key) }

    private func shared(_ key: CacheKey) -> CacheKey {
        if case .route = key { return key }
        let workflow = key.workflow
        let known: String
        if let existing = sharedWorkflows[workflow] {
            known = existing
        } else {
            if sharedWorkflows.count >= Self.maxShared { sharedWorkflows.removeAll() }
            sharedWorkflows[workflow] = workflow
            known = workflow
        }
        switch key {
        case .list: return .list(workflow: known)
        case .detail(_, let job): return .detail(workflow: known, job: job)
        case .route: return key
        }
    }

    /// `instant` unless it is over a day ahead of this clock (the upstream's clock is not ours,
    /// but not a day off): such a version is not believed, in memory as on disk.
    private func plausible(_ instant: Double?) -> Double? {
        instant.flatMap { $0 <= clock() + SharedTierState.upstreamClockTolerance ? $0 : nil }
    }

    /// The older of two `updated_at` values (a missing one loses: it is not comparable).
    static func older(_ a: Double?, _ b: Double?) -> Double? {
        guard let a else { return b }
        guard let b else { return a }
        return min(a, b)
    }

    /// The newer of two `updated_at` values (a missing one loses).
    static func newer(_ a: Double?, _ b: Double?) -> Double? {
        guard let a else { return b }
        guard let b else { return a }
        return max(a, b)
    }

    /// A job created through the proxy (its answer decoded once, by the caller): stored as a
    /// detail and added to its workflow's cached list, so reads through the proxy see it at
    /// once, and both go to the shared tier, announced as written. `landed` runs on the loop
    /// once the disk has both (a crash after the client heard back must not make it forget the job).
    public func writeThrough(workflowID: String, created: DecodedAnswerBody, headers: HTTPHeaders, now: Double,
                             landed: @escaping () -> Void) {
        loop.assertOnLoop()
        guard created.isJSONObject, let detail = created.job, let object = created.object else { return landed() }
        let key = CacheKey.detail(workflowID: workflowID, jobID: detail.job.id)
        let answer = CachedAnswer.make(document: .detail(detail), headers: CachedAnswer.storableHeaders(headers, alsoRemoving: ["Location"]),
                                  storedAt: now, lifetime: policy.lifetime(ofJobWithStatus: detail.job.status))
        hold(key, answer)
        if disk != nil { detailSaves += 1 }
        counters.writeThroughs += 1
        recentWrites.remember(detail, workflow: key.workflow, at: now)

        var records = [answer.record(for: key)]
        let listKey = CacheKey.list(workflow: key.workflow)
        if let cached = memory.peek(listKey), case .list(let list) = cached.document, list.index(of: detail.job.compactID) == nil,
           let updated = list.inserting([object], fields: Self.listFields(of: list)) {
            records.append(replaceList(cached, with: updated, key: listKey, save: false).record)
        }
        // The client hears back once the disk has the job (a crash must not make the proxy
        // forget it) and Redis has it and the other instances were told (bounded by
        // `shared.timeout_ms`): from then on, their lists have it within the window the README
        // states. Announced as written: every instance adds the job to the list it holds,
        // including one this instance does not hold (yet), which is the list a client of the
        // other reads.
        let shares = memory.peek(listKey).map { [(key, answer), (listKey, $0)] } ?? [(key, answer)]
        let waiting = Counter(shares.count + (disk == nil ? 0 : 1))
        let partDone = {
            waiting.count -= 1
            if waiting.count == 0 { landed() }
        }
        for (sharedKey, sharedAnswer) in shares {
            share(sharedKey, sharedAnswer, releasingLease: false, written: true, done: partDone)
        }
        guard let disk else { return }
        let saving = LoopBound(Counter(records.count), loop: loop)
        let saved = LoopBound({ [self] in
            detailSavesCommitted += 1
            partDone()
        }, loop: loop)
        for record in records {
            disk.save(record, durable: true) { [loop] in
                loop.execute {
                    saving.value.count -= 1
                    if saving.value.count == 0 { saved.value() }
                }
            }
        }
    }

    /// How many purges this cache has done: a read begun before a purge (of Redis, of the disk)
    /// must not put back what the purge removed, so its result is taken only if this is unchanged.
    public var purgeGeneration: Int { purgeEpoch }

    /// A job another instance created and announced as written (it stored the detail in the
    /// shared tier). It is stored here by the rules any answer is stored by (`adopt`: never
    /// older than a version a list, the disk or a cached copy showed; headers cleaned), then
    /// added to the list held here and remembered, so that every list this instance serves
    /// afterwards has it (`RecentWrites`). The creating instance need not hold the list:
    /// waiting for that lost the job from every list it did not hold.
    ///
    /// Only a creation confirmed within `RecentWrites.keepSeconds` counts (a replayed or forged
    /// message about an old entry adds nothing); the key must be canonical and name the job and
    /// the workflow the body holds; a purge since `purgeGeneration` was read wins.
    public func takeInWrittenJob(_ key: CacheKey, record: DiskRecord, now: Double, purgeGeneration generation: Int) {
        loop.assertOnLoop()
        guard case .detail(let workflow, let job) = key, PercentEncoding.isCanonicalSegment(workflow),
              PercentEncoding.isCanonicalSegment(job.text), record.body.count <= Self.maxWrittenJobBytes,
              now - record.validatedAt <= RecentWrites.keepSeconds, generation == purgeEpoch,
              let detail = JobDetailDocument(body: record.body), CacheKey.encoded(detail.job.compactID) == job,
              (detail.object["workflow_id"] as? String).map({ PercentEncoding.segment($0) == workflow }) ?? true else { return }
        adopt(key, record: record) { [self] result in
            guard case .stored = result, generation == purgeEpoch else { return }
            let listKey = CacheKey.list(workflow: workflow)
            if let cached = memory.peek(listKey), case .list(let list) = cached.document,
               list.index(of: detail.job.compactID) == nil, let updated = Self.adding(detail, to: list) {
                replaceList(cached, with: updated, key: listKey)
            }
            recentWrites.remember(detail, workflow: workflow, at: record.validatedAt)
        }
    }

    /// A job document is a few KiB; a larger "job" announced by another instance is not one.
    static let maxWrittenJobBytes = 256 << 10

    final class Counter {
        var count: Int
        init(_ count: Int) { self.count = count }
    }

    /// `list` with `detail`'s job added where the upstream puts new jobs, projected to the
    /// list's fields (nil when the list cannot take it).
    static func adding(_ detail: JobDetailDocument, to list: JobListDocument) -> JobListDocument? {
        list.inserting([detail.object], fields: listFields(of: list))
    }

    /// The fields a job added to `list` takes: those of its first job, or the documented ones.
    static func listFields(of list: JobListDocument) -> [String] {
        list.jobs.isEmpty ? documentedListFields : (list.fieldNames(at: 0) ?? documentedListFields)
    }

    /// `answer` (a list) with the jobs written lately (`RecentWrites`) that it lacks
    /// (the newest `RecentWrites.maxMergedPerList`), each at the newest version the cache holds:
    /// the detail in memory or the entry of the list being replaced, whichever is newer (a job
    /// may have moved on since the POST, and a client may have seen that in another list). A job
    /// a list has shown newer than any of those is left out rather than shown older.
    private func withRecentWrites(_ answer: CachedAnswer, key: CacheKey, now: Double) -> CachedAnswer {
        guard case .list(let workflow) = key, case .list(let list) = answer.document else { return answer }
        let writes = recentWrites.missing(from: list, workflow: workflow, now: now).suffix(RecentWrites.maxMergedPerList)
        guard !writes.isEmpty else { return answer }
        var current: JobListDocument?
        if case .list(let published)? = memory.peek(key)?.document { current = published }
        var objects: [[String: Any]] = []
        for write in writes {
            let detailKey = CacheKey.detail(workflow: workflow, encodedJob: PercentEncoding.segment(write.jobID))
            var best = (updatedAt: write.detail.job.updatedAt, object: { write.detail.object })
            if let cached = memory.peek(detailKey), cached.isDetail,
               Invalidation.detailUpdatesListEntry(listEntry: best.updatedAt, detail: cached.updatedAt) {
                best = (cached.updatedAt, { Self.parsedDetail(cached) })
            }
            if let current, let index = current.index(of: write.jobID),
               Invalidation.detailUpdatesListEntry(listEntry: best.updatedAt, detail: current.jobs[index].updatedAt) {
                best = (current.jobs[index].updatedAt, { current.object(at: index) ?? [:] })
            }
            if let listed = known(detailKey), (best.updatedAt ?? -.infinity) < listed { continue }
            objects.append(best.object())
        }
        guard !objects.isEmpty, let merged = list.inserting(objects, fields: Self.listFields(of: list)) else { return answer }
        return answer.replacingDocument(.list(merged))
    }

    /// The list's fields as the Pixxel documentation lists them (for a list with no job yet).
    static let documentedListFields = [
        "created_by", "id", "cost", "workflow_id", "created_at", "updated_at", "finished_at",
        "estimated_duration", "progress", "status", "time_taken",
    ]

    // MARK: Shared tier

    /// Takes in an entry another instance put in the shared tier, by the rules an upstream
    /// answer follows (`store`): a detail never replaces a newer one, a list renews or
    /// invalidates the details it shows. Its times are the upstream's, not the adoption's: its
    /// age and freshness count from when the upstream last confirmed it.
    public func adopt(_ key: CacheKey, record: DiskRecord, landed: @escaping (StoreResult) -> Void) {
        loop.assertOnLoop()
        // A key's own lifetime applies (a `cache.routes` rule as configured here and now).
        store(key, body: record.body, headers: CachedAnswer.headers(fromLines: record.headers), now: record.validatedAt, landed: landed)
    }

    /// Whether memory holds an entry at least as recent as one confirmed at `validatedAt` (a
    /// message about it brings nothing new).
    public func holdsCurrent(_ key: CacheKey, validatedAt: Double) -> Bool {
        guard let cached = memory.peek(key) else { return false }
        return !cached.isSuperseded && cached.validatedAt >= validatedAt
    }

    /// Another instance's list showed the job newer than `newestSeen`: the detail here stops
    /// being served, as if this instance's own list had shown it.
    public func noteSuperseded(_ key: CacheKey, newestSeen: Double) {
        loop.assertOnLoop()
        noteKnown(key, newestSeen)
        guard let cached = memory.peek(key), let updatedAt = cached.updatedAt, updatedAt < newestSeen, !cached.isSuperseded else { return }
        cached.freshness = ListSightings.superseding(cached.freshness, detailUpdatedAt: updatedAt, listed: newestSeen)
        counters.invalidations += 1
    }

    /// The details a list answer shows with an `updated_at`, as keys and instants (for the
    /// shared tier's own invalidation).
    public func listedDetails(of answer: CachedAnswer, workflow: String) -> [(key: CacheKey, updatedAt: Double)] {
        guard case .list(let list) = answer.document else { return [] }
        return list.jobs.compactMap { job in
            job.updatedAt.map { (CacheKey.detail(workflow: workflow, jobID: job.compactID), $0) }
        }
    }

    // MARK: Invalidation

    /// A list answer's sightings applied to the workflow's details in memory; the disk tier
    /// applies the same function (`ListSightings.applied`) to its rows.
    private func applyToMemory(_ sightings: ListSightings, workflow: String) {
        let details = memory.keys { if case .detail(workflow, _) = $0 { true } else { false } }
        for key in details {
            guard let cached = memory.peek(key), let job = key.job else { continue }
            let before = cached.freshness
            let after = sightings.applied(to: before, jobID: job, detailUpdatedAt: cached.updatedAt)
            if after.invalidated && !before.invalidated { counters.invalidations += 1 }
            if after.validatedAt != before.validatedAt { counters.renewals += 1 }
            cached.freshness = after
        }
    }

    /// A detail newer than its entry in the cached list updates that entry (projected to the
    /// list's fields), so list and detail agree.
    private func updateListEntry(workflow: String, from detail: JobDetailDocument) {
        let listKey = CacheKey.list(workflow: workflow)
        guard let cached = memory.peek(listKey), case .list(let list) = cached.document,
              let index = list.index(of: detail.job.compactID),
              Invalidation.detailUpdatesListEntry(listEntry: list.jobs[index].updatedAt, detail: detail.job.updatedAt),
              let fields = list.fieldNames(at: index),
              let updated = list.replacing(at: index, with: detail.object, fields: fields) else { return }
        replaceList(cached, with: updated, key: listKey)
        counters.listEntryUpdates += 1
    }

    /// A cached detail's body parsed, to project into a list (its `updated_at` is read from
    /// the entry first: the parse copies the body, and is made only when it is used).
    private static func parsedDetail(_ answer: CachedAnswer) -> [String: Any] {
        answer.isDetail ? DecodedAnswerBody(answer.heldBytes).object ?? [:] : [:]
    }

    /// Where a detail key's job (`job` as keys hold it, percent-encoded) is in `list`, whose
    /// jobs hold their ids as sent. A UUID needs no encoding, and is compared as it is; any
    /// other id is decoded once, not each listed id encoded (an allocation per job, on every
    /// request for an expired detail: found by review).
    static func listedIndex(of job: CompactID, in list: JobListDocument) -> Int? {
        job.isInline ? list.index(of: job) : PercentEncoding.decodedSegment(job.text).flatMap { list.index(of: $0) }
    }

    /// The newest version of a job held here at `atLeast` or newer: its detail in memory, or
    /// its newest entry in the workflow's cached list (`listed`, from `newestEntries`; `job` as
    /// keys hold it).
    private func newerCopy(of job: String, workflow: String, atLeast known: Double,
                           listed: [String: (index: Int, updatedAt: Double)], cachedList: JobListDocument?)
        -> (updatedAt: Double?, object: [String: Any])? {
        if let cached = memory.peek(.detail(workflow: workflow, encodedJob: job)),
           let updatedAt = cached.updatedAt, updatedAt >= known {
            return (updatedAt, Self.parsedDetail(cached))
        }
        if let cachedList, let entry = listed[job], entry.updatedAt >= known, let object = cachedList.object(at: entry.index) {
            return (entry.updatedAt, object)
        }
        return nil
    }

    /// Each job's newest dated entry in `list`, by the job's id as keys hold it: one pass.
    static func newestEntries(of list: JobListDocument) -> [String: (index: Int, updatedAt: Double)] {
        var entries: [String: (index: Int, updatedAt: Double)] = [:]
        for (index, job) in list.jobs.enumerated() {
            guard let updatedAt = job.updatedAt else { continue }
            let id = job.compactID.percentEncoded
            if let known = entries[id], known.updatedAt >= updatedAt { continue }
            entries[id] = (index, updatedAt)
        }
        return entries
    }

    /// The workflow's cached list, when it may lend its entries (not superseded).
    private func lendingList(_ workflow: String) -> JobListDocument? {
        guard let cached = memory.peek(.list(workflow: workflow)), !cached.isSuperseded, case .list(let list) = cached.document else { return nil }
        return list
    }

    /// The "never older" plan for `list` (`Invalidation.planList`, by each job's oldest entry:
    /// a job listed twice is patched if either entry is behind), with the patched list when
    /// the plan is to patch; made once, for storing and for delivering alike.
    private func planPatch(_ list: JobListDocument, workflow: String, hasCached: Bool) -> (ListPlan, JobListDocument?) {
        var patched: JobListDocument?
        let oldest = Dictionary(list.jobs.map { ($0.compactID.percentEncoded, $0.updatedAt) }, uniquingKeysWith: Self.older)
        let plan = Invalidation.planList(listed: oldest, newestKnown: { [self] in known(.detail(workflow: workflow, encodedJob: $0)) },
                                         canPatch: { [self] jobs in
                                             patched = patching(list, jobs: jobs, workflow: workflow)
                                             return patched != nil
                                         }, hasCached: hasCached)
        return (plan, patched)
    }

    /// `list` with the entries of `jobs` replaced by the newest versions held (projected to the
    /// list's fields), in one rebuild; nil when one is not held or cannot be projected.
    private func patching(_ list: JobListDocument, jobs: [String], workflow: String) -> JobListDocument? {
        let cachedList = lendingList(workflow)
        let listed = cachedList.map(Self.newestEntries) ?? [:]
        var copies: [String: [String: Any]] = [:]
        for job in jobs {
            guard let known = known(.detail(workflow: workflow, encodedJob: job)),
                  let copy = newerCopy(of: job, workflow: workflow, atLeast: known, listed: listed, cachedList: cachedList) else { return nil }
            copies[job] = copy.object
        }
        var replacements: [Int: [String: Any]] = [:]
        for (index, entry) in list.jobs.enumerated() {
            if let copy = copies[entry.compactID.percentEncoded] { replacements[index] = copy }
        }
        return list.replacing(replacements, fields: { list.fieldNames(at: $0) })
    }

    /// The one "never older" rule, applied where an answer leaves the cache (the lookup, a
    /// flight's landing, a stale answer on error): no answer shows a job older than the newest
    /// version this instance has shown or learned (`newestKnown`). A list is patched with the
    /// newer entries held, or else stops being served (not even stale) until refetched; a
    /// detail is superseded. nil: the answer must not be served. Looked at again only when
    /// something newer was learned since the last look.
    func current(_ answer: CachedAnswer, key: CacheKey) -> CachedAnswer? {
        guard !answer.isSuperseded else { return nil }
        if answer.checkedGeneration == knownGeneration { return answer }
        // A generation past the current one was given before they started again
        // (`restartGenerations`): it says nothing now.
        if answer.checkedGeneration >= workflowLearnedAt[key.workflow] ?? learnedAtFloor, answer.checkedGeneration < knownGeneration {
            answer.checkedGeneration = knownGeneration
            return answer
        }
        deliveryPlans += 1
        switch answer.heldDocument {
        case .detail:
            if let known = known(key), (answer.updatedAt ?? -.infinity) < known {
                answer.freshness.invalidated = true
                answer.freshness.newestSeen = Self.newer(answer.freshness.newestSeen, known)
                counters.invalidations += 1
                return nil
            }
        case .list(let list):
            let (plan, patched) = planPatch(list, workflow: key.workflow, hasCached: false)
            if plan == .store { break }
            guard case .patch(let jobs) = plan, let patched else {
                answer.freshness.invalidated = true
                counters.invalidations += 1
                return nil
            }
            counters.listEntryUpdates += jobs.count
            let replacement = memory.peek(key) === answer ? replaceList(answer, with: patched, key: key).answer
                : answer.replacingDocument(.list(patched))
            replacement.checkedGeneration = knownGeneration
            return replacement
        case .raw:
            break
        }
        answer.checkedGeneration = knownGeneration
        return answer
    }

    @discardableResult
    private func replaceList(_ cached: CachedAnswer, with list: JobListDocument, key: CacheKey, save: Bool = true)
        -> (answer: CachedAnswer, record: DiskRecord) {
        let replacement = cached.replacingDocument(.list(list))
        hold(key, replacement)
        let record = replacement.record(for: key)
        if save { disk?.save(record) }
        return (replacement, record)
    }

    // MARK: Purge and statistics

    /// The tiers and flights at a glance (loop thread), for `/admin/stats` and `/metrics`.
    public struct TierFigures: Sendable {
        public let memoryEntries: Int
        public let memoryBytes: Int
        public let memoryBudgetBytes: Int
        public let evictions: Int
        public let collapsed: Int
        /// Fetches for cached resources in the air (foreground or background).
        public let inFlightFetches: Int
        public let diskBudgetBytes: Int
        public let diskDroppedWrites: Int
        /// What the disk tier is known to hold (no read of the store).
        public let diskKnownBytes: Int
        public let diskKnownEntries: Int
    }

    public var tierFigures: TierFigures {
        TierFigures(memoryEntries: memory.count, memoryBytes: memory.totalBytes, memoryBudgetBytes: memory.budgetBytes,
                    evictions: memory.evictions, collapsed: flights.collapsed, inFlightFetches: flights.inFlight,
                    diskBudgetBytes: disk?.budgetBytes ?? 0, diskDroppedWrites: disk?.droppedWrites ?? 0,
                    diskKnownBytes: disk?.knownBytes ?? 0, diskKnownEntries: disk?.knownEntries ?? 0)
    }

    /// The disk tier's entries and bytes as the store counts them; `completion` runs on the
    /// disk's queue with (0, 0) without a disk tier.
    public func diskStatistics(completion: @escaping @Sendable (_ entries: Int, _ bytes: Int) -> Void) {
        guard let disk else { return completion(0, 0) }
        disk.statistics(completion: completion)
    }

    /// Whether the disk tier can be used (no disk tier: yes).
    public var isDiskHealthy: Bool { disk?.isHealthy ?? true }
    /// Failed writes to the disk tier by reason (`DiskStore.Failure.reason`).
    public var diskWriteErrors: [String: Int] { disk?.writeErrors ?? [:] }
    /// When a write to the disk tier last failed, and why.
    public var lastDiskWriteFailure: (at: Double, reason: String)? { disk?.lastWriteFailure }

    /// Puts the disk tier in use: the store was opened after start (it could not be at first).
    public func attachDisk(_ store: DiskStore) {
        loop.assertOnLoop()
        disk = store
    }

    /// Writes what the disk tier has pending (at shutdown).
    public func flushDisk() { disk?.flush() }

    /// Drops the `cache.routes` entries whose path is `prefix` (encoded) or under it, from both
    /// tiers. `completion` runs on the loop with the counts.
    public func purgeRoutes(pathPrefix prefix: String, completion: @escaping (_ memory: Int, _ disk: Int) -> Void) {
        loop.assertOnLoop()
        purgeEpoch += 1
        let fromMemory = memory.removeAll { key in
            if case .route(let resource) = key { return resource.isUnder(prefix) }
            return false
        }
        guard let disk else { return completion(fromMemory, 0) }
        let box = LoopBound(completion, loop: loop)
        disk.purgeRoutes(pathPrefix: prefix) { [loop] fromDisk in
            loop.execute { box.value(fromMemory, fromDisk) }
        }
    }

    /// Drops a workflow's entries (or one job's) from both tiers; ids as decoded from the
    /// request. `completion` runs on the loop with the counts.
    public func purge(workflowID: String, jobID: String?, completion: @escaping (_ memory: Int, _ disk: Int) -> Void) {
        purge(workflow: PercentEncoding.segment(workflowID), job: jobID.map(PercentEncoding.segment), completion: completion)
    }

    /// The same, with ids as keys hold them (percent-encoded): a purge another instance announced.
    public func purge(workflow: String, job: String?, completion: @escaping (_ memory: Int, _ disk: Int) -> Void) {
        loop.assertOnLoop()
        purgeEpoch += 1
        let fromMemory: Int
        // What the cache learned of the purged jobs goes too: a purge is the operator's remedy
        // for a bad version (found by review: a known version kept after the purge left the
        // list with nothing to be patched from, and every read answered 502 until a restart).
        recentWrites.forget(workflow: workflow, job: job)
        if let job {
            fromMemory = memory.remove(.detail(workflow: workflow, encodedJob: job)) == nil ? 0 : 1
            _ = newestKnown.remove(.detail(workflow: workflow, encodedJob: job))
        } else {
            fromMemory = memory.removeAll { $0.workflow == workflow }
            _ = newestKnown.removeAll { $0.workflow == workflow }
        }
        guard let disk else { return completion(fromMemory, 0) }
        let box = LoopBound(completion, loop: loop)
        disk.purge(workflowID: workflow, jobID: job) { [loop] fromDisk in
            loop.execute { box.value(fromMemory, fromDisk) }
        }
    }
}
