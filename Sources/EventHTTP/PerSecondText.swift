import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The current time through a strftime format, formatted again only when the second changes:
/// the `Date` line of every answer and the timestamp of every log line. Safe from any thread.
public final class PerSecondText: Sendable {
    private let format: String
    private let utc: Bool
    private let cached = Mutex<(second: Int, text: String, bytes: [UInt8])>((-1, "", []))

    /// `utc` false formats local time.
    public init(format: String, utc: Bool) {
        self.format = format
        self.utc = utc
    }

    public var text: String { current().text }
    public var bytes: [UInt8] { current().bytes }

    private func current() -> (text: String, bytes: [UInt8]) {
        let now = time(nil)
        return cached.withLock { cached in
            if cached.second != now {
                var seconds = now
                var parts = tm()
                if utc { gmtime_r(&seconds, &parts) } else { localtime_r(&seconds, &parts) }
                var characters = [CChar](repeating: 0, count: 128)
                let length = strftime(&characters, characters.count, format, &parts)
                let bytes = characters.prefix(length).map { UInt8(bitPattern: $0) }
                cached = (now, String(decoding: bytes, as: UTF8.self), bytes)
            }
            return (cached.text, cached.bytes)
        }
    }
}
