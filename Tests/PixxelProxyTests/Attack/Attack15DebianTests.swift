import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Attack 15: the Debian package's maintainer scripts, in a throwaway root (`dpkg --root`,
/// scripts run with DPKG_ROOT), as DebianPackageTests does.
@Suite struct Attack15DebianTests {
    func run(_ tool: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        try runProcess(tool, arguments, environment: ProcessInfo.processInfo.environment)
    }

    /// The README's two-instance steps put the Redis password in
    /// `/etc/pixxel-proxy/redis_password` (the drop-in the package ships loads it as a
    /// credential). `apt purge` deletes the API key but not this other secret: the password of
    /// the shared Redis stays on the host, and with it `/etc/pixxel-proxy`.
    @Test(.enabled(if: DebianPackageTests.available, "needs root, dpkg-deb, dpkg-shlibdeps (dpkg-dev) and systemd-analyze"))
    func purgeDeletesTheRedisPasswordTheReadmePutsNextToTheKey() throws {
        let directory = TemporaryDirectory()
        let build = try run("/bin/bash", [ShippedConfigTests.repository + "/deploy/build-deb.sh", "--fast",
                                          "--binary", builtExecutable("pixxel-proxy"), "--out", directory.path + "/out"])
        #expect(build.status == 0, "\(build.output)")
        let deb = try #require(build.output.split(separator: "\n").last.map(String.init))
        let root = directory.path + "/root"
        for path in ["/var/lib/dpkg/info", "/var/lib/dpkg/updates", "/var/lib/dpkg/triggers"] {
            try FileManager.default.createDirectory(atPath: root + path, withIntermediateDirectories: true)
        }
        for path in ["/var/lib/dpkg/status", "/var/lib/dpkg/available"] { _ = FileManager.default.createFile(atPath: root + path, contents: nil) }
        func dpkg(_ arguments: [String]) throws -> (status: Int32, output: String) {
            try run("/usr/bin/dpkg", ["--root=" + root, "--force-script-chrootless", "--force-depends", "--log=/dev/null"] + arguments)
        }
        let install = try dpkg(["--install", deb])
        #expect(install.status == 0, "\(install.output)")
        // What the README's steps make: the key, and for the shared tier the Redis password.
        _ = FileManager.default.createFile(atPath: root + "/etc/pixxel-proxy/api_key", contents: Data("key\n".utf8),
                                           attributes: [.posixPermissions: 0o600])
        _ = FileManager.default.createFile(atPath: root + "/etc/pixxel-proxy/redis_password", contents: Data("THE_REDIS_PASSWORD\n".utf8),
                                           attributes: [.posixPermissions: 0o600])
        #expect(try dpkg(["--remove", "pixxel-proxy"]).status == 0)
        #expect(FileManager.default.fileExists(atPath: root + "/etc/pixxel-proxy/redis_password"), "remove keeps it")
        #expect(try dpkg(["--purge", "pixxel-proxy"]).status == 0)
        #expect(!FileManager.default.fileExists(atPath: root + "/etc/pixxel-proxy/api_key"))
        #expect(!FileManager.default.fileExists(atPath: root + "/etc/pixxel-proxy/redis_password"), "the Redis password survives a purge")
        #expect(!FileManager.default.fileExists(atPath: root + "/etc/pixxel-proxy"))
    }
}
