import EventHTTP

/// How the budget gets woken later. The event loop is one (`EventLoop` conforms below); pure
/// tests pass a virtual clock that fires timers as it advances, so every rule of the budget
/// is checked without a socket or a sleep.
public protocol BudgetScheduler: AnyObject {
    func wake(after seconds: Double, _ action: @escaping () -> Void) -> any BudgetWake
}

/// A pending wake-up that can be called off.
public protocol BudgetWake: AnyObject {
    func cancel()
}

extension LoopTimer: BudgetWake {}

extension EventLoop: BudgetScheduler {
    public func wake(after seconds: Double, _ action: @escaping () -> Void) -> any BudgetWake {
        schedule(after: seconds, action)
    }
}

/// The one upstream budget every call passes through: a token bucket
/// (`upstream.requests_per_second`, `upstream.burst`), a pause after the upstream's
/// `Retry-After`, and a bounded fair queue for calls that must wait. Owned by the loop thread.
///
/// Its guarantees (each has a pure test in `BudgetTests`):
/// - in any one-second window at most `rate + burst` calls are granted, however connections
///   free up: a token is taken only when a connection can take the call at once;
/// - no call is granted during a `Retry-After` pause;
/// - nobody waits past its deadline: a waiter is refused at its deadline at the latest;
/// - a caller with something else to give (stale data) is refused at once during a pause.
///
/// `clock` is monotonic seconds (a wall-clock step backwards must not stall the bucket).
public final class UpstreamBudget {
    public typealias Priority = FairQueue<Waiter>.Priority

    /// Why a call may not go.
    public enum Refusal: Sendable, Equatable {
        /// The budget is spent or the upstream paused us: try again after this many seconds.
        case rateLimited(retryAfter: Double)
        /// Tokens are there but every upstream connection is busy and the queue is full.
        case busy
        /// Its deadline came while it waited for a connection (not for a token).
        case timedOut
    }

    /// A call waiting for a token and a connection.
    public final class Waiter {
        let deadline: Double
        /// False: the caller has something else to give (stale data) and is not to wait out a pause.
        let waitsDuringPause: Bool
        /// The caller holds its connection already (a streamed transfer): `canStart` is not asked.
        let holdsConnection: Bool
        let grant: () -> Void
        let refuse: (Refusal) -> Void
        init(deadline: Double, waitsDuringPause: Bool, holdsConnection: Bool, grant: @escaping () -> Void,
             refuse: @escaping (Refusal) -> Void) {
            self.deadline = deadline
            self.waitsDuringPause = waitsDuringPause
            self.holdsConnection = holdsConnection
            self.grant = grant
            self.refuse = refuse
        }
    }

    private let scheduler: any BudgetScheduler
    private let clock: @Sendable () -> Double
    private var bucket: TokenBucket
    private var queue = FairQueue<Waiter>()
    private let maxQueued: Int
    private var wakeTimer: (any BudgetWake)?
    /// No upstream call before this instant (the upstream's Retry-After).
    public private(set) var pausedUntil: Double = 0
    public private(set) var pauses = 0
    public private(set) var refused = 0

    public init(scheduler: any BudgetScheduler, rate: Double, burst: Double, maxQueued: Int, clock: @escaping @Sendable () -> Double) {
        self.scheduler = scheduler
        self.clock = clock
        self.maxQueued = maxQueued
        bucket = TokenBucket(rate: rate, burst: burst, now: clock())
    }

    /// Whether a granted call would start at once (an upstream connection is free). A token
    /// is taken only when the call can go: a token taken while the call then waits for a
    /// connection would let calls pile up and start together when connections free up, above
    /// the rate. Nil: always.
    public var canStart: (() -> Bool)?

    public var queued: Int { queue.count }

    /// A connection freed up: waiters may go.
    public func capacityFreed() {
        if queue.count > 0 { drain() }
    }
    public var tokens: Double { bucket.tokens }

    /// Seconds left of an upstream pause (0 when none).
    public func pauseRemaining() -> Double { max(0, pausedUntil - clock()) }

