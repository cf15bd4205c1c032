import EventHTTP
import Foundation
import Synchronization
import Testing

/// A `LoopBound` value is read only on its loop: in debug builds a read from another thread
/// while the loop runs traps, so a completion carried through a disk queue cannot be run on
/// the queue by mistake.
@Suite struct LoopBoundTests {
    @Test func aValueIsReadOnItsLoop() {
        let loop = EventLoop()
        let thread = Thread { loop.run() }
        thread.start()
        defer { loop.stop() }
        let bound = LoopBound(41, loop: loop)
        let read = DispatchSemaphore(value: 0)
        let seen = Mutex(0)
        loop.execute {
            seen.withLock { $0 = bound.value + 1 }
            read.signal()
        }
        read.wait()
        #expect(seen.withLock { $0 } == 42)
    }

    #if DEBUG
    @Test func aReadFromAnotherThreadWhileTheLoopRunsTraps() async {
        await #expect(processExitsWith: .failure) {
            let loop = EventLoop()
            let running = DispatchSemaphore(value: 0)
            let thread = Thread { loop.run() }
            thread.start()
            loop.execute { running.signal() }
            running.wait()
            let bound = LoopBound(1, loop: loop)
            _ = bound.value
        }
    }
    #endif
}
