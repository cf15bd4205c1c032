import EventHTTP
import JobCache
import ProxyServer

/// The fuzzed entry points, shared by the libFuzzer binary (`make fuzz`) and the corpus replay
/// test (`make test`). The first byte picks the target; the rest is its input. An invariant
/// that fails stops the process (a finding). 0xF0 to 0xF2 select the HTTP framing targets (so
/// that the corpus entries written before them keep their meaning); other bytes, modulo 3,
/// the older ones.
public enum FuzzTargets {
    public static let requestHeadSelector: UInt8 = 0xF0
    public static let chunkedBodySelector: UInt8 = 0xF1
    public static let upstreamAnswerSelector: UInt8 = 0xF2

    public static func run(_ data: [UInt8]) {
        guard let selector = data.first else { return }
        let input = Array(data.dropFirst())
        if selector == requestHeadSelector { return HTTPFramingFuzz.head(input) }
        if selector == chunkedBodySelector { return HTTPFramingFuzz.chunked(input) }
        if selector == upstreamAnswerSelector { return HTTPFramingFuzz.upstreamAnswer(input) }
        switch selector % 3 {
        case 0: requestTarget(input)
        case 1: listFilters(input)
        default: upstreamJSON(input)
        }
    }

    /// The request path and query parser, and routing.
    static func requestTarget(_ input: [UInt8]) {
        let uri = String(decoding: input, as: UTF8.self)
        guard case .success(let target) = RequestTarget.parse(uri) else { return }
        for segment in target.segments {
            precondition(segment != "." && segment != ".." && !segment.contains("/"), "unsafe segment accepted: \(segment)")
        }
        // What is forwarded parses back to the same segments: no traversal can appear upstream.
        guard case .success(let again) = RequestTarget.parse(target.encodedPath) else {
            preconditionFailure("the forwarded path does not parse: \(target.encodedPath)")
        }
        precondition(again.segments == target.segments, "the forwarded path changed meaning")
        for method in HTTPMethod.allCases { _ = Router.route(method: method, target: target) }
        _ = JobListQuery.parse(target.rawQuery)
    }

    /// The job-list filter parser and ISO 8601 dates.
    static func listFilters(_ input: [UInt8]) {
        let text = String(decoding: input, as: UTF8.self)
        _ = JobListQuery.parse(text)
        if let date = ISO8601Text.datePart(of: text) {
            precondition((1...12).contains(date.month) && (1...31).contains(date.day), "impossible date \(date)")
        }
        if let instant = Timestamp.parse(text) {
            precondition(instant.isFinite, "non-finite instant")
            _ = Timestamp.utcDate(of: instant)
        }
    }

    /// Ingest of upstream JSON: the list splitter (byte-exact fragments) and the detail reader.
    static func upstreamJSON(_ input: [UInt8]) {
        if let list = JobListDocument(body: input) {
            precondition(list.rendered(JobListFilters()) == input, "an unfiltered list must be the upstream's bytes")
            for job in list.jobs.prefix(4) {
                let one = list.rendered(JobListFilters(id: job.id))
                precondition(JobListDocument(body: one) != nil, "a filtered list must still be a list")
                _ = list.rendered(JobListFilters(status: job.status?.lowercased(), createdOn: job.createdAt.flatMap(Timestamp.utcDate)))
            }
        }
        _ = JobDetailDocument(body: input)
    }
}
