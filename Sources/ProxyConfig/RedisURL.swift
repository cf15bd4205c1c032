/// `shared.redis_url`: `redis://[:password@]host:port[/db]` (RFC 3986 authority; a user name
/// before the colon is accepted for Redis 6 ACLs). The password is a `Secret`: it is never
/// printed, and `description` shows the URL with it redacted.
public struct RedisURL: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var user: String?
    public var password: Secret?
    public var database: Int

    public init(host: String, port: Int = 6379, user: String? = nil, password: Secret? = nil, database: Int = 0) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database
    }

    /// Parses the URL; nil for anything else (another scheme, a query, a bad port or db).
    public init?(parsing text: String) {
        guard text.lowercased().hasPrefix("redis://") else { return nil }
        var rest = Substring(text.dropFirst("redis://".count))
        guard !rest.contains("?"), !rest.contains("#"), !rest.contains(where: { $0 == " " || $0.isNewline || $0 == "\0" }) else {
            return nil
        }
        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let path = rest[rest.index(after: slash)...]
            if !path.isEmpty {
                guard let parsed = Int(path), (0...15_999).contains(parsed) else { return nil }
                database = parsed
            }
            rest = rest[..<slash]
        }
        var user: String?
        var password: Secret?
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            guard let colon = credentials.firstIndex(of: ":") else { return nil }
            let name = credentials[..<colon]
            let secret = credentials[credentials.index(after: colon)...]
            guard let decodedSecret = Self.percentDecoded(secret), !decodedSecret.isEmpty else { return nil }
            if !name.isEmpty {
                guard let decodedName = Self.percentDecoded(name) else { return nil }
                user = decodedName
            }
            password = Secret(decodedSecret, origin: "shared.redis_url")
        }
        var host = String(rest)
        var port = 6379
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return nil }
            let after = host[host.index(after: close)...]
            if after.hasPrefix(":") {
                guard let parsed = Int(after.dropFirst()), (1...65_535).contains(parsed) else { return nil }
                port = parsed
            } else if !after.isEmpty { return nil }
            host = String(host[host.index(after: host.startIndex)..<close])
        } else if let colon = host.lastIndex(of: ":") {
            guard let parsed = Int(host[host.index(after: colon)...]), (1...65_535).contains(parsed) else { return nil }
            port = parsed
            host = String(host[..<colon])
        }
        guard !host.isEmpty, !host.contains(":") || rest.hasPrefix("[") else { return nil }
        self.init(host: host, port: port, user: user, password: password, database: database)
    }

    /// `%XX` escapes decoded (a password may hold `@`, `:` or `/` that way); nil for a bad escape.
    private static func percentDecoded(_ text: Substring) -> String? {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else { bytes.append(byte); continue }
            guard let high = iterator.next().flatMap(Self.hexValue), let low = iterator.next().flatMap(Self.hexValue) else { return nil }
            bytes.append(high << 4 | low)
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    public var description: String {
        let hostPart = host.contains(":") ? "[\(host)]" : host
        let credentials = password == nil ? "" : "\(user ?? ""):<redacted>@"
        return "redis://\(credentials)\(hostPart):\(port)/\(database)"
    }
}
