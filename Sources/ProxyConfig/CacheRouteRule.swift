/// One `cache.routes` entry, `PATTERN SECONDS`: GET routes of the rest of the Pixxel API whose
/// answers may be cached for `seconds`. A pattern is a path under `/v0/` whose segments are
/// literals or `{name}`, which matches any one segment. Pure: parsed once at start.
public struct CacheRouteRule: Sendable, Equatable, CustomStringConvertible {
    public enum Segment: Sendable, Equatable {
        case literal(String)
        case parameter(String)
    }

    /// The pattern as written, which also names the route in metrics and logs (no ids).
    public let pattern: String
    public let segments: [Segment]
    public let seconds: Double

    public var description: String { "\(pattern) \(formatSeconds(seconds))" }

    /// Parses `PATTERN SECONDS`; the error says what is wrong with it.
    public static func parse(_ text: String) -> Result<CacheRouteRule, SettingsError> {
        func invalid(_ why: String) -> Result<CacheRouteRule, SettingsError> {
            .failure(SettingsError(key: "cache.routes", "\"\(text)\": \(why)"))
        }
        let words = text.split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard words.count == 2 else { return invalid("expected PATTERN SECONDS, e.g. /v0/workflows/{id} 300") }
        let pattern = String(words[0])
        guard let seconds = Double(words[1]), seconds.isFinite, seconds > 0, seconds <= 31_536_000 else {
            return invalid("SECONDS must be a number from more than 0 to 31536000")
        }
        guard pattern.hasPrefix("/v0/"), !pattern.hasSuffix("/") else {
            return invalid("the pattern must be a path under /v0/ without a trailing /")
        }
        var segments: [Segment] = []
        for piece in pattern.dropFirst().split(separator: "/", omittingEmptySubsequences: false) {
            if piece.hasPrefix("{"), piece.hasSuffix("}"), piece.count > 2 {
                let name = piece.dropFirst().dropLast()
                guard name.utf8.allSatisfy(isNameByte) else { return invalid("a parameter's name is letters, digits and _") }
                segments.append(.parameter(String(name)))
            } else {
                guard !piece.isEmpty, piece.utf8.allSatisfy(isLiteralByte), piece != ".", piece != ".." else {
                    return invalid("a segment is {name} or letters, digits, -, ., _ and ~")
                }
                segments.append(.literal(String(piece)))
            }
        }
        let rule = CacheRouteRule(pattern: pattern, segments: segments, seconds: seconds)
        // The job routes have caching of their own, which always comes first.
        if rule.couldMatchAJobRoute { return invalid("it matches the job routes, which are cached by their own rules") }
        return .success(rule)
    }

    /// Whether `path` (decoded segments, `v0` first) is one this rule caches.
    public func matches(_ path: [String]) -> Bool {
        guard path.count == segments.count else { return false }
        for (segment, value) in zip(segments, path) {
            if case .literal(let literal) = segment, literal != value { return false }
        }
        return true
    }

    /// `/v0/workflows/{w}/jobs` and `/v0/workflows/{w}/jobs/{j}` in any spelling.
    var couldMatchAJobRoute: Bool {
        guard segments.count == 4 || segments.count == 5 else { return false }
        func allows(_ index: Int, _ word: String) -> Bool {
            if case .literal(let literal) = segments[index] { return literal == word }
            return true
        }
        return allows(1, "workflows") && allows(3, "jobs")
    }

    private static func isNameByte(_ byte: UInt8) -> Bool {
        (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) || byte == UInt8(ascii: "_")
    }

    private static func isLiteralByte(_ byte: UInt8) -> Bool {
        isNameByte(byte) || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "~")
    }
}

private func formatSeconds(_ seconds: Double) -> String {
    seconds == seconds.rounded() ? String(Int(seconds)) : String(seconds)
}
