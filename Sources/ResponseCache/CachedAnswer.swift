import Synchronization
import CacheInvalidation
import EventHTTP
import JobCache

/// One cached upstream answer on a job route, ready to send: the entry both tiers hold. One
/// allocation per cached detail (or route answer): the fields, then the body's bytes in the same
/// object (`ManagedBuffer`'s tail), which go out by reference to the entry itself (`HeldBytes`),
/// with no wrapper per entry. A separate body array cost its own header and malloc's rounding, about
/// 48 bytes for every cached job.
public final class CachedAnswer: ManagedBuffer<CachedAnswer.Fields, UInt8>, HeldBytes {
    public enum Document {
        case list(JobListDocument)
        case detail(JobDetailDocument)
        /// A `cache.routes` answer: the upstream's bytes, never parsed.
        case raw([UInt8])
    }

    /// The document as the entry holds it (`heldDocument`): a detail's body, and a route
    /// answer's, are in the entry's tail; a list's document is with the bodies made from it
    /// (`DerivedBodies.list`), which every list has. A detail keeps only its `updated_at`
    /// (`Fields.updatedAt`): its job's id is its key's, and its status set its lifetime when
    /// it was stored. A `JobVersion` here made every cached job's entry 32 bytes wider, and a
    /// case holding the list 8.
    enum HeldDocument {
        case list(JobListDocument)
        case detail
        case raw
    }

    /// Everything but the body in the tail. Declared in the order that packs tightest (a
    /// struct lays its fields out as declared), in an object every cached job has. Never
    /// assigned whole (`ManagedBuffer.header` would allow it): the tail's bytes are constant.
    public struct Fields {
        /// A detail, or else a route answer (when its companion holds no list).
        let isDetail: Bool
        /// Whether this detail's `updated_at` counts as a version shown while memory holds it:
        /// decided when it is held (`ResponseCache.hold`), by whether the version was believable
        /// then, so that a wall clock stepping back later does not make a shown version stop
        /// counting.
        var versionCounts = false
        /// `freshness`, held as its parts (its optional as NaN for none) so that they pack.
        var isInvalidated: Bool
        /// How many bytes of the tail are the body (a detail's or a route answer's; the tail may
        /// be longer).
        let bodyCount: UInt32
        /// Seconds it stays fresh, in 32 bits (`HeldLifetime`). With the generation, 8 bytes
        /// less in every cached job's entry.
        let lifetime: HeldLifetime
        /// The `ResponseCache.knownGeneration` it was last checked at by the "never older"
        /// rule, in 32 bits: the cache starts its generations again before they pass them
        /// (`ResponseCache.restartGenerations`).
        var checkedGeneration: Int32 = -1
        /// A detail's `updated_at`, NaN for none (and for lists and route answers): a
        /// `Double?` is 9 bytes, and its tag would break the packing after it.
        let updatedAt: Double
        /// When the upstream last confirmed it (wall clock, so it holds across restarts). Not
        /// also when it first answered: nothing decides by that, and its 8 bytes were in every
        /// cached job's entry.
        var validatedAt: Double
        var newestSeen: Double
        /// The `ETag`'s value: a stored body's tag is never the gzip form's.
        let entityTagValue: UInt64
        fileprivate var companion: Companion
    }

    /// The upstream's header fields with their lines as the hit path sends them, or the bodies
    /// made from the stored document, which hold them too: one reference in every cached job's
    /// entry, where the fields, the lines and the bodies took 24 bytes. Most details never make
    /// bodies (`served(for:gzip:)`); a list has them from the start.
    fileprivate enum Companion {
        case headerLines(PreparedHeaderLines)
        case derived(DerivedBodies)
    }

    /// A lifetime in 32 bits: a whole number of seconds exactly (up to 68 years: every
    /// configured TTL), in the low 31 bits; anything else as a `Float` (its sign bit dropped: a
    /// lifetime is not negative), within a ten-millionth of itself and never above it, so that
    /// nothing is fresh for longer than its rule says (86399.999 held as 86400 showed `ttl=86400`).
    /// A `Float` alone moved a whole-second TTL past 194 days by up to 16 s (found by review).
    struct HeldLifetime {
        private let raw: UInt32
        private static let isFloat: UInt32 = 1 << 31

