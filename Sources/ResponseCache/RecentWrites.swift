import JobCache

/// Jobs created through this process lately, so that a list answer that crossed a creation
/// (its request went upstream before the POST was answered, or it was stored on disk before
/// it) does not take the job away from its creator: read-your-writes.
///
/// Only crossings are repaired: a list requested after the POST was answered is the upstream's
/// word. So what is merged into one list is bounded by what was created while one fetch was in
/// the air (or since one disk copy was written), and capped. Bounded in age and count.
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
    /// Longer than any list fetch (`upstream.timeout_seconds`) or disk copy still fresh enough
    /// to be served needs.
    static let keepSeconds = 60.0
    static let maxWrites = 1024
    /// At most this many jobs are added to one list answer (the newest).
    static let maxMergedPerList = 64

    mutating func remember(_ detail: JobDetailDocument, workflow: String, at now: Double) {
        prune(now: now)
        // One write per job (the latest): the same creation announced again takes no more room.
        writes.removeAll { $0.workflow == workflow && $0.jobID == detail.job.id }
        if writes.count >= Self.maxWrites { writes.removeFirst(writes.count - Self.maxWrites + 1) }
        writes.append(Write(workflow: workflow, jobID: detail.job.id, detail: detail, at: now))
    }

    /// The writes to `workflow` answered at or after `since` that `list` does not show, one per
    /// job (the latest), oldest first. All of them are kept out of the list's sightings; the
    /// newest `maxMergedPerList` are added to it.
    mutating func crossing(_ list: JobListDocument, workflow: String, since: Double, now: Double) -> [Write] {
        prune(now: now)
        var seen = Set<String>()
        var missing: [Write] = []
        for write in writes.reversed() where write.workflow == workflow && write.at >= since && list.index(of: write.jobID) == nil {
            if seen.insert(write.jobID).inserted { missing.append(write) }
        }
        return missing.reversed()
    }

    private mutating func prune(now: Double) {
        if let keep = writes.firstIndex(where: { now - $0.at < Self.keepSeconds }) {
            if keep > 0 { writes.removeFirst(keep) }
        } else {
            writes.removeAll()
        }
    }
}
