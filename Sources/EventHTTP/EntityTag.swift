/// A strong entity tag (RFC 9110 8.8.3) made from a representation's bytes: the first 64 bits
/// of their SHA-256. The same bytes get the same tag in every instance and after every
/// restart, with nothing stored or shared to agree on; different bytes get different tags,
/// short of a collision that takes about 2^32 bodies to find, and the bodies are the
/// upstream's, not a client's to choose. Held as 8 bytes and written out per answer.
///
/// The gzip form of a body is another representation, with a tag of its own (RFC 9110 8.8.3):
/// the plain bytes' tag with `-gzip` appended, so that it too is the same everywhere.
public struct EntityTag: Hashable, Sendable {
    public let value: UInt64
    public let isGzip: Bool

    public init(value: UInt64, gzip: Bool = false) {
        self.value = value
        isGzip = gzip
    }

    /// The tag of this representation's gzip form.
    public var gzipped: EntityTag { EntityTag(value: value, gzip: true) }

    public init(of bytes: [UInt8]) {
        let digest = OpenSSLCrypto.sha256(bytes)
        value = digest.prefix(8).reduce(0) { $0 << 8 | UInt64($1) }
        isGzip = false
    }

    /// The quoted form, `"0123456789abcdef"` (`"0123456789abcdef-gzip"`), as `ETag` sends it.
    public func append(to lines: inout [UInt8]) {
        lines.append(UInt8(ascii: "\""))
        for place in stride(from: 60, through: 0, by: -4) {
            lines.append(Self.hexDigits[Int((value >> UInt64(place)) & 0xF)])
        }
        if isGzip { lines += Self.gzipSuffix }
        lines.append(UInt8(ascii: "\""))
    }

    public var quoted: String {
        var lines: [UInt8] = []
        append(to: &lines)
        return String(decoding: lines, as: UTF8.self)
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)
    private static let gzipSuffix: [UInt8] = Array("-gzip".utf8)

    /// Whether an `If-None-Match` field value names this tag: `*`, or a list of entity tags one
    /// of which is this one by the weak comparison that If-None-Match uses (RFC 9110 13.1.2:
    /// `W/"x"` matches `"x"`). A value that does not parse matches from nothing after the
    /// point where it stops parsing, so a malformed header never yields a 304 by accident.
    public func isMatched(byIfNoneMatch value: String) -> Bool {
        var value = value
        return value.withUTF8 { matches(in: $0) }
    }

    private func matches(in bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        var index = 0
        var sawTag = false
        func isSeparator(_ byte: UInt8) -> Bool { byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") || byte == UInt8(ascii: ",") }
        func skipSeparators() {
            while index < bytes.count, isSeparator(bytes[index]) { index += 1 }
        }
        while true {
            skipSeparators()
            guard index < bytes.count else { return false }
            if bytes[index] == UInt8(ascii: "*") {
                // Only as the whole value (RFC 9110: `"*" / #entity-tag`).
                index += 1
                while index < bytes.count, bytes[index] == UInt8(ascii: " ") || bytes[index] == UInt8(ascii: "\t") { index += 1 }
                return index == bytes.count && !sawTag
            }
            if bytes[index] == UInt8(ascii: "W"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "/") { index += 2 }
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { return false }
            let start = index + 1
            var end = start
            // etagc: %x21 / %x23-7E / obs-text; anything else ends the parse.
            while end < bytes.count, bytes[end] != UInt8(ascii: "\"") {
                guard bytes[end] == 0x21 || bytes[end] >= 0x23 && bytes[end] != 0x7F else { return false }
                end += 1
            }
            guard end < bytes.count else { return false }
            index = end + 1
            sawTag = true
            // What follows a tag must be the end or a separator, then a comma before the next.
            var afterTag = index
            while afterTag < bytes.count, bytes[afterTag] == UInt8(ascii: " ") || bytes[afterTag] == UInt8(ascii: "\t") { afterTag += 1 }
            guard afterTag == bytes.count || bytes[afterTag] == UInt8(ascii: ",") else { return false }
            if end - start == (isGzip ? 21 : 16), isThisTag(bytes, from: start) { return true }
        }
    }

    private func isThisTag(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> Bool {
        for offset in 0..<16 {
            let nibble = Int((value >> UInt64(60 - 4 * offset)) & 0xF)
            guard bytes[start + offset] == Self.hexDigits[nibble] else { return false }
        }
        guard isGzip else { return true }
        return (0..<5).allSatisfy { bytes[start + 16 + $0] == Self.gzipSuffix[$0] }
    }
}
