import CacheInvalidation
import EventHTTP
import Testing
@testable import JobCache
@testable import ResponseCache

/// What a cached entry hands to the writer to send by reference.
@Suite struct CachedAnswerTests {
    static let detailBody = Array(#"{"id":"j1","status":"running","updated_at":"2026-12-03T10:00:00Z","extra":[1,2]}"#.utf8)
    static let listBody = Array(#"{"jobs":[{"id":"j1","status":"running"},{"id":"j2","status":"completed"}],"total":2}"#.utf8)

    static func answer(_ document: CachedAnswer.Document) -> CachedAnswer {
        CachedAnswer.make(document: document, headers: HTTPHeaders(), storedAt: 1_000, lifetime: 10)
    }

    /// A detail is sent by reference to the entry itself: no wrapper object per cached job.
    @Test func aDetailIsSentFromTheEntryItself() throws {
        let answer = Self.answer(.detail(try #require(JobDetailDocument(body: Self.detailBody))))
        // Nothing is made for it either (100k cached jobs would each carry it).
        #expect(answer.served(for: JobListFilters(), gzip: true).added == 0)
        #expect(answer.served(for: JobListFilters()).body.bytes === answer)
        #expect(answer.served(for: JobListFilters()).body.bytes.heldBytes == Self.detailBody)
    }

    /// Where an entry's body starts: the object's header (16 bytes), then its fields (56).
    static let tailOffset = 72

    /// A cached detail is one allocation, its fields (56 bytes after the object's header) and
    /// then its body: every cached job holds one, and a second allocation for the body, or a
    /// field added or declared out of packing order, shows here.
    @Test func aDetailEntryIsOneAllocationOfFieldsThenBody() throws {
        let answer = Self.answer(.detail(try #require(JobDetailDocument(body: Self.detailBody))))
        let object = Unmanaged.passUnretained(answer).toOpaque()
        let usable = Self.mallocUsableSize(object)
        #expect(usable >= Self.tailOffset + Self.detailBody.count && usable < Self.tailOffset + Self.detailBody.count + 16)
        let body = answer.heldBuffer
        #expect(body.baseAddress == UnsafeRawPointer(object) + Self.tailOffset && body.count == Self.detailBody.count)
        #expect(Array(body) == Self.detailBody)
        // The document a rare path asks for is the same bytes and job.
        guard case .detail(let document) = answer.document else { Issue.record("not a detail"); return }
        #expect(document.body == Self.detailBody && document.job.id == "j1" && document.job.status == "running")
        #expect(document.job.updatedAt == answer.updatedAt && answer.updatedAt == Timestamp.parse("2026-12-03T10:00:00Z"))
    }

    /// Besides its entry, a cached job costs its slot in the memory tier: 56 bytes (its key,
    /// 32 bits of cost, the entry, the recency links). A wider field shows here.
    @Test func aCachedEntrysSlotInTheMemoryTierIs56Bytes() {
        #expect(MemoryLayout<MemoryTier<CacheKey, CachedAnswer>.Slot>.stride == 56)
    }

    /// An entry holds its lifetime in 32 bits: every whole number of seconds up to 68 years
    /// reads back exactly (a Float moved 31,536,001 to 31,536,000, found by review), anything
    /// else within a ten-millionth of itself and never above it, and more than 0 stays more than 0.
    @Test(arguments: [0, 1, 10, 600, 86_400, 16_777_217, 31_536_001, 100_000_001, 200_000_003, 315_359_999, 2_147_483_647,
                      0.5, 2.5, 0.1, 1e-46, 1e7 + 0.3, 86_399.999, 300_000_016.5, 4e9, 1e11])
    func aLifetimeReadsBackAsGiven(_ lifetime: Double) {
        let answer = CachedAnswer.make(document: .raw([1]), headers: HTTPHeaders(), storedAt: 1_000, lifetime: lifetime)
        if lifetime == lifetime.rounded(), lifetime < 2_147_483_648 {
            #expect(answer.lifetime == lifetime)
            #expect(answer.cacheStatusTTL(now: 1_000) == Int(lifetime))
            #expect(answer.remaining(now: 1_000 + lifetime - 1) > 0 && answer.remaining(now: 1_000 + lifetime + 1) < 0)
        }
        #expect(answer.lifetime <= lifetime || lifetime < 1e-30, "fresh for longer than its rule says")
        #expect(answer.cacheStatusTTL(now: 1_000) <= Int(lifetime))
        if lifetime < 1e-30 {
            #expect((answer.lifetime > 0) == (lifetime > 0), "a lifetime of more than 0 stays more than 0")
        } else {
            #expect(abs(answer.lifetime - lifetime) <= lifetime * 1e-7)
        }
        #expect(answer.record(for: .route(CachedRouteResource(path: "/v0/x", query: nil, template: "/v0/x", lifetime: lifetime))).lifetime
                == answer.lifetime)
    }

    /// A `cache.routes` answer's bytes are in the entry's tail too: every body an entry sends by
    /// reference to itself is part of its own allocation.
    @Test func aRouteAnswerIsOneAllocationToo() {
        let body = Array("[1,2,3] not even JSON".utf8)
        let answer = Self.answer(.raw(body))
        let object = Unmanaged.passUnretained(answer).toOpaque()
        #expect(answer.heldBuffer.baseAddress == UnsafeRawPointer(object) + Self.tailOffset && Array(answer.heldBuffer) == body)
        guard case .raw(let document) = answer.document else { Issue.record("not raw"); return }
        #expect(document == body && answer.cost == body.count + 512)
    }

    /// Whatever an entry's header says (one assigned whole from a larger entry, which nothing
    /// should do), its bytes never reach past its own allocation.
    @Test func anEntrysBytesNeverReachPastItsAllocation() throws {
        let small = Self.answer(.detail(try #require(JobDetailDocument(body: Array(#"{"id":"j"}"#.utf8)))))
        let large = Self.answer(.detail(try #require(JobDetailDocument(body: Array((#"{"id":"j","pad":""# + String(repeating: "x", count: 4000) + #""}"#).utf8)))))
        small.header = large.header
        #expect(small.heldBuffer.count <= small.capacity)
        #expect(Self.mallocUsableSize(Unmanaged.passUnretained(small).toOpaque()) >= Self.tailOffset + small.heldBuffer.count)
    }

    /// glibc's, declared in <malloc.h>, which no imported module exports.
    @_silgen_name("malloc_usable_size")
    private static func mallocUsableSize(_ pointer: UnsafeMutableRawPointer) -> Int

    /// Freshness survives being held as parts: no `newest_seen`, one, and supersession.
    @Test func freshnessReadsBackAsWritten() throws {
        let answer = Self.answer(.detail(try #require(JobDetailDocument(body: Self.detailBody))))
        #expect(answer.freshness == DetailFreshness(validatedAt: 1_000, invalidated: false))
        answer.freshness.newestSeen = 1_234.5
        answer.freshness.invalidated = true
        answer.freshness.validatedAt = 1_100
        #expect(answer.freshness == DetailFreshness(validatedAt: 1_100, invalidated: true, newestSeen: 1_234.5))
        #expect(answer.isSuperseded && answer.validatedAt == 1_100)
        answer.freshness.newestSeen = nil
        #expect(answer.freshness.newestSeen == nil)
    }

    /// A list's whole body goes out from a wrapper of its own, made once: a slow reader then
    /// keeps the list's bytes alive, not the entry with its filtered bodies and job index.
    @Test func aListIsSentFromAWrapperThatHoldsOnlyItsBytes() throws {
        let answer = Self.answer(.list(try #require(JobListDocument(body: Self.listBody))))
        let whole = answer.served(for: JobListFilters()).body.bytes
        #expect(whole !== answer)
        #expect(whole === answer.served(for: JobListFilters()).body.bytes)
        #expect(whole.heldBytes == Self.listBody)
        let filters = JobListFilters(status: "completed")
        let filtered = answer.served(for: filters).body.bytes
        #expect(filtered !== answer && filtered === answer.served(for: filters).body.bytes)
        #expect(String(decoding: filtered.heldBytes, as: UTF8.self).contains(#""id":"j2""#))
        #expect(!String(decoding: filtered.heldBytes, as: UTF8.self).contains(#""id":"j1""#))
    }

    /// A list's derived bodies are made with it: its cost counts them from the start, and its
    /// first answer adds nothing more (found by review: made with the list, they were no longer
    /// counted at all). A detail's are counted when its first gzip form makes them.
    @Test func aListsDerivedBodiesAreCountedOnce() throws {
        let list = try #require(JobListDocument(body: Self.listBody))
        let answer = Self.answer(.list(list))
        #expect(answer.cost == 3 * Self.listBody.count + list.jobs.count * 160 + 512 + CachedAnswer.derivedOverhead)
        #expect(answer.served(for: JobListFilters()).added == 0)
        let big = Array((#"{"id":"j","pad":""# + String(repeating: "x", count: 4000) + #""}"#).utf8)
        let detail = Self.answer(.detail(try #require(JobDetailDocument(body: big))))
        #expect(detail.cost == big.count + 512)
        #expect(detail.served(for: JobListFilters(), gzip: true).added > CachedAnswer.derivedOverhead)
    }

    /// The gzip form of a body is made once per stored answer (and per kept filtered body), at
    /// its first request, and counted once; it decodes to the plain bytes, and has a tag of its own.
    @Test func theGzipFormIsMadeOnceAndDecodesToThePlainBytes() throws {
        let padding = String(repeating: "x", count: 2_000)
        let detailBody = Array(#"{"id":"j1","status":"running","note":"\#(padding)"}"#.utf8)
        let listBody = Array(#"{"jobs":[{"id":"j1","status":"running","note":"\#(padding)"},{"id":"j2","status":"completed","note":"\#(padding)"}]}"#.utf8)
        for (answer, filters) in [(Self.answer(.detail(try #require(JobDetailDocument(body: detailBody)))), JobListFilters()),
                                  (Self.answer(.list(try #require(JobListDocument(body: listBody)))), JobListFilters()),
                                  (Self.answer(.list(try #require(JobListDocument(body: listBody)))), JobListFilters(status: "completed"))] {
            let plain = answer.served(for: filters).body
            let first = answer.served(for: filters, gzip: true)
            let again = answer.served(for: filters, gzip: true)
            #expect(first.body.isGzip && first.body.varies && plain.varies && !plain.isGzip)
            // A filtered body's gzip form is counted within the list's allowance for filtered bodies.
            #expect(filters.isEmpty ? first.added >= first.body.bytes.count : first.added == 0, "counted once")
            #expect(again.added == 0)
            #expect(again.body.bytes === first.body.bytes)
            #expect(Gzip.decompress(first.body.bytes.heldBytes, limit: 1 << 20) == plain.bytes.heldBytes)
            #expect(first.body.entityTag == plain.entityTag.gzipped && first.body.entityTag != plain.entityTag)
        }
    }

    /// A filter set's gzip form is made at its second request while its body is kept: a client
    /// cycling through more filter sets than the entry keeps never has a list compressed on the
    /// loop per request. A kept filtered body holds its own size, not the list's.
    @Test func aFilteredBodyIsCompressedOnlyOnceKeptAndHoldsItsOwnSize() throws {
        let padding = String(repeating: "x", count: 2_000)
        let jobs = (0..<6).map { #"{"id":"j\#($0)","status":"s\#($0)","note":"\#(padding)"}"# }
        let answer = Self.answer(.list(try #require(JobListDocument(body: Array(#"{"jobs":[\#(jobs.joined(separator: ","))]}"#.utf8)))))
        let one = JobListFilters(status: "s1")
        #expect(!answer.served(for: one, gzip: true).body.isGzip, "the first request for a filter set is plain")
        #expect(answer.served(for: one, gzip: true).body.isGzip, "the second is compressed")
        let body = answer.served(for: one).body.bytes.heldBytes
        #expect(body.capacity < body.count + 64, "\(body.capacity) for \(body.count) bytes")
        // Three filter sets of five jobs in six each, in turn: more than the allowance (twice the
        // list) keeps, so each is gone by its next visit, and none is ever compressed.
        let wide = (0..<6).map { index in
            #"{"id":"w\#(index)","status":"\#(index == 0 ? "completed" : "running")","created_by":"\#(index == 5 ? "v" : "u")","created_at":"2026-11-\#(index == 1 ? 19 : 20)T10:00:00Z","note":"\#(padding)"}"#
        }
        let cycled = Self.answer(.list(try #require(JobListDocument(body: Array(#"{"jobs":[\#(wide.joined(separator: ","))]}"#.utf8)))))
        let sets = [JobListFilters(createdBy: "u"), JobListFilters(status: "running"),
                    JobListFilters(createdOn: CalendarDate(year: 2026, month: 11, day: 20))]
        var compressed = 0
        for _ in 0..<4 {
            for filters in sets where cycled.served(for: filters, gzip: true).body.isGzip { compressed += 1 }
        }
        #expect(compressed == 0)
    }

    /// Under 1 KiB a body stays plain, whatever the client accepts, and does not vary.
    @Test func aSmallBodyStaysPlain() throws {
        let answer = Self.answer(.detail(try #require(JobDetailDocument(body: Self.detailBody))))
        let served = answer.served(for: JobListFilters(), gzip: true).body
        #expect(!served.isGzip && !served.varies && served.bytes === answer)
    }

    /// The upstream's own ETag is not sent beside the proxy's (found by review: two ETag fields).
    @Test func theUpstreamsETagIsNotKept() {
        var headers = HTTPHeaders()
        headers.add("ETag", "\"upstream\"")
        headers.add("X-Other", "kept")
        let lines = String(decoding: CachedAnswer.prepareHeaderLines(CachedAnswer.storableHeaders(headers)).lines, as: UTF8.self)
        #expect(!lines.lowercased().contains("etag") && lines.contains("X-Other: kept"))
    }

    /// Entries with the same upstream fields share one copy of them and of their lines. Fields
    /// whose bytes differ do not, even where `String` calls them equal (canonically equivalent
    /// text) or where they make the same lines (a field no answer sends, a `Content-Type` the
    /// proxy would add): an entry's fields go to disk and to the other instances as they came.
    @Test func entriesShareHeaderLinesOnlyWhenTheirFieldsHaveTheSameBytes() {
        func answer(_ fields: [(name: String, value: String)]) -> CachedAnswer {
            CachedAnswer.make(document: .raw([1]), headers: HTTPHeaders(fields), storedAt: 1_000, lifetime: 10)
        }
        let precomposed = answer([("X-Trace", "t1"), ("Connection", "caf\u{E9}")])
        let same = answer([("X-Trace", "t1"), ("Connection", "caf\u{E9}")])
        let decomposed = answer([("X-Trace", "t1"), ("Connection", "cafe\u{301}")])
        #expect(precomposed.preparedHeaderLines === same.preparedHeaderLines)
        #expect(precomposed.preparedHeaderLines.lines == decomposed.preparedHeaderLines.lines)
        #expect(precomposed.preparedHeaderLines !== decomposed.preparedHeaderLines)
        #expect(decomposed.headers.fields.last.map { Array($0.value.utf8) } == Array("cafe\u{301}".utf8))
        let implicit = answer([]), explicit = answer([("Content-Type", "application/json")])
        #expect(implicit.preparedHeaderLines.lines == explicit.preparedHeaderLines.lines)
        #expect(implicit.headers.fields.isEmpty && explicit.headers.fields.count == 1)
    }

    /// A body the upstream sent encoded is not encoded again.
    @Test func aBodyTheUpstreamEncodedIsNotEncodedAgain() {
        var headers = HTTPHeaders()
        headers.add("Content-Encoding", "br")
        let answer = CachedAnswer.make(document: .raw(Array(repeating: UInt8(ascii: "a"), count: 4_000)), headers: headers, storedAt: 1_000, lifetime: 10)
        let served = answer.served(for: JobListFilters(), gzip: true).body
        #expect(!served.isGzip && !served.varies)
    }
}

@Suite struct AcceptEncodingTests {
    @Test(arguments: ["gzip", "GZIP", "x-gzip", "deflate, gzip", "gzip;q=0.5", "gzip; q=1.000", "*", "br;q=1, *;q=0.1",
                      " gzip , br", "gzip;level=9", "identity;q=0, gzip"])
    func acceptsGzip(_ value: String) {
        var encodings = AcceptEncoding()
        encodings.read(value)
        #expect(encodings.acceptsGzip, "\(value)")
    }

    @Test(arguments: ["", "identity", "br", "gzip;q=0", "gzip;q=0.000", "*;q=0", "gzip;q=0, *", "gzip;q=2", "gzip;q=0.5555",
                      "gzip;q=", "gzipx", "g zip", "*, gzip;q=0", "x\rgzip"])
    func doesNotAcceptGzip(_ value: String) {
        var encodings = AcceptEncoding()
        encodings.read(value)
        #expect(!encodings.acceptsGzip, "\(value)")
    }

    @Test func fieldsAreReadTogether() {
        var encodings = AcceptEncoding()
        encodings.read("br")
        encodings.read("gzip")
        #expect(encodings.acceptsGzip)
    }

    @Test func gzipRoundTripsAndRefusesATruncatedStream() throws {
        let plain = Array(String(repeating: "pixxel ", count: 500).utf8)
        let compressed = try #require(Gzip.compress(plain))
        #expect(compressed.count < plain.count && compressed.prefix(2) == [0x1F, 0x8B])
        #expect(Gzip.decompress(compressed, limit: plain.count) == plain)
        #expect(Gzip.decompress(Array(compressed.dropLast(4)), limit: plain.count) == nil)
        #expect(Gzip.decompress(compressed, limit: plain.count - 1) == nil)
    }
}
