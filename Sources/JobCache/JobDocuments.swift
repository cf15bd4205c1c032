import Foundation

/// What the cache needs to know of one job, read once when an upstream answer is stored.
public struct JobSummary: Sendable, Equatable {
    /// The id, 16 bytes for a UUID (`CompactID`): a list of 50 jobs held 50 strings of 80 bytes.
    public let compactID: CompactID
    public let status: String?
    public let createdBy: String?
    /// `created_at` as an instant, when present and parseable.
    public let createdAt: Double?
    /// `updated_at` as an instant.
    public let updatedAt: Double?

    init?(_ object: [String: Any]) {
        guard let id = object["id"] as? String else { return nil }
        compactID = CompactID(id)
        status = object["status"] as? String
        createdBy = object["created_by"] as? String
        createdAt = (object["created_at"] as? String).flatMap(Timestamp.parse)
        updatedAt = (object["updated_at"] as? String).flatMap(Timestamp.parse)
    }

    /// The id's text (made anew for a UUID).
    public var id: String { compactID.text }

    /// Whether this job passes `filters` (status case-insensitive, `created_on` as a UTC day).
    public func matches(_ filters: JobListFilters) -> Bool {
        // Ids compare by bytes: canonically equivalent ids are different jobs upstream.
        if let id = filters.id, compactID != CompactID(id) { return false }
        if let status = filters.status, self.status?.lowercased() != status { return false }
        if let createdBy = filters.createdBy, !JobListFilters.sameBytes(self.createdBy, createdBy) { return false }
        if let day = filters.createdOn {
            // A date the calendar cannot hold matches no day.
            guard let createdAt, let date = Timestamp.utcDate(of: createdAt), date == day else { return false }
        }
        return true
    }
}

/// A job list answer split for local filtering without re-encoding: the bytes before the first
/// job, each job's bytes as sent, and the bytes after the last job. The unfiltered answer is
/// the original body, byte for byte.
public struct JobListDocument: Sendable {
    public let body: [UInt8]
    let prefix: Range<Int>
    let suffix: Range<Int>
    let fragments: [Range<Int>]
    public let jobs: [JobSummary]

    /// Splits an upstream list answer; nil when it is not `{..., "jobs": [ {...}, ... ], ...}`
    /// with an `id` on every job.
    public init?(body: [UInt8]) {
        guard let layout = JSONLayout.jobsArray(in: body) else { return nil }
        var jobs: [JobSummary] = []
        jobs.reserveCapacity(layout.elements.count)
        for range in layout.elements {
            guard let object = (try? JSONSerialization.jsonObject(with: Data(body[range]))) as? [String: Any],
                  let summary = JobSummary(object) else { return nil }
            jobs.append(summary)
        }
        self.body = body
        prefix = 0..<layout.arrayContent.lowerBound
        suffix = layout.arrayContent.upperBound..<body.count
        fragments = layout.elements
        self.jobs = jobs
    }

    /// Index of the job with `id`, if listed.
    /// The first job whose id has exactly these bytes.
    public func index(of id: String) -> Int? { index(of: CompactID(id)) }

    public func index(of id: CompactID) -> Int? { jobs.firstIndex { $0.compactID == id } }

