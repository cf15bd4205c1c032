import EventHTTP
import JobCache

/// The cache tier and the coordination that several instances share through Redis: entries
/// (ready-to-send bytes, headers and times, kept for their freshness and stale windows),
/// list sightings, leases that make one instance fetch a resource for all, and the messages
/// that tell the others what changed. Keys are the disk tier's keys under `shared.key_prefix`.
///
/// Every call fails soft: while Redis is away it answers `.unavailable` (or does nothing) at
/// once, and the caller acts alone. Loop-bound.
public final class SharedCacheTier {
    public let redis: SharedRedis
    private let prefix: String

    /// What was counted since start, for `/admin/stats` and `/metrics`.
    public struct Counters: Sendable {
        /// Lookups that found a usable entry (memory missed, Redis had it).
        public var hits = 0
        public var misses = 0
        /// Entries found but superseded (a list showed a newer job), not served.
        public var superseded = 0
        public var stores = 0
        /// Stores Redis refused because it held a newer answer.
        public var storesRefused = 0
        public var leasesTaken = 0
        /// Times a request waited for another instance's fetch instead of calling upstream.
        public var leaseWaits = 0
        /// Waits that ended with the answer in Redis.
        public var leaseWaitHits = 0
        /// Waits that ended by taking the lease over (the holder died or failed).
        public var leaseTakeovers = 0
        public var invalidationsReceived = 0

        public init() {}
    }

    public private(set) var counters = Counters()

    public init(redis: SharedRedis) {
        self.redis = redis
        prefix = redis.options.keyPrefix
    }

    public var isUp: Bool { redis.isUp }

    func entryKey(_ diskKey: String) -> String { prefix + "entry:" + diskKey }
    func leaseKey(_ diskKey: String) -> String { prefix + "lease:" + diskKey }

    // MARK: Entries

    /// What Redis holds for a key.
    public enum Read {
        case found(DiskRecord)
        /// A detail a list has shown newer than it: the newest `updated_at` seen.
        case superseded(newestSeen: Double)
        case missing
        case unavailable
    }

    /// Reads an entry; `key`/`workflowID`/`jobID` as the disk tier names them.
    public func load(diskKey: String, workflowID: String, jobID: String?, completion: @escaping (Read) -> Void) {
        let command: [[UInt8]] = [Array("HMGET".utf8), Array(entryKey(diskKey).utf8), [UInt8(ascii: "u")], [UInt8(ascii: "v")],
                                  [UInt8(ascii: "s")], [UInt8(ascii: "d")]]
        redis.send(command) { [self] result in
            guard case .success(let value) = result else { return completion(.unavailable) }
            let fields = value.elements
            guard fields.count == 4, case .string(let payload) = fields[3], let decoded = SharedEntryCodec.decode(payload),
                  let validatedAt = fields[1].text.flatMap(Double.init), SharedEntryCodec.isPlausible(decoded, validatedAt: validatedAt) else {
                counters.misses += 1
                return completion(.missing)
            }
            let updatedAt = fields[0].text.flatMap(Double.init).flatMap { SharedEntryCodec.isPlausibleInstant($0) ? $0 : nil }
            if let seen = fields[2].text.flatMap(Double.init), SharedEntryCodec.isPlausibleInstant(seen), seen > (updatedAt ?? -.infinity) {
                counters.superseded += 1
                return completion(.superseded(newestSeen: seen))
            }
            counters.hits += 1
            completion(.found(DiskRecord(key: diskKey, kind: decoded.kind, workflowID: workflowID, jobID: jobID, body: decoded.body,
                                         headers: decoded.headers, storedAt: decoded.storedAt, lifetime: decoded.lifetime,
                                         updatedAt: updatedAt, validatedAt: validatedAt)))
        }
    }

    /// The newest version Redis knows of each entry: the larger of its `updated_at` and the
    /// newest a list showed of it. Asked in batches of `versionsBatch` keys, one script call
    /// each, one after the other (so that no call waits behind thousands of others and times
    /// out); entries Redis lacks, or with no plausible instant, are left out. `completion`
    /// gets what was learned and whether every batch was answered (false: a call failed or
    /// timed out, and the next batches were still asked; what the answered ones said is given).
    public func newestVersions(diskKeys: [String], completion: @escaping (_ versions: [String: Double], _ complete: Bool) -> Void) {
        var versions: [String: Double] = [:]
        var complete = true
        func ask(from start: Int) {
            guard start < diskKeys.count else { return completion(versions, complete) }
            let batch = Array(diskKeys[start..<min(start + Self.versionsBatch, diskKeys.count)])
            redis.run(SharedScripts.versions, keys: batch.map(entryKey), arguments: []) { result in
                guard case .success(let value) = result, value.elements.count == 2 * batch.count else {
                    complete = false
                    return ask(from: start + batch.count)
                }
                let fields = value.elements
                for (index, diskKey) in batch.enumerated() {
                    let newest = [fields[2 * index], fields[2 * index + 1]].compactMap { $0.text.flatMap(Double.init) }
                        .filter(SharedEntryCodec.isPlausibleInstant).max()
                    if let newest { versions[diskKey] = newest }
                }
                ask(from: start + batch.count)
            }
        }
        ask(from: 0)
    }

