import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Children never outlive the test process: every child is registered until reaped, and the
/// exit and fatal-signal paths kill what is registered.
@Suite struct ChildRegistryTests {
    @Test func aChildIsRegisteredUntilReapedAndKillAllEndsIt() throws {
        let child = try ChildProcess("/bin/sleep", ["600"], environment: [:], stdout: .null, stderr: .null)
        #expect(ChildRegistry.shared.alive.contains(child.processIdentifier))
        // The exit path, on a registry of this test's own: the shared one's killAll would end
        // the children of the tests running beside this one.
        let registry = ChildRegistry()
        registry.add(child.processIdentifier)
        registry.killAll()
        child.waitUntilExit()
        #expect(child.terminationReason == .uncaughtSignal && child.terminationStatus == SIGKILL)
        #expect(!ChildRegistry.shared.alive.contains(child.processIdentifier), "a reaped child leaves the registry")
    }

    /// The crash path end to end: a test process that traps with a child alive (a Swift trap,
    /// which ends the process without running atexit) leaves no child behind.
    @Test func aChildDoesNotOutliveATestProcessThatTraps() async throws {
        let directory = TemporaryDirectory()
        let pidFile: String = directory.path + "/child.pid"
        await #expect(processExitsWith: .failure) { [pidFile = pidFile as String] in
            let child = try ChildProcess("/bin/sleep", ["600"], environment: [:], stdout: .null, stderr: .null)
            try "\(child.processIdentifier)".write(toFile: pidFile, atomically: true, encoding: .utf8)
            fatalError("a trap with a child alive")
        }
        let pid = try #require(pid_t(try String(contentsOfFile: pidFile, encoding: .utf8)))
        // Killed: gone, or a zombie until whoever inherited it reaps it. Alive, it would sleep.
        func state() -> Character? {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return nil }
            return stat[stat.index(close, offsetBy: 2)]
        }
        let gone = eventually { state() == nil || state() == "Z" }
        if !gone { kill(pid, SIGKILL) }
        #expect(gone, "the child of a process that trapped still runs (state \(state().map(String.init) ?? "-"))")
    }

    /// The handler must be the registry's own: the Swift runtime installs handlers with
    /// SA_SIGINFO for the crash signals too, so "some handler" would pass without the registry.
    @Test(arguments: ChildRegistry.fatalSignals)
    func aFatalSignalRunsTheRegistrysHandlerFirst(_ signal: Int32) throws {
        // Installed by the first child any test starts; this test may run before any did.
        ChildRegistry.ensureHandlersInstalled()
        var current: sigaction = .init()
        #expect(sigaction(signal, nil, &current) == 0)
        let ignored = current.sa_flags & SA_SIGINFO == 0
            && current.__sigaction_handler.sa_handler.map { unsafeBitCast($0, to: Int.self) } == 1 /* SIG_IGN */
        if ignored {
            // A signal the process was started ignoring (SIGHUP under nohup) stays ignored.
            #expect(ChildRegistry.previousActions[Int(signal)].__sigaction_handler.sa_handler
                .map { unsafeBitCast($0, to: Int.self) } == nil, "signal \(signal) was ignored by someone else")
            return
        }
        #expect(current.sa_flags & SA_SIGINFO != 0, "signal \(signal) has no handler of the registry's")
        let installed = current.__sigaction_handler.sa_sigaction.map { unsafeBitCast($0, to: Int.self) }
        #expect(installed == unsafeBitCast(ChildRegistry.fatalSignalHandler, to: Int.self),
                "signal \(signal) runs a handler other than the registry's")
    }
}
