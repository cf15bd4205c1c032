import Foundation
import ProxyServer
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `token add` and `token revoke` on the clients file: whole replacements, kept owner and mode,
/// symlinks followed, CRLF files read, and no change lost to a concurrent one.
@Suite struct ClientsFileWriterTests {
    /// A bare one-character file name: Foundation's `deletingLastPathComponent` trapped on it
    /// after the file was replaced (found by review).
    @Test func revokeWithABareFileNameDoesNotCrash() throws {
        let directory = TemporaryDirectory()
        _ = try ClientsFileWriter.add(name: "a", scopesText: "read", path: directory.path + "/c")
        _ = try ClientsFileWriter.add(name: "b", scopesText: "read", path: directory.path + "/c")
        let shell = try ChildProcess("/bin/sh", ["-c", "cd '\(directory.path)' && exec '\(builtExecutable("pixxel-proxy"))' token revoke a --clients-file c"],
                                     environment: ["PATH": "/usr/bin:/bin", "SWIFT_BACKTRACE": "enable=no"], stdout: .pipe, stderr: .pipe)
        let stderr = String(decoding: shell.standardError!.readDataToEndOfFile(), as: UTF8.self)
        shell.waitUntilExit()
        #expect(shell.terminationStatus == 0, "exit \(shell.terminationStatus): \(stderr.prefix(300))")
        #expect(stderr.contains("revoked client a"))
        let left = try String(contentsOfFile: directory.path + "/c", encoding: .utf8)
        #expect(!left.contains("a read "), "the file was replaced before the crash: \(left)")
    }

    /// A revoke must not replace a symlinked clients file with a copy: the target (shared with
    /// another instance, or managed elsewhere) keeps the revoked token.
    @Test func revokeThroughASymlinkRevokesInTheTarget() throws {
        let directory = TemporaryDirectory()
        let target = directory.path + "/shared-clients"
        _ = try ClientsFileWriter.add(name: "a", scopesText: "read", path: target)
        _ = try ClientsFileWriter.add(name: "b", scopesText: "read", path: target)
        let link = directory.path + "/clients"
        #expect(symlink(target, link) == 0)
        try ClientsFileWriter.revoke(name: "a", path: link)
        let linkKept = (try? FileManager.default.destinationOfSymbolicLink(atPath: link)) != nil
        #expect(linkKept, "the symlink was replaced by a regular file")
        let shared = try String(contentsOfFile: target, encoding: .utf8)
        #expect(!shared.contains("a read "), "the revoked token is still in the file the link pointed to")
    }

    final class Failures: Sendable {
        let list = Mutex<[String]>([])
        func record(_ body: () throws -> Void) {
            do { try body() } catch { list.withLock { $0.append("\(error)") } }
        }
    }

    @Test func concurrentAddsAndRevokesLoseNoChange() throws {
        for round in 0..<10 {
            let directory = TemporaryDirectory()
            let path = directory.path + "/clients"
            for name in ["keep", "gone1", "gone2"] { _ = try ClientsFileWriter.add(name: name, scopesText: "read", path: path) }
            let failures = Failures()
            DispatchQueue.concurrentPerform(iterations: 3) { index in
                failures.record {
                    switch index {
                    case 0: _ = try ClientsFileWriter.add(name: "new\(round)", scopesText: "read", path: path)
                    case 1: try ClientsFileWriter.revoke(name: "gone1", path: path)
                    default: try ClientsFileWriter.revoke(name: "gone2", path: path)
                    }
                }
            }
            #expect(failures.list.withLock { $0 }.isEmpty)
            #expect(try ClientsFileWriter.list(path: path).map(\.name).sorted() == ["keep", "new\(round)"], "round \(round)")
        }
    }

    @Test func aRevokeKeepsTheFilesOwnerAndMode() throws {
        guard getuid() == 0 else { return }  // chown needs root; CI runs as root
        let directory = TemporaryDirectory()
        let path = directory.path + "/clients"
        for name in ["a", "b"] { _ = try ClientsFileWriter.add(name: name, scopesText: "read", path: path) }
        #expect(chown(path, 65534, 65534) == 0 && chmod(path, 0o600) == 0)
        try ClientsFileWriter.revoke(name: "a", path: path)
        var status = stat()
        #expect(stat(path, &status) == 0)
        #expect(status.st_uid == 65534 && status.st_gid == 65534 && status.st_mode & 0o777 == 0o600,
                "a service reading the file as its owner still can")
    }

    @Test func aClientsFileWithCRLFLineEndsIsRead() throws {
        let hash = String(repeating: "ab", count: 32)
        let directory = TemporaryDirectory()
        let path = directory.file("clients", "# edited on Windows\r\na read sha256:\(hash)\r\nb read,write sha256:\(hash.uppercased())\r\n")
        #expect(try ClientsFileWriter.list(path: path).map(\.name) == ["a", "b"])
        try ClientsFileWriter.revoke(name: "a", path: path)
        #expect(try ClientsFileWriter.list(path: path).map(\.name) == ["b"])
    }

    /// The lines a revoke keeps are kept byte for byte: their CRLF, and a comment's byte that is
    /// not UTF-8 (found by review: CRLF became LF and 0xFF became U+FFFD).
    @Test func aRevokeKeepsTheOtherLinesByteForByte() throws {
        let hash = String(repeating: "ab", count: 32)
        let directory = TemporaryDirectory()
        let path = directory.path + "/clients"
        let kept = Array("# caf".utf8) + [0xFF] + Array(" comment\r\nadmin1 admin sha256:\(hash)\r\n".utf8)
        let revoked = Array("reader read sha256:\(hash)\r\n".utf8)
        #expect(FileManager.default.createFile(atPath: path, contents: Data(kept + revoked)))
        try ClientsFileWriter.revoke(name: "reader", path: path)
        #expect(FileManager.default.contents(atPath: path).map { [UInt8]($0) } == kept)
    }

    /// A clients file that is there but cannot be read is not taken for an empty one: adding to
    /// it blind wrote a second line for a name it held, and the next reload refused the file.
    @Test func tokenAddRefusesAClientsFileItCannotRead() throws {
        let directory = TemporaryDirectory()
        // A directory: unreadable as a file even to root (a mode would not stop root).
        let path = directory.path + "/clients"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        #expect(throws: (any Error).self) { try ClientsFileWriter.add(name: "s4", scopesText: "admin", path: path) }
        do {
            _ = try ClientsFileWriter.add(name: "s4", scopesText: "admin", path: path)
        } catch {
            #expect("\(error)".contains("cannot read \(path) (is a directory)"), "\(error)")
        }
    }

    /// A clients file that starts with a byte order mark: its first client is revoked too
    /// (found by review: revoke said done, and the token kept working).
    @Test func aRevokeFindsTheFirstClientBehindAByteOrderMark() throws {
        let hash = String(repeating: "ab", count: 32)
        let directory = TemporaryDirectory()
        let path = directory.path + "/clients"
        let bytes = [0xEF, 0xBB, 0xBF] + Array("alice admin sha256:\(hash)\nbob read sha256:\(hash)\n".utf8)
        #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
        try ClientsFileWriter.revoke(name: "alice", path: path)
        #expect(try ClientsFileWriter.list(path: path).map(\.name) == ["bob"])
    }
}
