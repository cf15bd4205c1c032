/// Every setting of pixxel-proxy, validated. Built by `SettingsParser` from raw values, which
/// `SettingsLoader` gathers from the YAML file, the environment and the key sources.
public struct ProxySettings: Sendable, Equatable {
    public var listenHost = "127.0.0.1"
    public var listenPort: UInt16 = 8787
    public var listenTimeoutSeconds = 30.0
    public var listenMaxHeaderBytes = 16_384
    public var listenMaxBodyBytes = 10 << 20
    /// 0: no limit.
    public var listenMaxUploadBytes = 1 << 30
    public var listenDrainSeconds = 10.0
    /// The longest `Prefer: wait` a request is held for; 0: never held.
    public var watchMaxWaitSeconds = 60.0
    /// Change streams (`?watch=1`) open at once, in all and per client; 0: none.
    public var watchMaxStreams = 1000
    public var watchMaxStreamsPerClient = 16
    /// How often a change stream with nothing to say sends a comment line (not a config key:
    /// the contract says at least every 15 s; tests shorten it).
    public var watchHeartbeatSeconds = 14.0

    public var upstreamURL = UpstreamURL(scheme: .https, host: "api.pixxel.space", port: 443, basePath: "")
    public var upstreamAPIKey: Secret?
    public var upstreamCAFile: String?
    public var upstreamTimeoutSeconds = 30.0
    public var upstreamMaxConnections = 8
    public var upstreamMaxResponseBytes = 64 << 20
    public var upstreamMaxQueue = 1024
    public var upstreamRequestsPerSecond = 5.0
    public var upstreamBurst = 5.0
    public var upstreamMaxRetryAfterSeconds = 300.0

    public var cacheDirectory = "./cache"
    public var cacheMemoryMB = 256
    public var cacheDiskMB = 4096
    public var activeJobTTLSeconds = 10.0
    public var terminalJobTTLSeconds = 86_400.0
    public var jobListTTLSeconds = 15.0
    public var terminalStatuses: [String] = ["completed", "failed", "cancelled", "canceled", "succeeded", "error"]
    public var staleWhileRevalidateSeconds = 30.0
    public var staleIfErrorSeconds = 86_400.0
    /// `cache.routes`, in the order written (the first that matches a path applies).
    public var cacheRoutes: [CacheRouteRule] = []

    /// `shared.*`: nil runs the instance alone, as without Redis.
    public var sharedRedisURL: RedisURL?
    public var sharedKeyPrefix = "pixxel-proxy:"
    public var sharedTimeoutMilliseconds = 50
    public var sharedInstances = 2

    public var clientsFile = "config/clients"
    public var allowAnonymous = false

    public var logLevel = "info"
    public var metricsAccess = "auto"

    public init() {}
}

/// A value that must never be printed: its description is always redacted.
public struct Secret: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    public let value: String
    /// Where the value came from (a key, a variable or a file), safe to print.
    public let origin: String

    public init(_ value: String, origin: String) {
        self.value = value
        self.origin = origin
    }

    public var description: String { "<redacted>" }
    public var debugDescription: String { "<redacted>" }
}

/// The upstream's base URL, split for the HTTP client.
public struct UpstreamURL: Sendable, Equatable, CustomStringConvertible {
    public enum Scheme: String, Sendable { case http, https }
    public var scheme: Scheme
    public var host: String
    public var port: UInt16
    /// A path prefix without a trailing slash ("" for none).
    public var basePath: String

    public init(scheme: Scheme, host: String, port: UInt16, basePath: String) {
        self.scheme = scheme
        self.host = host
        self.port = port
        self.basePath = basePath
    }

    /// Parses `http[s]://host[:port][/prefix]`; nil for anything else.
    public init?(parsing text: String) {
        guard let separator = text.range(of: "://") else { return nil }
        guard let scheme = Scheme(rawValue: text[..<separator.lowerBound].lowercased()) else { return nil }
        var rest = Substring(text[separator.upperBound...])
        guard !rest.contains("?"), !rest.contains("#"), !rest.contains("@"), !rest.contains(" ") else { return nil }
        var path = ""
        if let slash = rest.firstIndex(of: "/") {
            path = String(rest[slash...])
            rest = rest[..<slash]
        }
        while path.hasSuffix("/") { path.removeLast() }
        if path.split(separator: "/").contains(where: { $0 == "." || $0 == ".." }) { return nil }
        var host = String(rest)
        var port: UInt16 = scheme == .https ? 443 : 80
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return nil }
            let after = host[host.index(after: close)...]
            if after.hasPrefix(":") {
                guard let parsed = UInt16(after.dropFirst()), parsed > 0 else { return nil }
                port = parsed
            } else if !after.isEmpty { return nil }
            host = String(host[host.index(after: host.startIndex)..<close])
        } else if let colon = host.lastIndex(of: ":") {
            guard let parsed = UInt16(host[host.index(after: colon)...]), parsed > 0 else { return nil }
            port = parsed
            host = String(host[..<colon])
        }
        guard !host.isEmpty else { return nil }
        self.init(scheme: scheme, host: host, port: port, basePath: path)
    }

    public var description: String {
        let hostPart = host.contains(":") ? "[\(host)]" : host
        let defaultPort: UInt16 = scheme == .https ? 443 : 80
        return "\(scheme.rawValue)://\(hostPart)\(port == defaultPort ? "" : ":\(port)")\(basePath)"
    }
}