        init(_ seconds: Double) {
            if seconds >= 0, seconds < Double(Self.isFloat), seconds == seconds.rounded() {
                raw = UInt32(seconds)
            } else {
                // A lifetime too small for a Float stays more than 0, as its rule said.
                var held = Float(seconds.isNaN ? 0 : max(0, seconds))
                if held.isFinite, Double(held) > seconds { held = held.nextDown }
                raw = Self.isFloat | ((held == 0 && seconds > 0 ? .leastNonzeroMagnitude : held).bitPattern & ~Self.isFloat)
            }
        }

        var seconds: Double {
            raw & Self.isFloat == 0 ? Double(raw) : Double(Float(bitPattern: raw & ~Self.isFloat))
        }
    }

    /// A new entry, answered by the upstream at `storedAt` (or last confirmed at `freshness`'s
    /// time). (A `ManagedBuffer` has no initializer of its own to call.)
    public static func make(document: Document, headers: HTTPHeaders, storedAt: Double, lifetime: Double,
                            freshness: DetailFreshness? = nil) -> CachedAnswer {
        make(document: document, headerLines: prepareHeaderLines(headers), storedAt: storedAt, lifetime: lifetime, freshness: freshness)
    }

    private static func make(document: Document, headerLines: PreparedHeaderLines, storedAt: Double, lifetime: Double,
                             freshness: DetailFreshness?) -> CachedAnswer {
        let tail: [UInt8], tag: EntityTag
        var companion = Companion.headerLines(headerLines), isDetail = false, updatedAt = Double.nan
        switch document {
        case .list(let list):
            (tail, tag) = ([], EntityTag(of: list.body))
            companion = .derived(DerivedBodies(headerLines: headerLines, list: list))
        case .detail(let detail):
            (tail, tag, isDetail) = (detail.body, EntityTag(of: detail.body), true)
            // A parsed instant is finite (`Timestamp.parse`), so NaN stands for none.
            updatedAt = detail.job.updatedAt ?? .nan
        case .raw(let body): (tail, tag) = (body, EntityTag(of: body))
        }
        precondition(tail.count <= Int(UInt32.max), "a body over 4 GiB")
        let freshness = freshness ?? DetailFreshness(validatedAt: storedAt, invalidated: false)
        let made = unsafeDowncast(create(minimumCapacity: tail.count) { _ in
            Fields(isDetail: isDetail, isInvalidated: freshness.invalidated, bodyCount: UInt32(tail.count), lifetime: HeldLifetime(lifetime),
                   updatedAt: updatedAt, validatedAt: freshness.validatedAt, newestSeen: freshness.newestSeen ?? .nan,
                   entityTagValue: tag.value, companion: companion)
        }, to: CachedAnswer.self)
        made.withUnsafeMutablePointerToElements { elements in
            tail.withUnsafeBufferPointer { bytes in
                if let base = bytes.baseAddress { elements.initialize(from: base, count: bytes.count) }
            }
        }
        return made
    }

    /// The document. A detail's is parsed again from a copy of its body: for the rare paths
    /// that project it into a list, not for serving or storing (`heldBuffer`, `updatedAt`,
    /// `record(for:)`). Its bytes parsed when it was made; should they not now, they come
    /// back as they are.
    public var document: Document {
        switch heldDocument {
        case .list(let list): .list(list)
        case .raw: .raw(heldBytes)
        case .detail: JobDetailDocument(body: heldBytes).map(Document.detail) ?? .raw(heldBytes)
        }
    }

    /// Whether it is a job's detail.
    public var isDetail: Bool { header.isDetail }

    /// What it holds.
    var heldDocument: HeldDocument {
        if case .derived(let bodies) = header.companion, let list = bodies.list { return .list(list) }
        return header.isDetail ? .detail : .raw
    }

    public var headers: HTTPHeaders { preparedHeaderLines.headers }
    public var lifetime: Double { header.lifetime.seconds }

    var versionCounts: Bool {
        get { header.versionCounts }
        set { header.versionCounts = newValue }
    }

    /// Any generation the cache has (`ResponseCache.lastGeneration` at most).
    var checkedGeneration: Int {
        get { Int(header.checkedGeneration) }
        set { header.checkedGeneration = Int32(newValue) }
    }

    /// When the upstream last confirmed it, whether it is known to be superseded, and the
    /// newest `updated_at` seen for the job (`CacheInvalidation.DetailFreshness`).
    public var freshness: DetailFreshness {
        get {
            DetailFreshness(validatedAt: header.validatedAt, invalidated: header.isInvalidated,
                            newestSeen: header.newestSeen.isNaN ? nil : header.newestSeen)
        }
        set {
            header.validatedAt = newValue.validatedAt
            header.isInvalidated = newValue.invalidated
            header.newestSeen = newValue.newestSeen ?? .nan
        }
    }

