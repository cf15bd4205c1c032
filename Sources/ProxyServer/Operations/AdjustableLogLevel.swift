import Logging
import Synchronization

/// The process's log level, changeable at run time (SIGHUP reloads it from the configuration).
public final class LogLevelControl: Sendable {
    private let level: Mutex<Logger.Level>
    public init(_ level: Logger.Level) { self.level = Mutex(level) }
    public var current: Logger.Level {
        get { level.withLock { $0 } }
        set { level.withLock { $0 = newValue } }
    }
}

/// A log handler whose level follows a `LogLevelControl` instead of being fixed at creation.
public struct AdjustableLogHandler: LogHandler {
    private var inner: any LogHandler
    private let control: LogLevelControl

    public init(wrapping inner: any LogHandler, control: LogLevelControl) {
        self.inner = inner
        self.control = control
    }

    public var logLevel: Logger.Level {
        get { control.current }
        set { control.current = newValue }
    }

    public var metadata: Logger.Metadata {
        get { inner.metadata }
        set { inner.metadata = newValue }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { inner[metadataKey: key] }
        set { inner[metadataKey: key] = newValue }
    }

    public func log(event: LogEvent) {
        guard event.level >= control.current else { return }
        inner.log(event: event)
    }
}
