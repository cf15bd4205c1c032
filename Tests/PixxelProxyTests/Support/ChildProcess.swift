import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A child process started with posix_spawn. Foundation's `Process.run` has crashed the test
/// process on Linux now and then (an over-read in swift-corelibs-foundation, #5472); this does
/// the little the tests need without it: arguments, environment, stdout and stderr to a pipe
/// or /dev/null, signals, and the exit status.
final class ChildProcess: @unchecked Sendable {
    enum Output { case pipe, null }
    enum TerminationReason { case exit, uncaughtSignal }

    let processIdentifier: pid_t
    /// Read ends of the pipes asked for (nil for /dev/null).
    let standardOutput: FileHandle?
    let standardError: FileHandle?
    private(set) var terminationStatus: Int32 = 0
    private(set) var terminationReason = TerminationReason.exit
    private var exited = false

    /// `stderr: nil` sends stderr where stdout goes (one pipe for both when stdout is `.pipe`).
    init(_ path: String, _ arguments: [String], environment: [String: String], stdout: Output, stderr: Output?) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var closeInParent: [Int32] = []
        func pipeEnds() throws -> (read: Int32, write: Int32) {
            var fds: [Int32] = [0, 0]
            guard pipe(&fds) == 0 else { throw RawHTTPError(description: "pipe failed") }
            return (fds[0], fds[1])
        }
        var outRead: Int32?, errRead: Int32?
        switch stdout {
        case .pipe:
            let ends = try pipeEnds()
            outRead = ends.read
            posix_spawn_file_actions_adddup2(&actions, ends.write, 1)
            posix_spawn_file_actions_addclose(&actions, ends.read)
            closeInParent.append(ends.write)
            if stderr == nil { posix_spawn_file_actions_adddup2(&actions, ends.write, 2) }
        case .null:
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
            if stderr == nil { posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0) }
        }
        switch stderr {
        case .pipe?:
            let ends = try pipeEnds()
            errRead = ends.read
            posix_spawn_file_actions_adddup2(&actions, ends.write, 2)
            posix_spawn_file_actions_addclose(&actions, ends.read)
            closeInParent.append(ends.write)
        case .null?:
            posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        case nil:
            break
        }
        // Nothing else the test process holds reaches the child: tests run side by side, and a
        // long-lived child (a Redis, a proxy) holding a copy of another test's socket keeps that
        // connection open after the test closes it.
        _ = Self.addCloseFrom?(&actions, 3)
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let status = posix_spawn(&pid, path, &actions, nil, argv, envp)
        closeInParent.forEach { close($0) }
        guard status == 0 else {
            [outRead, errRead].compactMap { $0 }.forEach { close($0) }
            throw RawHTTPError(description: "cannot start \(path): \(String(cString: strerror(status)))")
        }
        processIdentifier = pid
        ChildRegistry.shared.add(pid)
        standardOutput = outRead.map { FileHandle(fileDescriptor: $0, closeOnDealloc: true) }
        standardError = errRead.map { FileHandle(fileDescriptor: $0, closeOnDealloc: true) }
    }

    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34 and later), which Swift's Glibc
    /// module does not declare (it needs _GNU_SOURCE).
    private static let addCloseFrom: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
    }()

    /// A child its test never waited for (the test threw or returned early) ends with it.
    deinit {
        guard !exited else { return }
        kill(processIdentifier, SIGKILL)
        waitUntilExit()
    }

    func signal(_ number: Int32) { kill(processIdentifier, number) }
    func terminate() { signal(SIGTERM) }
    func interrupt() { signal(SIGINT) }

    func waitUntilExit() {
        guard !exited else { return }
        var status: Int32 = 0
        while waitpid(processIdentifier, &status, 0) < 0 && errno == EINTR {}
        exited = true
        ChildRegistry.shared.remove(processIdentifier)
        // WIFEXITED / WEXITSTATUS / WTERMSIG, which are macros.
        if status & 0x7F == 0 {
            terminationReason = .exit
            terminationStatus = (status >> 8) & 0xFF
        } else {
            terminationReason = .uncaughtSignal
            terminationStatus = status & 0x7F
        }
    }

    /// Resident set size in bytes, from /proc (0 once the process is gone).
    var residentBytes: Int {
        guard let text = try? String(contentsOfFile: "/proc/\(processIdentifier)/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kilobytes = Int(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
        return kilobytes * 1024
    }
}
