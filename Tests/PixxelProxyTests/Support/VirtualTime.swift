import Upstream

/// A clock and a scheduler in one, moved by hand: timers fire in order as time advances, so
/// the budget's rules are tested as pure logic, with no loop, no socket and no sleep.
final class VirtualTime: BudgetScheduler, @unchecked Sendable {
    private(set) var now: Double
    private var timers: [(at: Double, order: Int, wake: Wake)] = []
    private var order = 0

    init(now: Double = 1000) { self.now = now }

    final class Wake: BudgetWake {
        var action: (() -> Void)?
        init(_ action: @escaping () -> Void) { self.action = action }
        func cancel() { action = nil }
    }

    func wake(after seconds: Double, _ action: @escaping () -> Void) -> any BudgetWake {
        let wake = Wake(action)
        order += 1
        timers.append((now + max(seconds, 0), order, wake))
        return wake
    }

    /// Also for events of the test's own (a call finishing).
    func at(_ time: Double, _ action: @escaping () -> Void) {
        _ = wake(after: time - now, action)
    }

    /// Runs every timer due up to `time`, in order, each at its own instant.
    func advance(to time: Double) {
        while let next = timers.filter({ $0.wake.action != nil && $0.at <= time }).min(by: { ($0.at, $0.order) < ($1.at, $1.order) }) {
            timers.removeAll { $0.wake === next.wake }
            now = max(now, next.at)
            let action = next.wake.action
            next.wake.action = nil
            action?()
        }
        timers.removeAll { $0.wake.action == nil }
        now = max(now, time)
    }

    var clock: @Sendable () -> Double { { [unowned self] in self.now } }
}
