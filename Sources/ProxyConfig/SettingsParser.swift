/// A raw setting value as a provider gave it, before validation.
public enum RawSetting: Sendable, Equatable {
    case scalar(String)
    case list([String])
}

/// A setting that failed validation; the message names the key (and the variable that sets it).
public struct SettingsError: Error, Sendable, Equatable, CustomStringConvertible {
    public let key: String
    public let message: String
    /// Where the value came from when that is not its environment variable: `FILE:LINE`, or
    /// nil for a value given neither way (a default, a combination of keys).
    public private(set) var place: String?
    private var fromEnvironment = true

    public init(key: String, _ message: String) {
        self.key = key
        self.message = message
    }

    /// The same error, said of a value from `place` (nil: not from the environment either).
    public func placed(_ place: String?) -> SettingsError {
        var copy = self
        copy.place = place
        copy.fromEnvironment = false
        return copy
    }

    public var description: String {
        if key.isEmpty { return "config: \(message)" }
        if fromEnvironment { return "config: \(key) (env \(SettingsParser.environmentName(of: key))): \(message)" }
        return "config: " + (place.map { "\($0): " } ?? "") + "\(key): \(message)"
    }
}

/// Turns raw values into `ProxySettings`: pure, so every rule is testable without files.
public enum SettingsParser {
    /// A key of the configuration, its documented default and unit, and how it is applied.
    public struct Key: Sendable {
        public let name: String
        public let summary: String
        let apply: @Sendable (inout ProxySettings, RawSetting) throws(SettingsError) -> Void
    }

    /// The environment variable that overrides `key`.
    public static func environmentName(of key: String) -> String {
        "PIXXEL_PROXY_" + key.uppercased().replacingDots()
    }

    /// Builds settings from `values` (key -> raw value); absent keys keep their defaults.
    public static func parse(_ values: [String: RawSetting], apiKey: Secret? = nil) throws(SettingsError) -> ProxySettings {
        var settings = ProxySettings()
        var burstGiven = false
        for key in keys {
            guard let raw = values[key.name] else { continue }
            try key.apply(&settings, raw)
            if key.name == "upstream.burst" { burstGiven = true }
        }
        if let unknown = values.keys.first(where: { name in !keys.contains { $0.name == name } }) {
            throw SettingsError(key: unknown, "unknown key")
        }
        if !burstGiven { settings.upstreamBurst = max(1, settings.upstreamRequestsPerSecond) }
        settings.upstreamAPIKey = apiKey
        try checkCombinations(settings)
        return settings
    }

    private static func checkCombinations(_ settings: ProxySettings) throws(SettingsError) {
        if settings.allowAnonymous && !isLoopback(settings.listenHost) {
            throw SettingsError(key: "auth.allow_anonymous",
                                "may only be true when listen.host is a loopback address (127.0.0.0/8, ::1, localhost), not \(settings.listenHost)")
        }
        if settings.upstreamRequestsPerSecond > 0 && settings.upstreamBurst < 1 {
            throw SettingsError(key: "upstream.burst", "must be at least 1 when upstream.requests_per_second is not 0")
        }
    }

    /// Whether `host` only ever accepts connections from this machine.
    public static func isLoopback(_ host: String) -> Bool {
        let lowered = host.lowercased()
        if lowered == "localhost" || lowered == "::1" || lowered == "[::1]" { return true }
        let parts = lowered.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }

