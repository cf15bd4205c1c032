import EventHTTP
import Foundation
import JobCache

extension ProxyServer {
    /// `POST /admin/purge?workflow_id=W[&job_id=J]`: drops the entries from memory and disk.
    func purge(_ exchange: Exchange, rawQuery: String?) {
        var exchange = exchange
        guard let pairs = QueryDecoding.pairs(rawQuery) else {
            return finish(&exchange, error: .badRequest("invalid percent-encoding in the query"))
        }
        let values = Dictionary(grouping: pairs, by: \.name).mapValues { $0.map(\.value) }
        if let unknown = values.keys.first(where: { $0 != "workflow_id" && $0 != "job_id" && $0 != "path_prefix" }) {
            return finish(&exchange, error: .badRequest("unknown parameter \(unknown); use workflow_id and job_id, or path_prefix"))
        }
        if let prefixes = values["path_prefix"] {
            guard values.count == 1, prefixes.count == 1 else {
                return finish(&exchange, error: .badRequest("path_prefix is given once, and alone"))
            }
            return purgeRoutes(exchange, pathPrefix: prefixes[0])
        }
        guard let workflows = values["workflow_id"], workflows.count == 1, !workflows[0].isEmpty else {
            return finish(&exchange, error: .badRequest("exactly one non-empty workflow_id is required"))
        }
        let jobs = values["job_id"] ?? []
        guard jobs.count <= 1, jobs.first?.isEmpty != true else {
            return finish(&exchange, error: .badRequest("job_id, if given, must be one non-empty value"))
        }
        let workflowID = workflows[0], jobID = jobs.first
        let box = ExchangeBox(exchange)
        // Redis first: a read from it between the local purge and its own would undo the purge.
        sharePurge(workflowID: workflowID, jobID: jobID) { [self] sharedOutcome in
            cache.purge(workflowID: workflowID, jobID: jobID) { [self] fromMemory, fromDisk in
                finish(&box.exchange, status: 200, headers: Self.adminAnswerHeaders,
                       body: Self.purgeBody(memory: fromMemory, disk: fromDisk, shared: sharedOutcome))
                logger.notice("purged", metadata: ["client": "\(box.exchange.caller.logName)", "memory_entries": "\(fromMemory)",
                                                   "disk_entries": "\(fromDisk)", "shared_tier": "\(sharedOutcome ?? "off")"])
            }
        }
    }

    /// `POST /admin/purge?path_prefix=/v0/...`: the `cache.routes` entries at that path or under it.
    private func purgeRoutes(_ exchange: Exchange, pathPrefix: String) {
        var exchange = exchange
        guard pathPrefix.hasPrefix("/v0/"), !pathPrefix.contains("?"), case .success(let target) = RequestTarget.parse(pathPrefix) else {
            return finish(&exchange, error: .badRequest("path_prefix must be a path under /v0/, without a query"))
        }
        let prefix = "/" + target.segments.map(RequestTarget.encodeSegment).joined(separator: "/")
        let box = ExchangeBox(exchange)
        sharePurge(routesUnder: prefix) { [self] sharedOutcome in
            cache.purgeRoutes(pathPrefix: prefix) { [self] fromMemory, fromDisk in
                finish(&box.exchange, status: 200, headers: Self.adminAnswerHeaders,
                       body: Self.purgeBody(memory: fromMemory, disk: fromDisk, shared: sharedOutcome))
                logger.notice("purged", metadata: ["client": "\(box.exchange.caller.logName)", "path_prefix": "\(prefix)",
                                                   "memory_entries": "\(fromMemory)", "disk_entries": "\(fromDisk)",
                                                   "shared_tier": "\(sharedOutcome ?? "off")"])
            }
        }
    }

    /// What the admin routes answer (client names, workflow ids, the budget) is never stored.
    static let adminAnswerHeaders = HTTPHeaders([("Cache-Control", "no-store")])

    /// The status page's headers: its own script and style only, never framed, never cached.
    static let statusPageHeaders = HTTPHeaders([
        ("Content-Type", "text/html; charset=utf-8"), ("Content-Security-Policy", StatusPage.contentSecurityPolicy),
        ("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer"),
        ("Cache-Control", "no-store"),
    ])

