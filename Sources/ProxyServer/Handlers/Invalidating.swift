import CacheInvalidation
import EventHTTP
import JobCache
import Upstream

/// Where upstream answers meet the `updated_at` rules of `CacheInvalidation`: a list answer
/// revalidates or invalidates the workflow's cached details; a newer detail updates its list
/// entry; a created job is written through into detail and list.
extension ProxyServer {
    /// Applies a fresh list answer to the cached details of its workflow, in memory here and
    /// on disk in one transaction on the writer queue.
    func applyListSightings(_ list: JobListDocument, workflowID: String, now: Double) {
        var sightings: [String: Double?] = [:]
        for job in list.jobs { sightings[job.id] = job.updatedAt }
        let prefix = "job \(workflowID) "
        for key in cache.memory.keys(withPrefix: prefix) {
            guard let cached = cache.memory.peek(key) else { continue }
            let jobID = String(key.dropFirst(prefix.count))
            let effect: Invalidation.DetailEffect
            if let seen = sightings[jobID] {
                effect = Invalidation.effectOfSighting(cached: cached.updatedAt, seen: seen)
            } else {
                effect = .invalidate  // no longer listed
            }
            let (validatedAt, invalidated) = Invalidation.apply(effect, validatedAt: cached.validatedAt, invalidated: cached.invalidated, now: now)
            if invalidated && !cached.invalidated {
                cache.invalidations += 1
                cached.invalidatedAt = now
            }
            if validatedAt != cached.validatedAt { cache.renewals += 1 }
            cached.validatedAt = validatedAt
            cached.invalidated = invalidated
        }
        cache.disk?.applyListSightings(workflowID: workflowID, sightings: sightings, now: now)
    }

    /// A detail newer than its entry in the cached list updates that entry (projected to the
    /// list's fields), so list and detail agree.
    func updateListEntry(workflowID: String, from detail: JobDetailDocument, now: Double) {
        let listKey = CachedResource.list(workflowID: workflowID).key
        guard let cached = cache.memory.peek(listKey), case .list(let list) = cached.document,
              let index = list.index(of: detail.job.id),
              Invalidation.detailUpdatesListEntry(listEntry: list.jobs[index].updatedAt, detail: detail.job.updatedAt),
              let fields = list.fieldNames(at: index),
              let updated = list.updated(at: index, replacing: true, with: detail.object, fields: fields) else { return }
        replaceList(cached, with: updated, key: listKey, workflowID: workflowID)
        cache.listEntryUpdates += 1
    }

    /// A job created through the proxy: stored as a detail and added to the workflow's cached
    /// list, so reads through the proxy see it at once.
    func writeThrough(workflowID: String, response: ClientResponse) {
        guard let detail = JobDetailDocument(body: response.body) else { return }
        let now = clock()
        let resource = CachedResource.job(workflowID: workflowID, jobID: detail.job.id)
        let answer = CachedAnswer(document: .detail(detail), headers: CachedAnswer.storableHeaders(response.headers, alsoRemoving: ["Location"]),
                                  storedAt: now,
                                  lifetime: cache.policy.lifetime(ofJobWithStatus: detail.job.status))
        cache.memory.set(resource.key, answer, cost: answer.cost)
        cache.disk?.save(answer.record(key: resource.key, resource: resource))
        cache.writeThroughs += 1

        let listKey = CachedResource.list(workflowID: workflowID).key
        guard let cached = cache.memory.peek(listKey), case .list(let list) = cached.document,
              list.index(of: detail.job.id) == nil else { return }
        let fields = list.jobs.isEmpty ? Self.documentedListFields : (list.fieldNames(at: 0) ?? Self.documentedListFields)
        guard let updated = list.updated(at: list.insertionIndexForNewJob, replacing: false, with: detail.object, fields: fields) else { return }
        replaceList(cached, with: updated, key: listKey, workflowID: workflowID)
    }

    /// The list's fields as the Pixxel documentation lists them (for a list with no job yet).
    static let documentedListFields = [
        "created_by", "id", "cost", "workflow_id", "created_at", "updated_at", "finished_at",
        "estimated_duration", "progress", "status", "time_taken",
    ]

    private func replaceList(_ cached: CachedAnswer, with list: JobListDocument, key: String, workflowID: String) {
        let replacement = CachedAnswer(document: .list(list), headers: cached.headers, storedAt: cached.storedAt,
                                       lifetime: cached.lifetime, validatedAt: cached.validatedAt, invalidated: cached.invalidated)
        cache.memory.set(key, replacement, cost: replacement.cost)
        cache.disk?.save(replacement.record(key: key, resource: .list(workflowID: workflowID)))
    }
}
