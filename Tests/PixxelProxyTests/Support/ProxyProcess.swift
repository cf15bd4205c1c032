import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A `pixxel-proxy serve` process of its own (a crash there must not take the test process with
/// it), with a reader and an admin token.
final class ProxyProcess: @unchecked Sendable {
    let process: ChildProcess
    let port: UInt16
    let readToken: String
    let writeToken: String
    let adminToken: String
    let log = LogSink()
    private let directory = TemporaryDirectory()

    init(upstreamPort: UInt16, environment: [String: String]) throws {
        let clients = directory.path + "/clients"
        func token(_ name: String, _ scopes: String) throws -> String {
            try ProcessTests.run(["token", "add", name, "--scopes", scopes, "--clients-file", clients]).stdout
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        readToken = try token("reader", "read")
        writeToken = try token("writer", "read,write")
        adminToken = try token("admin", "read,write,admin")
        (process, port) = try ProcessTests.startServe(simPort: upstreamPort, clients: clients, directory: directory,
                                                      extraEnvironment: environment, log: log)
    }

    /// `streams` of /admin/stats, or nil when the proxy does not answer.
    func streams() -> (running: Int, queued: Int)? {
        guard let stats = try? RawHTTPClient.request(port: port, target: "/admin/stats", headers: [("Authorization", adminToken)], timeoutSeconds: 5),
              let streams = stats.json?["streams"] as? [String: Any],
              let running = streams["running"] as? Int, let queued = streams["queued"] as? Int else { return nil }
        return (running, queued)
    }

    /// Upstream calls waiting in the budget (for a token or a connection), from `/admin/stats`.
    func budgetQueued() -> Int? {
        guard let stats = try? RawHTTPClient.request(port: port, target: "/admin/stats", headers: [("Authorization", adminToken)], timeoutSeconds: 5),
              let budget = stats.json?["budget"] as? [String: Any] else { return nil }
        return budget["queued"] as? Int
    }

    private let exited = Mutex(false)
    /// Set once the test has waited for the process itself.
    let stopped = Flag()

    /// Whether the process has exited (without waiting; it is reaped then).
    var hasExited: Bool {
        exited.withLock { done in
            if !done {
                var status: Int32 = 0
                done = waitpid(process.processIdentifier, &status, WNOHANG) == process.processIdentifier
                // Reaped: the pid may be reused, so the registry must not kill it at exit.
                if done { ChildRegistry.shared.remove(process.processIdentifier) }
            }
            return done
        }
    }

    /// What the process wrote to stderr that says it died (a Swift runtime trap).
    var crashReport: String? {
        log.all.joined().components(separatedBy: "\n").first { $0.contains("Fatal") || $0.contains("crashed") }
    }

    func stop() {
        guard !hasExited, !stopped.isSet else { return }
        process.terminate()
        process.waitUntilExit()
    }
}

/// A flag one thread sets and others poll.
final class Flag: Sendable {
    private let value = Mutex(false)
    var isSet: Bool { value.withLock { $0 } }
    func set() { value.withLock { $0 = true } }
}
