/// An id as the cache holds it: a canonical UUID in lower case (the form the Pixxel API gives
/// every job and workflow) in 16 bytes inline, any other id as its text. A 36-character
/// `String` is a heap allocation of 80 bytes, one for every cached job, held by its key and its
/// document alike.
///
/// Two ids are equal exactly when their texts have the same bytes (not when they are
/// canonically equivalent Unicode, as `String`'s `==` has it: such ids are different jobs
/// upstream). Only the canonical lower-case form is held as 16 bytes, so no text a UUID could
/// also be held as is ever held as text, and equality of the cases is equality of the bytes.
public struct CompactID: Hashable, Sendable, CustomStringConvertible {
    private enum Storage: Sendable {
        case uuid(UInt64, UInt64)
        case text(String)
    }

    private let storage: Storage

    public init(_ text: String) {
        var text = text
        storage = text.withUTF8 { Self.uuid(in: $0) }.map { .uuid($0.high, $0.low) } ?? .text(text)
    }

    /// The id's text, as it was given (made anew for a UUID: an allocation, off the hit path).
    public var text: String {
        switch storage {
        case .text(let text): return text
        case .uuid(let high, let low):
            return String(unsafeUninitializedCapacity: 36) { buffer in
                var written = 0
                for nibble in 0..<32 {
                    if nibble == 8 || nibble == 12 || nibble == 16 || nibble == 20 {
                        buffer[written] = UInt8(ascii: "-")
                        written += 1
                    }
                    let word = nibble < 16 ? high : low
                    let value = Int((word >> UInt64(60 - 4 * (nibble % 16))) & 0xF)
                    buffer[written] = Self.hexDigits[value]
                    written += 1
                }
                return written
            }
        }
    }

    public var description: String { text }

    /// The text percent-encoded for a path segment (`PercentEncoding.segment`), as keys hold
    /// ids; a UUID needs no encoding.
    public var percentEncoded: String { isInline ? text : PercentEncoding.segment(text) }

    /// Whether it is held as 16 bytes (for tests and measurements).
    public var isInline: Bool {
        if case .uuid = storage { return true }
        return false
    }

    public static func == (lhs: CompactID, rhs: CompactID) -> Bool {
        switch (lhs.storage, rhs.storage) {
        case (.uuid(let a, let b), .uuid(let c, let d)): a == c && b == d
        case (.text(let a), .text(let b)): a.utf8.elementsEqual(b.utf8)
        default: false
        }
    }

    public func hash(into hasher: inout Hasher) {
        switch storage {
        case .uuid(let high, let low):
            hasher.combine(high)
            hasher.combine(low)
        case .text(let text):
            hasher.combine(text.utf8.count)
            for byte in text.utf8 { hasher.combine(byte) }
        }
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// The 128 bits of `bytes` when they are exactly `8-4-4-4-12` lower-case hex digits.
    private static func uuid(in bytes: UnsafeBufferPointer<UInt8>) -> (high: UInt64, low: UInt64)? {
        guard bytes.count == 36 else { return nil }
        var words: (UInt64, UInt64) = (0, 0)
        var nibbles = 0
        for (index, byte) in bytes.enumerated() {
            if index == 8 || index == 13 || index == 18 || index == 23 {
                guard byte == UInt8(ascii: "-") else { return nil }
                continue
            }
            let value: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): value = byte - UInt8(ascii: "a") + 10
            default: return nil
            }
            if nibbles < 16 { words.0 = words.0 << 4 | UInt64(value) } else { words.1 = words.1 << 4 | UInt64(value) }
            nibbles += 1
        }
        return (words.0, words.1)
    }
}
