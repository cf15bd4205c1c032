import EventHTTP
import Foundation

/// An event loop run on a thread of its own (from `start()`) until `stop()`, which waits for it.
final class RunningLoop: @unchecked Sendable {
    let loop = EventLoop()
    private let stopped = DispatchSemaphore(value: 0)

    /// `startNow` false: the caller sets up what belongs to the loop first, then calls `start()`.
    init(startNow: Bool = true) {
        if startNow { start() }
    }

    func start() {
        let loop = self.loop, stopped = self.stopped
        Thread {
            loop.run()
            stopped.signal()
        }.start()
    }

    func stop() {
        loop.stop()
        stopped.wait()
    }
}
