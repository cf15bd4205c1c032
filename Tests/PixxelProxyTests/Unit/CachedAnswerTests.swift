import EventHTTP
import Testing
@testable import JobCache
@testable import ResponseCache

/// What a cached entry hands to the writer to send by reference.
@Suite struct CachedAnswerTests {
    static let detailBody = Array(#"{"id":"j1","status":"running","updated_at":"2026-12-03T10:00:00Z","extra":[1,2]}"#.utf8)
    static let listBody = Array(#"{"jobs":[{"id":"j1","status":"running"},{"id":"j2","status":"completed"}],"total":2}"#.utf8)

    static func answer(_ document: CachedAnswer.Document) -> CachedAnswer {
        CachedAnswer(document: document, headers: HTTPHeaders(), storedAt: 1_000, lifetime: 10)
    }

    /// A detail is sent by reference to the entry itself: no wrapper object per cached job.
    @Test func aDetailIsSentFromTheEntryItself() throws {
        let answer = Self.answer(.detail(try #require(JobDetailDocument(body: Self.detailBody))))
        #expect(answer.served(for: JobListFilters()).bytes === answer)
        #expect(answer.served(for: JobListFilters()).bytes.heldBytes == Self.detailBody)
    }

    /// A list's whole body goes out from a wrapper of its own, made once: a slow reader then
    /// keeps the list's bytes alive, not the entry with its filtered bodies and job index.
    @Test func aListIsSentFromAWrapperThatHoldsOnlyItsBytes() throws {
        let answer = Self.answer(.list(try #require(JobListDocument(body: Self.listBody))))
        let whole = answer.served(for: JobListFilters()).bytes
        #expect(whole !== answer)
        #expect(whole === answer.served(for: JobListFilters()).bytes)
        #expect(whole.heldBytes == Self.listBody)
        let filters = JobListFilters(status: "completed")
        let filtered = answer.served(for: filters).bytes
        #expect(filtered !== answer && filtered === answer.served(for: filters).bytes)
        #expect(String(decoding: filtered.heldBytes, as: UTF8.self).contains(#""id":"j2""#))
        #expect(!String(decoding: filtered.heldBytes, as: UTF8.self).contains(#""id":"j1""#))
    }
}
