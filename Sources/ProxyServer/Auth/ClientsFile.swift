import EventHTTP

/// What a client may do.
public struct Scopes: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// GET and HEAD.
    public static let read = Scopes(rawValue: 1)
    /// POST and every other method forwarded upstream.
    public static let write = Scopes(rawValue: 2)
    /// The /admin routes.
    public static let admin = Scopes(rawValue: 4)

    static let names: [(String, Scopes)] = [("read", .read), ("write", .write), ("admin", .admin)]

    /// Parses `read,write[,admin]`; nil for an unknown or empty list.
    public init?(parsing text: String) {
        var scopes: Scopes = []
        for name in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard let scope = Self.names.first(where: { $0.0 == name })?.1 else { return nil }
            scopes.insert(scope)
        }
        guard !scopes.isEmpty else { return nil }
        self = scopes
    }

    public var description: String { Self.names.filter { contains($0.1) }.map(\.0).joined(separator: ",") }
}

/// One line of the clients file: a name, its scopes and the SHA-256 of its token.
public struct ClientRecord: Sendable, Equatable {
    public let name: String
    public let scopes: Scopes
    public let tokenHash: [UInt8]

    public init(name: String, scopes: Scopes, tokenHash: [UInt8]) {
        self.name = name
        self.scopes = scopes
        self.tokenHash = tokenHash
    }

    /// The line as written to the clients file.
    public var line: String { "\(name) \(scopes) sha256:\(tokenHash.map { String($0, radix: 16).leftPadded(2) }.joined())" }
}

/// The clients file: `NAME SCOPES sha256:HEX` lines, `#` comments.
public enum ClientsFile {
    public struct Invalid: Error, Sendable, Equatable, CustomStringConvertible {
        public let line: Int
        public let message: String
        public var description: String { "line \(line): \(message)" }
    }

    public static func parse(_ text: String) -> Result<[ClientRecord], Invalid> {
        var records: [ClientRecord] = []
        // A byte order mark, as Windows editors write one, is no part of the first name (found
        // by review: the file was refused for its first line's name).
        let text = text.hasPrefix("\u{FEFF}") ? String(text.dropFirst()) : text
        // "\r\n" is one Character in Swift: a split on "\n" alone left a CRLF file one line.
        for (index, rawLine) in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }).enumerated() {
            let lineNumber = index + 1
            let content = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let fields = content.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            if fields.isEmpty { continue }
            guard fields.count == 3 else {
                return .failure(Invalid(line: lineNumber, message: "expected NAME SCOPES sha256:HEX, got \(fields.count) fields"))
            }
            let name = String(fields[0])
            guard isValidName(name) else {
                return .failure(Invalid(line: lineNumber, message: "a name may use letters, digits, '.', '_' and '-' only"))
            }
            guard !records.contains(where: { $0.name == name }) else {
                return .failure(Invalid(line: lineNumber, message: "client \(name) is listed twice"))
            }
            guard let scopes = Scopes(parsing: String(fields[1])) else {
                return .failure(Invalid(line: lineNumber, message: "scopes must be a comma-separated list of read, write, admin"))
            }
            guard fields[2].hasPrefix("sha256:"), let hash = decodeHex(fields[2].dropFirst(7)), hash.count == 32 else {
                return .failure(Invalid(line: lineNumber, message: "the hash must be sha256: followed by 64 hex digits"))
            }
            records.append(ClientRecord(name: name, scopes: scopes, tokenHash: hash))
        }
        return .success(records)
    }

    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64 && name.unicodeScalars.allSatisfy {
            ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "." || $0 == "_" || $0 == "-"
        }
    }

    static func decodeHex(_ text: Substring) -> [UInt8]? {
        let bytes = Array(text.utf8)
        guard bytes.count % 2 == 0, bytes.allSatisfy(\.isHexDigit) else { return nil }
        return stride(from: 0, to: bytes.count, by: 2).map { bytes[$0].hexValue << 4 | bytes[$0 + 1].hexValue }
    }
}

/// Tokens: made from 32 random bytes, stored only as their SHA-256.
public enum Token {
    /// A new random token (`pxp_` and 64 hex digits), from OpenSSL's CSPRNG.
    public static func generate() -> String {
        guard let bytes = OpenSSLCrypto.randomBytes(32) else { preconditionFailure("OpenSSL RAND_bytes failed") }
        return "pxp_" + bytes.map { String($0, radix: 16).leftPadded(2) }.joined()
    }

    public static func sha256(_ token: String) -> [UInt8] {
        OpenSSLCrypto.sha256(Array(token.utf8))
    }

    /// Equality of two 32-byte hashes in time independent of where they differ.
    static func hashesEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        OpenSSLCrypto.constantTimeEqual(a, b)
    }
}

extension String {
    func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
