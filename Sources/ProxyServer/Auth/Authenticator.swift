/// Who made a request, as far as auth can tell.
public enum Caller: Sendable, Equatable {
    case client(name: String, scopes: Scopes)
    /// No token, accepted because `auth.allow_anonymous` is on (loopback only).
    case anonymous
    /// No token: 401.
    case rejected
    /// An Authorization field that names no client (a wrong, revoked or mangled token): 401,
    /// told apart from no token in the log and on the status page.
    case unknownToken

    /// 401 either way.
    public var isRejected: Bool { self == .rejected || self == .unknownToken }

    /// The name for logs; never the token.
    public var logName: String {
        switch self {
        case .client(let name, _): name
        case .anonymous: "anonymous"
        case .rejected: "-"
        case .unknownToken: "?"
        }
    }

    public var scopes: Scopes {
        switch self {
        case .client(_, let scopes): scopes
        case .anonymous: [.read, .write]
        case .rejected, .unknownToken: []
        }
    }
}

/// Checks `Authorization: <token>` or `Authorization: Bearer <token>` against the clients file.
/// The token is hashed and compared with every client's hash in constant time.
public struct Authenticator: Sendable {
    public let clients: [ClientRecord]
    public let allowAnonymous: Bool

    public init(clients: [ClientRecord], allowAnonymous: Bool) {
        self.clients = clients
        self.allowAnonymous = allowAnonymous
    }

    public func authenticate(authorization: String?) -> Caller {
        guard let authorization else { return allowAnonymous ? .anonymous : .rejected }
        guard let token = Self.token(from: authorization) else { return .unknownToken }
        let hash = Token.sha256(token)
        var match: ClientRecord?
        for client in clients where Token.hashesEqual(client.tokenHash, hash) {
            match = client
        }
        guard let match else { return .unknownToken }
        return .client(name: match.name, scopes: match.scopes)
    }

    /// The token in an Authorization value, with or without the `Bearer` scheme word.
    static func token(from authorization: String) -> String? {
        var value = Substring(authorization)
        while value.first == " " { value.removeFirst() }
        while value.last == " " { value.removeLast() }
        if value.count > 7, value.prefix(7).lowercased() == "bearer " {
            value = value.dropFirst(7)
            while value.first == " " { value.removeFirst() }
        }
        guard !value.isEmpty, value.utf8.count <= 512,
              value.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F }) else { return nil }
        return String(value)
    }
}
