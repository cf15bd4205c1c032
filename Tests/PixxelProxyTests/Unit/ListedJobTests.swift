import Testing
@testable import JobCache
@testable import ResponseCache

/// A detail key's job found in its workflow's list, to revalidate the detail by the list: the
/// key holds the id percent-encoded, the list holds it as the upstream sent it.
@Suite struct ListedJobTests {
    static let ids = ["job a/b", "MIXED-Case", "3f2504e0-4f89-11d3-9a0c-0305e82c3301", "3F2504E0-4F89-11D3-9A0C-0305E82C3301",
                      "caf\u{E9}%20", "cafe\u{301}%20", "a?b#c", "~._-"]

    @Test func aKeysJobIsFoundInItsListWhateverItsId() throws {
        let jobs = Self.ids.map { #"{"id":"\#($0)","updated_at":"2026-11-20T10:00:00Z"}"# }
        let list = try #require(JobListDocument(body: Array(#"{"jobs":[\#(jobs.joined(separator: ","))]}"#.utf8)))
        for (index, id) in Self.ids.enumerated() {
            guard case .detail(_, let job) = CacheKey.detail(workflowID: "w", jobID: id) else { Issue.record("not a detail key"); continue }
            #expect(ResponseCache.listedIndex(of: job, in: list) == index, "\(id)")
        }
        guard case .detail(_, let absent) = CacheKey.detail(workflowID: "w", jobID: "job a") else { return }
        #expect(ResponseCache.listedIndex(of: absent, in: list) == nil)
    }

    @Test func anEncodedIdDecodesToItsBytesAndNothingElseDecodes() {
        for id in Self.ids {
            #expect(PercentEncoding.decodedSegment(PercentEncoding.segment(id)).map { Array($0.utf8) } == Array(id.utf8))
        }
        for text in ["", "%2f", "%41", "a%2", "a b", "%FF"] {
            #expect(PercentEncoding.decodedSegment(text) == nil, "\(text)")
        }
    }
}