    /// Keys per `newestVersions` call: a few hundred microseconds of Redis's time each.
    public static let versionsBatch = 500

    /// Stores an entry for `keep` seconds unless Redis holds a newer one (`SharedScripts.store`),
    /// then tells the others. `completion` gets whether it was stored (false also when Redis is away).
    /// `written`: the entry changed without a newer confirmation from the upstream (a job
    /// written through into a list): the others take it in even when they hold one confirmed as late.
    public func save(_ record: DiskRecord, keep seconds: Double, written: Bool = false, completion: ((Bool) -> Void)? = nil) {
        let milliseconds = Self.milliseconds(seconds)
        redis.run(SharedScripts.store, keys: [entryKey(record.key)],
                  arguments: [SharedEntryCodec.field(record.updatedAt), SharedEntryCodec.field(record.validatedAt),
                              SharedEntryCodec.payload(of: record), Array(String(milliseconds).utf8)]) { [self] result in
            guard case .success(let value) = result else { completion?(false); return }
            let stored = value.integer == 1
            if stored {
                counters.stores += 1
                redis.publish((written ? SharedMessage.written(diskKey: record.key) : .stored(diskKey: record.key)).text)
            } else {
                counters.storesRefused += 1
            }
            completion?(stored)
        }
    }

    /// A list answer's sightings applied to the details Redis holds (`SharedScripts.sightings`),
    /// in batches; the list itself is stored (and announced) by `save`.
    public func applySightings(_ listed: [(diskKey: String, updatedAt: Double)], answeredAt: Double) {
        for batch in stride(from: 0, to: listed.count, by: 256).map({ listed[$0..<min($0 + 256, listed.count)] }) {
            redis.run(SharedScripts.sightings, keys: batch.map { entryKey($0.diskKey) },
                      arguments: [SharedEntryCodec.field(answeredAt)] + batch.map { SharedEntryCodec.field($0.updatedAt) }) { _ in }
        }
    }

    /// Deletes entries: one key, and every key under a disk-key prefix (SCAN in steps, never
    /// KEYS), then tells the others with `announcement`: only once Redis no longer holds them,
    /// or an instance that drops its copy on the message could take it back from Redis.
    /// `completion` gets whether Redis did all of it (false: it was away or failed midway).
    public func purge(diskKey: String?, diskKeyPrefix: String?, announcement: String, completion: @escaping (Bool) -> Void) {
        let announce = { [self] (done: Bool) in
            if done { redis.publish(announcement) }
            completion(done)
        }
        let scan = { [self] in
            guard let diskKeyPrefix else { return announce(true) }
            // The whole key is escaped: the configured prefix may hold glob characters too.
            scanAndDelete(pattern: Self.globEscaped(entryKey(diskKeyPrefix)) + "*", cursor: "0", steps: 0, done: announce)
        }
        guard let diskKey else { return scan() }
        redis.send([Array("DEL".utf8), Array(entryKey(diskKey).utf8)]) { result in
            guard case .success = result else { return announce(false) }
            scan()
        }
    }

    private func scanAndDelete(pattern: String, cursor: String, steps: Int, done: @escaping (Bool) -> Void) {
        guard steps < 100_000 else { return done(false) }
        redis.send([Array("SCAN".utf8), Array(cursor.utf8), Array("MATCH".utf8), Array(pattern.utf8), Array("COUNT".utf8),
                    Array("1000".utf8)]) { [self] result in
            guard case .success(let value) = result, value.elements.count == 2, let next = value.elements[0].text else { return done(false) }
            let keys = value.elements[1].elements.compactMap { value -> [UInt8]? in
                if case .string(let bytes) = value { return bytes }
                return nil
            }
            let goOn = { [self] in
                if next == "0" { return done(true) }
                scanAndDelete(pattern: pattern, cursor: next, steps: steps + 1, done: done)
            }
            guard !keys.isEmpty else { return goOn() }
            redis.send([Array("UNLINK".utf8)] + keys) { result in
                guard case .success = result else { return done(false) }
                goOn()
            }
        }
    }

