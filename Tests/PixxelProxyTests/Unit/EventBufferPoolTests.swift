import CLibevent
import EventBufferPool
import Glibc
import Testing

/// libevent's buffer chains are kept per thread and reused, so that the ones freed while the
/// cache stores entries leave no holes among them. Each test runs on one thread (synchronous),
/// and first takes what the thread's pool already holds, so that it starts from an empty pool.
@Suite struct EventBufferPoolTests {
    /// Takes every block of `bytes` the calling thread keeps.
    private func drained(_ bytes: Int) -> [UnsafeMutableRawPointer] {
        var taken: [UnsafeMutableRawPointer] = []
        while pp_event_buffer_pool_kept(bytes) > 0, let block = pp_event_buffer_pool_malloc(bytes) { taken.append(block) }
        return taken
    }

    private func keptOfEverySize() -> Int {
        (10...16).reduce(0) { $0 + pp_event_buffer_pool_kept(1 << $1) }
    }

    @Test func libeventAllocatesItsBuffersThroughThePool() throws {
        #expect(pp_event_buffer_pool_installed() == 1)
        let held = (10...16).flatMap { drained(1 << $0) }
        defer { held.forEach(pp_event_buffer_pool_free) }
        let buffer = try #require(evbuffer_new())
        let bytes = [UInt8](repeating: 7, count: 100)
        #expect(evbuffer_add(buffer, bytes, bytes.count) == 0)
        evbuffer_free(buffer)
        #expect(keptOfEverySize() == 1)
    }

    @Test func aFreedChainIsReusedByTheNextOfItsSize() throws {
        let held = drained(2048)
        defer { held.forEach(pp_event_buffer_pool_free) }
        let first = try #require(pp_event_buffer_pool_malloc(2048))
        pp_event_buffer_pool_free(first)
        #expect(pp_event_buffer_pool_kept(2048) == 1)
        let second = try #require(pp_event_buffer_pool_malloc(2048))
        #expect(second == first)
        #expect(pp_event_buffer_pool_kept(2048) == 0)
        pp_event_buffer_pool_free(second)
    }

    @Test func aThreadKeepsAtMost256KiBOfEachSize() {
        let held = drained(2048)
        let blocks = (0..<200).compactMap { _ in pp_event_buffer_pool_malloc(2048) }
        #expect(blocks.count == 200)
        blocks.forEach(pp_event_buffer_pool_free)
        #expect(pp_event_buffer_pool_kept(2048) == 128)
        held.forEach(pp_event_buffer_pool_free)
        #expect(pp_event_buffer_pool_kept(2048) == 128)
    }

    @Test func sizesOtherThanItsPowersOfTwoPassThroughToMalloc() throws {
        let before = keptOfEverySize()
        for size in [1, 100, 512, 1500, 2049, 65537, 1 << 20] {
            let block = try #require(pp_event_buffer_pool_malloc(size))
            block.initializeMemory(as: UInt8.self, repeating: 1, count: size)
            pp_event_buffer_pool_free(block)
        }
        #expect(keptOfEverySize() == before)
        #expect(pp_event_buffer_pool_kept(1500) == 0)
    }

    @Test func aSecondFreeOfAKeptBlockAbortsAsMallocWould() async {
        await #expect(processExitsWith: .failure) {
            let block = pp_event_buffer_pool_malloc(4096)
            pp_event_buffer_pool_free(block)
            pp_event_buffer_pool_free(block)
        }
    }

    /// In a process of its own, where no other thread exits meanwhile: a thread keeps 128 blocks
    /// of 2 KiB and takes one of them back for a thread-exit destructor that runs after the
    /// pool's (its key is made later) and frees it; all 128 are freed when the thread ends, the
    /// last by a second round of destructors.
    @Test func aThreadsKeptBlocksAreFreedWhenItEnds() async {
        await #expect(processExitsWith: .success) {
            let before = pp_event_buffer_pool_released_at_thread_exit()
            var lateKey = pthread_key_t()
            precondition(pthread_key_create(&lateKey, { block in pp_event_buffer_pool_free(block) }) == 0)
            var thread = pthread_t()
            let made = pthread_create(&thread, nil, { key in
                let blocks = (0..<200).compactMap { _ in pp_event_buffer_pool_malloc(2048) }
                blocks.forEach(pp_event_buffer_pool_free)
                pthread_setspecific(pthread_key_t(UInt(bitPattern: key)), pp_event_buffer_pool_malloc(2048))
                return nil
            }, UnsafeMutableRawPointer(bitPattern: UInt(lateKey)))
            precondition(made == 0)
            pthread_join(thread, nil)
            let released = pp_event_buffer_pool_released_at_thread_exit() - before
            precondition(released == 128, "released \(released)")
        }
    }

    @Test func reallocKeepsTheBytesWhetherItShrinksOrGrows() throws {
        let block = try #require(pp_event_buffer_pool_malloc(600))
        let bytes = block.bindMemory(to: UInt8.self, capacity: 600)
        for index in 0..<600 { bytes[index] = UInt8(truncatingIfNeeded: index) }
        let shrunk = try #require(pp_event_buffer_pool_realloc(block, 500))
        #expect(shrunk == block)
        let grown = try #require(pp_event_buffer_pool_realloc(shrunk, 5000))
        let moved = grown.bindMemory(to: UInt8.self, capacity: 5000)
        #expect((0..<500).allSatisfy { moved[$0] == UInt8(truncatingIfNeeded: $0) })
        let fresh = try #require(pp_event_buffer_pool_realloc(nil, 64))
        pp_event_buffer_pool_free(fresh)
        pp_event_buffer_pool_free(grown)
        pp_event_buffer_pool_free(nil)
    }
}
