import CLibevent
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One libevent `event_base` and the thread that runs it: timers, signals, and a thread-safe
/// way for other threads to hand work to the loop.
///
/// Everything but `execute(_:)`, `stop()` and `run()` must be called on the loop thread (or
/// before `run()` starts). Objects created on the loop (servers, clients, timers) belong to it.
/// Unchecked Sendable for that reason: the thread-safe members are `execute` (a Mutex-guarded
/// queue and libevent's thread-safe `event_active`), `stop` (`event_base_loopexit` is
/// thread-safe once threading is enabled) and the Mutex-guarded loop thread id.
public final class EventLoop: @unchecked Sendable {
    /// The libevent base; valid for the loop's lifetime.
    public let base: OpaquePointer
    private var wakeEvent: OpaquePointer?
    private let pending = Mutex<[@Sendable () -> Void]>([])
    private var dnsBase: OpaquePointer?

    /// libevent must be told to use pthread locks before the first base is created, so that
    /// `event_active` and `event_base_loopexit` are safe from other threads.
    private static let threadingEnabled: Bool = {
        evthread_use_pthreads() == 0
    }()

    public init() {
        precondition(Self.threadingEnabled, "libevent: evthread_use_pthreads failed")
        guard let base = event_base_new() else { fatalError("libevent: event_base_new failed") }
        self.base = base
        let context = Unmanaged.passUnretained(self).toOpaque()
        wakeEvent = event_new(base, -1, Int16(EV_PERSIST), { _, _, context in
            Unmanaged<EventLoop>.fromOpaque(context!).takeUnretainedValue().drainPending()
        }, context)
        event_add(wakeEvent, nil)
    }

    deinit {
        if let wakeEvent { event_free(wakeEvent) }
        if let dnsBase { evdns_base_free(dnsBase, 0) }
        event_base_free(base)
    }

    /// Runs the loop on the calling thread until `stop()`.
    public func run() {
        loopThread.withLock { $0 = pthread_self() }
        defer { loopThread.withLock { $0 = nil } }
        event_base_loop(base, EVLOOP_NO_EXIT_ON_EMPTY)
    }

    /// The thread inside `run()`, while it runs.
    private let loopThread = Mutex<pthread_t?>(nil)

    /// Stops a debug build when called off the loop thread while the loop runs (as SwiftNIO's
    /// `preconditionInEventLoop`): loop-only state has no locks. Free in release builds.
    @inlinable
    public func assertOnLoop(file: StaticString = #fileID, line: UInt = #line) {
        assert(isOnLoopOrNotRunning, "called off the event loop's thread", file: file, line: line)
    }

    /// True on the loop thread, and before or after the loop runs (set-up and tear-down).
    public var isOnLoopOrNotRunning: Bool {
        guard let thread = loopThread.withLock({ $0 }) else { return true }
        return pthread_equal(thread, pthread_self()) != 0
    }

    /// True only on the loop thread while the loop runs: a caller that would wait for work it
    /// hands to the loop must not be this thread.
    public var isOnLoopThread: Bool {
        guard let thread = loopThread.withLock({ $0 }) else { return false }
        return pthread_equal(thread, pthread_self()) != 0
    }

    /// Makes `run()` return after the current iteration. Safe from any thread.
    public func stop() {
        event_base_loopexit(base, nil)
    }

    /// Queues `work` to run on the loop thread. Safe from any thread.
    public func execute(_ work: @escaping @Sendable () -> Void) {
        pending.withLock { $0.append(work) }
        event_active(wakeEvent, EV_READ, 0)
    }

    private func drainPending() {
        let batch = pending.withLock { queue -> [@Sendable () -> Void] in
            let batch = queue
            queue.removeAll(keepingCapacity: true)
            return batch
        }
        for work in batch { work() }
    }

