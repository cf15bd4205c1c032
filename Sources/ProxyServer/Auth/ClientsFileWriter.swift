import Foundation
import ProxyConfig

/// Appends clients to a clients file (for `pixxel-proxy token add`).
public enum ClientsFileWriter {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Makes a token for `name`, appends `NAME SCOPES sha256:HEX` durably, and returns the token.
    public static func add(name: String, scopesText: String, path: String) throws -> String {
        guard ClientsFile.isValidName(name) else {
            throw Failure(description: "invalid client name \"\(name)\": use letters, digits, '.', '_' and '-' (at most 64)")
        }
        guard let scopes = Scopes(parsing: scopesText) else {
            throw Failure(description: "invalid scopes \"\(scopesText)\": use a comma-separated list of read, write, admin")
        }
        var existing = ""
        if let data = FileManager.default.contents(atPath: path) {
            existing = String(decoding: data, as: UTF8.self)
            switch ClientsFile.parse(existing) {
            case .failure(let invalid): throw Failure(description: "\(path) \(invalid); fix it before adding clients")
            case .success(let clients) where clients.contains(where: { $0.name == name }):
                throw Failure(description: "client \(name) already exists in \(path)")
            case .success: break
            }
        }
        let token = Token.generate()
        let record = ClientRecord(name: name, scopes: scopes, tokenHash: Token.sha256(token))
        let separator = existing.isEmpty || existing.hasSuffix("\n") ? "" : "\n"
        try appendDurably(separator + record.line + "\n", to: path)
        return token
    }

    static func appendDurably(_ text: String, to path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw Failure(description: "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count, fsync(fd) == 0 else {
            throw Failure(description: "cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }
}

extension ProxyServer {
    /// Reads and checks the clients file as `serve` would; returns how many clients it lists.
    public static func validateClientsFile(_ settings: ProxySettings) throws -> Int {
        try loadClients(settings).count
    }
}
