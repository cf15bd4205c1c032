import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Every child a test started and has not reaped yet, killed with SIGKILL when the test process
/// ends: at a normal exit, and on a fatal signal (a failed `precondition` or a trap is SIGILL or
/// SIGTRAP, and a trap ends the process without running `atexit`). A Redis or a
/// `pixxel-proxy serve` left behind would hold a port and CPU through the rest of the run.
///
/// The pids live in a fixed table that the signal handler reads without a lock: a handler may
/// only call async-signal-safe functions, and `kill` is one, a mutex is not.
final class ChildRegistry: Sendable {
    static let shared = ChildRegistry()

    /// Children alive at once in one test run stay far below this; a child that finds no free
    /// slot is still killed by the test that started it, just not on a crash.
    static let capacity = 4096
    /// The signals that end the process abnormally; each handler kills the children, puts the
    /// previous handler back (the Swift runtime's backtracer among them) and lets it run.
    static let fatalSignals: [Int32] = [SIGILL, SIGTRAP, SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGTERM, SIGINT, SIGHUP]

    nonisolated(unsafe) private let table: UnsafeMutablePointer<pid_t>
    private let writers = Mutex(())

    /// A registry of its own is for a test of the registry itself, whose `killAll` must not
    /// reach the children of the tests running beside it; only `shared` is killed at exit.
    init() {
        table = .allocate(capacity: Self.capacity)
        table.initialize(repeating: 0, count: Self.capacity)
    }

    /// The exit and signal handlers, installed once `shared` exists: a handler reads `shared`,
    /// and a signal arriving while `shared` was still being made would wait on its lazy
    /// initialisation for ever.
    private static let handlersInstalled: Void = shared.installHandlers()

    /// Installs the exit and signal handlers if nothing has yet; `add` on `shared` does it too.
    static func ensureHandlersInstalled() { handlersInstalled }

    func add(_ pid: pid_t) {
        if self === Self.shared { Self.handlersInstalled }
        writers.withLock { _ in
            if let slot = (0..<Self.capacity).first(where: { table[$0] == 0 }) { table[slot] = pid }
        }
    }

    func remove(_ pid: pid_t) {
        writers.withLock { _ in
            if let slot = (0..<Self.capacity).first(where: { table[$0] == pid }) { table[slot] = 0 }
        }
    }

    /// The children not reaped yet.
    var alive: [pid_t] { writers.withLock { _ in (0..<Self.capacity).map { table[$0] }.filter { $0 != 0 } } }

    /// SIGKILL to every registered child. Async-signal-safe: no lock, no allocation.
    func killAll() {
        for slot in 0..<Self.capacity where table[slot] > 0 { kill(table[slot], SIGKILL) }
    }

    private func installHandlers() {
        atexit { ChildRegistry.shared.killAll() }
        for signal in Self.fatalSignals {
            // A signal this process ignores (SIGHUP under nohup) stays ignored.
            var current: sigaction = .init()
            sigaction(signal, nil, &current)
            if current.sa_flags & SA_SIGINFO == 0, let handler = current.__sigaction_handler.sa_handler,
               unsafeBitCast(handler, to: Int.self) == 1 /* SIG_IGN */ { continue }
            var action: sigaction = .init()
            action.__sigaction_handler.sa_sigaction = Self.fatalSignalHandler
            action.sa_flags = SA_SIGINFO | SA_ONSTACK
            sigemptyset(&action.sa_mask)
            var previous: sigaction = .init()
            sigaction(signal, &action, &previous)
            Self.previousActions[Int(signal)] = previous
        }
    }

    /// Kills the children, then lets the signal do what it did before this registry.
    static let fatalSignalHandler: @convention(c) (Int32, UnsafeMutablePointer<siginfo_t>?, UnsafeMutableRawPointer?) -> Void = { number, _, _ in
        ChildRegistry.shared.killAll()
        // The previous disposition back, then the signal again: a fault (a Swift trap is
        // ud2, SIGILL) comes back when its instruction runs again; the rest, SIGTRAP
        // from int3 among them (it resumes after the instruction), is raised here.
        let previous = ChildRegistry.previousActions[Int(number)]
        withUnsafePointer(to: previous) { _ = sigaction(number, $0, nil) }
        if number != SIGILL && number != SIGSEGV && number != SIGBUS && number != SIGFPE {
            raise(number)
        }
    }

    /// What each fatal signal did before, indexed by signal number; written once, before the
    /// handlers can run.
    nonisolated(unsafe) static var previousActions: [sigaction] = Array(repeating: .init(), count: 65)
}