    /// The job at `index` as a JSON object.
    public func object(at index: Int) -> [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(body[fragments[index]]))) as? [String: Any]
    }

    /// The field names of the job at `index`, as the list sends them.
    public func fieldNames(at index: Int) -> [String]? {
        ((try? JSONSerialization.jsonObject(with: Data(body[fragments[index]]))) as? [String: Any]).map { Array($0.keys) }
    }

    /// A copy with the job at `index` replaced by `job` projected to `fields` (the list's own
    /// field set). Only that job's bytes are re-encoded; every other byte stays as the upstream
    /// sent it.
    public func replacing(at index: Int, with job: [String: Any], fields: [String]) -> JobListDocument? {
        replacing([index: job], fields: { _ in fields })
    }

    /// A copy with the jobs at each index replaced (each projected to `fields(index)`), in one
    /// rebuild: the list is parsed once however many jobs are replaced.
    public func replacing(_ jobs: [Int: [String: Any]], fields: (Int) -> [String]?) -> JobListDocument? {
        var pieces = fragments.map { Array(body[$0]) }
        for (index, job) in jobs {
            guard pieces.indices.contains(index), let names = fields(index), let encoded = Self.projected(job, to: names) else { return nil }
            pieces[index] = encoded
        }
        return rebuilt(pieces)
    }

    /// A copy with `jobs` (each projected to `fields`) inserted where new jobs belong, in one
    /// rebuild: the list is parsed once however many jobs are added.
    public func inserting(_ jobs: [[String: Any]], fields: [String]) -> JobListDocument? {
        var encoded: [[UInt8]] = []
        for job in jobs {
            guard let bytes = Self.projected(job, to: fields) else { return nil }
            encoded.append(bytes)
        }
        var pieces = fragments.map { Array(body[$0]) }
        let index = insertionIndexForNewJob
        // Newest-first lists take the newest first; oldest-first lists (and lists too short to
        // tell, which append, as one write-through at a time does) in order.
        let newestFirst = index == 0 && !self.jobs.isEmpty
        pieces.insert(contentsOf: newestFirst ? encoded.reversed() : encoded, at: index)
        return rebuilt(pieces)
    }

    /// `job` with exactly `fields` (missing ones null), encoded as a list entry.
    private static func projected(_ job: [String: Any], to fields: [String]) -> [UInt8]? {
        var projected: [String: Any] = [:]
        for field in fields { projected[field] = job[field] ?? NSNull() }
        return (try? JSONSerialization.data(withJSONObject: projected, options: [.sortedKeys, .withoutEscapingSlashes])).map(Array.init)
    }

    private func rebuilt(_ pieces: [[UInt8]]) -> JobListDocument? {
        var out = Array(body[prefix])
        for (offset, piece) in pieces.enumerated() {
            if offset > 0 { out.append(UInt8(ascii: ",")) }
            out += piece
        }
        out += body[suffix]
        return JobListDocument(body: out)
    }

    /// Where a new job belongs: first if the list runs newest first, else last.
    public var insertionIndexForNewJob: Int {
        guard jobs.count >= 2, let first = jobs.first?.createdAt, let last = jobs.last?.createdAt else { return jobs.count }
        return first > last ? 0 : jobs.count
    }

    /// The answer for `filters`: the original body when nothing is filtered out.
    public func rendered(_ filters: JobListFilters) -> [UInt8] {
        if filters.isEmpty { return body }
        let matching = jobs.indices.filter { jobs[$0].matches(filters) }
        // Sized exactly: a body kept with the entry is counted by its bytes, and one job of a
        // large list held the whole list's capacity (found by review).
        var out: [UInt8] = []
        out.reserveCapacity(prefix.count + suffix.count + max(0, matching.count - 1) + matching.reduce(0) { $0 + fragments[$1].count })
        out += body[prefix]
        for (position, index) in matching.enumerated() {
            if position > 0 { out.append(UInt8(ascii: ",")) }
            out += body[fragments[index]]
        }
        out += body[suffix]
        return out
    }
}

/// What the cache needs of a job detail as it stores it: its id, its status (for its lifetime)
/// and its version. Not a `JobSummary`: the fields lists are filtered by are read from the body
/// when a detail goes into a list. A cached detail keeps only the version
/// (`CachedAnswer.Fields.updatedAt`).
public struct JobVersion: Sendable, Equatable {
    /// The id, held as 16 bytes when it is a UUID (`CompactID`): the 80 bytes of a `String` for
    /// every cached job were the largest cost of an entry after its body.
    public let compactID: CompactID
    public let status: String?
    /// `updated_at` as an instant.
    public let updatedAt: Double?

    /// The id's text (made anew for a UUID).
    public var id: String { compactID.text }

    init(_ summary: JobSummary) {
        compactID = summary.compactID
        status = summary.status
        updatedAt = summary.updatedAt
    }
}

/// A job detail answer and what the cache needs of it.
public struct JobDetailDocument: Sendable {
    public let body: [UInt8]
    public let job: JobVersion

    public init?(body: [UInt8]) {
        guard let object = Self.parse(body) else { return nil }
        self.init(body: body, object: object)
    }

    /// The document of `body`, already decoded into `object`.
    init?(body: [UInt8], object: [String: Any]) {
        guard let job = JobSummary(object) else { return nil }
        self.body = body
        self.job = JobVersion(job)
    }

    /// The parsed document, for projecting it into a list. Parsed again on each use rather than
    /// kept: a Foundation dictionary costs several times the body's bytes for every cached job,
    /// and it is needed only on the rare list update.
    public var object: [String: Any] { Self.parse(body) ?? [:] }

    private static func parse(_ body: [UInt8]) -> [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any]
    }
}

/// An upstream answer body decoded once: whether it is a JSON object, and the job document it
/// holds. Whoever needs the answer's content (the check, the cache's write-through, the
/// shared tier, the audit) takes this value, not the bytes, so nothing decodes them again.
public struct DecodedAnswerBody {
    /// The top-level JSON object, as Foundation reads it (which also takes a byte-order mark or UTF-16).
    public let object: [String: Any]?
    /// The job, when the object is a Pixxel job document.
    public let job: JobDetailDocument?
    /// A JSON object as the contract has it: UTF-8 text that begins with `{`.
    public let isJSONObject: Bool

