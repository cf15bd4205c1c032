import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Log lines in StreamLogHandler's format (`time level label: key=value ... [source] message`),
/// written by a thread of their own in batches: an access line costs the event loop a format
/// and an append under a lock, not a write(2). Lines at warning and above are written at once
/// (with everything before them), so a crash right after an error still shows the error.
/// The buffer is bounded: past `maxBufferedBytes` lines are dropped and their number reported.
public final class BufferedLogOutput: Sendable {
    private struct State {
        var buffer: [UInt8] = []
        var dropped = 0
    }

    private let fd: Int32
    private let state = Mutex(State())
    private let maxBufferedBytes: Int
    private let wake = DispatchSemaphore(value: 0)
    private let timestamp = Mutex<(second: Int, text: String)>((-1, ""))

    /// Writes to `fd` (stderr by default); a batch goes out every `flushMilliseconds`.
    public init(fd: Int32 = STDERR_FILENO, maxBufferedBytes: Int = 1 << 20, flushMilliseconds: Int = 50) {
        self.fd = fd
        self.maxBufferedBytes = maxBufferedBytes
        let thread = Thread { [self] in
            while true {
                _ = wake.wait(timeout: .now() + .milliseconds(flushMilliseconds))
                flush()
            }
        }
        thread.name = "pixxel-proxy-log"
        thread.start()
    }

    /// A handler for `label` writing here.
    public func handler(label: String) -> some LogHandler {
        Handler(label: label, output: self)
    }

    public func append(_ line: String, urgent: Bool) {
        var line = line
        let accepted = line.withUTF8 { bytes in
            state.withLock { state -> Bool in
                guard state.buffer.count + bytes.count <= maxBufferedBytes else {
                    state.dropped += 1
                    return false
                }
                state.buffer.append(contentsOf: bytes)
                return true
            }
        }
        if urgent || !accepted { flush() }
    }

    /// Writes out what is buffered (from any thread; also at exit).
    public func flush() {
        let (batch, dropped) = state.withLock { state -> ([UInt8], Int) in
            defer {
                state.buffer.removeAll(keepingCapacity: true)
                state.dropped = 0
            }
            return (state.buffer, state.dropped)
        }
        var out = batch
        if dropped > 0 { out += Array("\(timestampText()) warning pixxel-proxy: dropped=\(dropped) [ProxyServer] log lines dropped: the log output is slower than the logging\n".utf8) }
        out.withUnsafeBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                if written < 0 && errno == EINTR { continue }
                guard written > 0 else { return }
                offset += written
            }
        }
    }

    /// Local time to the second, as StreamLogHandler writes it; formatted once a second.
    public func timestampText() -> String {
        let now = time(nil)
        return timestamp.withLock { cached in
            if cached.second == now { return cached.text }
            var seconds = now
            var parts = tm()
            localtime_r(&seconds, &parts)
            var text = [CChar](repeating: 0, count: 64)
            let length = strftime(&text, text.count, "%Y-%m-%dT%H:%M:%S%z", &parts)
            let formatted = String(decoding: text.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            cached = (now, formatted)
            return formatted
        }
    }

    struct Handler: LogHandler {
        let label: String
        let output: BufferedLogOutput
        var logLevel: Logger.Level = .info
        var metadata: Logger.Metadata = [:]

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            // Sorted by key like StreamLogHandler; no merge when the handler has no metadata of
            // its own (the usual case), as this runs once per request on the loop.
            var fields: [(key: String, value: Logger.MetadataValue)]
            if metadata.isEmpty {
                fields = event.metadata.map { Array($0) } ?? []
            } else {
                fields = Array(metadata.merging(event.metadata ?? [:]) { $1 })
            }
            fields.sort { $0.key < $1.key }
            var line = output.timestampText()
            line.reserveCapacity(320)
            line += " "
            line += event.level.rawValue
            line += " "
            line += label
            line += ":"
            for field in fields {
                line += " "
                line += field.key
                line += "="
                if case .string(let text) = field.value { line += text } else { line += field.value.description }
            }
            line += " ["
            line += event.source
            line += "] "
            line += event.message.description
            line += "\n"
            output.append(line, urgent: event.level >= .warning)
        }
    }
}
