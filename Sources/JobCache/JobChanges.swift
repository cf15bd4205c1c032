/// Where a change stream stands in a workflow's history: a job's `updated_at` (in whole
/// microseconds) and its id as the tiebreak among jobs changed at the same instant. A stream's
/// `id:` is the newest token it has sent; `Last-Event-ID` gives it back. It is made only of what
/// the upstream says of the jobs, so it means the same to every instance and after a restart.
///
/// Text form: `<microseconds>_<id percent-encoded>`, ASCII with no separator an SSE field or a
/// header could trip on.
public struct ChangeToken: Comparable, Sendable, CustomStringConvertible {
    public let microseconds: Int64
    public let job: CompactID

    public init(microseconds: Int64, job: CompactID) {
        self.microseconds = microseconds
        self.job = job
    }

    /// A listed job's token (an `updated_at` missing or unreadable sorts before every other).
    public init(_ job: JobSummary) {
        self.init(microseconds: Self.microseconds(at: job.updatedAt), job: job.compactID)
    }

    public static func microseconds(at instant: Double?) -> Int64 {
        guard let instant, instant.isFinite, abs(instant) < 9e12 else { return .min }
        return Int64((instant * 1_000_000).rounded())
    }

    /// The longest token text taken: ids are bounded by the list they come from, and a header
    /// naming more is not one of ours.
    public static let maxTextBytes = 1024

    /// A token in text form; nil for anything this proxy did not make.
    public init?(text: String) {
        guard text.utf8.count <= Self.maxTextBytes, let separator = text.firstIndex(of: "_") else { return nil }
        let digits = text[..<separator], encoded = String(text[text.index(after: separator)...])
        guard let microseconds = Int64(digits), microseconds != .min, digits.first != "+",
              PercentEncoding.isCanonicalSegment(encoded), let id = QueryDecoding.decodeComponent(Substring(encoded)) else { return nil }
        self.init(microseconds: microseconds, job: CompactID(id))
    }

    public var description: String { "\(microseconds)_\(job.percentEncoded)" }

    public static func < (lhs: ChangeToken, rhs: ChangeToken) -> Bool {
        if lhs.microseconds != rhs.microseconds { return lhs.microseconds < rhs.microseconds }
        // Ids compare by their bytes (as everywhere: canonically equivalent ids are two jobs).
        return lhs.job.text.utf8.lexicographicallyPrecedes(rhs.job.text.utf8)
    }

    public static func == (lhs: ChangeToken, rhs: ChangeToken) -> Bool {
        lhs.microseconds == rhs.microseconds && lhs.job == rhs.job
    }
}

/// Which jobs of a workflow's list a change stream sends: the rules, apart from the stream.
/// Every change is learnt from the workflow's whole list as the cache holds it (revalidated,
/// patched from a newer detail, with a job written through, taken from another instance).
public enum JobChanges {
    /// The version of each job a workflow's streams were last told of.
    public typealias Published = [CompactID: Int64]

    /// The versions `list` shows.
    public static func published(_ list: JobListDocument) -> Published {
        Dictionary(list.jobs.map { ($0.compactID, ChangeToken($0).microseconds) }, uniquingKeysWith: max)
    }

    /// The jobs of `list` new or newer than `published` says, oldest change first, and what is
    /// published once they are sent. A job gone from the list is forgotten (it is new if it
    /// comes back).
    public static func changed(in list: JobListDocument, since published: Published) -> (indices: [Int], published: Published) {
        let now = Self.published(list)
        var sent = Set<CompactID>()
        let indices = list.jobs.indices.filter { index in
            let job = list.jobs[index], version = ChangeToken(job).microseconds
            // A job listed twice is sent once, as its newest entry.
            guard version == now[job.compactID], version > published[job.compactID] ?? .min || published[job.compactID] == nil
            else { return false }
            return sent.insert(job.compactID).inserted
        }
        return (ordered(indices, in: list), now)
    }

    /// What a stream starting now is sent first.
    public enum Start: Equatable, Sendable {
        /// Every job (no token given): the current state, oldest change first.
        case everything([Int])
        /// The jobs changed since the token (and within `overlap` before it).
        case resumed([Int])
        /// The token cannot be resumed from (not one of ours, older than every job the list
        /// holds, or dated far ahead): `event: reset`, then every job.
        case reset([Int])
    }

    /// The first events of a stream that gave `lastEventID` (nil: none). A resume sends again
    /// every job changed up to `overlap` seconds before the token: a change can be learnt after
    /// a later one of another job (a detail fetched before the list showed an older change),
    /// and a token only says how far the newest got. Changes are delivered at least once.
    public static func start(lastEventID: String?, list: JobListDocument, filters: JobListFilters, overlap: Double, now: Double) -> Start {
        let matching = list.jobs.indices.filter { list.jobs[$0].matches(filters) }
        // An empty one is none (an EventSource that has seen no id yet).
        guard let lastEventID, !lastEventID.isEmpty else { return .everything(ordered(matching, in: list)) }
        guard let token = ChangeToken(text: lastEventID) else { return .reset(ordered(matching, in: list)) }
        // Undated jobs tell nothing of how far back the list reaches.
        let oldest = list.jobs.map { ChangeToken($0).microseconds }.filter { $0 != .min }.min()
        let tooOld = oldest.map { token.microseconds < $0 } ?? false
        let ahead = token.microseconds > ChangeToken.microseconds(at: now + 86_400)
        if tooOld || ahead { return .reset(ordered(matching, in: list)) }
        let (from, overflowed) = token.microseconds.subtractingReportingOverflow(Int64(overlap * 1_000_000))
        if overflowed { return .reset(ordered(matching, in: list)) }
        // A job without a readable `updated_at` cannot be placed after or before the token: it is
        // sent again (at least once; found by review: one created meanwhile was never sent).
        return .resumed(ordered(matching.filter {
            let version = ChangeToken(list.jobs[$0]).microseconds
            return version > from || version == .min
        }, in: list))
    }

    /// `indices` in the order of their tokens. Each id's text is made once, not per comparison
    /// (found by review: 10,000 jobs changed at one instant made an id's text anew at every
    /// comparison of the sort, on the loop).
    static func ordered(_ indices: [Int], in list: JobListDocument) -> [Int] {
        let keys = indices.map { index in
            (microseconds: ChangeToken(list.jobs[index]).microseconds, id: Array(list.jobs[index].id.utf8), index: index)
        }
        return keys.sorted { lhs, rhs in
            lhs.microseconds != rhs.microseconds ? lhs.microseconds < rhs.microseconds : lhs.id.lexicographicallyPrecedes(rhs.id)
        }.map(\.index)
    }
}

extension JobListDocument {
    /// Job `index`'s bytes as the upstream sent them (patched, when the cache patched them).
    public func entryBytes(at index: Int) -> ArraySlice<UInt8> { body[fragments[index]] }
}
