import ProxyServer
import Testing

/// The one rule that says whether the proxy is well (page, status, /readyz, the gauge).
@Suite struct HealthVerdictTests {
    static func verdict(_ change: (inout HealthVerdict.Figures) -> Void) -> HealthVerdict {
        var figures = HealthVerdict.Figures()
        change(&figures)
        return HealthVerdict.decide(figures)
    }

    @Test func nothingWrongIsHealthyWithoutReasons() {
        let verdict = Self.verdict { $0.upstreamCallsLastMinute = 40; $0.redisConfigured = true; $0.redisUp = true
            $0.openDescriptors = 50; $0.descriptorLimit = 65_536 }
        #expect(verdict == HealthVerdict(state: .healthy, reasons: []))
    }

    @Test func anUpstreamFailingEveryCallIsFailingWhateverTheHitRatio() {
        let verdict = Self.verdict { $0.upstreamCallsLastMinute = 12; $0.upstreamFailuresLastMinute = 12 }
        #expect(verdict.state == .failing)
        #expect(verdict.reasons == ["12 of 12 upstream calls failed in the last minute"])
    }

    @Test func oneFailedCallIsDegradedNotFailing() {
        #expect(Self.verdict { $0.upstreamCallsLastMinute = 1; $0.upstreamFailuresLastMinute = 1 }.state == .degraded)
        #expect(Self.verdict { $0.upstreamCallsLastMinute = 20; $0.upstreamFailuresLastMinute = 2 }.state == .degraded)
    }

    @Test func aPauseASpentBudgetRedisDownAndAFailingStoreEachDegrade() {
        #expect(Self.verdict { $0.pauseRemainingSeconds = 4.2 }.reasons == ["the upstream asked to wait (Retry-After): 5 s left"])
        #expect(Self.verdict { $0.budgetWaiters = 3; $0.budgetTokens = 0.4 }.state == .degraded)
        #expect(Self.verdict { $0.budgetWaiters = 3; $0.budgetTokens = 2 }.state == .healthy, "waiters with tokens left are served")
        #expect(Self.verdict { $0.redisConfigured = true; $0.redisUp = false }.state == .degraded)
        #expect(Self.verdict { $0.redisConfigured = false; $0.redisUp = false }.state == .healthy, "no Redis configured is not Redis down")
        #expect(Self.verdict { $0.storeWritesFailing = true }.state == .degraded)
    }

    @Test func notReadyIsFailingAndComesFirst() {
        let verdict = Self.verdict { $0.redisConfigured = true; $0.ready = false; $0.notReadyReason = "draining" }
        #expect(verdict.state == .failing)
        #expect(verdict.reasons.first == "not ready: draining")
        #expect(verdict.reasons.count == 2)
    }

    @Test func aPausedAcceptFailsAndFullConnectionsDegrade() {
        let paused = Self.verdict { $0.acceptPaused = true }
        #expect(paused.state == .failing && paused.categories == ["accept_failing"])
        let full = Self.verdict { $0.openConnections = 10_000; $0.maxConnections = 10_000 }
        #expect(full.state == .degraded && full.reasons == ["10000 of 10000 connections open: new ones are refused"])
        #expect(Self.verdict { $0.openConnections = 9_999; $0.maxConnections = 10_000 }.state == .healthy)
    }

    @Test func descriptorsNearTheLimitDegradeAndAtTheLimitFail() {
        #expect(Self.verdict { $0.openDescriptors = 900; $0.descriptorLimit = 1024 }.state == .healthy)
        #expect(Self.verdict { $0.openDescriptors = 950; $0.descriptorLimit = 1024 }.state == .degraded)
        #expect(Self.verdict { $0.openDescriptors = 1024; $0.descriptorLimit = 1024 }.state == .failing)
    }
}
