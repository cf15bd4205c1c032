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

    /// The clients a clients file lists (for `pixxel-proxy token list`).
    public static func list(path: String) throws -> [ClientRecord] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw Failure(description: "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        switch ClientsFile.parse(String(decoding: data, as: UTF8.self)) {
        case .success(let clients): return clients
        case .failure(let invalid): throw Failure(description: "\(path) \(invalid)")
        }
    }

    /// Removes `name`'s line, keeping every other line (comments too) as it was. The file is
    /// replaced whole (written beside it, synced, renamed over it), so a reload or a crash sees
    /// either the old list or the new one, never half of it; its mode is kept.
    public static func revoke(name: String, path: String) throws {
        let clients = try list(path: path)
        guard clients.contains(where: { $0.name == name }) else {
            throw Failure(description: "no client \(name) in \(path) (clients: \(clients.map(\.name).joined(separator: ", ")))")
        }
        let text = String(decoding: FileManager.default.contents(atPath: path) ?? Data(), as: UTF8.self)
        let kept = text.split(separator: "\n", omittingEmptySubsequences: false).filter { line in
            let content = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            return content.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" }).first.map(String.init) != name
        }
        try replaceDurably(kept.joined(separator: "\n"), at: path)
    }

    static func replaceDurably(_ text: String, at path: String) throws {
        var status = stat()
        let mode = stat(path, &status) == 0 ? status.st_mode & 0o7777 : 0o640
        let temporary = path + ".new"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw Failure(description: "cannot write \(temporary): \(String(cString: strerror(errno)))") }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let synced = written == bytes.count && fchmod(fd, mode) == 0 && fsync(fd) == 0
        let problem = String(cString: strerror(errno))
        close(fd)
        guard synced, rename(temporary, path) == 0 else {
            unlink(temporary)
            throw Failure(description: "cannot write \(path): \(problem)")
        }
        let directory = (path as NSString).deletingLastPathComponent
        let directoryFD = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryFD >= 0 {
            fsync(directoryFD)
            close(directoryFD)
        }
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
