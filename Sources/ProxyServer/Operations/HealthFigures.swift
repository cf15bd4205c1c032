import Foundation

extension ProxyServer {
    /// Ready to serve, and why not: `/readyz`'s answer and the verdict's first input.
    var readiness: (ready: Bool, reason: String?) {
        if isReady, storeProblem == nil, cache.isDiskHealthy { return (true, nil) }
        return (false, isDraining ? "draining" : storeProblem ?? "the cache store is not usable")
    }

    /// The verdict now (`HealthVerdict.decide` over what the proxy's parts report).
    func healthVerdict() -> HealthVerdict {
        var figures = HealthVerdict.Figures()
        (figures.ready, figures.notReadyReason) = readiness
        (figures.upstreamCallsLastMinute, figures.upstreamFailuresLastMinute) = operatorStats.upstreamLastMinute(at: Int(budgetClock()))
        figures.pauseRemainingSeconds = budget.pauseRemaining()
        figures.budgetWaiters = budget.queued
        figures.budgetTokens = budget.tokens
        figures.redisConfigured = shared != nil
        figures.redisUp = shared?.redis.isUp ?? false
        let lastFailure = cache.lastDiskWriteFailure
        figures.storeWritesFailing = !cache.isDiskHealthy || lastFailure.map { clock() - $0.at < 60 } == true
        figures.storeFailureReason = lastFailure?.reason
        figures.descriptorLimit = descriptorLimit
        figures.openDescriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd"))?.count
        return HealthVerdict.decide(figures)
    }
}
