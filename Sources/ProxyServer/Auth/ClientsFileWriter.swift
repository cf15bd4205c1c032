import Foundation
import ProxyConfig

/// Appends clients to a clients file (for `pixxel-proxy token add`).
public enum ClientsFileWriter {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Makes a token for `name`, appends `NAME SCOPES sha256:HEX` durably, and returns the token.
    public static func add(name: String, scopesText: String, path: String) throws -> String {
        let path = resolved(path)
        return try withDirectoryLock(of: path) { try addLocked(name: name, scopesText: scopesText, path: path) }
    }

    private static func addLocked(name: String, scopesText: String, path: String) throws -> String {
        guard ClientsFile.isValidName(name) else {
            throw Failure(description: "invalid client name \"\(name)\": use letters, digits, '.', '_' and '-' (at most 64)")
        }
        guard let scopes = Scopes(parsing: scopesText) else {
            throw Failure(description: "invalid scopes \"\(scopesText)\": use a comma-separated list of read, write, admin")
        }
        var existing = ""
        // A file there that cannot be read is not an empty one: appending to it blind wrote a
        // second line for a name it held, and the next reload refused the file (found by review).
        let data = FileManager.default.contents(atPath: path)
        if data == nil, FileManager.default.fileExists(atPath: path) {
            throw Failure(description: "cannot read \(path) (\(OSReason.unreadable(path))); a client is added only to a file that can be checked for the name")
        }
        if let data {
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
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            throw Failure(description: "\(path) is a directory, not a clients file")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw Failure(description: "cannot read \(path) (\(OSReason.unreadable(path)))")
        }
        switch ClientsFile.parse(String(decoding: data, as: UTF8.self)) {
        case .success(let clients): return clients
        case .failure(let invalid): throw Failure(description: "\(path) \(invalid)")
        }
    }

    /// Removes `name`'s line, keeping every other line (comments too) as it was. The file is
    /// replaced whole (written beside it, synced, renamed over it), so a reload or a crash sees
    /// either the old list or the new one, never half of it; its mode and owner are kept, a
    /// symlink is followed (the file it names is the one replaced), and `add` and `revoke`
    /// take turns (a lock on the directory), so neither loses the other's change (found by
    /// review: 24 of 40 concurrent add and revoke pairs lost the added client).
    public static func revoke(name: String, path: String) throws {
        let path = resolved(path)
        try withDirectoryLock(of: path) {
            let clients = try list(path: path)
            guard clients.contains(where: { $0.name == name }) else {
                throw Failure(description: "no client \(name) in \(path) (clients: \(clients.map(\.name).joined(separator: ", ")))")
            }
            // Lines are kept byte for byte, line endings and all (found by review: CRLF became
            // LF and a byte that is not UTF-8 became U+FFFD in the lines kept).
            let bytes = [UInt8](FileManager.default.contents(atPath: path) ?? Data())
            let kept = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).filter { line in
                Self.clientName(onLine: line) != name
            }
            try replaceDurably(Array(kept.joined(separator: [UInt8(ascii: "\n")])), at: path)
        }
    }

    /// `path` with its symlinks followed (itself when it does not exist yet).
    static func resolved(_ path: String) -> String {
        guard let real = realpath(path, nil) else { return path }
        defer { free(real) }
        return String(cString: real)
    }

    /// The directory part of `path` ("." for a bare name; Foundation's
    /// `deletingLastPathComponent` trapped on a one-character name without a slash).
    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let directory = String(path[..<slash])
        return directory.isEmpty ? "/" : directory
    }

    /// Runs `body` holding an exclusive lock on the clients file's directory (not on the file,
    /// which `revoke` replaces: a waiter would then write to the old one).
    static func withDirectoryLock<T>(of path: String, _ body: () throws -> T) throws -> T {
        let directory = directory(of: path)
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw Failure(description: "cannot open \(directory) (\(OSReason.text(errno)))") }
        defer { close(fd) }
        while flock(fd, LOCK_EX) != 0 {
            guard errno == EINTR else { throw Failure(description: "cannot lock \(directory) (\(OSReason.text(errno)))") }
        }
        defer { _ = flock(fd, LOCK_UN) }
        return try body()
    }

    /// The name a clients-file line gives (its first field before any comment), if any.
    static func clientName(onLine line: ArraySlice<UInt8>) -> String? {
        // A byte order mark before the first name is no part of it, as `ClientsFile.parse` reads
        // it (found by review: revoke said done and left a BOM file's first client in place).
        let line = line.starts(with: [0xEF, 0xBB, 0xBF]) ? line.dropFirst(3) : line
        let content = line.prefix { $0 != UInt8(ascii: "#") }
        let field = content.split(whereSeparator: { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") || $0 == UInt8(ascii: "\r") }).first
        return field.map { String(decoding: $0, as: UTF8.self) }
    }

    static func replaceDurably(_ bytes: [UInt8], at path: String) throws {
        var status = stat()
        let existing = stat(path, &status) == 0
        let mode = existing ? status.st_mode & 0o7777 : 0o640
        let temporary = path + ".new-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else { throw Failure(description: "cannot write \(temporary) (\(OSReason.text(errno)))") }
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        // The owner too: a file the service reads as its own user must stay readable by it.
        if existing { _ = fchown(fd, status.st_uid, status.st_gid) }
        let synced = written == bytes.count && fchmod(fd, mode) == 0 && fsync(fd) == 0
        let problem = OSReason.text(errno)
        close(fd)
        guard synced, rename(temporary, path) == 0 else {
            unlink(temporary)
            throw Failure(description: "cannot write \(path) (\(problem))")
        }
        let directoryFD = open(directory(of: path), O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryFD >= 0 {
            fsync(directoryFD)
            close(directoryFD)
        }
    }

    static func appendDurably(_ text: String, to path: String) throws {
        let directory = directory(of: path)
        if directory != "." { try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
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
