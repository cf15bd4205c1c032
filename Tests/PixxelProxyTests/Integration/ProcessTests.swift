import Foundation
import PixxelSim
import Testing

/// The real `pixxel-proxy` executable: configuration errors, check-config, signals and drain.
@Suite struct ProcessTests {
    struct Run {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    static func run(_ arguments: [String], environment: [String: String] = [:]) throws -> Run {
        let process = try ChildProcess(builtExecutable("pixxel-proxy"), arguments,
                                       environment: ["PATH": "/usr/bin:/bin"].merging(environment) { $1 }, stdout: .pipe, stderr: .pipe)
        // Both pipes at once: a child that fills one while we wait on the other would hang.
        let stderrReader = BackgroundCall { process.standardError!.readDataToEndOfFile() }
        let stdout = process.standardOutput!.readDataToEndOfFile()
        let stderr = (try? stderrReader.value()) ?? Data()
        process.waitUntilExit()
        return Run(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self), stderr: String(decoding: stderr, as: UTF8.self))
    }

    /// `--version` answers (it exited 64, unknown option) with the packaged version: the top
    /// entry of deploy/debian/changelog, which names the .deb.
    @Test func versionPrintsThePackagedVersion() throws {
        let run = try Self.run(["--version"])
        #expect(run.status == 0, "\(run.stderr)")
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().path
        let changelog = try String(contentsOfFile: repository + "/deploy/debian/changelog", encoding: .utf8)
        let packaged = try #require(changelog.firstMatch(of: #/^pixxel-proxy \(([^)]+)\)/#)?.output.1)
        #expect(run.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == String(packaged))
    }

    /// check-config ends as `nginx -t` does, and refuses paths the service could not use.
    @Test func checkConfigEndsWithConfigurationOKAndRefusesUnusablePaths() throws {
        let directory = TemporaryDirectory()
        let clients = directory.file("clients", "")
        let good = try Self.run(["check-config"], environment: ["PIXXEL_PROXY_AUTH_CLIENTS_FILE": clients,
                                                                "PIXXEL_PROXY_CACHE_DIRECTORY": directory.path + "/cache"])
        #expect(good.status == 0 && good.stdout.hasSuffix("configuration OK\n"), "\(good.stdout.suffix(200)) \(good.stderr)")
        let file = directory.file("not-a-directory", "x")
        let bad = try Self.run(["check-config"], environment: ["PIXXEL_PROXY_AUTH_CLIENTS_FILE": clients, "PIXXEL_PROXY_CACHE_DIRECTORY": file])
        #expect(bad.status == 78 && bad.stderr.contains("cache.directory \(file): exists and is not a directory"), "\(bad.stderr)")
        #expect(!bad.stdout.contains("configuration OK"))
    }

    /// `token` finds the clients file the configuration names (it wrote config/clients
    /// whatever the configuration said).
    @Test func tokenWritesTheClientsFileTheConfigurationNames() throws {
        let directory = TemporaryDirectory()
        let named = directory.path + "/named-clients"
        let config = directory.file("proxy.yaml", "auth:\n  clients_file: \(named)\n")
        let added = try Self.run(["token", "add", "tool", "--scopes", "read", "--config", config])
        #expect(added.status == 0 && added.stderr.contains(named), "\(added.stderr)")
        #expect(try String(contentsOfFile: named, encoding: .utf8).hasPrefix("tool read sha256:"))
        #expect(try Self.run(["token", "list", "--config", config]).stdout == "tool\tread\n")
    }

