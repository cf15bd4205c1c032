/// The filters a client may put on a job list; the proxy applies them itself to one cached
/// full list. All present filters must match (AND).
public struct JobListFilters: Sendable, Hashable {
    /// Exact job id.
    public var id: String?
    /// Status, compared case-insensitively (stored lowercased).
    public var status: String?
    /// Exact creator id.
    public var createdBy: String?
    /// UTC calendar day of `created_at`.
    public var createdOn: CalendarDate?

    public init(id: String? = nil, status: String? = nil, createdBy: String? = nil, createdOn: CalendarDate? = nil) {
        self.id = id
        self.status = status
        self.createdBy = createdBy
        self.createdOn = createdOn
    }

    public var isEmpty: Bool { id == nil && status == nil && createdBy == nil && createdOn == nil }

    // Equal and hashed by bytes: Swift's String equality takes canonically equivalent ids
    // (`%C3%A9` and `e%CC%81`) for one, and these filters key the filtered bodies kept per list.
    public static func == (lhs: JobListFilters, rhs: JobListFilters) -> Bool {
        sameBytes(lhs.id, rhs.id) && sameBytes(lhs.status, rhs.status) && sameBytes(lhs.createdBy, rhs.createdBy)
            && lhs.createdOn == rhs.createdOn
    }

    /// String's own hash: equal bytes give equal strings, so equal hashes (canonically
    /// equivalent ids then share a bucket, and `==` tells them apart).
    public func hash(into hasher: inout Hasher) {
        hasher.combine(id)
        hasher.combine(status)
        hasher.combine(createdBy)
        hasher.combine(createdOn)
    }

    static func sameBytes(_ lhs: String?, _ rhs: String?) -> Bool {
        switch (lhs, rhs) {
        case (nil, nil): true
        case (let a?, let b?): a.utf8.count == b.utf8.count && a.utf8.elementsEqual(b.utf8)
        default: false
        }
    }
}

/// What a job-list query asks for.
public enum JobListQuery: Sendable, Equatable {
    /// Only known filters (possibly none): answered from the workflow's full list.
    case filtered(JobListFilters)
    /// `watch=1` (or `true`), with known filters only: a change stream of the jobs that match.
    case watch(JobListFilters)
    /// Some other parameter is present: forwarded upstream as it is, never cached.
    case passThrough

    /// Why a query is refused with 400.
    public struct Invalid: Error, Sendable, Equatable, CustomStringConvertible {
        public let parameter: String
        public let message: String
        public var description: String { "\(parameter): \(message)" }
    }

    public static let filterNames: Set<String> = ["id", "status", "created_by", "created_on"]

    /// Parses a raw (percent-encoded) query string; nil or "" means no filters.
    public static func parse(_ rawQuery: String?) -> Result<JobListQuery, Invalid> {
        guard let rawQuery, !rawQuery.isEmpty else { return .success(.filtered(JobListFilters())) }
        var seen: Set<String> = []
        var filters = JobListFilters()
        guard let pairs = QueryDecoding.pairs(rawQuery) else {
            return .failure(Invalid(parameter: "query", message: "invalid percent-encoding"))
        }
        if pairs.contains(where: { !filterNames.contains($0.name) && $0.name != "watch" }) { return .success(.passThrough) }
        var watch = false
        for (name, value) in pairs {
            guard seen.insert(name).inserted else {
                return .failure(Invalid(parameter: name, message: "given more than once"))
            }
            guard !value.isEmpty else { return .failure(Invalid(parameter: name, message: "empty value")) }
            guard !value.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
                return .failure(Invalid(parameter: name, message: "control characters are not allowed"))
            }
            switch name {
            case "watch":
                switch value.lowercased() {
                case "1", "true": watch = true
                case "0", "false": watch = false
                default: return .failure(Invalid(parameter: name, message: "expected 1 or 0, got \"\(value)\""))
                }
            case "id": filters.id = value
            case "status": filters.status = value.lowercased()
            case "created_by": filters.createdBy = value
            default:
                guard let date = ISO8601Text.datePart(of: value) else {
                    return .failure(Invalid(parameter: name, message: "expected a date YYYY-MM-DD or an ISO 8601 timestamp, got \"\(value)\""))
                }
                filters.createdOn = date
            }
        }
        return .success(watch ? .watch(filters) : .filtered(filters))
    }
}

/// Decoding of `application/x-www-form-urlencoded` query components.
public enum QueryDecoding {
    /// The `name=value` pairs of a raw query, decoded, in order; nil when one is malformed.
    public static func pairs(_ rawQuery: String?) -> [(name: String, value: String)]? {
        var out: [(name: String, value: String)] = []
        for item in (rawQuery ?? "").split(separator: "&", omittingEmptySubsequences: true) {
            let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = decodeComponent(parts[0]), let value = decodeComponent(parts.count > 1 ? parts[1] : "") else { return nil }
            out.append((name, value))
        }
        return out
    }

    /// Every value of `name` in a raw query (empty when absent or malformed).
    public static func values(of name: String, in rawQuery: String?) -> [String] {
        (pairs(rawQuery) ?? []).filter { $0.name == name }.map(\.value)
    }

    /// Decodes `%XX` escapes and `+` as space; nil for a malformed escape or invalid UTF-8.
    public static func decodeComponent(_ text: Substring) -> String? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            switch byte {
            case UInt8(ascii: "+"): bytes.append(0x20)
            case UInt8(ascii: "%"):
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else { return nil }
                bytes.append(high << 4 | low)
            default: bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 0x30...0x39: byte - 0x30
        case 0x41...0x46: byte - 0x41 + 10
        case 0x61...0x66: byte - 0x61 + 10
        default: nil
        }
    }
}
