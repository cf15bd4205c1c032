import JobCache

/// An entry as the shared tier keeps it in Redis: a hash whose fields the scripts compare
/// (`u` updated_at, `v` validated_at, `s` a newer updated_at a list showed, `x` the expiry in
/// ms) and `d`, the payload below. Pure: encoding and a total decoding (Redis is outside the
/// process, and anything may be in it).
///
/// Payload: "PXS1", kind (1 byte), stored_at and lifetime (8 bytes each, IEEE 754 bits, little
/// endian), the number of header lines (4 bytes) and each as length (4 bytes) + bytes, then the body.
public enum SharedEntryCodec {
    static let magic: [UInt8] = Array("PXS1".utf8)
    /// Nothing larger is decoded: the tier keeps answers the memory tier would keep.
    static let maxHeaderLines = 256

    public static func payload(of record: DiskRecord) -> [UInt8] {
        var bytes = magic
        bytes.reserveCapacity(64 + record.body.count + record.headers.reduce(0) { $0 + $1.utf8.count + 4 })
        bytes.append(UInt8(record.kind.rawValue))
        append(record.storedAt.bitPattern, to: &bytes)
        append(record.lifetime.bitPattern, to: &bytes)
        append(UInt32(record.headers.count), to: &bytes)
        for line in record.headers {
            let utf8 = Array(line.utf8)
            append(UInt32(utf8.count), to: &bytes)
            bytes += utf8
        }
        bytes += record.body
        return bytes
    }

    /// What a payload holds; nil when it is not one of ours.
    public struct Decoded: Equatable, Sendable {
        public var kind: DiskRecord.Kind
        public var storedAt: Double
        public var lifetime: Double
        public var headers: [String]
        public var body: [UInt8]
    }

    public static func decode(_ bytes: [UInt8]) -> Decoded? {
        var reader = Reader(bytes: bytes)
        guard reader.take(magic.count) == magic, let kindByte = reader.take(1)?.first,
              let kind = DiskRecord.Kind(rawValue: Int32(kindByte)),
              let stored = reader.uint64(), let lifetime = reader.uint64(), let count = reader.uint32(), count <= maxHeaderLines else { return nil }
        var headers: [String] = []
        for _ in 0..<count {
            guard let length = reader.uint32(), let line = reader.take(Int(length)),
                  let text = String(validating: line, as: UTF8.self) else { return nil }
            headers.append(text)
        }
        return Decoded(kind: kind, storedAt: Double(bitPattern: stored), lifetime: Double(bitPattern: lifetime), headers: headers,
                       body: reader.rest())
    }

    /// Instants beyond about 3,000 years either way are not plausible (as the disk tier has it).
    static let plausibleInstant = 1e11

    public static func isPlausibleInstant(_ value: Double) -> Bool { value.isFinite && abs(value) < plausibleInstant }

    /// Whether an entry's times could be real: finite, within ±3,000 years, a lifetime of at
    /// most that, and confirmed no earlier than stored.
    public static func isPlausible(_ decoded: Decoded, validatedAt: Double) -> Bool {
        isPlausibleInstant(decoded.storedAt) && isPlausibleInstant(validatedAt) && validatedAt >= decoded.storedAt - 0.001
            && decoded.lifetime.isFinite && (0...plausibleInstant).contains(decoded.lifetime)
    }

    /// A number in an entry's fields, as the scripts write and compare them.
    public static func field(_ value: Double?) -> [UInt8] {
        guard let value, value.isFinite else { return [] }
        return Array(format6(value).utf8)
    }

    /// Six decimals: microseconds, and no exponent that Lua's tonumber and Swift would read apart.
    static func format6(_ value: Double) -> String {
        let micro = (value * 1_000_000).rounded()
        guard abs(micro) < 9e15 else { return "0" }
        let whole = Int64(micro)
        let sign = whole < 0 ? "-" : ""
        let magnitude = whole.magnitude
        let fraction = String(magnitude % 1_000_000)
        return "\(sign)\(magnitude / 1_000_000).\(String(repeating: "0", count: 6 - fraction.count))\(fraction)"
    }

    private static func append(_ value: UInt64, to bytes: inout [UInt8]) {
        for shift in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }

    private static func append(_ value: UInt32, to bytes: inout [UInt8]) {
        for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
    }

    private struct Reader {
        let bytes: [UInt8]
        var offset = 0

        mutating func take(_ count: Int) -> [UInt8]? {
            guard count >= 0, count <= bytes.count - offset else { return nil }
            defer { offset += count }
            return Array(bytes[offset..<offset + count])
        }

        mutating func uint64() -> UInt64? {
            take(8).map { $0.reversed().reduce(0) { $0 << 8 | UInt64($1) } }
        }

        mutating func uint32() -> UInt32? {
            take(4).map { $0.reversed().reduce(0) { $0 << 8 | UInt32($1) } }
        }

        func rest() -> [UInt8] { Array(bytes[offset...]) }
    }
}
