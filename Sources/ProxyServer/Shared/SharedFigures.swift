import SharedTier

/// The shared tier's figures, for `/admin/stats` and `/metrics` (zeros when it is off, so
/// that dashboards and alerts find the same series on every instance).
extension ProxyServer {
    var sharedState: String {
        guard let shared else { return "off" }
        return shared.redis.isUp ? "up" : "down"
    }

    func sharedFigures() -> [String: Any] {
        let tier = shared?.tier.counters ?? SharedCacheTier.Counters()
        let redis = shared?.redis.counters ?? SharedRedis.Counters()
        var figures: [String: Any] = [
            "state": sharedState,
            "hits": tier.hits, "misses": tier.misses, "superseded": tier.superseded, "stores": tier.stores,
            "stores_refused": tier.storesRefused, "lease_waits": tier.leaseWaits, "lease_wait_hits": tier.leaseWaitHits,
            "lease_takeovers": tier.leaseTakeovers, "leases_taken": tier.leasesTaken,
            "invalidations_received": tier.invalidationsReceived,
            "budget_tokens_from_redis": budget.sharedGrants, "budget_tokens_local": budget.localGrants,
            "redis_commands": redis.commands, "redis_errors": redis.errors, "redis_timeouts": redis.timeouts,
            "redis_connects": redis.connects, "redis_disconnects": redis.disconnects,
            "messages_received": redis.messagesReceived, "messages_sent": redis.messagesSent,
            "instances": settings.sharedInstances,
        ]
        if let problem = shared?.redis.lastProblem, shared?.redis.isUp == false { figures["problem"] = problem }
        return figures
    }

    func sharedMetricCounts() -> [(String, Int)] {
        let tier = shared?.tier.counters ?? SharedCacheTier.Counters()
        let redis = shared?.redis.counters ?? SharedRedis.Counters()
        return [
            ("pixxel_proxy_shared_hits_total", tier.hits), ("pixxel_proxy_shared_misses_total", tier.misses),
            ("pixxel_proxy_shared_stores_total", tier.stores), ("pixxel_proxy_shared_lease_waits_total", tier.leaseWaits),
            ("pixxel_proxy_shared_lease_takeovers_total", tier.leaseTakeovers),
            ("pixxel_proxy_shared_invalidations_received_total", tier.invalidationsReceived),
            ("pixxel_proxy_shared_budget_tokens_total", budget.sharedGrants),
            ("pixxel_proxy_shared_budget_local_tokens_total", budget.localGrants),
            ("pixxel_proxy_shared_redis_errors_total", redis.errors),
            ("pixxel_proxy_shared_redis_disconnects_total", redis.disconnects),
        ]
    }

    /// 1 while Redis is up, 0 while down or off.
    var sharedUpGauge: Double { shared?.redis.isUp == true ? 1 : 0 }
}