    /// `shared`: what became of the purge in the shared tier (`purged`, or `queued` until Redis
    /// is back); absent without one.
    static func purgeBody(memory: Int, disk: Int, shared: String? = nil) -> [UInt8] {
        let sharedField = shared.map { #","shared_tier":"\#($0)""# } ?? ""
        return Array(#"{"purged":{"memory_entries":\#(memory),"disk_entries":\#(disk)}\#(sharedField)}"#.utf8)
    }

    /// What the status page draws besides the cache's counters: the budget now, per-second
    /// series of the last five minutes (oldest first), requests per client, the busiest
    /// workflows and the last upstream errors.
    func operatorFigures() -> [String: Any] {
        let second = Int(budgetClock())
        let series = operatorStats.series(before: second)
        let uptime = ContinuousClock.now - startedAt
        return [
            "health": healthVerdict().json,
            "version": ProxyVersion.string,
            "uptime_seconds": uptime.components.seconds,
            "shared": sharedFigures(),
            "budget": [
                "requests_per_second": settings.upstreamRequestsPerSecond, "burst": settings.upstreamBurst,
                "tokens": budget.tokens, "queued": budget.queued, "pause_remaining_seconds": budget.pauseRemaining(),
                "pauses": budget.pauses, "refused": budget.refused,
            ] as [String: Any],
            "series": [
                "requests": series.map(\.requests), "lookups": series.map(\.lookups), "hits": series.map(\.hits), "upstream_calls": series.map(\.upstreamCalls),
                "upstream_errors": series.map(\.upstreamErrors),
            ],
            "clients": operatorStats.clients,
            "workflows": operatorStats.busiestWorkflows(10).map { ["id": $0.id, "requests": $0.requests] as [String: Any] },
            "recent_upstream_errors": operatorStats.recentErrors.map {
                ["at": Date(timeIntervalSince1970: $0.at).ISO8601Format(), "route": $0.route, "outcome": $0.outcome] as [String: Any]
            },
        ]
    }

    /// `GET /admin/stats`: entries and bytes per tier, hits, misses, hit ratio, calls saved.
    func reportStatistics(_ exchange: Exchange) {
        let box = ExchangeBox(exchange)
        let tiers = cache.tierFigures, counters = cache.counters, collapsed = tiers.collapsed
        // Pass-through transfers streaming now, and waiting for an upstream connection.
        let streams = ["running": upstream.streamsRunning, "queued": upstream.streamsQueued]
        let hits = counters.hits, misses = counters.misses
        let invalidation = [
            "renewals": counters.renewals, "invalidations": counters.invalidations, "rejected_out_of_order": counters.rejectedOutOfOrder,
            "list_entry_updates": counters.listEntryUpdates, "list_revalidations": counters.listRevalidations, "write_throughs": counters.writeThroughs,
            "learnings_incomplete": counters.learningsIncomplete,
        ]
        let respond: @Sendable (Int, Int) -> Void = { [self] diskEntries, diskBytes in
            loop.execute { [self] in
                let lookups = hits + misses
                let object: [String: Any] = [
                    "memory": ["entries": tiers.memoryEntries, "bytes": tiers.memoryBytes, "budget_bytes": tiers.memoryBudgetBytes,
                               "evictions": tiers.evictions],
                    "disk": ["entries": diskEntries, "bytes": diskBytes, "budget_bytes": tiers.diskBudgetBytes,
                             "dropped_writes": tiers.diskDroppedWrites, "write_errors": cache.diskWriteErrors],
                    "hits": hits, "disk_hits": counters.diskHits, "shared_hits": counters.sharedHits, "prepared_hits": counters.preparedHits, "misses": misses,
                    "hit_ratio": lookups == 0 ? 0 : Double(hits) / Double(lookups),
                    "collapsed": collapsed, "upstream_fetches": counters.upstreamFetches, "invalidation": invalidation,
                    "streams": streams,
                    // Requests held by `Prefer: wait` now.
                    "held_requests": heldRequests.count,
                    // Change streams open now, and those ended because their reader fell behind.
                    // Slots: open, opening, and ended with bytes still going out (what the caps count).
                    "change_streams": ["open": changeStreams.open, "overflows": changeStreams.overflows, "slots": changeStreams.slots],
                    // Every hit and every collapsed waiter is an upstream call not made.
                    "upstream_calls_saved": hits + collapsed,
                ].merging(operatorFigures()) { current, _ in current }
                let body = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])).map(Array.init) ?? []
                finish(&box.exchange, status: 200, headers: Self.adminAnswerHeaders, body: body)
            }
        }
        cache.diskStatistics(completion: respond)
    }
}
