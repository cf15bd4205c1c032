import Configuration
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import SystemPackage
import Yams

/// Gathers raw settings from the YAML file and `PIXXEL_PROXY_*` variables (through
/// swift-configuration), finds the API key among its sources, and validates the lot.
public enum SettingsLoader {
    /// The file read when no `--config` is given; it may be absent.
    /// The installed configuration (the package's and install.sh's), read by every subcommand
    /// when no `--config` names another and it exists; else the checkout's.
    public static let installedConfigFile = "/etc/pixxel-proxy/pixxel-proxy.yaml"
    public static let checkoutConfigFile = "config/pixxel-proxy.yaml"
    public static var defaultConfigFile: String {
        FileManager.default.fileExists(atPath: installedConfigFile) ? installedConfigFile : checkoutConfigFile
    }
    static let environmentPrefix = "PIXXEL_PROXY_"

    /// Loads and validates settings. `configFile` nil means the default file, if it exists.
    public static func load(configFile: String?, environment: [String: String]) async throws -> ProxySettings {
        let path = configFile ?? defaultConfigFile
        var isDirectory: ObjCBool = false
        let fileExists = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
        if configFile != nil && !fileExists {
            throw SettingsError(key: "", "config file \(path) does not exist")
        }
        if fileExists && isDirectory.boolValue {
            throw SettingsError(key: "", "config file \(path) is a directory, not a YAML file")
        }
        var providers: [any ConfigProvider] = [
            EnvironmentVariablesProvider(
                environmentVariables: environment.filter { $0.key.hasPrefix(environmentPrefix) },
                secretsSpecifier: .specific(Set(secretKeys.map(SettingsParser.environmentName(of:))))
            ).prefixKeys(with: "pixxel_proxy")
        ]
        var fileKeys: [String] = []
        var fileLines: [String: Int] = [:]
        if fileExists {
            let found = try yamlKeys(in: path)
            fileKeys = found.map(\.key)
            fileLines = Dictionary(found.map { ($0.key, $0.line) }) { first, _ in first }
        }
        // A file of comments only (like the shipped default) sets nothing; swift-configuration
        // would refuse it for having no top-level mapping.
        if !fileKeys.isEmpty {
            do {
                providers.append(try await FileProvider<YAMLSnapshot>(
                    parsingOptions: .init(secretsSpecifier: .specific(Set(secretKeys))),
                    filePath: FilePath(path)))
            } catch {
                throw SettingsError(key: "", "cannot read \(path): \(OSReason.of(error))")
            }
        }
        let reader = ConfigReader(providers: providers)

        let knownKeys = Set(SettingsParser.keys.map(\.name))
        if let unknown = fileKeys.first(where: { !knownKeys.contains($0) }) {
            let place = fileLines[unknown].map { "\(path):\($0)" } ?? path
            let within = knownKeys.filter { $0.hasPrefix(unknown + ".") }.sorted()
            if !within.isEmpty {
                throw SettingsError(key: "", "\(place): \(unknown) is a section, not a value: give its keys under it (\(within.joined(separator: ", ")))")
            }
            throw SettingsError(key: "", "\(place): unknown key \(unknown)")
        }
        let knownVariables = Set(knownKeys.map(SettingsParser.environmentName(of:)))
        if let unknown = environment.keys.sorted().first(where: { $0.hasPrefix(environmentPrefix) && !knownVariables.contains($0) }) {
            throw SettingsError(key: "", "unknown environment variable \(unknown)")
        }

        var values: [String: RawSetting] = [:]
        for key in SettingsParser.keys {
            let configKey = ConfigKey(key.name)
            if let scalar = reader.string(forKey: configKey, isSecret: secretKeys.contains(key.name)) {
                values[key.name] = .scalar(scalar)
            } else if let list = reader.stringArray(forKey: configKey) {
                values[key.name] = .list(list)
            }
        }
        let apiKey = try await resolveAPIKey(values: values, environment: environment, configFile: path)
        var settings: ProxySettings
        do {
            settings = try SettingsParser.parse(values, apiKey: apiKey)
        } catch {
            // Said where the value came from: the variable overrides the file.
            let variable = SettingsParser.environmentName(of: error.key)
            if error.key.isEmpty || environment[variable] != nil { throw error }
            if let line = fileLines[error.key] { throw error.placed("\(path):\(line)") }
            throw error.placed(nil)
        }
        if var url = settings.sharedRedisURL, url.password == nil {
            url.password = try await credential("redis_password", environment: environment)
            settings.sharedRedisURL = url
        }
        if let caFile = settings.upstreamCAFile, access(caFile, R_OK) != 0 {
            throw SettingsError(key: "upstream.ca_file", "cannot read \(caFile) (\(OSReason.text(errno)))").placed(fileLines["upstream.ca_file"].map { "\(path):\($0)" })
        }
        return settings
    }