    /// Asks for one upstream call. `grant` runs when it may go (at once or later, on the loop);
    /// `refuse` runs with a Retry-After when it cannot go before `deadline` (at the deadline at
    /// the latest, never after), when the queue is full, or at once during an upstream pause
    /// when the caller has something else to give (`waitsDuringPause` false: stale data).
    /// `holdsConnection`: the caller has its connection already, so no free one is needed.
    public func acquire(client: String, priority: Priority, deadline: Double, waitsDuringPause: Bool = true, holdsConnection: Bool = false,
                        grant: @escaping () -> Void, refuse: @escaping (Refusal) -> Void) {
        let now = clock()
        // A request whose deadline has passed (it spent it on an earlier call) makes no call.
        guard deadline > now else {
            refused += 1
            return refuse(.timedOut)
        }
        if pausedUntil > now {
            guard waitsDuringPause, pausedUntil < deadline else {
                refused += 1
                return refuse(.rateLimited(retryAfter: pausedUntil - now))
            }
        } else if queue.count == 0, holdsConnection || canStart?() ?? true, bucket.take(now: now) {
            return grant()
        }
        guard queue.count < maxQueued else {
            refused += 1
            guard waitsForBudget(now: now) else { return refuse(.busy) }
            // During a pause the pause's end is the honest answer; else the time the queue
            // ahead takes at the rate.
            let retryAfter = pausedUntil > now ? pausedUntil - now : max(1, Double(queue.count) / max(bucket.rate, 1))
            return refuse(.rateLimited(retryAfter: retryAfter))
        }
        queue.push(Waiter(deadline: deadline, waitsDuringPause: waitsDuringPause, holdsConnection: holdsConnection, grant: grant,
                          refuse: refuse), client: client, priority: priority)
        scheduleWake()
    }

    /// Stops every call for `seconds` from now (an upstream 429 or 503 with Retry-After).
    public func pause(seconds: Double) {
        let until = clock() + seconds
        guard until > pausedUntil else { return }
        pausedUntil = until
        pauses += 1
        // Those already queued are judged as if they came now: a caller with stale data gets
        // it at once, one whose deadline falls inside the pause its 429 at once (found by review:
        // both waited out their whole timeout).
        refuseThoseThePauseOutlasts(now: clock())
        scheduleWake()
    }

    private func refuseThoseThePauseOutlasts(now: Double) {
        guard pausedUntil > now, queue.count > 0 else { return }
        let until = pausedUntil
        for waiter in queue.removeAll(where: { !$0.waitsDuringPause || $0.deadline <= until }) {
            refused += 1
            waiter.refuse(.rateLimited(retryAfter: until - now))
        }
    }

    /// Wakes the queue when a waiter may go (the pause's end, the next token) or when the
    /// first waiter's deadline comes, whichever is sooner: nobody waits past its deadline.
    private func scheduleWake() {
        wakeTimer?.cancel()
        guard queue.count > 0 else { return }
        let now = clock()
        var nextGrant = max(pausedUntil - now, bucket.secondsUntilToken(now: now), 0)
        // Tokens but no free connection: `capacityFreed` wakes the queue, not a timer.
        if nextGrant == 0, !queue.contains(where: \.holdsConnection), !(canStart?() ?? true) { nextGrant = .infinity }
        let firstDeadline = (queue.earliest(by: \.deadline) ?? .infinity) - now
        let delay = min(nextGrant, max(firstDeadline, 0))
        guard delay.isFinite else { return }
        wakeTimer = scheduler.wake(after: max(delay, 0.001)) { [weak self] in self?.drain() }
    }

    /// Whether what holds calls back is the budget (a pause, no token) rather than busy connections.
    private func waitsForBudget(now: Double) -> Bool {
        pausedUntil > now || bucket.secondsUntilToken(now: now) > 0
    }

    /// Not re-entered: a grant whose call fails to start at once reports capacity from inside
    /// the loop below, which goes on by itself.
    private var draining = false

    private func drain() {
        guard !draining else { return }
        draining = true
        defer { draining = false }
        let now = clock()
        for waiter in queue.removeAll(where: { $0.deadline <= now }) {
            refused += 1
            waiter.refuse(waitsForBudget(now: now) ? .rateLimited(retryAfter: max(pausedUntil - now, 1)) : .timedOut)
        }
        while pausedUntil <= now, let next = queue.peek(), next.holdsConnection || canStart?() ?? true, bucket.take(now: now),
              let waiter = queue.pop() {
            waiter.grant()
        }
        // The first in line waits for a connection; those that hold theirs need none and are
        // not held behind it (with one connection, it may be the one they hold).
        while pausedUntil <= now, queue.contains(where: \.holdsConnection), bucket.take(now: now),
              let waiter = queue.removeFirst(where: \.holdsConnection) {
            waiter.grant()
        }
        scheduleWake()
    }
}