    /// The asynchronous DNS resolver of this loop, created on first use. A NULL `evdns_base`
    /// would make libevent resolve host names with a blocking `getaddrinfo` on the loop.
    public var dns: OpaquePointer {
        if let dnsBase { return dnsBase }
        guard let created = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS) else {
            fatalError("libevent: evdns_base_new failed")
        }
        dnsBase = created
        return created
    }

    /// Runs `action` once after `seconds`. Cancel with the returned timer's `cancel()`.
    @discardableResult
    public func schedule(after seconds: Double, _ action: @escaping () -> Void) -> LoopTimer {
        let timer = LoopTimer(loop: self, action: action)
        timer.start(after: seconds)
        return timer
    }

    /// Calls `action` on the loop thread each time `signal` arrives, until the handler is released.
    public func onSignal(_ signal: Int32, _ action: @escaping () -> Void) -> SignalHandler {
        SignalHandler(loop: self, signal: signal, action: action)
    }
}

/// A one-shot timer on an `EventLoop`. It keeps itself alive while armed.
public final class LoopTimer {
    private var event: OpaquePointer?
    private var action: (() -> Void)?
    private var armedSelf: Unmanaged<LoopTimer>?
    /// The event base outlives the event (as `SignalHandler`'s).
    private let loop: EventLoop

    init(loop: EventLoop, action: @escaping () -> Void) {
        self.action = action
        self.loop = loop
        event = event_new(loop.base, -1, 0, { _, _, context in
            Unmanaged<LoopTimer>.fromOpaque(context!).takeUnretainedValue().fire()
        }, Unmanaged.passUnretained(self).toOpaque())
    }

    deinit {
        if let event { event_free(event) }
    }

    func start(after seconds: Double) {
        var delay = timeval(seconds: seconds)
        armedSelf = Unmanaged.passRetained(self)
        event_add(event, &delay)
    }

    /// Disarms the timer; its action will not run.
    public func cancel() {
        guard let armed = armedSelf else { return }
        event_del(event)
        action = nil
        armedSelf = nil
        armed.release()
    }

    private func fire() {
        let action = self.action
        self.action = nil
        let armed = armedSelf
        armedSelf = nil
        action?()
        armed?.release()
    }
}

/// A signal subscription on an `EventLoop`; the signal is handled while this object lives.
public final class SignalHandler {
    private var event: OpaquePointer?
    private let action: () -> Void
    /// Held so that the loop's event base outlives the event: an owner that released its loop
    /// before its handlers (stored properties go in declaration order) had `event_del` lock
    /// a freed base, and a stopping proxy hung in its deinit (found by a hung test run).
    private let loop: EventLoop

    init(loop: EventLoop, signal: Int32, action: @escaping () -> Void) {
        self.action = action
        self.loop = loop
        event = event_new(loop.base, signal, Int16(EV_SIGNAL | EV_PERSIST), { _, _, context in
            Unmanaged<SignalHandler>.fromOpaque(context!).takeUnretainedValue().action()
        }, Unmanaged.passUnretained(self).toOpaque())
        event_add(event, nil)
    }

    deinit {
        if let event {
            event_del(event)
            event_free(event)
        }
    }
}

extension timeval {
    init(seconds: Double) {
        let clamped = max(0, seconds)
        let whole = clamped.rounded(.down)
        self.init(tv_sec: Int(whole), tv_usec: Int((clamped - whole) * 1_000_000))
    }
}

/// Carries a loop-only value (a completion, an exchange) through another thread (a disk queue,
/// a continuation) to its loop. It is Sendable only because the value is never touched off
/// that loop: every read checks so in debug builds (as SwiftNIO's `NIOLoopBound`), and while
/// the loop is not running (set-up and tear-down) any thread may read it. It may be made on
/// another thread and handed over, as a value made before the loop's work is queued.
public final class LoopBound<Value>: @unchecked Sendable {
    private let loop: EventLoop
    private let stored: Value

    public var value: Value {
        loop.assertOnLoop()
        return stored
    }

    public init(_ value: Value, loop: EventLoop) {
        self.loop = loop
        stored = value
    }
}