    /// Keys whose values are secrets (kept out of swift-configuration's logs too).
    static let secretKeys = ["upstream.api_key", "shared.redis_url"]

    /// A systemd credential (`LoadCredential=`/`SetCredential=`), trimmed; nil when absent.
    static func credential(_ name: String, environment: [String: String]) async throws -> Secret? {
        guard let value = try credentialText(name, environment: environment) else { return nil }
        let trimmed = value.trimmingSpaces()
        guard !trimmed.isEmpty, !trimmed.contains(where: { $0.isNewline || $0 == "\0" }) else {
            throw SettingsError(key: "", "the credential \(name) is empty or holds a line break")
        }
        return Secret(trimmed, origin: "credential \(name)")
    }

    /// The API key's sources, first found wins: `upstream.api_key` (variable, then file),
    /// `PIXXEL_API_KEY`, the file named by `upstream.api_key_file`, the systemd credential `api_key`.
    static func resolveAPIKey(values: [String: RawSetting], environment: [String: String], configFile: String) async throws -> Secret? {
        if case .scalar(let key)? = values["upstream.api_key"] {
            let variable = SettingsParser.environmentName(of: "upstream.api_key")
            let origin = environment[variable] != nil ? variable : "upstream.api_key in \(configFile)"
            return try nonEmpty(key, origin: origin, key: "upstream.api_key")
        }
        if let key = environment["PIXXEL_API_KEY"] {
            return try nonEmpty(key, origin: "PIXXEL_API_KEY", key: "upstream.api_key")
        }
        if case .scalar(let file)? = values["upstream.api_key_file"] {
            guard let data = FileManager.default.contents(atPath: file) else {
                let error = SettingsError(key: "upstream.api_key_file", "cannot read \(file) (\(OSReason.unreadable(file)))")
                throw environment[SettingsParser.environmentName(of: "upstream.api_key_file")] != nil ? error : error.placed(configFile)
            }
            guard let text = String(data: data, encoding: .utf8) else {
                let error = SettingsError(key: "upstream.api_key_file", "\(file) is not UTF-8 text")
                throw environment[SettingsParser.environmentName(of: "upstream.api_key_file")] != nil ? error : error.placed(configFile)
            }
            return try nonEmpty(text, origin: file, key: "upstream.api_key_file")
        }
        if let key = try credentialText("api_key", environment: environment) {
            return try nonEmpty(key, origin: "credential api_key", key: "upstream.api_key")
        }
        return nil
    }

    /// The systemd credential `name` ($CREDENTIALS_DIRECTORY/name): nil when there is none, an
    /// error naming it and the OS's reason when it is there and cannot be read. Only that file
    /// is read (found by review: reading the whole directory failed on an unrelated unreadable
    /// file with a Foundation error, and an api_key that was a directory was skipped in silence).
    static func credentialText(_ name: String, environment: [String: String]) throws -> String? {
        guard let directory = environment["CREDENTIALS_DIRECTORY"], !directory.isEmpty else { return nil }
        let path = directory + "/" + name
        guard FileManager.default.fileExists(atPath: path) else {
            // A link to nothing is a mistake to say, not "no key" (found by review).
            if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: path) {
                throw SettingsError(key: "", "the credential \(name) at \(path) links to \(target), which does not exist")
            }
            return nil
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SettingsError(key: "", "cannot read the credential \(name) at \(path) (\(OSReason.unreadable(path)))")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw SettingsError(key: "", "the credential \(name) at \(path) is not UTF-8 text")
        }
        return text
    }

    private static func nonEmpty(_ value: String, origin: String, key: String) throws(SettingsError) -> Secret {
        let trimmed = value.trimmingSpaces()
        guard !trimmed.isEmpty else { throw SettingsError(key: key, "the API key from \(origin) is empty") }
        guard !trimmed.contains(where: { $0.isNewline || $0 == "\0" }) else {
            throw SettingsError(key: key, "the API key from \(origin) contains a line break")
        }
        return Secret(trimmed, origin: origin)
    }

    /// The dotted keys of every leaf in a YAML file, to catch misspelt keys that would
    /// otherwise be ignored in silence.
    /// The keys a YAML file sets, dotted, with the line each is on.
    static func yamlKeys(in path: String) throws -> [(key: String, line: Int)] {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw SettingsError(key: "", "cannot read \(path): \(OSReason.of(error))")
        }
        let node: Node?
        do { node = try Yams.compose(yaml: text) } catch {
            throw SettingsError(key: "", "\(path) is not valid YAML: \(error)")
        }
        guard let node else { return [] }
        guard case .mapping(let mapping) = node else {
            throw SettingsError(key: "", "\(path): the top level must be a mapping of keys")
        }
        var keys: [(key: String, line: Int)] = []
        func walk(_ mapping: Node.Mapping, prefix: String) {
            for (key, value) in mapping {
                let name = prefix.isEmpty ? (key.string ?? "?") : "\(prefix).\(key.string ?? "?")"
                if case .mapping(let nested) = value { walk(nested, prefix: name) } else { keys.append((name, key.mark?.line ?? 0)) }
            }
        }
        walk(mapping, prefix: "")
        return keys
    }
}

