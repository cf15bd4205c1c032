import ArgumentParser
import Foundation
import JobCache
import Logging
import ProxyConfig
import ProxyServer

@main
struct PixxelProxyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pixxel-proxy",
        abstract: "A caching gateway for the Pixxel Jobs API.",
        version: ProxyVersion.string,
        subcommands: [Serve.self, CheckConfig.self, TokenCommand.self, CacheCommand.self, AuditCommand.self, StatusCommand.self])
}

/// Exit status for a configuration error (sysexits EX_CONFIG).
let configErrorExit = ExitCode(78)

/// Loads settings, or prints why not and exits with EX_CONFIG.
func loadSettings(_ configFile: String?) async throws -> ProxySettings {
    do {
        return try await SettingsLoader.load(configFile: configFile, environment: ProcessInfo.processInfo.environment)
    } catch {
        FileHandle.standardError.write(Data("pixxel-proxy: \(error)\n".utf8))
        throw configErrorExit
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the proxy in the foreground; logs go to stderr.")

    @Option(help: "Configuration file (default \(SettingsLoader.installedConfigFile), else \(SettingsLoader.checkoutConfigFile), if present).")
    var config: String?

    func run() async throws {
        let settings = try await loadSettings(config)
        let control = LogLevelControl(Logger.Level(rawValue: settings.logLevel) ?? .info)
        // Batched writes to stderr: an access line per request must not cost a write(2) on the loop.
        let output = BufferedLogOutput()
        LoggingSystem.bootstrap { label in
            var inner = output.handler(label: label)
            inner.logLevel = .trace  // the control decides
            return AdjustableLogHandler(wrapping: inner, control: control)
        }
        let logger = Logger(label: "pixxel-proxy")
        let server: ProxyServer
        let configFile = config
        do {
            server = try ProxyServer(settings: settings, logger: logger, accessLogOutput: output)
            // SIGHUP: the clients file (in the server) and the log level (here), off the loop.
            server.onReload = {
                Task {
                    do {
                        let reloaded = try await SettingsLoader.load(configFile: configFile, environment: ProcessInfo.processInfo.environment)
                        let level = Logger.Level(rawValue: reloaded.logLevel) ?? .info
                        if level != control.current {
                            control.current = level
                            logger.log(level: max(level, .notice), "log level set to \(level)")
                        }
                    } catch {
                        logger.error("configuration not reloaded, keeping the log level", metadata: ["error": "\(error)"])
                    }
                }
            }
            server.installSignalHandlers()
            try server.start()
        } catch {
            logger.critical("cannot start: \(error)")
            throw configErrorExit
        }
        await server.waitUntilStopped()
        logger.notice("stopped")
        output.flush()
    }
}

struct CheckConfig: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate the configuration and print the effective settings, secrets redacted.")

    @Option(help: "Configuration file (default \(SettingsLoader.installedConfigFile), else \(SettingsLoader.checkoutConfigFile), if present).")
    var config: String?

    func run() async throws {
        let settings = try await loadSettings(config)
        for line in settings.describedLines() { print(line) }
        do {
            let clients = try ProxyServer.validateClientsFile(settings)
            print("# clients file \(settings.clientsFile): \(clients) client(s)")
        } catch {
            FileHandle.standardError.write(Data("pixxel-proxy: \(error)\n".utf8))
            throw configErrorExit
        }
        if settings.upstreamAPIKey == nil {
            print("# warning: no API key configured; upstream calls will carry no Authorization")
        }
        for warning in ConfigPathCheck.warningsAsRoot(settings, effectiveUser: geteuid()) { print("# warning: \(warning)") }
        let problems = ConfigPathCheck.problems(settings)
        for problem in problems { FileHandle.standardError.write(Data("pixxel-proxy: \(problem)\n".utf8)) }
        guard problems.isEmpty else { throw configErrorExit }
        // As `nginx -t` ends: one line a script or a person can look for.
        print("configuration OK")
    }
}

struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "token", abstract: "Manage client tokens.",
                                                    subcommands: [Add.self, List.self, Revoke.self])


    static let reloadHint = "a running proxy takes it on reload (systemctl reload pixxel-proxy, or SIGHUP)"

    /// Runs a change to the clients file; its error is printed as the CLI's others are, exit 1.
    static func reportingFailure(_ body: () throws -> Void) throws {
        do {
            try body()
        } catch {
            FileHandle.standardError.write(Data("pixxel-proxy: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The clients and their scopes (never a token or its hash).")

        @OptionGroup var file: ClientsFileOptions

        func run() async throws {
            let path = try await file.path()
            try TokenCommand.reportingFailure {
                for client in try ClientsFileWriter.list(path: path) { print("\(client.name)\t\(client.scopes)") }
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a client's token from the clients file.")

        @Argument(help: "The client's name.")
        var name: String

        @OptionGroup var file: ClientsFileOptions

        func run() async throws {
            let path = try await file.path()
            try TokenCommand.reportingFailure {
                try ClientsFileWriter.revoke(name: name, path: path)
                FileHandle.standardError.write(Data("pixxel-proxy: revoked client \(name) in \(path); \(TokenCommand.reloadHint)\n".utf8))
            }
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a random token, print it once, and append its hash to the clients file.")

        @Argument(help: "Client name: letters, digits, '.', '_' and '-'.")
        var name: String

        @Option(help: "Comma-separated scopes: read, write, admin.")
        var scopes: String

        @OptionGroup var file: ClientsFileOptions

        func run() async throws {
            let path = try await file.path()
            try TokenCommand.reportingFailure {
                let token = try ClientsFileWriter.add(name: name, scopesText: scopes, path: path)
                print(token)
                FileHandle.standardError.write(Data("pixxel-proxy: added client \(name) to \(path); the token above is shown only once; \(TokenCommand.reloadHint)\n".utf8))
            }
        }
    }
}

/// Which clients file a `token` subcommand works on.
struct ClientsFileOptions: ParsableArguments {
    @Option(name: .customLong("clients-file"), help: "Clients file (default: auth.clients_file of the configuration).")
    var clientsFile: String?

    @Option(help: "Configuration file naming the clients file (default \(SettingsLoader.installedConfigFile), else \(SettingsLoader.checkoutConfigFile)).")
    var config: String?

    /// `--clients-file`, else the clients file the configuration names (the installed one's
    /// when it exists). A configuration that cannot be read is an error here, not a fall back
    /// to the default file: a token written where the proxy does not look would silently not work.
    func path() async throws -> String {
        if let clientsFile { return clientsFile }
        return try await loadSettings(config).clientsFile
    }
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "The status page's figures in the terminal (reads /admin/stats with an admin token).")
    @Option(help: "The proxy's base URL (default: the listen address the configuration names).") var url: String?
    @Option(help: "Configuration file (default \(SettingsLoader.installedConfigFile), else \(SettingsLoader.checkoutConfigFile), if present).")
    var config: String?
    @Option(name: .customLong("token-file"), help: "File holding an admin token (default: the PIXXEL_PROXY_ADMIN_TOKEN variable).")
    var tokenFile: String?
    @Flag(help: "Refresh every 2 seconds until interrupted.") var watch = false

    /// The proxy's address as the configuration names it (found by review: status asked port
    /// 8787 whatever `listen.port` the installed configuration set).
    static func url(listeningOn host: String, port: UInt16) -> String {
        let reachable = switch host {
        case "0.0.0.0", "": "127.0.0.1"
        case "::": "::1"
        default: host
        }
        return "http://" + (reachable.contains(":") ? "[\(reachable)]" : reachable) + ":\(port)"
    }

    func run() async throws {
        let url: String
        if let given = self.url {
            url = given
        } else {
            // Only the listen address is wanted: the admin token's variable is no setting, and a
            // setting this user cannot use (a root-only key file) is no reason to fail (found by
            // review: both stopped status).
            var environment = ProcessInfo.processInfo.environment
            environment["PIXXEL_PROXY_ADMIN_TOKEN"] = nil
            do {
                let settings = try await SettingsLoader.load(configFile: config, environment: environment)
                url = Self.url(listeningOn: settings.listenHost, port: settings.listenPort)
            } catch {
                url = Self.url(listeningOn: ProxySettings().listenHost, port: ProxySettings().listenPort)
                FileHandle.standardError.write(Data("pixxel-proxy: the configuration does not load (\(error)); asking \(url)\n".utf8))
            }
        }
        guard let base = UpstreamURL(parsing: url) else {
            FileHandle.standardError.write(Data("pixxel-proxy: --url must be http://HOST[:PORT] or https://HOST[:PORT], got \(url)\n".utf8))
            throw ExitCode(64)
        }
        let token: String
        if let tokenFile {
            guard let data = FileManager.default.contents(atPath: tokenFile) else {
                FileHandle.standardError.write(Data("pixxel-proxy: cannot read \(tokenFile) (\(OSReason.unreadable(tokenFile)))\n".utf8))
                throw ExitCode(66)
            }
            token = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        } else if let variable = ProcessInfo.processInfo.environment["PIXXEL_PROXY_ADMIN_TOKEN"] {
            token = variable.trimmingCharacters(in: .whitespacesAndNewlines)
        } else {
            FileHandle.standardError.write(Data("pixxel-proxy: give an admin token with --token-file or PIXXEL_PROXY_ADMIN_TOKEN\n".utf8))
            throw ExitCode(64)
        }
        repeat {
            do {
                let report = StatusReport.render(try await StatusReport.fetch(base, token: token), url: url)
                // In watch mode the screen is cleared and redrawn from its top.
                print((watch ? "\u{1B}[H\u{1B}[2J" : "") + report, terminator: "")
            } catch {
                FileHandle.standardError.write(Data("pixxel-proxy: \(error)\n".utf8))
                if !watch { throw ExitCode(1) }
            }
            if watch { try await Task.sleep(for: .seconds(2)) }
        } while watch
    }
}

struct CacheCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cache", abstract: "Inspect or purge the cache directory offline (safe while the server runs).",
        subcommands: [Stats.self, Purge.self])

    static func openStore(_ settings: ProxySettings) throws -> DiskStore {
        let path = settings.cacheDirectory + "/" + DiskStore.fileName
        guard FileManager.default.fileExists(atPath: path) else {
            print("no cache yet: \(path) does not exist")
            throw ExitCode.success
        }
        return try DiskStore(directory: settings.cacheDirectory, budgetBytes: settings.cacheDiskMB << 20)
    }

    struct Stats: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Entries and bytes in the disk tier.")
        @Option(help: "Configuration file (default \(SettingsLoader.installedConfigFile), else \(SettingsLoader.checkoutConfigFile), if present).") var config: String?
        func run() async throws {
            let settings = try await loadSettings(config)
            let store = try CacheCommand.openStore(settings)
            let (entries, bytes) = await withCheckedContinuation { continuation in
                store.statistics { continuation.resume(returning: ($0, $1)) }
            }
            print("directory: \(settings.cacheDirectory)")
            print("entries: \(entries)")
            print("bytes: \(bytes) of \(settings.cacheDiskMB << 20) (cache.disk_mb \(settings.cacheDiskMB))")
        }
    }

    struct Purge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a workflow's entries, or one job's. A running server keeps what it holds in memory until it expires or is purged with POST /admin/purge.")
        @Option(help: "Configuration file (default \(SettingsLoader.installedConfigFile), else \(SettingsLoader.checkoutConfigFile), if present).") var config: String?
        @Option(help: "Purge this workflow's entries.") var workflow: String?
        @Option(help: "Purge this job's entry (with --workflow).") var job: String?
        func run() async throws {
            guard let workflow, !workflow.isEmpty else {
                FileHandle.standardError.write(Data("pixxel-proxy: cache purge needs --workflow ID [--job ID]\n".utf8))
                throw ExitCode(64)
            }
            let settings = try await loadSettings(config)
            let store = try CacheCommand.openStore(settings)
            let removed = await withCheckedContinuation { continuation in
                store.purge(workflowID: workflow, jobID: job) { continuation.resume(returning: $0) }
            }
            print("purged \(removed) entr\(removed == 1 ? "y" : "ies") from \(settings.cacheDirectory)")
        }
    }
}

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "List jobs created through the proxy (time, client, workflow, project, job id, upstream status, request id).")

    @Option(help: "Only entries since a date or time (2026-11-20, 2026-11-20T10:00:00Z) or a duration ago (30m, 24h, 7d).")
    var since: String?
    @Option(help: "Only entries of this client.") var client: String?
    @Option(help: "Configuration file (default \(SettingsLoader.installedConfigFile), else \(SettingsLoader.checkoutConfigFile), if present).") var config: String?

    func run() async throws {
        let settings = try await loadSettings(config)
        var sinceInstant: Double?
        if let since {
            guard let instant = Self.instant(since, now: Date().timeIntervalSince1970) else {
                FileHandle.standardError.write(Data("pixxel-proxy: --since: expected a date, a timestamp or a duration like 24h, got \"\(since)\"\n".utf8))
                throw ExitCode(64)
            }
            sinceInstant = instant
        }
        guard FileManager.default.fileExists(atPath: settings.cacheDirectory + "/" + DiskStore.fileName) else {
            print("no audit yet: \(settings.cacheDirectory) holds no store")
            return
        }
        let entries = try AuditLog(directory: settings.cacheDirectory).entries(since: sinceInstant, client: client)
        print(["time", "client", "workflow_id", "project_id", "job_id", "upstream_status", "request_id"].joined(separator: "\t"))
        let formatter = ISO8601DateFormatter()
        for entry in entries {
            print([formatter.string(from: Date(timeIntervalSince1970: entry.time)), entry.client, entry.workflowID, entry.projectID,
                   entry.jobID ?? "-", String(entry.upstreamStatus), entry.requestID].joined(separator: "\t"))
        }
    }

    static func instant(_ text: String, now: Double) -> Double? {
        if let unit = text.last, let amount = Double(text.dropLast()), amount >= 0 {
            switch unit {
            case "s": return now - amount
            case "m": return now - amount * 60
            case "h": return now - amount * 3600
            case "d": return now - amount * 86_400
            default: break
            }
        }
        if let instant = Timestamp.parse(text) { return instant }
        if text.utf8.count == 10, let date = ISO8601Text.datePart(of: text) {
            return Timestamp.parse("\(date)T00:00:00Z")
        }
        return nil
    }
}
