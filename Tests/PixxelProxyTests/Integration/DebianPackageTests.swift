import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The Debian package (`make deb`), built by the same script from the debug binary this build
/// made (`deploy/build-deb.sh --fast`): the release binary would cost minutes of CI for what
/// the packaging checks do not need. What only the release binary has (no Swift runtime
/// loaded) `build-deb.sh` itself refuses to package without. The package is installed,
/// upgraded, removed and purged in a throwaway root (`dpkg --root`, maintainer scripts run
/// with DPKG_ROOT so they leave this machine alone) and its unit verified.
@Suite(.needs(.dpkgDeb, .dpkgShlibdeps, .systemdAnalyze), .needsRoot) struct DebianPackageTests {
    func run(_ tool: String, _ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, output: String) {
        try runProcess(tool, arguments, environment: ProcessInfo.processInfo.environment.merging(environment) { $1 })
    }

    /// `make deb`'s script over the debug binary, into `directory`; the .deb's path.
    func buildPackage(in directory: TemporaryDirectory) throws -> String {
        for tool in [RequiredTool.dpkgDeb, .dpkgShlibdeps, .systemdAnalyze] { _ = try tool.require() }
        let build = try run("/bin/bash", [ShippedConfigTests.repository + "/deploy/build-deb.sh", "--fast",
                                          "--binary", builtExecutable("pixxel-proxy"), "--out", directory.path + "/out"])
        #expect(build.status == 0, "\(build.output)")
        return try #require(build.output.split(separator: "\n").last.map(String.init))
    }

    /// An empty dpkg database under `directory`/root, and dpkg pointed at it: maintainer
    /// scripts run with DPKG_ROOT set to it, so they leave this machine alone.
    func throwawayRoot(in directory: TemporaryDirectory) throws -> (path: String, dpkg: ([String]) throws -> (status: Int32, output: String)) {
        let root = directory.path + "/root"
        for path in ["/var/lib/dpkg/info", "/var/lib/dpkg/updates", "/var/lib/dpkg/triggers"] {
            try FileManager.default.createDirectory(atPath: root + path, withIntermediateDirectories: true)
        }
        for path in ["/var/lib/dpkg/status", "/var/lib/dpkg/available"] { _ = FileManager.default.createFile(atPath: root + path, contents: nil) }
        return (root, { arguments in
            try run("/usr/bin/dpkg", ["--root=" + root, "--force-script-chrootless", "--force-depends", "--log=/dev/null"] + arguments)
        })
    }

    @Test func thePackageInstallsUpgradesRemovesAndPurges() throws {
        let directory = TemporaryDirectory()
        let deb = try buildPackage(in: directory)

        // Contents: what goes where, nothing else.
        let listing = try run("/usr/bin/dpkg-deb", ["--contents", deb]).output.split(separator: "\n")
        let files = Set(listing.filter { $0.hasPrefix("-") }.map { String($0.split(separator: " ").last!) })
        #expect(files == [
            "./usr/bin/pixxel-proxy", "./lib/systemd/system/pixxel-proxy.service", "./etc/pixxel-proxy/pixxel-proxy.yaml",
            "./etc/pixxel-proxy/clients", "./usr/share/doc/pixxel-proxy/copyright", "./usr/share/doc/pixxel-proxy/changelog.gz",
            "./usr/share/doc/pixxel-proxy/README.md.gz", "./usr/share/doc/pixxel-proxy/examples/clients.example",
            "./usr/share/doc/pixxel-proxy/examples/redis.conf",
            "./usr/share/man/man1/pixxel-proxy.1.gz", "./usr/share/lintian/overrides/pixxel-proxy",
        ])
        #expect(listing.allSatisfy { $0.contains(" root/root ") })
        #expect(listing.contains { $0.hasPrefix("-rwxr-xr-x") && $0.hasSuffix("./usr/bin/pixxel-proxy") })

        // Control: the conffiles, and a Depends naming the package of every system library the
        // binary loads (the toolchain's Swift runtime, in the debug binary only, excepted).
        let control = directory.path + "/control"
        #expect(try run("/usr/bin/dpkg-deb", ["--control", deb, control]).status == 0)
        #expect(try String(contentsOfFile: control + "/conffiles", encoding: .utf8) == "/etc/pixxel-proxy/pixxel-proxy.yaml\n/etc/pixxel-proxy/clients\n")
        let depends = try run("/usr/bin/dpkg-deb", ["--field", deb, "Depends"]).output
        // The libraries the binary names itself (NEEDED), where the loader finds them (ldd).
        let needed = Set(try run("/usr/bin/readelf", ["-d", builtExecutable("pixxel-proxy")]).output
            .matches(of: /Shared library: \[([^\]]+)\]/).map { String($0.output.1) })
        let loaded = try run("/usr/bin/ldd", [builtExecutable("pixxel-proxy")]).output.split(separator: "\n")
            .map { $0.split(separator: " ").map(String.init) }
            .filter { $0.count > 2 && needed.contains($0[0].trimmingCharacters(in: .whitespaces)) && $0[2].hasPrefix("/") }.map { $0[2] }
        var packages: Set<String> = []
        for library in loaded {
            // dpkg knows a file by the path its package ships it at: /lib or, merged, /usr/lib.
            let paths = [library, URL(fileURLWithPath: library).resolvingSymlinksInPath().path, "/usr" + library]
            guard let owner = try paths.lazy.map({ try run("/usr/bin/dpkg", ["--search", $0]) }).first(where: { $0.status == 0 }) else {
                continue   // the toolchain's Swift runtime, in the debug binary only
            }
            packages.insert(String(owner.output.prefix { $0 != ":" }))
        }
        #expect(packages.isSuperset(of: ["libevent-2.1-7", "libssl3", "libsqlite3-0"]), "\(packages)")
        for package in packages { #expect(depends.contains(package + " ") || depends.contains(package + ","), "\(package) missing from Depends: \(depends)") }

        // Maintainer scripts: they parse, and nothing is enabled or started without the admin.
        for script in ["postinst", "prerm", "postrm"] {
            let text = try String(contentsOfFile: control + "/" + script, encoding: .utf8)
            #expect(try run("/bin/sh", ["-n", control + "/" + script]).status == 0, "\(script)")
            // The commands, without the next steps postinst prints for the administrator.
            let commands = text.replacing(/<<'TXT'[\s\S]*?\nTXT\n/, with: "")
            #expect(commands.contains("DPKG_ROOT") && commands.firstMatch(of: /systemctl .*(enable|start)|invoke (start|restart)|helper enable/) == nil,
                    "\(script)")
        }
        #expect(try String(contentsOfFile: control + "/prerm", encoding: .utf8).contains("deb-systemd-invoke stop pixxel-proxy.service"))

        // Install into a throwaway root.
        let (root, dpkg) = try throwawayRoot(in: directory)
        let install = try dpkg(["--install", deb])
        #expect(install.status == 0, "\(install.output)")
        #expect(install.output.contains("systemctl enable --now pixxel-proxy"), "postinst prints the next steps")
        #expect(try run("/usr/bin/dpkg", ["--root=" + root, "--status", "pixxel-proxy"]).output.contains("Status: install ok installed"))

        // The installed unit verifies, its ExecStart pointed at the installed binary and its
        // man: link answered from the root's manual pages.
        let unit = try String(contentsOfFile: root + "/lib/systemd/system/pixxel-proxy.service", encoding: .utf8)
        #expect(unit.contains("ExecStart=/usr/bin/pixxel-proxy serve --config /etc/pixxel-proxy/pixxel-proxy.yaml"))
        #expect(unit.contains("DynamicUser=yes") && unit.contains("LoadCredential=api_key:/etc/pixxel-proxy/api_key"))
        let copy = directory.file("pixxel-proxy.service", unit.replacingOccurrences(of: "/usr/bin/pixxel-proxy", with: root + "/usr/bin/pixxel-proxy"))
        let verify = try run("/usr/bin/systemd-analyze", ["verify", copy], environment: ["MANPATH": root + "/usr/share/man"])
        #expect(verify.status == 0, "\(verify.output)")
        // The shipped configuration and clients file are accepted as they are.
        let check = try run(root + "/usr/bin/pixxel-proxy", ["check-config", "--config", root + "/etc/pixxel-proxy/pixxel-proxy.yaml"],
                            environment: ["PIXXEL_PROXY_AUTH_CLIENTS_FILE": root + "/etc/pixxel-proxy/clients",
                                          "PIXXEL_PROXY_CACHE_DIRECTORY": root + "/var/lib/pixxel-proxy"])
        #expect(check.status == 0 && check.output.contains("configuration OK"), "\(check.output)")
        #expect(unit.contains("ExecStartPre=/usr/bin/pixxel-proxy check-config --config /etc/pixxel-proxy/pixxel-proxy.yaml"))
        let installedConfig = try String(contentsOfFile: root + "/etc/pixxel-proxy/pixxel-proxy.yaml", encoding: .utf8)
        #expect(installedConfig.contains("\n  directory: /var/lib/pixxel-proxy\n") && installedConfig.contains("\n  clients_file: /etc/pixxel-proxy/clients\n"))

        // An upgrade keeps an edited clients file without asking; remove keeps the
        // configuration, the key and the store; purge deletes them.
        let clients = root + "/etc/pixxel-proxy/clients"
        let added = "ci read sha256:\(String(repeating: "0", count: 64))\n"
        try (try String(contentsOfFile: clients, encoding: .utf8) + added).write(toFile: clients, atomically: true, encoding: .utf8)
        try "key\n".write(toFile: root + "/etc/pixxel-proxy/api_key", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: root + "/var/lib/private/pixxel-proxy", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: root + "/var/lib/private/pixxel-proxy/cache.sqlite3", contents: Data())
        try FileManager.default.createSymbolicLink(atPath: root + "/var/lib/pixxel-proxy", withDestinationPath: "private/pixxel-proxy")
        let upgrade = try dpkg(["--install", deb])
        #expect(upgrade.status == 0 && !upgrade.output.contains("Next steps"), "\(upgrade.output)")
        #expect(try String(contentsOfFile: clients, encoding: .utf8).hasSuffix(added))
        #expect(!FileManager.default.fileExists(atPath: clients + ".dpkg-dist"))

        #expect(try dpkg(["--remove", "pixxel-proxy"]).status == 0)
        let fileSystem = FileManager.default
        #expect(!fileSystem.fileExists(atPath: root + "/usr/bin/pixxel-proxy") && !fileSystem.fileExists(atPath: root + "/lib/systemd/system/pixxel-proxy.service"))
        #expect(fileSystem.fileExists(atPath: clients) && fileSystem.fileExists(atPath: root + "/etc/pixxel-proxy/api_key"))
        #expect(fileSystem.fileExists(atPath: root + "/var/lib/private/pixxel-proxy/cache.sqlite3"))

        #expect(try dpkg(["--purge", "pixxel-proxy"]).status == 0)
        #expect(!fileSystem.fileExists(atPath: root + "/etc/pixxel-proxy"))
        #expect(!fileSystem.fileExists(atPath: root + "/var/lib/private/pixxel-proxy"))
        #expect((try? fileSystem.destinationOfSymbolicLink(atPath: root + "/var/lib/pixxel-proxy")) == nil)
    }

    /// Lintian over the package reports nothing beyond what `deploy/debian/lintian-overrides`
    /// explains. The debug binary's RUNPATH into the toolchain is suppressed: only this test's
    /// package has it, and `make deb` (the release binary) runs lintian without it.
    @Test(.needs(.lintian)) func lintianReportsNothingTheOverridesDoNotExplain() throws {
        let directory = TemporaryDirectory()
        let deb = try buildPackage(in: directory)
        let report = try run(try RequiredTool.lintian.require(), ["--fail-on", "error,warning", "--suppress-tags", "custom-library-search-path", deb])
        #expect(report.status == 0, "\(report.output)")
    }

    /// The README's two-instance steps put the Redis password in
    /// `/etc/pixxel-proxy/redis_password` (the drop-in the package ships loads it as a
    /// credential); a purge deletes it with the API key, or the shared Redis's password would
    /// stay on the host.
    @Test func purgeDeletesTheRedisPasswordTheReadmePutsNextToTheKey() throws {
        let directory = TemporaryDirectory()
        let deb = try buildPackage(in: directory)
        let (root, dpkg) = try throwawayRoot(in: directory)
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
