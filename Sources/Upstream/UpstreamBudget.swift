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

    /// Tokens from the budget several instances share (nil: this instance's bucket is the budget).
    private let shared: (any SharedTokenSource)?
    /// One question to Redis at a time: grants stay in the fair queue's order.
    private var askingShared = false
    /// Redis said no token before this instant.
    private var sharedRetryAt: Double = 0
    /// Calls granted with a token from Redis, and with the local share while it was away.
    public private(set) var sharedGrants = 0
    public private(set) var localGrants = 0
    /// When the latest calls went through the door, on this budget's clock, oldest first (at
    /// most `grantInstantsKept`). The window promise above is about these instants; a check
    /// through the real server reads them rather than arrival times at the upstream, which add
    /// the delivery jitter of a loaded machine.
    public private(set) var recentGrantInstants: [Double] = []
    static let grantInstantsKept = 1024

    /// `shared`: the budget several instances share; this instance's own bucket is then its
    /// share (`rate / instances`, `burst / instances`, at least 1), spent only while Redis is
    /// away, so that N instances acting alone together stay within the budget.
    public init(scheduler: any BudgetScheduler, rate: Double, burst: Double, maxQueued: Int, clock: @escaping @Sendable () -> Double,
                shared: (any SharedTokenSource)? = nil, instances: Int = 1) {
        self.scheduler = scheduler
        self.clock = clock
        self.maxQueued = maxQueued
        // With an unlimited rate Redis is still asked before each call: its answer carries
        // the pause another instance saw.
        self.shared = shared
        let share = shared == nil ? 1 : Double(max(1, instances))
        bucket = TokenBucket(rate: rate / share, burst: max(1, (burst / share).rounded(.down)), now: clock())
    }

    /// The longest pause this instance honours (`upstream.max_retry_after_seconds`), also for
    /// a pause found in Redis, which another instance (with another cap) may have set.
    public var maxPauseSeconds = Double.infinity

    /// Whether tokens come from Redis now.
    private var usesShared: Bool { shared?.isAvailable ?? false }

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
        } else if queue.count == 0, !usesShared, holdsConnection || canStart?() ?? true, bucket.take(now: now) {
            noteGrant(now: now, fromShared: false)
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
        if usesShared { drain() } else { scheduleWake() }
    }

    /// Stops every call for `seconds` from now (an upstream 429 or 503 with Retry-After), in
    /// every instance sharing the budget.
    public func pause(seconds: Double) {
        shared?.sharePause(seconds: seconds)
        pauseHere(seconds: seconds)
    }

    /// The same pause, learnt from another instance (not told again).
    public func pauseHere(seconds: Double) {
        let until = clock() + seconds
        guard until > pausedUntil else { return }
        pausedUntil = until
        pauses += 1
        // Those already queued are judged as if they came now: a caller with stale data gets
        // it at once, one whose deadline falls inside the pause its 429 at once, rather than
        // either waiting out its whole timeout.
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
        // From Redis: its answer drives the queue; else its last "not before".
        let untilToken = usesShared ? (askingShared ? .infinity : sharedRetryAt - now) : bucket.secondsUntilToken(now: now)
        var nextGrant = max(pausedUntil - now, untilToken, 0)
        // Tokens but no free connection: `capacityFreed` wakes the queue, not a timer.
        if nextGrant == 0, !queue.contains(where: \.holdsConnection), !(canStart?() ?? true) { nextGrant = .infinity }
        let firstDeadline = (queue.earliest(by: \.deadline) ?? .infinity) - now
        let delay = min(nextGrant, max(firstDeadline, 0))
        guard delay.isFinite else { return }
        wakeTimer = scheduler.wake(after: max(delay, 0.001)) { [weak self] in self?.drain() }
    }

    private func noteGrant(now: Double, fromShared: Bool) {
        if fromShared { sharedGrants += 1 } else { localGrants += 1 }
        if recentGrantInstants.count == Self.grantInstantsKept { recentGrantInstants.removeFirst(Self.grantInstantsKept / 4) }
        recentGrantInstants.append(now)
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
        if usesShared {
            askShared(now: now)
            return scheduleWake()
        }
        while pausedUntil <= now, anyCanStart, bucket.take(now: now), let waiter = nextThatCanStart() {
            noteGrant(now: now, fromShared: false)
            waiter.grant()
        }
        scheduleWake()
    }

    /// The waiter that a token would let go now: the first in line when a connection is free,
    /// else the first that holds its own (those need none and are not held behind one that
    /// waits for a connection: with one connection, it may be the one they hold).
    private func nextThatCanStart() -> Waiter? {
        if let next = queue.peek(), next.holdsConnection || canStart?() ?? true { return queue.pop() }
        return queue.removeFirst(where: \.holdsConnection)
    }

    private var anyCanStart: Bool {
        guard let next = queue.peek() else { return false }
        return next.holdsConnection || canStart?() ?? true || queue.contains(where: \.holdsConnection)
    }

    /// Asks Redis for one token for the next waiter that can start. A token comes back to
    /// whoever is first then (a waiter that left meanwhile gives its turn on); a token with
    /// nobody left to use it is dropped, never kept for later: a kept token would let calls
    /// start together above the rate.
    private func askShared(now: Double) {
        guard let shared, !askingShared, pausedUntil <= now, sharedRetryAt <= now, anyCanStart else { return }
        askingShared = true
        shared.takeToken { [weak self] answer in
            guard let self else { return }
            askingShared = false
            let now = clock()
            switch answer {
            case .granted:
                if let waiter = nextThatCanStart() {
                    noteGrant(now: now, fromShared: true)
                    waiter.grant()
                } else {
                    sharedGrants += 1   // spent in Redis, though nobody is left to use it
                }
            case .wait(let seconds, let paused):
                if paused { pauseHere(seconds: min(seconds, maxPauseSeconds)) } else { sharedRetryAt = now + seconds }
            case .unavailable:
                // Redis did not answer in time: this call goes on this instance's share.
                if anyCanStart, bucket.take(now: now), let waiter = nextThatCanStart() {
                    noteGrant(now: now, fromShared: false)
                    waiter.grant()
                } else {
                    sharedRetryAt = now + max(0.001, bucket.secondsUntilToken(now: now))
                }
            }
            drain()
        }
    }
}
