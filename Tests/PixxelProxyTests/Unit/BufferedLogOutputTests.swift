import Foundation
import Logging
import ProxyServer
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The batched log output, over a pipe: bounded, honest about what it drops, prompt with warnings.
@Suite struct BufferedLogOutputTests {
    /// A pipe whose read end does not block.
    static func pipeEnds() -> (read: Int32, write: Int32) {
        var ends: [Int32] = [0, 0]
        precondition(pipe(&ends) == 0)
        _ = fcntl(ends[0], F_SETFL, fcntl(ends[0], F_GETFL) | O_NONBLOCK)
        return (ends[0], ends[1])
    }

    static func drain(_ fd: Int32) -> String {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = read(fd, &buffer, buffer.count)
            guard n > 0 else { break }
            out += buffer[..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }

    @Test func infoWaitsForTheBatchWarningsGoAtOnce() {
        let (readEnd, writeEnd) = Self.pipeEnds()
        defer { close(readEnd); close(writeEnd) }
        // A batch interval far longer than the test: only explicit flushes and warnings write.
        let output = BufferedLogOutput(fd: writeEnd, flushMilliseconds: 3_600_000)
        output.append(level: .info, label: "pixxel-proxy", fields: [("a", "1"), ("b", "2")], source: "Test", message: "first")
        #expect(Self.drain(readEnd).isEmpty, "an info line waits for the batch")
        output.append(level: .warning, label: "pixxel-proxy", fields: [], source: "Test", message: "second")
        let written = Self.drain(readEnd).split(separator: "\n").map(String.init)
        #expect(written.count == 2, "the warning takes the lines before it along, in order: \(written)")
        #expect(written.first?.hasSuffix(" info pixxel-proxy: a=1 b=2 [Test] first") == true)
        #expect(written.last?.hasSuffix(" warning pixxel-proxy: [Test] second") == true)
    }

    /// A busy proxy's 50 ms batch was a megabyte, written in one go from under the load; a
    /// batch is written once it holds 64 KiB, whatever the interval.
    @Test func aBatchOf64KiBIsWrittenWithoutWaitingForTheInterval() throws {
        let (readEnd, writeEnd) = Self.pipeEnds()
        defer { close(readEnd); close(writeEnd) }
        // A pipe larger than the batch: the writer never blocks on it, and the test reads the
        // whole batch before it closes the pipe (found by review: closing the read end while the
        // writer blocked in a 64 KiB pipe raised SIGPIPE in the test process).
        _ = fcntl(writeEnd, 1031 /* F_SETPIPE_SZ, not visible to Swift */, Int32(1 << 20))
        let output = BufferedLogOutput(fd: writeEnd, maxBufferedBytes: 1 << 20, flushMilliseconds: 3_600_000)
        let padding = String(repeating: "x", count: 200)
        var appended = 0
        while appended < (64 << 10) + 1024 {
            output.appendLine(level: .info, label: "pixxel-proxy") { line in
                line += " pad=\(padding) [Test] access".utf8
            }
            appended += 260
        }
        var received = ""
        let deadline = ContinuousClock.now + .seconds(10)
        while !received.contains(" info pixxel-proxy: pad=\(padding) [Test] access\n"), ContinuousClock.now < deadline {
            let more = Self.drain(readEnd)
            received += more
            if more.isEmpty { usleep(5_000) }
        }
        #expect(received.contains(" info pixxel-proxy: pad=\(padding) [Test] access\n"), "the writer was woken by the size")
        output.flush()  // whatever the writer still held is out before the pipe closes
        received += Self.drain(readEnd)
    }

    @Test func aFullBufferDropsLinesAndSaysHowMany() {
        let (readEnd, writeEnd) = Self.pipeEnds()
        defer { close(readEnd); close(writeEnd) }
        let output = BufferedLogOutput(fd: writeEnd, maxBufferedBytes: 400, flushMilliseconds: 3_600_000)
        for index in 0..<20 {
            output.append(level: .info, label: "pixxel-proxy", fields: [("n", String(index))], source: "Test", message: "line")
        }
        output.flush()
        // The writer thread, woken by the first drop, may have taken a batch meanwhile; the
        // flush returns only once that is written too, so every line is either written or
        // counted in a "dropped=N" note.
        let lines = Self.drain(readEnd).split(separator: "\n").map(String.init)
        let kept = lines.filter { $0.contains("[Test] line") }.count
        let dropped = lines.compactMap { $0.firstMatch(of: #/dropped=(\d+) /#).flatMap { Int($0.output.1) } }.reduce(0, +)
        #expect(kept > 0 && dropped > 0)
        #expect(kept + dropped == 20, "\(lines)")
    }

    @Test func theHandlerWritesStreamLogHandlersShapeWithSortedKeys() {
        let (readEnd, writeEnd) = Self.pipeEnds()
        defer { close(readEnd); close(writeEnd) }
        let output = BufferedLogOutput(fd: writeEnd, flushMilliseconds: 3_600_000)
        let logger = Logger(label: "pixxel-proxy") { output.handler(label: $0) }
        logger.info("hello", metadata: ["zeta": "z", "alpha": "a", "count": .stringConvertible(3)])
        output.flush()
        let line = Self.drain(readEnd)
        let shape = try! Regex(#"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} info pixxel-proxy: alpha=a count=3 zeta=z \[\w+\] hello\n$"#)
        #expect(line.wholeMatch(of: shape) != nil, "\(line)")
    }
}