    /// The `ETag` of the stored body (a filtered list's bodies have their own, `served(for:)`).
    public var entityTag: EntityTag { EntityTag(value: header.entityTagValue) }

    private var derived: DerivedBodies? {
        if case .derived(let bodies) = header.companion { return bodies }
        return nil
    }

    /// The same answer (times, freshness, headers) with another document: a list with entries
    /// added or patched.
    func replacingDocument(_ document: Document) -> CachedAnswer {
        Self.make(document: document, headerLines: preparedHeaderLines, storedAt: validatedAt, lifetime: lifetime, freshness: freshness)
    }

    /// The stored body, as the upstream sent it: a detail's or a route answer's in the entry's
    /// tail, which never changes or moves while the entry lives. Never past the tail, whatever
    /// the header says.
    public var heldBuffer: UnsafeRawBufferPointer {
        if case .list(let list) = heldDocument { return list.body.withUnsafeBytes { $0 } }
        let count = min(Int(header.bodyCount), capacity)
        return withUnsafeMutablePointerToElements { UnsafeRawBufferPointer(start: $0, count: count) }
    }

    /// The job's `updated_at` (details only).
    public var updatedAt: Double? { header.updatedAt.isNaN ? nil : header.updatedAt }

    public var validatedAt: Double { header.validatedAt }
    public var isSuperseded: Bool { header.isInvalidated }

    /// Bytes a `DerivedBodies` costs beyond the bodies it holds, for the memory budget.
    static let derivedOverhead = 64

    /// What is made from the stored body and kept with the entry. A list's whole body in a
    /// wrapper of its own, so that a slow reader keeps the list's bytes alive and not the entry
    /// with its filtered bodies and job index (up to three times as much); a list's bodies for
    /// filter sets; the gzip forms. A class made at the first need, so that the many details a
    /// cache holds carry one reference.
    fileprivate final class DerivedBodies {
        let headerLines: PreparedHeaderLines
        /// A list's document (nil for a detail's or a route answer's bodies).
        let list: JobListDocument?
        var whole: SharedBytes?
        /// The stored body's gzip form: nil until asked for, `.some(nil)` when not worth it.
        var gzipped: SharedBytes??
        var filtered: [JobListFilters: Representations] = [:]
        var filteredBytes = 0

        init(headerLines: PreparedHeaderLines, list: JobListDocument? = nil) {
            self.headerLines = headerLines
            self.list = list
        }
    }

    /// A filtered list's body and, once asked for, its gzip form.
    fileprivate struct Representations {
        let plain: ServedBody
        var gzipped: ServedBody??
    }

    /// A body as an answer sends it: its bytes, held for sending by reference, and its `ETag`;
    /// whether they are the gzip form, and whether the form depends on `Accept-Encoding` (then
    /// both forms say `Vary: Accept-Encoding`).
    public struct ServedBody {
        public let bytes: any HeldBytes
        public let entityTag: EntityTag
        public var varies = false
        public var isGzip: Bool { entityTag.isGzip }
    }

    /// Seconds of freshness left; negative once expired or superseded.
    public func remaining(now: Double) -> Double {
        isSuperseded ? -1 : FreshnessPolicy.remaining(storedAt: validatedAt, lifetime: lifetime, now: now)
    }

    /// Seconds since its TTL ended (0 while fresh).
    public func staleness(now: Double) -> Double {
        max(0, now - (validatedAt + lifetime))
    }

    /// Whether it may be served stale within a window of `seconds` (0 disables). Never when
    /// superseded: a client must not see a job go back in time, not even on an upstream error.
    public func isWithinStaleWindow(_ seconds: Double, now: Double) -> Bool {
        !isSuperseded && seconds > 0 && staleness(now: now) <= seconds
    }

    /// Cache-Status's `ttl`: whole seconds of freshness left, or minus those since it went stale.
    public func cacheStatusTTL(now: Double) -> Int {
        let remaining = remaining(now: now)
        return Self.wholeSeconds(remaining > 0 ? remaining.rounded(.down) : -staleness(now: now).rounded(.up))
    }

    /// The `Age` header: whole seconds since the upstream last confirmed it.
    public func ageSeconds(now: Double) -> Int {
        max(0, Self.wholeSeconds((now - validatedAt).rounded(.down)))
    }

    /// Times beyond this many seconds (about 3,000 years) are not plausible.
    static let plausibleInstant = 1e11

