/// Percent-encoding of ids for a path segment: every byte outside RFC 3986 "unreserved"
/// escaped, upper-case hex. The result is ASCII, so two encoded ids are equal exactly when
/// their UTF-8 bytes are (Swift's String equality would merge canonically equivalent ids), and
/// it holds no `/`, space or other separator: it is what the upstream is asked for, and what
/// the cache keys by.
public enum PercentEncoding {
    public static func segment(_ id: String) -> String {
        encode(id.utf8) { isUnreserved($0) }
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