extension ProxySettings {
    /// The effective settings as `key: value` lines, secrets redacted (for `check-config`).
    public func describedLines() -> [String] {
        [
            "listen.host: \(listenHost)",
            "listen.port: \(listenPort)",
            "listen.timeout_seconds: \(listenTimeoutSeconds)",
            "listen.max_header_bytes: \(listenMaxHeaderBytes)",
            "listen.max_body_bytes: \(listenMaxBodyBytes)",
            "listen.max_upload_bytes: \(listenMaxUploadBytes)",
            "listen.drain_seconds: \(listenDrainSeconds)",
            "watch.max_wait_seconds: \(watchMaxWaitSeconds)",
            "watch.max_streams: \(watchMaxStreams)",
            "watch.max_streams_per_client: \(watchMaxStreamsPerClient)",
            "upstream.url: \(upstreamURL)",
            "upstream.api_key: \(upstreamAPIKey.map { "<redacted> (from \($0.origin))" } ?? "(none: upstream calls carry no key)")",
            "upstream.ca_file: \(upstreamCAFile ?? "(system trust store only)")",
            "upstream.timeout_seconds: \(upstreamTimeoutSeconds)",
            "upstream.max_connections: \(upstreamMaxConnections)",
            "upstream.max_response_bytes: \(upstreamMaxResponseBytes)",
            "upstream.max_queue: \(upstreamMaxQueue)",
            "upstream.requests_per_second: \(upstreamRequestsPerSecond)",
            "upstream.burst: \(upstreamBurst)",
            "upstream.max_retry_after_seconds: \(upstreamMaxRetryAfterSeconds)",
            "cache.directory: \(cacheDirectory)",
            "cache.memory_mb: \(cacheMemoryMB)",
            "cache.disk_mb: \(cacheDiskMB)",
            "cache.ttl.active_job_seconds: \(activeJobTTLSeconds)",
            "cache.ttl.terminal_job_seconds: \(terminalJobTTLSeconds)",
            "cache.ttl.job_list_seconds: \(jobListTTLSeconds)",
            "cache.terminal_statuses: \(terminalStatuses.joined(separator: ", "))",
            "cache.stale_while_revalidate_seconds: \(staleWhileRevalidateSeconds)",
            "cache.stale_if_error_seconds: \(staleIfErrorSeconds)",
            "cache.routes: \(cacheRoutes.isEmpty ? "none" : cacheRoutes.map(\.description).joined(separator: ", "))",
            "shared.redis_url: \(sharedRedisURL.map { "\($0)\($0.password.map { " (password from \($0.origin))" } ?? "")" } ?? "(off: this instance works alone)")",
            "shared.key_prefix: \(sharedKeyPrefix)",
            "shared.timeout_ms: \(sharedTimeoutMilliseconds)",
            "shared.instances: \(sharedInstances)",
            "auth.clients_file: \(clientsFile)",
            "auth.allow_anonymous: \(allowAnonymous)",
            "metrics.access: \(metricsAccess)",
            "log.level: \(logLevel)",
        ]
    }
}