    /// `*`, `?`, `[`, `]` and `\` escaped for SCAN's MATCH.
    static func globEscaped(_ text: String) -> String {
        var escaped = ""
        for character in text {
            if "*?[]\\".contains(character) { escaped.append("\\") }
            escaped.append(character)
        }
        return escaped
    }

    // MARK: Leases

    public enum LeaseAnswer: Equatable {
        /// This instance fetches; the others wait for it.
        case acquired
        /// Another instance is fetching it.
        case heldElsewhere
        case unavailable
    }

    /// Takes the short lease on a resource's fetch (`SET NX PX`).
    public func takeLease(diskKey: String, seconds: Double, completion: @escaping (LeaseAnswer) -> Void) {
        redis.send([Array("SET".utf8), Array(leaseKey(diskKey).utf8), Array(redis.options.instanceID.utf8), Array("NX".utf8),
                    Array("PX".utf8), Array(String(Self.milliseconds(seconds)).utf8)]) { [self] result in
            switch result {
            case .success(.null): completion(.heldElsewhere)
            case .success:
                counters.leasesTaken += 1
                completion(.acquired)
            case .failure: completion(.unavailable)
            }
        }
    }

    /// Extends this instance's lease (its fetch runs long).
    public func extendLease(diskKey: String, seconds: Double) {
        redis.run(SharedScripts.lease, keys: [leaseKey(diskKey)],
                  arguments: [Array(redis.options.instanceID.utf8), Array(String(Self.milliseconds(seconds)).utf8)]) { _ in }
    }

    /// Ends this instance's lease and tells the waiters (who read Redis, or take the lease over
    /// when the fetch stored nothing).
    public func releaseLease(diskKey: String) {
        redis.run(SharedScripts.lease, keys: [leaseKey(diskKey)],
                  arguments: [Array(redis.options.instanceID.utf8), Array("release".utf8)]) { _ in }
        redis.publish(SharedMessage.landed(diskKey: diskKey).text)
    }

    public func countLeaseWait() { counters.leaseWaits += 1 }
    public func countLeaseWaitHit() { counters.leaseWaitHits += 1 }
    public func countTakeover() { counters.leaseTakeovers += 1 }
    public func countInvalidationReceived() { counters.invalidationsReceived += 1 }

    static func milliseconds(_ seconds: Double) -> Int {
        guard seconds.isFinite else { return 1 }
        return max(1, min(Int(seconds * 1000), 365 * 86_400_000))
    }
}

/// A message of another instance, parsed (`SharedRedis.onMessage` gives the text after the
/// sender's id).
public enum SharedMessage: Equatable, Sendable {
    /// An entry changed in Redis.
    case stored(diskKey: String)
    /// An entry changed in Redis by a write-through (same confirmation time, new content).
    case written(diskKey: String)
    /// A lease ended (its fetch stored something or failed).
    case landed(diskKey: String)
    /// Entries purged: a workflow, one job of it, or `cache.routes` paths under a prefix.
    case purge(workflow: String, job: String?)
    case purgeRoutes(prefix: String)
    /// The upstream asked for a pause of this many seconds.
    case pause(seconds: Double)

    public init?(_ text: String) {
        let parts = text.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 2, !parts[1].isEmpty else { return nil }
        // Keys and prefixes hold no space (ids are percent-encoded); the rest of the line is one.
        let rest = parts.dropFirst().joined(separator: " ")
        switch parts[0] {
        case "stored": self = .stored(diskKey: rest)
        case "landed": self = .landed(diskKey: rest)
        case "written": self = .written(diskKey: rest)
        case "purge": self = .purge(workflow: parts[1], job: parts.count == 3 ? parts[2] : nil)
        case "purge-routes": self = .purgeRoutes(prefix: rest)
        case "pause":
            guard parts.count == 2, let seconds = Double(parts[1]), seconds.isFinite, seconds > 0 else { return nil }
            self = .pause(seconds: seconds)
        default: return nil
        }
    }

    public var text: String {
        switch self {
        case .stored(let key): "stored \(key)"
        case .landed(let key): "landed \(key)"
        case .written(let key): "written \(key)"
        case .purge(let workflow, let job): "purge \(workflow)" + (job.map { " \($0)" } ?? "")
        case .purgeRoutes(let prefix): "purge-routes \(prefix)"
        case .pause(let seconds): "pause \(SharedEntryCodec.format6(seconds))"
        }
    }
}
