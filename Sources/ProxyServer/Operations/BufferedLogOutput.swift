import EventHTTP
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
        /// The writer was woken for this batch's size already.
        var wokenEarly = false

        /// Whether this batch just reached `wakeBytes`: the writer is woken once for it (a
        /// signal per line after that would be a syscall per line).
        mutating func crossedWakeSize() -> Bool {
            guard buffer.count >= BufferedLogOutput.wakeBytes, !wokenEarly else { return false }
            wokenEarly = true
            return true
        }
    }

    private let fd: Int32
    private let state = Mutex(State())
    /// Held from taking a batch to having written it: batches reach `fd` in order, and a
    /// `flush()` that returns has written everything appended before it (the writer thread's
    /// batch included), which the flush at exit relies on. It guards the writer's own buffer,
    /// which trades places with the one lines are appended to: neither is ever allocated anew.
    private let writing = Mutex([UInt8]())
    /// A batch this large wakes the writer before its interval ends, as nginx's `buffer=64k`
    /// does: a 50 ms batch at 90k answers a second was 1 MB, whose write took the other core
    /// from under the load and showed in every p99 (`bench`: 2.6 ms with the log, 1.5 without).
    static let wakeBytes = 64 << 10
    private let maxBufferedBytes: Int
    private let wake = DispatchSemaphore(value: 0)
    /// Local time to the second, as StreamLogHandler writes it.
    private let timestamp = PerSecondText(format: "%Y-%m-%dT%H:%M:%S%z", utc: false)

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

    func append(_ line: [UInt8], urgent: Bool) {
        let (accepted, large) = state.withLock { state -> (Bool, Bool) in
            guard state.buffer.count + line.count <= maxBufferedBytes else {
                state.dropped += 1
                return (false, false)
            }
            state.buffer.append(contentsOf: line)
            return (true, state.crossedWakeSize())
        }
        if large { wake.signal() }
        // A full buffer wakes the writer rather than writing here: the caller is usually the
        // event loop, which must not wait on a slow stderr.
        if urgent {
            flush()
        } else if !accepted {
            wake.signal()
        }
    }

    /// Appends one line in StreamLogHandler's format, `fields` already in key order (the
    /// access line comes straight here, without a log event and a metadata dictionary).
    public func append(level: Logger.Level, label: String, fields: [(key: String, value: String)], source: String, message: String) {
        // Built as bytes: appending UTF-8 views is a copy each, with no String growth checks.
        var line: [UInt8] = []
        line.reserveCapacity(320)
        line += timestamp.bytes
        line.append(UInt8(ascii: " "))
        line += level.rawValue.utf8
        line.append(UInt8(ascii: " "))
        line += label.utf8
        line.append(UInt8(ascii: ":"))
        for field in fields {
            line.append(UInt8(ascii: " "))
            line += field.key.utf8
            line.append(UInt8(ascii: "="))
            line += field.value.utf8
        }
        line += " [".utf8
        line += source.utf8
        line += "] ".utf8
        line += message.utf8
        line.append(UInt8(ascii: "\n"))
        append(line, urgent: level >= .warning)
    }

    /// Appends one line in the same format, everything after `label:` written by `write`
    /// straight into the buffer (` key=value` pairs, then ` [source] message`): the access line
    /// makes no array, dictionary or string of its own per request.
    public func appendLine(level: Logger.Level, label: String, _ write: (inout [UInt8]) -> Void) {
        let (accepted, large) = state.withLock { state -> (Bool, Bool) in
            let start = state.buffer.count
            state.buffer += timestamp.bytes
            state.buffer.append(UInt8(ascii: " "))
            state.buffer += level.rawValue.utf8
            state.buffer.append(UInt8(ascii: " "))
            state.buffer += label.utf8
            state.buffer.append(UInt8(ascii: ":"))
            write(&state.buffer)
            state.buffer.append(UInt8(ascii: "\n"))
            guard state.buffer.count <= maxBufferedBytes else {
                state.buffer.removeLast(state.buffer.count - start)
                state.dropped += 1
                return (false, false)
            }
            return (true, state.crossedWakeSize())
        }
        if large { wake.signal() }
        if level >= .warning {
            flush()
        } else if !accepted {
            wake.signal()
        }
    }

    /// Writes out what is buffered (from any thread; also at exit), after any batch another
    /// thread is writing.
    public func flush() {
        writing.withLock { writeBatch(&$0) }
    }

    private func writeBatch(_ out: inout [UInt8]) {
        out.removeAll(keepingCapacity: true)
        let dropped = state.withLock { state -> Int in
            swap(&state.buffer, &out)
            defer {
                state.dropped = 0
                state.wokenEarly = false
            }
            return state.dropped
        }
        if dropped > 0 { out += Array("\(timestamp.text) warning pixxel-proxy: dropped=\(dropped) [ProxyServer] log lines dropped: the log output is slower than the logging\n".utf8) }
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
            // No merge when the handler has no metadata of its own (the usual case).
            let merged = metadata.isEmpty ? event.metadata ?? [:] : metadata.merging(event.metadata ?? [:]) { $1 }
            let fields = merged.map { field -> (key: String, value: String) in
                if case .string(let text) = field.value { return (field.key, text) }
                return (field.key, field.value.description)
            }
            output.append(level: event.level, label: label, fields: fields.sorted { $0.key < $1.key }, source: event.source,
                          message: event.message.description)
        }
    }
}