    /// Every key, in documentation order.
    public static let keys: [Key] = [
        Key(name: "listen.host", summary: "address to bind (default 127.0.0.1)") { s, raw throws(SettingsError) in
            s.listenHost = try text(raw, "listen.host", "a host name or IP address")
        },
        Key(name: "listen.port", summary: "port to bind, 0 picks a free one (default 8787)") { s, raw throws(SettingsError) in
            s.listenPort = UInt16(try integer(raw, "listen.port", in: 0...65_535))
        },
        Key(name: "listen.timeout_seconds", summary: "client read/write timeout, also closes idle keep-alive connections (default 30 s)") { s, raw throws(SettingsError) in
            s.listenTimeoutSeconds = try seconds(raw, "listen.timeout_seconds", allowZero: false)
        },
        Key(name: "listen.max_header_bytes", summary: "largest request line plus headers, larger gets 431 (default 16384 bytes)") { s, raw throws(SettingsError) in
            s.listenMaxHeaderBytes = try integer(raw, "listen.max_header_bytes", in: 1024...1 << 20)
        },
        Key(name: "listen.max_body_bytes", summary: "largest request body, larger gets 413 (default 10485760 bytes)") { s, raw throws(SettingsError) in
            s.listenMaxBodyBytes = try integer(raw, "listen.max_body_bytes", in: 0...1 << 30)
        },
        Key(name: "listen.max_upload_bytes", summary: "largest request body streamed through on a pass-through route, larger gets 413; 0 = no limit (default 1073741824 bytes)") { s, raw throws(SettingsError) in
            s.listenMaxUploadBytes = try integer(raw, "listen.max_upload_bytes", in: 0...(1 << 50))
        },
        Key(name: "listen.drain_seconds", summary: "on SIGTERM, how long in-flight requests may take to finish (default 10 s)") { s, raw throws(SettingsError) in
            s.listenDrainSeconds = try seconds(raw, "listen.drain_seconds", allowZero: true)
        },
        Key(name: "upstream.url", summary: "base URL, http:// allowed (default https://api.pixxel.space)") { s, raw throws(SettingsError) in
            let value = try text(raw, "upstream.url", "a URL")
            guard let url = UpstreamURL(parsing: value) else {
                throw SettingsError(key: "upstream.url", "expected http://HOST[:PORT] or https://HOST[:PORT], got \"\(value)\"")
            }
            s.upstreamURL = url
        },
        Key(name: "upstream.api_key", summary: "the stored API key (secret; see README for the other sources)") { _, raw throws(SettingsError) in
            // Resolved by SettingsLoader together with its other sources; only checked here.
            _ = try text(raw, "upstream.api_key", "the API key")
        },
        Key(name: "upstream.api_key_file", summary: "file holding the API key") { _, raw throws(SettingsError) in
            _ = try text(raw, "upstream.api_key_file", "a file path")
        },
        Key(name: "upstream.ca_file", summary: "extra PEM CA bundle for the upstream's certificate (default: system trust store only)") { s, raw throws(SettingsError) in
            s.upstreamCAFile = try text(raw, "upstream.ca_file", "a file path")
        },
        Key(name: "upstream.timeout_seconds", summary: "whole-request timeout of one upstream call (default 30 s)") { s, raw throws(SettingsError) in
            s.upstreamTimeoutSeconds = try seconds(raw, "upstream.timeout_seconds", allowZero: false)
        },
        Key(name: "upstream.max_connections", summary: "upstream connections open at once (default 8)") { s, raw throws(SettingsError) in
            s.upstreamMaxConnections = try integer(raw, "upstream.max_connections", in: 1...1024)
        },
        Key(name: "upstream.max_response_bytes", summary: "largest upstream answer accepted, larger gives 502 (default 67108864 bytes)") { s, raw throws(SettingsError) in
            s.upstreamMaxResponseBytes = try integer(raw, "upstream.max_response_bytes", in: 1024...1 << 31)
        },
        Key(name: "upstream.max_queue", summary: "requests that may wait for a free upstream connection (default 1024)") { s, raw throws(SettingsError) in
            s.upstreamMaxQueue = try integer(raw, "upstream.max_queue", in: 0...1_000_000)
        },
        Key(name: "upstream.requests_per_second", summary: "upstream call budget, token bucket; 0 = unlimited (default 5)") { s, raw throws(SettingsError) in
            s.upstreamRequestsPerSecond = try number(raw, "upstream.requests_per_second", in: 0...1_000_000)
        },
        Key(name: "upstream.burst", summary: "token bucket size (default = requests_per_second, at least 1)") { s, raw throws(SettingsError) in
            s.upstreamBurst = try number(raw, "upstream.burst", in: 1...1_000_000)
        },
        Key(name: "upstream.max_retry_after_seconds", summary: "longest pause honoured after an upstream Retry-After (default 300 s)") { s, raw throws(SettingsError) in
            s.upstreamMaxRetryAfterSeconds = try seconds(raw, "upstream.max_retry_after_seconds", allowZero: true)
        },
        Key(name: "cache.directory", summary: "on-disk store, created if missing (default ./cache)") { s, raw throws(SettingsError) in
            s.cacheDirectory = try text(raw, "cache.directory", "a directory path")
        },
        Key(name: "cache.memory_mb", summary: "memory tier budget (default 256 MiB)") { s, raw throws(SettingsError) in
            s.cacheMemoryMB = try integer(raw, "cache.memory_mb", in: 1...1 << 20)
        },
        Key(name: "cache.disk_mb", summary: "disk tier budget, oldest-used evicted first (default 4096 MiB)") { s, raw throws(SettingsError) in
            s.cacheDiskMB = try integer(raw, "cache.disk_mb", in: 1...1 << 24)
        },
        Key(name: "cache.ttl.active_job_seconds", summary: "freshness of a job not in a terminal status (default 10 s)") { s, raw throws(SettingsError) in
            s.activeJobTTLSeconds = try seconds(raw, "cache.ttl.active_job_seconds", allowZero: true)
        },
        Key(name: "cache.ttl.terminal_job_seconds", summary: "freshness of a job in a terminal status (default 86400 s)") { s, raw throws(SettingsError) in
            s.terminalJobTTLSeconds = try seconds(raw, "cache.ttl.terminal_job_seconds", allowZero: true)
        },
        Key(name: "cache.ttl.job_list_seconds", summary: "freshness of a workflow's job list (default 15 s)") { s, raw throws(SettingsError) in
            s.jobListTTLSeconds = try seconds(raw, "cache.ttl.job_list_seconds", allowZero: true)
        },
        Key(name: "cache.terminal_statuses", summary: "statuses that never change again, case-insensitive (default completed, failed, cancelled, canceled, succeeded, error)") { s, raw throws(SettingsError) in
            let items: [String]
            switch raw {
            case .list(let list): items = list
            case .scalar(let text): items = text.split(separator: ",").map(String.init)
            }
            let statuses = items.map { $0.trimmingSpaces().lowercased() }.filter { !$0.isEmpty }
            guard !statuses.isEmpty else {
                throw SettingsError(key: "cache.terminal_statuses", "expected at least one status")
            }
            s.terminalStatuses = statuses
        },
        Key(name: "cache.routes", summary: "other GET routes to cache, PATTERN SECONDS each; {name} matches one path segment, the query is part of the key (default none)") { s, raw throws(SettingsError) in
            let items: [String]
            switch raw {
            case .list(let list): items = list
            case .scalar(let text): items = text.split(separator: ",").map(String.init)
            }
            var rules: [CacheRouteRule] = []
            for item in items.map({ $0.trimmingSpaces() }) where !item.isEmpty {
                switch CacheRouteRule.parse(item) {
                case .success(let rule): rules.append(rule)
                case .failure(let error): throw error
                }
            }
            s.cacheRoutes = rules
        },
        Key(name: "cache.stale_while_revalidate_seconds", summary: "after expiry: serve stale at once, refresh in the background (default 30 s)") { s, raw throws(SettingsError) in
            s.staleWhileRevalidateSeconds = try seconds(raw, "cache.stale_while_revalidate_seconds", allowZero: true)
        },
        Key(name: "cache.stale_if_error_seconds", summary: "after expiry: serve stale when the upstream fails (default 86400 s)") { s, raw throws(SettingsError) in
            s.staleIfErrorSeconds = try seconds(raw, "cache.stale_if_error_seconds", allowZero: true)
        },
        Key(name: "shared.redis_url", summary: "redis://[:password@]host:port[/db] shared by several instances: one cache tier, one budget (default empty: off)") { s, raw throws(SettingsError) in
            guard case .scalar(let value) = raw, !value.trimmingSpaces().isEmpty else {
                if case .list = raw { throw SettingsError(key: "shared.redis_url", "expected a redis:// URL, got a list") }
                s.sharedRedisURL = nil
                return
            }
            // The value is never echoed: it may hold the password.
            guard let url = RedisURL(parsing: value.trimmingSpaces()) else {
                throw SettingsError(key: "shared.redis_url", "expected redis://[:password@]HOST:PORT[/DB] (DB 0 to 15999)")
            }
            s.sharedRedisURL = url
        },
        Key(name: "shared.key_prefix", summary: "prefix of every key the proxy writes in Redis (default pixxel-proxy:)") { s, raw throws(SettingsError) in
            let prefix = try text(raw, "shared.key_prefix", "a key prefix")
            guard prefix.utf8.count <= 200, !prefix.contains(where: { $0.isWhitespace || $0 == "\0" }) else {
                throw SettingsError(key: "shared.key_prefix", "expected up to 200 characters without spaces, got \"\(prefix)\"")
            }
            s.sharedKeyPrefix = prefix
        },
        Key(name: "shared.timeout_ms", summary: "longest wait for Redis on a request; past it the instance acts alone for that request (default 50 ms)") { s, raw throws(SettingsError) in
            s.sharedTimeoutMilliseconds = try integer(raw, "shared.timeout_ms", in: 1...60_000)
        },
        Key(name: "shared.instances", summary: "instances sharing the budget; while Redis is unreachable each spends requests_per_second / instances (default 2)") { s, raw throws(SettingsError) in
            s.sharedInstances = try integer(raw, "shared.instances", in: 1...1024)
        },
        Key(name: "watch.max_wait_seconds", summary: "longest Prefer: wait a request on a job or a list is held for, waiting for a change; 0 = never held (default 60 s)") { s, raw throws(SettingsError) in
            s.watchMaxWaitSeconds = try seconds(raw, "watch.max_wait_seconds", allowZero: true)
        },
        Key(name: "watch.max_streams", summary: "change streams (?watch=1) open at once, in all; 0 = none (default 1000)") { s, raw throws(SettingsError) in
            s.watchMaxStreams = try integer(raw, "watch.max_streams", in: 0...1_000_000)
        },
        Key(name: "watch.max_streams_per_client", summary: "change streams one client (token) may have open at once (default 16)") { s, raw throws(SettingsError) in
            s.watchMaxStreamsPerClient = try integer(raw, "watch.max_streams_per_client", in: 1...1_000_000)
        },
        Key(name: "auth.clients_file", summary: "who may use the proxy: NAME SCOPES sha256:HEX lines (default config/clients)") { s, raw throws(SettingsError) in
            s.clientsFile = try text(raw, "auth.clients_file", "a file path")
        },
        Key(name: "auth.allow_anonymous", summary: "requests without a token get read and write scopes; loopback listen.host only (default false)") { s, raw throws(SettingsError) in
            s.allowAnonymous = try boolean(raw, "auth.allow_anonymous")
        },
        Key(name: "metrics.access", summary: "who may read /metrics: auto (open on a loopback listen.host, admin scope otherwise), open or admin (default auto)") { s, raw throws(SettingsError) in
            let access = try text(raw, "metrics.access", "auto, open or admin").lowercased()
            guard ["auto", "open", "admin"].contains(access) else {
                throw SettingsError(key: "metrics.access", "expected auto, open or admin, got \"\(access)\"")
            }
            s.metricsAccess = access
        },
        Key(name: "log.level", summary: "trace, debug, info, notice, warning, error or critical (default info)") { s, raw throws(SettingsError) in
            let level = try text(raw, "log.level", "a log level").lowercased()
            guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(level) else {
                throw SettingsError(key: "log.level", "expected trace, debug, info, notice, warning, error or critical, got \"\(level)\"")
            }
            s.logLevel = level
        },
    ]

