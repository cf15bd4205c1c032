import JobCache

/// Jobs created through this instance or announced by another lately, so that no list answer
/// lacks one: read-your-writes, whatever the order of the creation, the list's fetch, its
/// landing and the other instance's message (a list requested before the POST lands after it;
/// one copied from the shared tier was fetched by another instance, at a time not known here;
/// and the upstream's lists may lag behind its writes).
///
/// Jobs are never deleted through the Pixxel API, so a list without a job created within
/// `keepSeconds` is behind, never right. What is merged into one list is capped; bounded in
/// age and count.
struct RecentWrites {
    struct Write {
        let workflow: String
        let jobID: String
        let detail: JobDetailDocument
        /// When the POST was answered (the cache's clock).
        let at: Double
    }

    /// Oldest first.
    private(set) var writes: [Write] = []
    /// The bodies' bytes, bounded by `maxBytes` (a flood of announced jobs, forged or not,
    /// must not hold memory outside the memory tier's budget).
    private var bytes = 0
    static let maxBytes = 8 << 20
    /// Longer than a list fetch across a creation takes to land (`upstream.timeout_seconds`),
    /// and than the upstream's lists lag behind its writes.
    static let keepSeconds = 60.0
    static let maxWrites = 1024
    /// At most this many jobs are added to one list answer (the newest).
    static let maxMergedPerList = 64

    mutating func remember(_ detail: JobDetailDocument, workflow: String, at now: Double) {
        prune(now: now)
        // One write per job (the latest): the same creation announced again takes no more room.
        // Ids compare as bytes: canonically equivalent ids are different jobs.
        let id = detail.job.compactID.percentEncoded
        drop { $0.workflow == workflow && PercentEncoding.segment($0.jobID) == id }
        writes.append(Write(workflow: workflow, jobID: detail.job.id, detail: detail, at: now))
        bytes += detail.body.count
        while writes.count > Self.maxWrites || (bytes > Self.maxBytes && writes.count > 1) { dropFirst(1) }
    }

    /// Forgets a workflow's writes, or one job's: purged.
    mutating func forget(workflow: String, job: String?) {
        drop { $0.workflow == workflow && (job == nil || PercentEncoding.segment($0.jobID) == job) }
    }

    private mutating func drop(where predicate: (Write) -> Bool) {
        for write in writes where predicate(write) { bytes -= write.detail.body.count }
        writes.removeAll(where: predicate)
    }

    private mutating func dropFirst(_ count: Int) {
        for write in writes.prefix(count) { bytes -= write.detail.body.count }
        writes.removeFirst(count)
    }

    /// The writes to `workflow` that `list` does not show, one per job (the latest), oldest
    /// first. All of them are kept out of the list's sightings; the newest `maxMergedPerList`
    /// are added to it.
    mutating func missing(from list: JobListDocument, workflow: String, now: Double) -> [Write] {
        prune(now: now)
        guard writes.contains(where: { $0.workflow == workflow }) else { return [] }
        // Ids as bytes: canonically equivalent ids are different jobs. One set per list, not a
        // scan of the list per write (a 2000-job list and a thousand writes stalled the loop).
        let listed = Set(list.jobs.map { Array($0.id.utf8) })
        var seen = Set<[UInt8]>()
        var missing: [Write] = []
        for write in writes.reversed() where write.workflow == workflow && !listed.contains(Array(write.jobID.utf8)) {
            if seen.insert(Array(write.jobID.utf8)).inserted { missing.append(write) }
        }
        return missing.reversed()
    }

    private mutating func prune(now: Double) {
        dropFirst(writes.firstIndex { now - $0.at < Self.keepSeconds } ?? writes.count)
    }
}
