import EventHTTP
import Foundation
import Testing
@testable import JobCache
@testable import ProxyServer

/// The change stream's rules without a socket: its resume tokens, which jobs a stored list
/// sends, what a stream starting with a `Last-Event-ID` is sent first, and the wire format.
@Suite struct JobChangesTests {
    static func job(_ id: String, _ updatedAt: String, status: String = "running") -> String {
        #"{"id":"\#(id)","status":"\#(status)","created_at":"2026-11-20T09:00:00Z","updated_at":"\#(updatedAt)"}"#
    }

    static func list(_ jobs: [String]) -> JobListDocument {
        JobListDocument(body: Array(#"{"jobs":[\#(jobs.joined(separator: ","))]}"#.utf8))!
    }

    static func ids(_ indices: [Int], _ list: JobListDocument) -> [String] { indices.map { list.jobs[$0].id } }

    @Test(arguments: ["a", "with space", "a/b?c#d", "é", "e\u{301}", "_under_score_", "%41", "3fa85f64-5717-4562-b3fc-2c963f66afa6"])
    func aTokenReadsBackAsTheSameJobAndInstant(_ id: String) throws {
        let token = ChangeToken(microseconds: 1_795_000_000_123_456, job: CompactID(id))
        let text = token.description
        #expect(text.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F }, "ASCII without spaces or controls: \(text)")
        let read = try #require(ChangeToken(text: text))
        #expect(read == token && read.job.text.utf8.elementsEqual(id.utf8))
    }

    @Test(arguments: ["", "_", "12", "12_", "x_a", "+12_a", "12_a b", "12_%2f", "12_%41", "1.5_a", "-9223372036854775808_a",
                      "99999999999999999999_a", "12_" + String(repeating: "a", count: 2000)])
    func aTokenThisProxyDidNotMakeIsNotRead(_ text: String) {
        #expect(ChangeToken(text: text) == nil, "\(text.prefix(30))")
    }

    @Test func jobsChangedAtOneInstantAreSentInTheOrderOfTheirIds() {
        let list = Self.list(["3fa85f64-5717-4562-b3fc-00000000000b", "b", "3fa85f64-5717-4562-b3fc-00000000000a", "a"]
            .map { Self.job($0, "2026-11-20T10:00:00Z") })
        guard case .everything(let indices) = JobChanges.start(lastEventID: nil, list: list, filters: JobListFilters(), overlap: 60, now: 1.8e9)
        else {
            Issue.record("not everything")
            return
        }
        #expect(Self.ids(indices, list) == ["3fa85f64-5717-4562-b3fc-00000000000a", "3fa85f64-5717-4562-b3fc-00000000000b", "a", "b"])
    }

    @Test func tokensOrderByInstantThenByIdBytes() {
        let early = ChangeToken(microseconds: 1, job: CompactID("z"))
        let tieA = ChangeToken(microseconds: 2, job: CompactID("a")), tieB = ChangeToken(microseconds: 2, job: CompactID("b"))
        #expect(early < tieA && tieA < tieB && !(tieB < tieA))
    }

    @Test func aStoredListSendsTheJobsNewOrNewerOldestChangeFirstAndEachOnce() {
        let before = Self.list([Self.job("a", "2026-11-20T10:00:00Z"), Self.job("b", "2026-11-20T10:00:00Z")])
        let after = Self.list([Self.job("c", "2026-11-20T10:09:00Z"), Self.job("b", "2026-11-20T10:05:00Z"),
                               Self.job("a", "2026-11-20T10:00:00Z"), Self.job("c", "2026-11-20T10:09:00Z")])
        let (indices, published) = JobChanges.changed(in: after, since: JobChanges.published(before))
        #expect(Self.ids(indices, after) == ["b", "c"], "b changed, c is new (listed twice, sent once); a did not change")
        #expect(JobChanges.changed(in: after, since: published).indices.isEmpty, "nothing twice")
        // An older version (a lagging list) is no change; a job gone and back is new again.
        let lagging = Self.list([Self.job("b", "2026-11-20T10:01:00Z")])
        let (none, forgot) = JobChanges.changed(in: lagging, since: published)
        #expect(none.isEmpty && forgot[CompactID("c")] == nil)
    }

    @Test func aStartWithoutTokenSendsEveryMatchingJobAndAResumeWhatChangedSince() throws {
        let list = Self.list([Self.job("late", "2026-11-20T12:00:00Z"), Self.job("old", "2026-11-20T08:00:00Z"),
                              Self.job("near", "2026-11-20T09:59:30Z", status: "completed")])
        let now = try #require(Timestamp.parse("2026-11-20T12:00:00Z"))
        guard case .everything(let all) = JobChanges.start(lastEventID: nil, list: list, filters: JobListFilters(), overlap: 60, now: now) else {
            Issue.record("not everything")
            return
        }
        #expect(Self.ids(all, list) == ["old", "near", "late"])
        let token = ChangeToken(microseconds: ChangeToken.microseconds(at: Timestamp.parse("2026-11-20T10:00:00Z")), job: CompactID("x")).description
        #expect(JobChanges.start(lastEventID: token, list: list, filters: JobListFilters(), overlap: 60, now: now)
            .resumedIDs(list) == ["near", "late"], "within the overlap before the token, and after it")
        #expect(JobChanges.start(lastEventID: token, list: list, filters: JobListFilters(status: "running"), overlap: 60, now: now)
            .resumedIDs(list) == ["late"], "filters apply")
        #expect(JobChanges.start(lastEventID: token, list: list, filters: JobListFilters(), overlap: 0, now: now).resumedIDs(list) == ["late"])
    }

