import CZlib

/// gzip content coding (RFC 9110 8.4.1.3) for cached bodies, through zlib.
public enum Gzip {
    /// Bodies shorter than this are sent as they are: the wrapper's 18 bytes and the client's
    /// work buy little below it.
    public static let minimumBytes = 1024

    /// `bytes` in gzip form; nil if zlib failed or the result is no smaller (not worth sending).
    public static func compress(_ bytes: [UInt8]) -> [UInt8]? {
        bytes.withUnsafeBytes(compress)
    }

    /// A held body in gzip form, compressed where it lies (a cached body is not copied first).
    public static func compress(_ held: some HeldBytes) -> [UInt8]? {
        withExtendedLifetime(held) { compress(held.heldBuffer) }
    }

    private static func compress(_ bytes: UnsafeRawBufferPointer) -> [UInt8]? {
        let capacity = pp_gzip_bound(bytes.count)
        var failed = false
        let out = [UInt8](unsafeUninitializedCapacity: capacity) { buffer, count in
            let written = pp_gzip(bytes.baseAddress, bytes.count, buffer.baseAddress, capacity)
            failed = written < 0
            count = max(0, written)
        }
        // Copied to its own size: the buffer was sized for the worst case, about the input's.
        return failed || out.count >= bytes.count ? nil : Array(out[...])
    }

    /// The bytes a whole gzip stream decodes to, if they are at most `limit`; nil otherwise.
    public static func decompress(_ bytes: [UInt8], limit: Int) -> [UInt8]? {
        var failed = false
        let out = [UInt8](unsafeUninitializedCapacity: limit) { buffer, count in
            let written = bytes.withUnsafeBytes { pp_gunzip($0.baseAddress, $0.count, buffer.baseAddress, limit) }
            failed = written < 0
            count = max(0, written)
        }
        return failed ? nil : out
    }
}

/// What a request's `Accept-Encoding` fields say of gzip (RFC 9110 12.5.3): read field by
/// field, with no allocation, so that the hit path can read it. gzip is acceptable when it (or
/// `x-gzip`) is listed with a q-value above 0, or, not listed, `*` is.
public struct AcceptEncoding {
    private var gzip: Bool?
    private var any: Bool?

    public init() {}

    public var acceptsGzip: Bool { gzip ?? any ?? false }

    /// Takes one field's value into account.
    public mutating func read(_ value: String) {
        var value = value
        value.withUTF8 { read(bytes: $0) }
    }

    private mutating func read(bytes: UnsafeBufferPointer<UInt8>) {
        var start = 0
        while start <= bytes.count {
            var end = start
            while end < bytes.count, bytes[end] != UInt8(ascii: ",") { end += 1 }
            readElement(bytes, start..<end)
            start = end + 1
        }
    }

    /// `coding *( OWS ";" OWS parameter )`; only `q` is read. A malformed q-value makes the
    /// element count for nothing.
    private mutating func readElement(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) {
        var pieceStart = range.lowerBound
        var coding: Range<Int>?
        var acceptable = true
        while pieceStart <= range.upperBound {
            var pieceEnd = pieceStart
            while pieceEnd < range.upperBound, bytes[pieceEnd] != UInt8(ascii: ";") { pieceEnd += 1 }
            let piece = Self.trimmed(bytes, pieceStart..<pieceEnd)
            if coding == nil {
                guard !piece.isEmpty else { return }
                coding = piece
            } else if piece.count >= 2, bytes[piece.lowerBound] | 0x20 == UInt8(ascii: "q"), bytes[piece.lowerBound + 1] == UInt8(ascii: "=") {
                guard let nonZero = Self.isNonZeroQuality(bytes, piece.lowerBound + 2..<piece.upperBound) else { return }
                acceptable = nonZero
            }
            pieceStart = pieceEnd + 1
        }
        guard let coding else { return }
        if Self.equalsIgnoringCase(bytes, coding, "gzip") || Self.equalsIgnoringCase(bytes, coding, "x-gzip") {
            gzip = (gzip ?? false) || acceptable
        } else if coding.count == 1, bytes[coding.lowerBound] == UInt8(ascii: "*") {
            any = (any ?? false) || acceptable
        }
    }

    private static func trimmed(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Range<Int> {
        var lower = range.lowerBound, upper = range.upperBound
        while lower < upper, bytes[lower] == UInt8(ascii: " ") || bytes[lower] == UInt8(ascii: "\t") { lower += 1 }
        while upper > lower, bytes[upper - 1] == UInt8(ascii: " ") || bytes[upper - 1] == UInt8(ascii: "\t") { upper -= 1 }
        return lower..<upper
    }

    /// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`: whether it is above 0;
    /// nil when it is not a qvalue.
    private static func isNonZeroQuality(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Bool? {
        guard !range.isEmpty, bytes[range.lowerBound] == UInt8(ascii: "0") || bytes[range.lowerBound] == UInt8(ascii: "1") else { return nil }
        let one = bytes[range.lowerBound] == UInt8(ascii: "1")
        if range.count == 1 { return one }
        guard bytes[range.lowerBound + 1] == UInt8(ascii: "."), range.count <= 5 else { return nil }
        var nonZeroDigit = false
        for index in range.lowerBound + 2..<range.upperBound {
            guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) else { return nil }
            if bytes[index] != UInt8(ascii: "0") { nonZeroDigit = true }
        }
        if one { return nonZeroDigit ? nil : true }
        return nonZeroDigit
    }

    /// Whether the bytes in `range` are `name` (lower case) with letters in either case.
    private static func equalsIgnoringCase(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, _ name: StaticString) -> Bool {
        guard range.count == name.utf8CodeUnitCount else { return false }
        return name.withUTF8Buffer { expected in
            (0..<range.count).allSatisfy { offset in
                let byte = bytes[range.lowerBound + offset]
                return ((UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) ? byte | 0x20 : byte) == expected[offset]
            }
        }
    }
}
