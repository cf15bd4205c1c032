import EventHTTP
import JobCache
import ResponseCache

extension ProxyServer {
    static let metricsHeaders = HTTPHeaders([("Content-Type", "text/plain; version=0.0.4; charset=utf-8")])

    func renderMetrics() -> [UInt8] {
        let tiers = cache.tierFigures
        return metrics.render(
            counts: [
                ("pixxel_proxy_cache_hits_total", cache.counters.hits), ("pixxel_proxy_cache_misses_total", cache.counters.misses),
                ("pixxel_proxy_cache_disk_hits_total", cache.counters.diskHits), ("pixxel_proxy_cache_evictions_total", tiers.evictions),
                ("pixxel_proxy_cache_collapsed_total", tiers.collapsed),
                ("pixxel_proxy_invalidation_renewals_total", cache.counters.renewals),
                ("pixxel_proxy_invalidation_invalidations_total", cache.counters.invalidations),
                ("pixxel_proxy_invalidation_rejected_out_of_order_total", cache.counters.rejectedOutOfOrder),
                ("pixxel_proxy_invalidation_list_entry_updates_total", cache.counters.listEntryUpdates),
                ("pixxel_proxy_cache_list_revalidations_total", cache.counters.listRevalidations),
                ("pixxel_proxy_cache_write_throughs_total", cache.counters.writeThroughs),
                ("pixxel_proxy_shared_learnings_incomplete_total", cache.counters.learningsIncomplete),
                ("pixxel_proxy_cache_stale_served_total", cache.counters.staleServed),
                ("pixxel_proxy_cache_background_refreshes_total", cache.counters.backgroundRefreshes),
                ("pixxel_proxy_upstream_retry_after_pauses_total", budget.pauses),
                ("pixxel_proxy_upstream_budget_refused_total", budget.refused),
                ("pixxel_proxy_cache_disk_dropped_writes_total", tiers.diskDroppedWrites),
                ("pixxel_proxy_audit_journal_fallbacks_total", auditJournalFallbacks),
                ("pixxel_proxy_accept_failures_total", httpServer?.acceptFailures ?? 0),
                ("pixxel_proxy_connections_refused_total", httpServer?.refusedAtCapacity ?? 0),
            ] + sharedMetricCounts(),
            // Every reason from 0, so that the first failure is an increase Prometheus sees.
            labeledCounts: DiskStore.Failure.reasons.map { reason in
                ("pixxel_proxy_store_write_errors_total", [("reason", reason)], cache.diskWriteErrors[reason] ?? 0)
            },
            gaugeValues: [
                ("pixxel_proxy_cache_entries", [("tier", "memory")], Double(tiers.memoryEntries)),
                ("pixxel_proxy_cache_bytes", [("tier", "memory")], Double(tiers.memoryBytes)),
                ("pixxel_proxy_upstream_connections_open", [], Double(upstream.openConnections)),
                ("pixxel_proxy_upstream_budget_tokens", [], budget.tokens),
                ("pixxel_proxy_upstream_budget_queue_length", [], Double(budget.queued)),
                ("pixxel_proxy_upstream_retry_after_remaining_seconds", [], budget.pauseRemaining()),
                ("pixxel_proxy_cache_bytes", [("tier", "disk")], Double(tiers.diskKnownBytes)),
                ("pixxel_proxy_cache_entries", [("tier", "disk")], Double(tiers.diskKnownEntries)),
                ("pixxel_proxy_requests_in_flight", [], Double(httpServer?.inFlight ?? 0)),
                ("pixxel_proxy_health", [], Double(healthVerdict().state.rawValue)),
                ("pixxel_proxy_ready", [], readiness.ready ? 1 : 0),
            // Only with a shared tier: 0 on an instance without Redis would read as Redis down.
            ] + (shared == nil ? [] : [("pixxel_proxy_shared_up", [], sharedUpGauge)])) + MetricsHelp.processText(version: ProxyVersion.string, commit: ProxyVersion.commit, descriptorLimit: DescriptorLimit.current() ?? descriptorLimit)
    }
}