    @Test func aTokenOlderThanEveryJobOrFarAheadIsReset() throws {
        let list = Self.list([Self.job("a", "2026-11-20T10:00:00Z")])
        let now = try #require(Timestamp.parse("2026-11-20T12:00:00Z"))
        func start(_ instant: String) -> JobChanges.Start {
            let token = ChangeToken(microseconds: ChangeToken.microseconds(at: Timestamp.parse(instant)), job: CompactID("a")).description
            return JobChanges.start(lastEventID: token, list: list, filters: JobListFilters(), overlap: 60, now: now)
        }
        #expect(start("2026-11-20T09:00:00Z") == .reset([0]))
        #expect(start("2026-11-25T00:00:00Z") == .reset([0]))
        #expect(start("2026-11-20T10:00:00Z") == .resumed([0]), "the token's own job is within the overlap")
        #expect(start("2026-11-20T11:00:00Z") == .resumed([]))
        #expect(JobChanges.start(lastEventID: "garbage", list: list, filters: JobListFilters(), overlap: 60, now: now) == .reset([0]))
        let empty = Self.list([])
        #expect(JobChanges.start(lastEventID: "1_a", list: empty, filters: JobListFilters(), overlap: 60, now: now) == .resumed([]))
    }

    @Test func anEventSplitsItsDataIntoLinesAndAlwaysHasOne() {
        var out: [UInt8] = []
        EventStreamText.event("job", id: "1_a", data: Array("{\r\n \"a\": 1,\r \"b\": 2\n}".utf8), into: &out)
        #expect(String(decoding: out, as: UTF8.self) == "event: job\nid: 1_a\ndata: {\ndata:  \"a\": 1,\ndata:  \"b\": 2\ndata: }\n\n")
        out = []
        EventStreamText.event("reset", id: nil, data: [UInt8](), into: &out)
        #expect(String(decoding: out, as: UTF8.self) == "event: reset\ndata: \n\n")
        out = []
        EventStreamText.event("job", id: nil, data: Array("x\n".utf8), into: &out)
        #expect(String(decoding: out, as: UTF8.self) == "event: job\ndata: x\ndata: \n\n", "a trailing line end survives the reader's join")
        out = []
        EventStreamText.comment("a\nb", into: &out)
        #expect(String(decoding: out, as: UTF8.self) == ": ab\n\n")
    }

    @Test func watchIsAQueryOfItsOwnWithTheListFilters() {
        #expect(JobListQuery.parse("watch=1&status=running") == .success(.watch(JobListFilters(status: "running"))))
        #expect(JobListQuery.parse("watch=TRUE") == .success(.watch(JobListFilters())))
        #expect(JobListQuery.parse("watch=0") == .success(.filtered(JobListFilters())))
        #expect(JobListQuery.parse("watch=1&page=2") == .success(.passThrough))
        #expect((try? JobListQuery.parse("watch=2").get()) == nil)
        #expect((try? JobListQuery.parse("watch=1&watch=0").get()) == nil)
    }

    @Test(arguments: [("text/event-stream", true), ("Text/Event-Stream;q=1", true), ("application/json, text/event-stream", true),
                      ("*/*", false), ("text/event", false), ("", false), ("text/event-streams", false),
                      ("text/event-stream;q=0", false), ("text/event-stream; q=0.0, application/json", false),
                      ("application/json;q=0, text/event-stream;q=0.5", true)])
    func anAcceptValueNamesTheEventStream(_ value: String, _ names: Bool) {
        #expect(ProxyServer.namesEventStream(value) == names)
    }
}

extension JobChanges.Start {
    func resumedIDs(_ list: JobListDocument) -> [String]? {
        guard case .resumed(let indices) = self else { return nil }
        return indices.map { list.jobs[$0].id }
    }
}
