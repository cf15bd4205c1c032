/// ISO 8601 / RFC 3339 timestamps as the upstream may send them, to an instant.
public enum Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z for `YYYY-MM-DD[T ]HH:MM[:SS[.fraction]][Z|±HH:MM|±HHMM|±HH]`
    /// (no zone means UTC); nil for anything else.
    public static func parse(_ text: String) -> Double? {
        let bytes = Array(text.utf8)
        guard bytes.count >= 16, let date = ISO8601Text.date(bytes, at: 0),
              [UInt8(ascii: "T"), UInt8(ascii: "t"), UInt8(ascii: " ")].contains(bytes[10]) else { return nil }
        var index = 11
        func number(_ count: Int) -> Int? {
            guard index + count <= bytes.count, let value = ISO8601Text.digits(bytes[index..<(index + count)]) else { return nil }
            index += count
            return value
        }
        func expect(_ byte: Character) -> Bool {
            guard index < bytes.count, bytes[index] == UInt8(ascii: byte.unicodeScalars.first!) else { return false }
            index += 1
            return true
        }
        guard let hour = number(2), hour < 24, expect(":"), let minute = number(2), minute < 60 else { return nil }
        var seconds = 0.0
        if expect(":") {
            guard let whole = number(2), whole <= 60 else { return nil }
            seconds = Double(whole)
            if expect(".") || expect(",") {
                var scale = 0.1
                let start = index
                while index < bytes.count, bytes[index] >= 0x30, bytes[index] <= 0x39 {
                    seconds += Double(bytes[index] - 0x30) * scale
                    scale /= 10
                    index += 1
                }
                guard index > start else { return nil }
            }
        }
        var offset = 0
        if index < bytes.count {
            if expect("Z") || expect("z") {
            } else {
                guard bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") else { return nil }
                let sign = bytes[index] == UInt8(ascii: "+") ? 1 : -1
                index += 1
                guard let hh = number(2), hh < 24 else { return nil }
                var mm = 0
                if index < bytes.count {
                    _ = expect(":")
                    guard let value = number(2), value < 60 else { return nil }
                    mm = value
                }
                offset = sign * (hh * 3600 + mm * 60)
            }
        }
        guard index == bytes.count else { return nil }
        let days = daysFromCivil(year: date.year, month: date.month, day: date.day)
        return Double(days * 86_400 + hour * 3600 + minute * 60 - offset) + seconds
    }

    /// The UTC calendar day of an instant; nil when that day is outside years 1 to 9999 (an
    /// upstream may write `0001-01-01T00:00:00+14:00`, which is in year 0 in UTC).
    public static func utcDate(of instant: Double) -> CalendarDate? {
        guard instant.isFinite, abs(instant) < 1e12 else { return nil }
        let days = Int((instant / 86_400).rounded(.down))
        let (year, month, day) = civilFromDays(days)
        return CalendarDate(year: year, month: month, day: day)
    }

    // Howard Hinnant's days-from-civil algorithms (proleptic Gregorian calendar).
    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func civilFromDays(_ days: Int) -> (Int, Int, Int) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}
