import Foundation
@testable import ProxyServer
import Testing

@Suite struct OperatorStatsTests {
    @Test func secondsFillTheRingAndOldOnesAreForgotten() {
        var stats = OperatorStats()
        stats.answered(at: 100, hit: true, client: "a", workflow: "w1")
        stats.answered(at: 100, hit: false, client: "b", workflow: "w1")
        stats.answered(at: 102, hit: true, client: "a", workflow: "w2")
        stats.upstreamCall(at: 102, wallTime: 1_700_000_000, route: "/v0/x", outcome: "503", error: true)
        let series = stats.series(before: 103, count: 4)
        #expect(series.map(\.requests) == [0, 2, 0, 1])
        #expect(series.map(\.hits) == [0, 1, 0, 1])
        #expect(series.map(\.upstreamCalls) == [0, 0, 0, 1] && series.map(\.upstreamErrors) == [0, 0, 0, 1])
        // Five minutes later the ring holds nothing of it, and a skip of an hour is fine.
        #expect(stats.series(before: 102 + OperatorStats.window).allSatisfy { $0 == OperatorStats.Second() })
        #expect(stats.series(before: 5000).count == OperatorStats.window - 1)
        #expect(stats.clients == ["a": 2, "b": 1])
        #expect(stats.busiestWorkflows(1).map(\.id) == ["w1"])
        #expect(stats.recentErrors == [OperatorStats.UpstreamError(at: 1_700_000_000, route: "/v0/x", outcome: "503")])
    }

    @Test func workflowsAndErrorsStayBounded() {
        var stats = OperatorStats()
        for index in 0..<(OperatorStats.maxWorkflows * 3) {
            stats.answered(at: 1, hit: false, client: "c", workflow: "w\(index)")
            stats.answered(at: 1, hit: false, client: "c", workflow: "busy")
            stats.upstreamCall(at: 1, wallTime: 0, route: "r", outcome: "bad_gateway", error: true)
        }
        #expect(stats.workflows.count <= OperatorStats.maxWorkflows)
        #expect(stats.busiestWorkflows(1).first?.id == "busy", "the busiest survive")
        #expect(stats.recentErrors.count == OperatorStats.maxErrors)
    }

    @Test func whatCountsAsAnUpstreamError() {
        #expect(OperatorStats.isError("503") && OperatorStats.isError("429") && OperatorStats.isError("upstream_timeout"))
        #expect(!OperatorStats.isError("200") && !OperatorStats.isError("404") && !OperatorStats.isError("budget_refused"))
    }

    @Test func theTerminalReportShowsTheFiguresAndNoControlBytes() {
        let stats: [String: Any] = [
            "uptime_seconds": 3725, "hit_ratio": 0.5, "upstream_calls_saved": 42,
            "series": ["requests": Array(repeating: 3, count: 299), "lookups": Array(repeating: 2, count: 299), "hits": Array(repeating: 1, count: 299),
                       "upstream_calls": Array(repeating: 1, count: 299), "upstream_errors": Array(repeating: 0, count: 299)],
            "budget": ["requests_per_second": 5, "burst": 5, "tokens": 3.5, "queued": 2, "pause_remaining_seconds": 4.2, "refused": 7],
            "memory": ["entries": 10, "bytes": 1 << 20, "budget_bytes": 4 << 20], "disk": ["entries": 3, "bytes": 0, "budget_bytes": 0],
            "streams": ["running": 1, "queued": 0],
            "change_streams": ["open": 4, "overflows": 2], "held_requests": 6,
            "clients": ["alice": 9, "evil\u{1B}[2J": 1],
            "workflows": [["id": "w-1", "requests": 9]],
            "recent_upstream_errors": [["at": "2026-12-01T05:00:01Z", "route": "/v0/*", "outcome": "503"]],
        ]
        let text = StatusReport.render(stats, url: "http://127.0.0.1:8787")
        for expected in ["up 1h 2m", "hit ratio    50.0% since start, 50.0% in the last minute", "saved since start 42",
                         "tokens 3.5 of 5", "waiting 2", "pause 4.2 s", "refused 7", "1 running", "10 entries, 1.0 MiB of 4.0 MiB [#####",
                         "alice 9", "w-1 9", "05:00:01 /v0/* 503",
                         "watchers     4 change streams, 6 held waits   cut off as too slow 2"] {
            #expect(text.contains(expected), "\(expected) in:\n\(text)")
        }
        #expect(!text.unicodeScalars.contains { $0.value == 0x1B }, "a client's name cannot drive the terminal")
    }
}
