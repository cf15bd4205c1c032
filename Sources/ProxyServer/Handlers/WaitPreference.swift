import EventHTTP

/// RFC 7240's `wait` preference, `Prefer: wait=10`: how long a client is willing to wait for an
/// answer. Read among other preferences, in any case, in one field or several; the first `wait`
/// counts. Its value is delta-seconds, bare or quoted; any other value is no preference.
enum WaitPreference {
    static func seconds(in headers: HTTPHeaders) -> Int? {
        for field in headers.fields where field.name.caseInsensitiveEquals("prefer") {
            for preference in field.value.split(separator: ",") {
                // `token [ BWS "=" BWS word ] *( OWS ";" [ OWS parameter ] )`: the parameters are not read.
                let nameAndValue = preference.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false)[0]
                let parts = nameAndValue.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                guard trimmed(parts[0]).lowercased() == "wait" else { continue }
                guard parts.count == 2 else { return nil }
                var value = trimmed(parts[1])
                if value.count >= 2, value.first == "\"", value.last == "\"" { value = value.dropFirst().dropLast() }
                guard !value.isEmpty, value.count <= 9, value.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else {
                    return nil
                }
                return Int(value)
            }
        }
        return nil
    }

    private static func trimmed(_ text: Substring) -> Substring {
        var text = text
        while let first = text.first, first == " " || first == "\t" { text = text.dropFirst() }
        while let last = text.last, last == " " || last == "\t" { text = text.dropLast() }
        return text
    }
}
