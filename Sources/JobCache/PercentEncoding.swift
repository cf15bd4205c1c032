/// Percent-encoding of ids for a path segment: every byte outside RFC 3986 "unreserved"
/// escaped, upper-case hex. The result is ASCII, so two encoded ids are equal exactly when
/// their UTF-8 bytes are (Swift's String equality would merge canonically equivalent ids), and
/// it holds no `/`, space or other separator: it is what the upstream is asked for, and what
/// the cache keys by.
public enum PercentEncoding {
    public static func segment(_ id: String) -> String {
        encode(id.utf8) { isUnreserved($0) }
    }

    /// Whether `text` is what `segment` makes of some non-empty id: unreserved bytes as they
    /// are, every other byte as `%XX` in upper-case hex, and the bytes UTF-8. An id read from
    /// outside in encoded form (a key in Redis) that is not canonical names nothing a request
    /// or a purge could reach.
    public static func isCanonicalSegment(_ text: String) -> Bool { decodedSegment(text) != nil }

    /// The id `segment` made `text` of; nil when `text` is not canonical (`isCanonicalSegment`).
    public static func decodedSegment(_ text: String) -> String? {
        var decoded: [UInt8] = []
        var bytes = text.utf8.makeIterator()
        while let byte = bytes.next() {
            if isUnreserved(byte) {
                decoded.append(byte)
                continue
            }
            guard byte == UInt8(ascii: "%"), let high = bytes.next().flatMap(upperHexValue),
                  let low = bytes.next().flatMap(upperHexValue) else { return nil }
            let value = high << 4 | low
            guard !isUnreserved(value) else { return nil }
            decoded.append(value)
        }
        return decoded.isEmpty ? nil : String(validating: decoded, as: UTF8.self)
    }

    private static func upperHexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 0x30...0x39: byte - 0x30
        case 0x41...0x46: byte - 0x41 + 10
        default: nil
        }
    }

    /// `bytes` with every byte that `keep` refuses written as `%XX`.
    public static func encode<C: Collection>(_ bytes: C, keep: (UInt8) -> Bool) -> String where C.Element == UInt8 {
        var out = ""
        out.reserveCapacity(bytes.count)
        for byte in bytes {
            if keep(byte) {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                out += "%"
                out.unicodeScalars.append(Unicode.Scalar(hexDigits[Int(byte >> 4)]))
                out.unicodeScalars.append(Unicode.Scalar(hexDigits[Int(byte & 0xF)]))
            }
        }
        return out
    }

    public static func isUnreserved(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A, UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"): true
        default: false
        }
    }

    private static let hexDigits = Array("0123456789ABCDEF".utf8)
}