    // MARK: value rules

    static func text(_ raw: RawSetting, _ key: String, _ what: String) throws(SettingsError) -> String {
        guard case .scalar(let value) = raw else { throw SettingsError(key: key, "expected \(what), got a list") }
        let trimmed = value.trimmingSpaces()
        guard !trimmed.isEmpty else { throw SettingsError(key: key, "expected \(what), got an empty value") }
        return trimmed
    }

    static func integer(_ raw: RawSetting, _ key: String, in range: ClosedRange<Int>) throws(SettingsError) -> Int {
        let value = try text(raw, key, "a whole number")
        guard let number = Int(value), range.contains(number) else {
            throw SettingsError(key: key, "expected a whole number from \(range.lowerBound) to \(range.upperBound), got \"\(value)\"")
        }
        return number
    }

    static func number(_ raw: RawSetting, _ key: String, in range: ClosedRange<Double>) throws(SettingsError) -> Double {
        let value = try text(raw, key, "a number")
        guard let number = Double(value), number.isFinite, range.contains(number) else {
            throw SettingsError(key: key, "expected a number from \(range.lowerBound) to \(range.upperBound), got \"\(value)\"")
        }
        return number
    }

    static func seconds(_ raw: RawSetting, _ key: String, allowZero: Bool) throws(SettingsError) -> Double {
        let value = try text(raw, key, "a number of seconds")
        guard let number = Double(value), number.isFinite, number >= 0, allowZero || number > 0, number <= 315_360_000 else {
            // The upper bound is named too: "more than zero" for 1e300 read as a contradiction.
            throw SettingsError(key: key, "expected \(allowZero ? "0" : "more than 0") to 315360000 seconds (ten years), got \"\(value)\"")
        }
        return number
    }

    static func boolean(_ raw: RawSetting, _ key: String) throws(SettingsError) -> Bool {
        let value = try text(raw, key, "true or false").lowercased()
        switch value {
        case "true", "yes", "on", "1": return true
        case "false", "no", "off", "0": return false
        default: throw SettingsError(key: key, "expected true or false, got \"\(value)\"")
        }
    }
}

extension String {
    func trimmingSpaces() -> String {
        var view = Substring(self)
        while let first = view.first, first.isWhitespace { view.removeFirst() }
        while let last = view.last, last.isWhitespace { view.removeLast() }
        return String(view)
    }

    func replacingDots() -> String {
        String(map { $0 == "." ? "_" : $0 })
    }
}
