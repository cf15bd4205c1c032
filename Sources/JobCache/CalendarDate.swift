/// A day in the proleptic Gregorian calendar, as written `YYYY-MM-DD`.
public struct CalendarDate: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let year: Int
    public let month: Int
    public let day: Int

    public init?(year: Int, month: Int, day: Int) {
        guard (1...9999).contains(year), (1...12).contains(month),
              (1...CalendarDate.daysIn(month: month, year: year)).contains(day) else { return nil }
        self.year = year
        self.month = month
        self.day = day
    }

    public static func < (lhs: CalendarDate, rhs: CalendarDate) -> Bool {
        (lhs.year, lhs.month, lhs.day) < (rhs.year, rhs.month, rhs.day)
    }

    public var description: String {
        func pad(_ value: Int, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))"
    }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }
}

/// Parsing of the ISO 8601 forms the `created_on` filter accepts.
public enum ISO8601Text {
    /// A date, `YYYY-MM-DD` (extended format) or `YYYYMMDD` (basic format), or a timestamp in
    /// the same format: `YYYY-MM-DD[T ]HH:MM[:SS[.fraction]][zone]` or
    /// `YYYYMMDDTHHMM[SS[.fraction]][zone]`, the zone `Z`, `±HH`, `±HH:MM` or `±HHMM`. For a
    /// timestamp, the date as written (the contract's "its date part"). ISO 8601 does not mix
    /// the two formats in one representation, so neither does this. nil for anything else.
    public static func datePart(of text: String) -> CalendarDate? {
        let bytes = Array(text.utf8)
        if bytes.count >= 10, let date = date(bytes, at: 0) {
            if bytes.count == 10 { return date }
            guard bytes[10] == UInt8(ascii: "T") || bytes[10] == UInt8(ascii: "t") || bytes[10] == UInt8(ascii: " "),
                  isTime(bytes[11...]) else { return nil }
            return date
        }
        guard bytes.count >= 8, let date = basicDate(bytes) else { return nil }
        if bytes.count == 8 { return date }
        guard bytes[8] == UInt8(ascii: "T") || bytes[8] == UInt8(ascii: "t"), isBasicTime(bytes[9...]) else { return nil }
        return date
    }

    /// `YYYYMMDD` at the start of `bytes`.
    static func basicDate(_ bytes: [UInt8]) -> CalendarDate? {
        guard let year = digits(bytes[0..<4]), let month = digits(bytes[4..<6]), let day = digits(bytes[6..<8]) else { return nil }
        return CalendarDate(year: year, month: month, day: day)
    }

    /// `HHMM[SS[.fraction]]` then an optional zone (basic format).
    static func isBasicTime(_ bytes: ArraySlice<UInt8>) -> Bool {
        var rest = bytes
        guard let hour = digits(rest.prefix(2)), hour < 24, rest.count >= 4,
              let minute = digits(rest.dropFirst(2).prefix(2)), minute < 60 else { return false }
        rest = rest.dropFirst(4)
        if let second = digits(rest.prefix(2)), rest.count >= 2 {
            guard second <= 60 else { return false }
            rest = rest.dropFirst(2)
            if rest.first == UInt8(ascii: ".") || rest.first == UInt8(ascii: ",") {
                guard let after = afterFraction(rest) else { return false }
                rest = after
            }
        }
        return isZone(rest)
    }

    static func date(_ bytes: [UInt8], at start: Int) -> CalendarDate? {
        guard bytes.count >= start + 10, bytes[start + 4] == UInt8(ascii: "-"), bytes[start + 7] == UInt8(ascii: "-"),
              let year = digits(bytes[start..<start + 4]), let month = digits(bytes[start + 5..<start + 7]),
              let day = digits(bytes[start + 8..<start + 10]) else { return nil }
        return CalendarDate(year: year, month: month, day: day)
    }

    /// `HH:MM[:SS[.fraction]]` then an optional zone.
    static func isTime(_ bytes: ArraySlice<UInt8>) -> Bool {
        var rest = bytes
        guard let hour = digits(rest.prefix(2)), hour < 24, rest.dropFirst(2).first == UInt8(ascii: ":"),
              let minute = digits(rest.dropFirst(3).prefix(2)), minute < 60 else { return false }
        rest = rest.dropFirst(5)
        if rest.first == UInt8(ascii: ":") {
            guard let second = digits(rest.dropFirst().prefix(2)), second <= 60 else { return false }
            rest = rest.dropFirst(3)
            if rest.first == UInt8(ascii: ".") || rest.first == UInt8(ascii: ",") {
                guard let after = afterFraction(rest) else { return false }
                rest = after
            }
        }
        return isZone(rest)
    }

    /// What follows `.fraction` (1 to 12 digits) at the start of `bytes`; nil if it is malformed.
    static func afterFraction(_ bytes: ArraySlice<UInt8>) -> ArraySlice<UInt8>? {
        let fraction = bytes.dropFirst().prefix { $0 >= 0x30 && $0 <= 0x39 }
        guard !fraction.isEmpty, fraction.count <= 12 else { return nil }
        return bytes.dropFirst(1 + fraction.count)
    }

    /// Nothing, `Z`, or `±HH`, `±HH:MM`, `±HHMM`.
    static func isZone(_ rest: ArraySlice<UInt8>) -> Bool {
        if rest.isEmpty { return true }
        if rest.count == 1 && (rest.first == UInt8(ascii: "Z") || rest.first == UInt8(ascii: "z")) { return true }
        guard rest.first == UInt8(ascii: "+") || rest.first == UInt8(ascii: "-") else { return false }
        let zone = Array(rest.dropFirst())
        let hh: Int?, mm: Int?
        if zone.count == 5 && zone[2] == UInt8(ascii: ":") {
            hh = digits(zone[0..<2]); mm = digits(zone[3..<5])
        } else if zone.count == 4 {
            hh = digits(zone[0..<2]); mm = digits(zone[2..<4])
        } else if zone.count == 2 {
            hh = digits(zone[0..<2]); mm = 0
        } else { return false }
        guard let hh, let mm, hh < 24, mm < 60 else { return false }
        return true
    }

    static func digits(_ bytes: ArraySlice<UInt8>) -> Int? {
        guard !bytes.isEmpty else { return nil }
        var value = 0
        for byte in bytes {
            guard byte >= 0x30 && byte <= 0x39 else { return nil }
            value = value * 10 + Int(byte - 0x30)
        }
        return value
    }
}