    @Test func checkConfigPrintsEffectiveSettingsWithTheKeyRedacted() throws {
        let directory = TemporaryDirectory()
        let clients = directory.path + "/clients"
        _ = try Self.run(["token", "add", "ci", "--scopes", "read", "--clients-file", clients])
        let run = try Self.run(["check-config"], environment: [
            "PIXXEL_API_KEY": "very-secret-key-123", "PIXXEL_PROXY_AUTH_CLIENTS_FILE": clients, "PIXXEL_PROXY_LISTEN_PORT": "9999",
        ])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains("listen.port: 9999"))
        #expect(run.stdout.contains("upstream.api_key: <redacted> (from PIXXEL_API_KEY)"))
        #expect(!(run.stdout + run.stderr).contains("very-secret-key-123"))
    }

    @Test func anInvalidValueFailsAtStartNamingTheKey() throws {
        for arguments in [["check-config"], ["serve"]] {
            let run = try Self.run(arguments, environment: ["PIXXEL_PROXY_UPSTREAM_TIMEOUT_SECONDS": "soon"])
            #expect(run.status == 78)
            #expect(run.stderr.contains("upstream.timeout_seconds"))
            #expect(run.stderr.contains("PIXXEL_PROXY_UPSTREAM_TIMEOUT_SECONDS"))
        }
        let missingClients = try Self.run(["serve"], environment: ["PIXXEL_PROXY_AUTH_CLIENTS_FILE": "/nonexistent/clients", "PIXXEL_PROXY_LISTEN_PORT": "0"])
        #expect(missingClients.status == 78)
        #expect(missingClients.stderr.contains("auth.clients_file"))
    }

    @Test func tokenAddPrintsTheTokenOnce() throws {
        let directory = TemporaryDirectory()
        let clients = directory.path + "/clients"
        let run = try Self.run(["token", "add", "ci-bot", "--scopes", "read,write", "--clients-file", clients])
        #expect(run.status == 0)
        let token = run.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(token.hasPrefix("pxp_") && token.count == 68)
        let file = try String(contentsOfFile: clients, encoding: .utf8)
        #expect(file.hasPrefix("ci-bot read,write sha256:"))
        #expect(!file.contains(token))
        let again = try Self.run(["token", "add", "ci-bot", "--scopes", "read", "--clients-file", clients])
        #expect(again.status != 0)
        #expect(try Self.run(["token", "add", "x", "--scopes", "root", "--clients-file", clients]).status != 0)
    }


    /// Starts `pixxel-proxy serve` on a free port; the "listening" log line names the port.
    static func startServe(simPort: UInt16, clients: String, directory: TemporaryDirectory,
                           extraArguments: [String] = [], extraEnvironment: [String: String] = [:], log: LogSink? = nil) throws -> (ChildProcess, UInt16) {
        // stdout to /dev/null, not the test's own: should the test process die, an orphaned
        // server holding it would keep `swift test` waiting until the CI job times out.
        let process = try ChildProcess(builtExecutable("pixxel-proxy"), ["serve"] + extraArguments, environment: [
            "PIXXEL_PROXY_LISTEN_PORT": "0", "PIXXEL_PROXY_UPSTREAM_URL": "http://127.0.0.1:\(simPort)",
            "PIXXEL_API_KEY": ProxyHarness.apiKey, "PIXXEL_PROXY_AUTH_CLIENTS_FILE": clients,
            "PIXXEL_PROXY_CACHE_DIRECTORY": directory.path + "/cache",
            "PIXXEL_PROXY_UPSTREAM_REQUESTS_PER_SECOND": "0",
        ].merging(extraEnvironment) { $1 }, stdout: .null, stderr: .pipe)
        let err = process.standardError!
        var startupLog = ""
        while !startupLog.contains("listening") {
            let chunk = err.availableData
            if chunk.isEmpty { break }
            startupLog += String(decoding: chunk, as: UTF8.self)
        }
        guard let range = startupLog.range(of: #"address=127\.0\.0\.1:(\d+)"#, options: .regularExpression),
              let port = UInt16(startupLog[range].split(separator: ":").last!) else {
            process.terminate()
            throw RawHTTPError(description: "serve did not start: \(startupLog)")
        }
        log?.append(startupLog)
        // Keep draining stderr (into `log`, when given) so the child never blocks on a full pipe.
        Thread {
            while case let chunk = err.availableData, !chunk.isEmpty {
                log?.append(String(decoding: chunk, as: UTF8.self))
            }
        }.start()
        return (process, port)
    }

    /// Tokens could only be added: now listed (names and scopes, never a hash) and revoked, and a
    /// running proxy drops a revoked one at its reload.
    @Test func tokensAreListedAndRevokedAndARunningProxyDropsARevokedOneOnReload() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let directory = TemporaryDirectory()
        let clients = directory.path + "/clients"
        _ = directory.file("clients", "# the team's clients\n")
        func add(_ name: String, _ scopes: String) throws -> String {
            try Self.run(["token", "add", name, "--scopes", scopes, "--clients-file", clients]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let keep = try add("keep", "read"), gone = try add("gone", "read,write")
        let listed = try Self.run(["token", "list", "--clients-file", clients])
        #expect(listed.status == 0 && listed.stdout == "keep\tread\ngone\tread,write\n", "\(listed.stdout)")
        #expect(!listed.stdout.contains("sha256"))

        let (process, port) = try Self.startServe(simPort: simPort, clients: clients, directory: directory)
        defer { process.interrupt(); process.waitUntilExit() }
        let target = "/v0/workflows/\(sim.workflowIDs[0])/jobs"
        #expect(try RawHTTPClient.request(port: port, target: target, headers: [("Authorization", gone)]).status == 200)

        let revoked = try Self.run(["token", "revoke", "gone", "--clients-file", clients])
        #expect(revoked.status == 0, "\(revoked.stderr)")
        #expect(revoked.stderr.contains("reload"), "it says how the running proxy takes it: \(revoked.stderr)")
        let text = try String(contentsOfFile: clients, encoding: .utf8)
        #expect(text.hasPrefix("# the team's clients\n") && text.contains("keep read sha256:") && !text.contains("gone"), "\(text)")
        let again = try Self.run(["token", "revoke", "gone", "--clients-file", clients])
        #expect(again.status == 1 && again.stderr.contains("no client gone"), "\(again.stderr)")

        process.signal(SIGHUP)
        #expect(try eventually { try RawHTTPClient.request(port: port, target: target, headers: [("Authorization", gone)]).status == 401 })
        #expect(try RawHTTPClient.request(port: port, target: target, headers: [("Authorization", keep)]).status == 200)
    }

    @Test func sighupReloadsTheClientsFileAndSigintStops() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let directory = TemporaryDirectory()
        let clients = directory.path + "/clients"
        _ = try Self.run(["token", "add", "first", "--scopes", "read", "--clients-file", clients])
        let (process, port) = try Self.startServe(simPort: simPort, clients: clients, directory: directory)
        let target = "/v0/workflows/\(sim.workflowIDs[0])/jobs"
        let token = try Self.run(["token", "add", "second", "--scopes", "read", "--clients-file", clients]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try RawHTTPClient.request(port: port, target: target, headers: [("Authorization", token)]).status == 401)
        process.signal(SIGHUP)
        #expect(try eventually { try RawHTTPClient.request(port: port, target: target, headers: [("Authorization", token)]).status == 200 })
        process.interrupt()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0 && process.terminationReason == .exit)
    }

    @Test func sighupReloadsTheLogLevel() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let directory = TemporaryDirectory()
        let clients = directory.path + "/clients"
        let token = try Self.run(["token", "add", "ci", "--scopes", "read", "--clients-file", clients]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let config = directory.file("p.yaml", "log:\n  level: info\n")
        let log = LogSink()
        let (process, port) = try Self.startServe(simPort: simPort, clients: clients, directory: directory,
                                                  extraArguments: ["--config", config], log: log)
        let target = "/v0/workflows/\(sim.workflowIDs[0])/jobs"
        func request(_ id: String) throws { _ = try RawHTTPClient.request(port: port, target: target, headers: [("Authorization", token), ("X-Request-Id", id)]) }
        try request("shown-at-info")
        #expect(eventually { log.all.joined().contains("request_id=shown-at-info") })

        try "log:\n  level: error\n".write(toFile: config, atomically: true, encoding: .utf8)
        process.signal(SIGHUP)
        // The change is announced at the new level; at error, access lines stop. An absence cannot
        // be awaited, so the level goes back to info and the gap is checked afterwards.
        #expect(eventually { log.all.joined().contains("log level set to error") })
        try request("hidden-at-error")
        try "log:\n  level: info\n".write(toFile: config, atomically: true, encoding: .utf8)
        process.signal(SIGHUP)
        #expect(eventually { log.all.joined().contains("log level set to info") })
        try request("shown-again")
        #expect(eventually { log.all.joined().contains("request_id=shown-again") })
        #expect(!log.all.joined().contains("request_id=hidden-at-error"))
        // Access lines are written straight to the batched output (miss and hit alike), in the
        // shape the swift-log handler gives every other line.
        let lines = log.all.joined().split(separator: "\n").map(String.init)
        let stamp = #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} "#
        let access = try Regex(stamp + #"info pixxel-proxy: cache=\S+ client=ci duration_ms=\d+ peer=127\.0\.0\.1:\d+ request_id=(shown-at-info|shown-again) upstream_ms=\S+ upstream_status=\S+ \[ProxyServer\] GET /v0/workflows/\{workflow_id\}/jobs 200$"#)
        #expect(lines.filter { $0.contains("request_id=shown-") }.count == 2)
        for line in lines where line.contains("request_id=shown-") { #expect(line.wholeMatch(of: access) != nil, "\(line)") }
        let announced = try #require(lines.first { $0.contains("log level set to info") })
        #expect(announced.wholeMatch(of: try Regex(stamp + #"(notice|info) pixxel-proxy: \[\w+\] log level set to info$"#)) != nil, "\(announced)")
        process.interrupt()
        process.waitUntilExit()
    }

    @Test func sigtermDrainsInFlightRequestsAndExitsZero() async throws {
        let (sim, simPort) = try startSimulator { $0.faults.latencyMilliseconds = 1500 }
        defer { sim.stop() }
        let directory = TemporaryDirectory()
        let clients = directory.path + "/clients"
        let token = try Self.run(["token", "add", "ci", "--scopes", "read", "--clients-file", clients]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let (process, port) = try Self.startServe(simPort: simPort, clients: clients, directory: directory)
        let workflow = sim.workflowIDs[0]
        let slow = Thread.detachedResult {
            try? RawHTTPClient.request(port: port, target: "/v0/workflows/\(workflow)/jobs", headers: [("Authorization", token)])
        }
        #expect(try eventually { sim.stats.total == 1 }, "the slow request is in flight")
        process.signal(SIGTERM)
        // While it drains, new connections are refused (the listener is closed)...
        #expect(eventually { (try? RawHTTPClient.connect(port: port, timeoutSeconds: 1)).map { close($0); return false } ?? true })
        // ...and the in-flight request still gets its answer.
        let answer = slow.wait()
        #expect(answer?.status == 200, "the in-flight request finished")
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        #expect(process.terminationReason == .exit)
        // Once drained, new connections are refused.
        #expect(throws: (any Error).self) { try RawHTTPClient.request(port: port, target: "/healthz") }
    }
}

/// A value computed on its own thread.
final class DetachedResult<T: Sendable>: @unchecked Sendable {
    private let semaphore = DispatchSemaphore(value: 0)
    private var value: T?
    init(_ body: @escaping @Sendable () -> T) {
        Thread { [self] in
            value = body()
            semaphore.signal()
        }.start()
    }
    func wait() -> T {
        semaphore.wait()
        return value!
    }
}

extension Thread {
    static func detachedResult<T: Sendable>(_ body: @escaping @Sendable () -> T) -> DetachedResult<T> { DetachedResult(body) }
}