    public init(_ body: [UInt8]) {
        object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any]
        job = object.flatMap { JobDetailDocument(body: body, object: $0) }
        let first = body.first { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }
        isJSONObject = object != nil && first == UInt8(ascii: "{")
    }
}

/// Finds byte ranges in a JSON document without building it: enough structure to locate the
/// top-level "jobs" array and its elements. Strings (with escapes) and nesting are honoured;
/// full validation of each element is left to the parser that reads it.
enum JSONLayout {
    struct JobsArray {
        /// Between `[` and `]`, exclusive.
        let arrayContent: Range<Int>
        let elements: [Range<Int>]
    }

    static func jobsArray(in body: [UInt8]) -> JobsArray? {
        var index = skipSpace(body, 0)
        guard index < body.count, body[index] == UInt8(ascii: "{") else { return nil }
        index += 1
        var found: JobsArray?
        while true {
            index = skipSpace(body, index)
            guard index < body.count else { return nil }
            if body[index] == UInt8(ascii: "}") { break }
            guard body[index] == UInt8(ascii: "\""), let keyEnd = endOfString(body, index) else { return nil }
            let isJobs = body[(index + 1)..<(keyEnd - 1)].elementsEqual("jobs".utf8)
            index = skipSpace(body, keyEnd)
            guard index < body.count, body[index] == UInt8(ascii: ":") else { return nil }
            index = skipSpace(body, index + 1)
            guard let valueEnd = endOfValue(body, index) else { return nil }
            if isJobs {
                guard found == nil, body[index] == UInt8(ascii: "["), let elements = arrayElements(body, index) else { return nil }
                found = JobsArray(arrayContent: (index + 1)..<(valueEnd - 1), elements: elements)
            }
            index = skipSpace(body, valueEnd)
            guard index < body.count else { return nil }
            if body[index] == UInt8(ascii: ",") { index += 1; continue }
            guard body[index] == UInt8(ascii: "}") else { return nil }
            break
        }
        guard skipSpace(body, index + 1) == body.count else { return nil }
        return found
    }

    /// Ranges of the objects in the array starting at `start`.
    static func arrayElements(_ body: [UInt8], _ start: Int) -> [Range<Int>]? {
        var elements: [Range<Int>] = []
        var index = skipSpace(body, start + 1)
        if index < body.count, body[index] == UInt8(ascii: "]") { return [] }
        while index < body.count {
            guard body[index] == UInt8(ascii: "{"), let end = endOfValue(body, index) else { return nil }
            elements.append(index..<end)
            index = skipSpace(body, end)
            guard index < body.count else { return nil }
            if body[index] == UInt8(ascii: "]") { return elements }
            guard body[index] == UInt8(ascii: ",") else { return nil }
            index = skipSpace(body, index + 1)
        }
        return nil
    }

    static func skipSpace(_ body: [UInt8], _ start: Int) -> Int {
        var index = start
        while index < body.count, [0x20, 0x0A, 0x0D, 0x09].contains(body[index]) { index += 1 }
        return index
    }

    /// The index just past the string starting at `start` (a `"`).
    static func endOfString(_ body: [UInt8], _ start: Int) -> Int? {
        var index = start + 1
        while index < body.count {
            switch body[index] {
            case UInt8(ascii: "\\"): index += 2
            case UInt8(ascii: "\""): return index + 1
            default: index += 1
            }
        }
        return nil
    }

    /// The index just past the value starting at `start`; nesting depth is bounded.
    static func endOfValue(_ body: [UInt8], _ start: Int) -> Int? {
        guard start < body.count else { return nil }
        switch body[start] {
        case UInt8(ascii: "\""):
            return endOfString(body, start)
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            var depth = 0
            var index = start
            while index < body.count {
                switch body[index] {
                case UInt8(ascii: "\""):
                    guard let end = endOfString(body, index) else { return nil }
                    index = end
                    continue
                case UInt8(ascii: "{"), UInt8(ascii: "["):
                    depth += 1
                    if depth > 512 { return nil }
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    depth -= 1
                    if depth == 0 { return index + 1 }
                default: break
                }
                index += 1
            }
            return nil
        default:
            var index = start
            while index < body.count, ![UInt8(ascii: ","), UInt8(ascii: "}"), UInt8(ascii: "]"), 0x20, 0x0A, 0x0D, 0x09].contains(body[index]) {
                index += 1
            }
            return index > start ? index : nil
        }
    }
}