    /// `seconds` as an Int that cannot trap, however absurd the value.
    static func wholeSeconds(_ seconds: Double) -> Int {
        guard seconds.isFinite else { return 0 }
        return Int(max(-plausibleInstant, min(plausibleInstant, seconds)))
    }

    /// Bytes held, for the memory budget: the body plus a fixed allowance per job and entry
    /// (a list also keeps filtered bodies of up to twice its own size).
    public var cost: Int {
        // The upstream's header fields too: up to 64 KiB of them per answer, which a budget
        // of bodies alone did not count (found by review: 1,000 entries with 48 KB of headers
        // each in a 1 MiB tier, no eviction).
        let headerBytes = headers.fields.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 }
        switch heldDocument {
        // A list's derived bodies are made with it (`Companion`).
        case .list(let list): return 3 * list.body.count + list.jobs.count * 160 + 512 + Self.derivedOverhead + headerBytes
        case .detail, .raw: return Int(header.bodyCount) + 512 + headerBytes
        }
    }

    public func body(for filters: JobListFilters) -> [UInt8] {
        served(for: filters).body.bytes.heldBytes
    }

    /// The body for `filters`, in gzip form when `gzip` and worth it (see `Gzip`), with its
    /// `ETag`; and how many bytes this call added to what the entry holds (for the memory
    /// budget). Ready to send by reference: a detail's entry itself (its stored bytes, with no
    /// wrapper per entry), a list's whole body, or a list assembled from its fragments once per
    /// filter set and kept with the entry (a bounded number of them); the gzip form of each made
    /// once, at its first request. A repeated read copies, hashes and compresses nothing.
    public func served(for filters: JobListFilters, gzip: Bool = false) -> (body: ServedBody, added: Int) {
        var added = 0
        // Made only when something is to be kept: a detail served plain needs none (it is
        // sent from the entry itself), and most cached jobs are never asked for gzip.
        func derivedBodies() -> DerivedBodies {
            if let derived { return derived }
            let made = DerivedBodies(headerLines: preparedHeaderLines)
            header.companion = .derived(made)
            added += Self.derivedOverhead
            return made
        }
        var plain: ServedBody
        if case .list(let list) = heldDocument {
            let bodies = derivedBodies()
            if !filters.isEmpty { return servedFiltered(list, filters, gzip: gzip, bodies: bodies, added: added) }
            let whole = bodies.whole ?? SharedBytes(list.body)
            bodies.whole = whole
            plain = ServedBody(bytes: whole, entityTag: entityTag)
        } else {
            plain = ServedBody(bytes: self, entityTag: entityTag)
        }
        plain.varies = isCompressible(plain.bytes.count)
        guard gzip, plain.varies else { return (plain, added) }
        let bodies = derivedBodies()
        if bodies.gzipped == nil {
            let made = Gzip.compress(self).map(SharedBytes.init)
            bodies.gzipped = .some(made)
            added += made?.count ?? 0
        }
        guard case .some(let compressed?) = bodies.gzipped else { return (plain, added) }
        return (ServedBody(bytes: compressed, entityTag: entityTag.gzipped, varies: true), added)
    }

    private func servedFiltered(_ list: JobListDocument, _ filters: JobListFilters, gzip: Bool, bodies: DerivedBodies,
                                added: Int) -> (body: ServedBody, added: Int) {
        var representations: Representations
        let wasKept = bodies.filtered[filters] != nil
        if let kept = bodies.filtered[filters] {
            representations = kept
        } else {
            let bytes = list.rendered(filters)
            // Only what is filtered out changes a filtered body, so its tag is its own bytes'.
            var plain = ServedBody(bytes: SharedBytes(bytes), entityTag: bytes == list.body ? entityTag : EntityTag(of: bytes))
            plain.varies = isCompressible(bytes.count)
            representations = Representations(plain: plain)
            // Kept within twice the list's own bytes, which `cost` counts.
            if bodies.filteredBytes + bytes.count > 2 * list.body.count {
                bodies.filtered.removeAll()
                bodies.filteredBytes = 0
            }
            guard bytes.count <= 2 * list.body.count else { return (plain, added) }
            bodies.filtered[filters] = representations
            bodies.filteredBytes += bytes.count
        }
        // A filter set's gzip form is made at its second request while its body is kept, not at
        // its first: a client cycling through more filter sets than are kept had a large list
        // compressed on the loop at every request (~150 ms for 1.9 MB; found by review).
        guard gzip, representations.plain.varies, wasKept else { return (representations.plain, added) }
        if representations.gzipped == nil {
            let made = Gzip.compress(representations.plain.bytes).map {
                ServedBody(bytes: SharedBytes($0), entityTag: representations.plain.entityTag.gzipped, varies: true)
            }
            representations.gzipped = .some(made)
            // Within the filtered bodies' allowance (which `cost` counts), not added to it: a
            // client cycling filter sets made the counted cost grow without bound (review).
            if bodies.filtered[filters] != nil {
                bodies.filtered[filters] = representations
                bodies.filteredBytes += made?.bytes.count ?? 0
            }
        }
        guard case .some(let compressed?) = representations.gzipped else { return (representations.plain, added) }
        return (compressed, added)
    }

    /// Whether a body of `count` bytes has a gzip form to offer: big enough to gain from it,
    /// and not already encoded by the upstream.
    private func isCompressible(_ count: Int) -> Bool {
        count >= Gzip.minimumBytes && !preparedHeaderLines.hasContentEncoding
    }

    /// The upstream's header fields kept with this entry, and the header lines every answer
    /// from it sends (`Content-Type` and the upstream's end-to-end headers), formatted once. A
    /// class, so that the entries whose upstream sent the same fields share one copy
    /// (`PreparedHeaderLines.shared`).
    public final class PreparedHeaderLines: Sendable {
        public let headers: HTTPHeaders
        public let lines: [UInt8]
        public let hasDate: Bool
        /// Whether the upstream's fields say `Content-Encoding`: then the body is not plain, and
        /// the proxy does not offer a gzip form of it.
        public let hasContentEncoding: Bool

        init(headers: HTTPHeaders, lines: [UInt8], hasDate: Bool) {
            self.headers = headers
            self.lines = lines
            self.hasDate = hasDate
            let name = Array("content-encoding:".utf8)
            hasContentEncoding = lines.split(separator: UInt8(ascii: "\n")).contains { line in
                line.count >= name.count && zip(line, name).allSatisfy { byte, expected in
                    ((UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) ? byte | 0x20 : byte) == expected
                }
            }
        }

        /// One copy per distinct set of fields among the entries alive: 100k cached jobs from one
        /// upstream hold one. The table holds the copies weakly and by a hash of their lines, so
        /// a set goes with the last entry that holds it (evicted, purged), bytes and all: found
        /// by review, a table that held them kept a purged entry's headers for the process's
        /// life. Bounded: dead references are swept when it is full, and it is emptied if that
        /// is not enough.
        private static let known = Mutex<[Int: [WeakLines]]>([:])
        private static let maxKnown = 1024

        private final class WeakLines: @unchecked Sendable {
            weak var lines: PreparedHeaderLines?
            init(_ lines: PreparedHeaderLines) { self.lines = lines }
        }

        /// Equal fields make equal lines, so the lines' hash finds them; the fields decide, by
        /// their bytes. Not by `String`'s equality, which takes canonically equivalent text as
        /// equal: one entry's `café` (e + U+0301) would be kept as another's precomposed `é`
        /// (found by review of the table this replaces: a cache passes bytes through as they came).
        static func shared(headers: HTTPHeaders, lines: [UInt8], hasDate: Bool) -> PreparedHeaderLines {
            let hash = lines.hashValue
            return known.withLock { known in
                var bucket = (known[hash] ?? []).filter { $0.lines != nil }
                if let existing = bucket.lazy.compactMap(\.lines).first(where: { $0.lines == lines && sameBytes($0.headers, headers) }) {
                    return existing
                }
                if known[hash] == nil, known.count >= maxKnown {
                    known = known.compactMapValues { entries in
                        let alive = entries.filter { $0.lines != nil }
                        return alive.isEmpty ? nil : alive
                    }
                    if known.count >= maxKnown { known.removeAll() }
                }
                let made = PreparedHeaderLines(headers: headers, lines: Array(lines), hasDate: hasDate)
                bucket.append(WeakLines(made))
                known[hash] = bucket
                return made
            }
        }

        private static func sameBytes(_ a: HTTPHeaders, _ b: HTTPHeaders) -> Bool {
            a.fields.count == b.fields.count && zip(a.fields, b.fields).allSatisfy { a, b in
                a.name.utf8.elementsEqual(b.name.utf8) && a.value.utf8.elementsEqual(b.value.utf8)
            }
        }
    }

    /// Header lines for the hit path, made with the entry.
    public var preparedHeaderLines: PreparedHeaderLines {
        switch header.companion {
        case .headerLines(let lines): lines
        case .derived(let bodies): bodies.headerLines
        }
    }

    /// The fields `headers` as an entry keeps them, with the header set a full answer sends,
    /// less what is made per answer.
    static func prepareHeaderLines(_ headers: HTTPHeaders) -> PreparedHeaderLines {
        var sent = headers
        if sent["Content-Type"] == nil { sent.add("Content-Type", "application/json") }
        let wire = sent.wireLines(omitting: perAnswerHeaderSet)
        return PreparedHeaderLines.shared(headers: headers, lines: wire.lines, hasDate: wire.hasDate)
    }

    /// Headers made for each answer (by the full path and the hit path), never kept with a document.
    /// `ETag` too: the proxy's own, of the bytes it serves, replaces the upstream's.
    public static let perAnswerHeaderNames = ["Age", "Cache-Status", "X-Request-Id", "ETag"]
    private static let perAnswerHeaderSet = Set(perAnswerHeaderNames.map { $0.lowercased() })

    /// The upstream's headers as kept with a cached document: without cookies and without
    /// what is made per answer.
    public static func storableHeaders(_ headers: HTTPHeaders, alsoRemoving extra: [String] = []) -> HTTPHeaders {
        var headers = headers
        for name in ["Set-Cookie"] + perAnswerHeaderNames + extra { headers.remove(name) }
        return headers
    }

    /// Rebuilds an answer read from the disk tier; nil if the stored body no longer parses or
    /// its times are not plausible (the file is outside the process: anything may be in it).
    /// `lifetime`, when given, is held instead of the stored one.
    static func restored(from record: DiskRecord, lifetime: Double? = nil) -> CachedAnswer? {
        let instants = [record.storedAt, record.validatedAt] + [record.updatedAt, record.newestSeen].compactMap { $0 }
        guard instants.allSatisfy({ $0.isFinite && abs($0) < Self.plausibleInstant }),
              record.lifetime.isFinite, (0...Self.plausibleInstant).contains(record.lifetime) else { return nil }
        let document: Document
        switch record.kind {
        case .list:
            guard let list = JobListDocument(body: record.body) else { return nil }
            document = .list(list)
        case .detail:
            guard let detail = JobDetailDocument(body: record.body) else { return nil }
            document = .detail(detail)
        case .route:
            document = .raw(record.body)
        }
        return make(document: document, headers: Self.headers(fromLines: record.headers), storedAt: record.storedAt,
                    lifetime: lifetime ?? record.lifetime, freshness: record.freshness)
    }

    /// Headers from the `Name:value` lines a record keeps (the disk tier's and the shared tier's).
    /// A line that could not have come from a parsed answer (a name that is not a token, a CR,
    /// LF or NUL anywhere: what Redis holds is anyone's to write) is dropped, so it never reaches
    /// the wire, where it could split an answer.
    static func headers(fromLines lines: [String]) -> HTTPHeaders {
        var headers = HTTPHeaders()
        for line in lines {
            guard let colon = line.firstIndex(of: ":"), colon != line.startIndex,
                  line[..<colon].utf8.allSatisfy(Self.isTokenByte),
                  !line.utf8.contains(where: { $0 == 13 || $0 == 10 || $0 == 0 }) else { continue }
            headers.add(String(line[..<colon]), String(line[line.index(after: colon)...]))
        }
        return headers
    }

    /// RFC 9110's `tchar`.
    private static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        default: "!#$%&'*+-.^_`|~".utf8.contains(byte)
        }
    }

    /// The entry as the disk tier (and the shared tier) keeps it.
    public func record(for key: CacheKey) -> DiskRecord {
        let body: [UInt8]
        let kind: DiskRecord.Kind
        switch heldDocument {
        case .list(let list): body = list.body; kind = .list
        case .detail: body = heldBytes; kind = .detail
        case .raw: body = heldBytes; kind = .route
        }
        // Its stored_at is when it was last confirmed: the entry keeps no earlier time.
        return DiskRecord(key: key.diskKey, kind: kind, workflowID: key.workflow, jobID: key.job, body: body,
                          headers: headers.fields.map { "\($0.name):\($0.value)" }, storedAt: validatedAt, lifetime: lifetime,
                          updatedAt: updatedAt, validatedAt: freshness.validatedAt, invalidated: freshness.invalidated,
                          newestSeen: freshness.newestSeen)
    }
}
