import Testing
@testable import JobCache
@testable import ResponseCache

/// The jobs written lately that lists must show (`RecentWrites`): bounded, byte-exact ids.
@Suite struct RecentWritesTests {
    typealias Documents = CacheCorrectnessTests.Documents

    /// Found by review: ids compared as Swift strings (canonical equivalence), so a second job
    /// whose id differed only in bytes replaced the first one's write.
    @Test func canonicallyEquivalentIdsAreDifferentWrites() throws {
        let composed = "caf\u{E9}", decomposed = "cafe\u{301}"
        func detail(_ id: String) throws -> JobDetailDocument {
            try #require(JobDetailDocument(body: Array(Documents.job(id, "2026-11-20T10:00:00Z").utf8)))
        }
        var writes = RecentWrites()
        writes.remember(try detail(composed), workflow: "w", at: 100)
        writes.remember(try detail(decomposed), workflow: "w", at: 101)
        #expect(writes.writes.count == 2, "remember dropped the other job")
        // So a list lacking both gets one merged (`missing`'s `seen: Set<String>` would merge one as well).
        let list = try #require(JobListDocument(body: Array(#"{"jobs":[]}"#.utf8)))
        var forged = RecentWrites()
        forged.remember(try detail(composed), workflow: "w", at: 100)
        forged.remember(try detail(decomposed), workflow: "w", at: 101)
        #expect(forged.missing(from: list, workflow: "w", now: 102).count == 2)
    }

    @Test func theBodiesHeldAreBoundedInBytes() throws {
        var writes = RecentWrites()
        let big = try #require(JobDetailDocument(body: Array(#"{"id":"x","updated_at":"2026-11-20T10:00:00Z","pad":"\#(String(repeating: "p", count: 1 << 20))"}"#.utf8)))
        for index in 0..<20 {
            let detail = try #require(JobDetailDocument(body: Array(String(decoding: big.body, as: UTF8.self)
                .replacingOccurrences(of: #""id":"x""#, with: #""id":"x\#(index)""#).utf8)))
            writes.remember(detail, workflow: "w", at: 100)
        }
        #expect(writes.writes.count < 20)
        #expect(writes.writes.reduce(0) { $0 + $1.detail.body.count } <= RecentWrites.maxBytes)
        #expect(writes.writes.last?.jobID == "x19", "the newest are kept")
    }

    @Test func aPurgeForgetsTheWorkflowsWrites() throws {
        var writes = RecentWrites()
        for (workflow, id) in [("w", "a"), ("w", "b"), ("v", "c")] {
            writes.remember(try #require(JobDetailDocument(body: Array(Documents.job(id, "2026-11-20T10:00:00Z").utf8))), workflow: workflow, at: 100)
        }
        writes.forget(workflow: "w", job: "a")
        #expect(writes.writes.map(\.jobID) == ["b", "c"])
        writes.forget(workflow: "w", job: nil)
        #expect(writes.writes.map(\.jobID) == ["c"])
    }
}
