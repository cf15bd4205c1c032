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
        let registry = ChildRegistry(handlesExitAndSignals: false)
        registry.add(child.processIdentifier)
        registry.killAll()
        child.waitUntilExit()
        #expect(child.terminationReason == .uncaughtSignal && child.terminationStatus == SIGKILL)
        #expect(!ChildRegistry.shared.alive.contains(child.processIdentifier), "a reaped child leaves the registry")
    }

    @Test(arguments: ChildRegistry.fatalSignals)
    func aFatalSignalRunsTheRegistrysHandlerFirst(_ signal: Int32) throws {
        _ = ChildRegistry.shared
        var current: sigaction = .init()
        #expect(sigaction(signal, nil, &current) == 0)
        #expect(current.sa_flags & SA_SIGINFO != 0, "signal \(signal) has no handler of the registry's")
        #expect(current.__sigaction_handler.sa_sigaction != nil)
    }
}
