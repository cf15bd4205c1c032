import Foundation
import Testing

@Suite struct InstallTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path

    func install(into root: String, path: String = "/usr/bin:/bin") throws -> (Int32, String) {
        try runProcess("/bin/bash", [Self.repository + "/deploy/install.sh"],
                       environment: ["PATH": path, "DESTDIR": root, "BIN": builtExecutable("pixxel-proxy")])
    }

    /// The installed configuration names the paths the service uses, the unit passes only
    /// `--config` and checks it first, and `check-config` accepts it as installed.
    @Test func theInstalledConfigurationHoldsTheRealPathsAndTheUnitChecksItFirst() throws {
        let root = TemporaryDirectory()
        #expect(try install(into: root.path).0 == 0)
        let config = try String(contentsOfFile: root.path + "/etc/pixxel-proxy/pixxel-proxy.yaml", encoding: .utf8)
        #expect(config.contains("\ncache:\n") && config.contains("\n  directory: /var/lib/pixxel-proxy\n"))
        #expect(config.contains("\nauth:\n") && config.contains("\n  clients_file: /etc/pixxel-proxy/clients\n"))
        let unit = try String(contentsOfFile: root.path + "/etc/systemd/system/pixxel-proxy.service", encoding: .utf8)
        #expect(unit.contains("ExecStartPre=/usr/local/bin/pixxel-proxy check-config --config /etc/pixxel-proxy/pixxel-proxy.yaml"))
        #expect(unit.contains("RestartPreventExitStatus=78"))
        // RestartPreventExitStatus tests the main process only, never ExecStartPre (found by
        // review in systemd's service.c): the start limit must be reachable at RestartSec.
        func setting(_ name: String) -> Double? {
            unit.split(separator: "\n").first { $0.hasPrefix(name + "=") }.flatMap { Double($0.dropFirst(name.count + 1)) }
        }
        let interval = try #require(setting("StartLimitIntervalSec")), burst = try #require(setting("StartLimitBurst"))
        let restartSec = try #require(setting("RestartSec"))
        #expect(burst * restartSec < interval, "failed starts every \(restartSec) s reach \(burst) within \(interval) s")
        let unitSection = unit.components(separatedBy: "[Service]")[0]
        #expect(unitSection.contains("StartLimitIntervalSec=") && unitSection.contains("StartLimitBurst="), "start limits belong in [Unit]")
        #expect(!unit.contains("Environment=PIXXEL_PROXY"), "the paths are in the configuration, not the unit")
        // As installed, pointed at this root: the configuration is accepted and says so.
        let check = try ProcessTests.run(["check-config", "--config", root.path + "/etc/pixxel-proxy/pixxel-proxy.yaml"], environment: [
            "PIXXEL_PROXY_AUTH_CLIENTS_FILE": root.path + "/etc/pixxel-proxy/clients", "PIXXEL_PROXY_CACHE_DIRECTORY": root.path + "/var/lib/pixxel-proxy",
        ])
        #expect(check.status == 0 && check.stdout.hasSuffix("configuration OK\n"), "\(check.stdout.suffix(200)) \(check.stderr)")
    }

    /// Beside the Debian package, install.sh would shadow the package's unit with its own and
    /// put a second binary in /usr/local/bin: it refuses, whatever state the package's files
    /// are in (found by review: a held or half-configured package got through); a package
    /// removed but for its configuration files does not stand in the way.
    @Test(arguments: [("installed", true), ("half-configured", true), ("unpacked", true), ("half-installed", true),
                      ("config-files", false), ("not-installed", false)])
    func installRefusesBesideTheDebianPackagesFiles(_ state: String, refused: Bool) throws {
        let root = TemporaryDirectory()
        let bin = root.path + "/fake-bin"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        let fake = bin + "/dpkg-query"
        // dpkg-query -W -f '${db:Status-Status}' pixxel-proxy
        try "#!/bin/sh\nprintf '\(state)'\n".write(toFile: fake, atomically: true, encoding: .utf8)
        chmod(fake, 0o755)
        let (status, output) = try install(into: root.path + "/root", path: bin + ":/usr/bin:/bin")
        if refused {
            #expect(status == 1 && output.contains("Debian package is installed"), "\(state): \(output)")
            #expect(!FileManager.default.fileExists(atPath: root.path + "/root/usr/local/bin/pixxel-proxy"))
        } else {
            #expect(status == 0, "\(state): \(output)")
        }
    }

    @Test func installsIntoARootIdempotentlyAndKeepsExistingConfiguration() throws {
        let root = TemporaryDirectory()
        let (status, output) = try install(into: root.path)
        #expect(status == 0, "\(output)")
        #expect(output.contains("systemctl enable --now pixxel-proxy"))
        let files = FileManager.default
        #expect(files.isExecutableFile(atPath: root.path + "/usr/local/bin/pixxel-proxy"))
        let unit = try String(contentsOfFile: root.path + "/etc/systemd/system/pixxel-proxy.service", encoding: .utf8)
        #expect(unit.contains("ExecStart=/usr/local/bin/pixxel-proxy serve"))
        #expect(files.fileExists(atPath: root.path + "/etc/pixxel-proxy/pixxel-proxy.yaml"))
        #expect((try? files.attributesOfItem(atPath: root.path + "/etc/pixxel-proxy/clients")[.size] as? Int) == 0)

        // An edited configuration and added clients survive a second run.
        try "listen:\n  port: 9000\n".write(toFile: root.path + "/etc/pixxel-proxy/pixxel-proxy.yaml", atomically: true, encoding: .utf8)
        try "ci read sha256:\(String(repeating: "0", count: 64))\n".write(toFile: root.path + "/etc/pixxel-proxy/clients", atomically: true, encoding: .utf8)
        #expect(try install(into: root.path).0 == 0)
        #expect(try String(contentsOfFile: root.path + "/etc/pixxel-proxy/pixxel-proxy.yaml", encoding: .utf8).contains("9000"))
        #expect(try String(contentsOfFile: root.path + "/etc/pixxel-proxy/clients", encoding: .utf8).hasPrefix("ci read"))
        let everything = files.enumerator(atPath: root.path)?.allObjects.compactMap { $0 as? String } ?? []
        #expect(Set(everything.filter { !$0.hasSuffix("/") }).isSubset(of: [
            "usr", "usr/local", "usr/local/bin", "usr/local/bin/pixxel-proxy", "usr/local/share", "usr/local/share/doc",
            "usr/local/share/doc/pixxel-proxy", "usr/local/share/doc/pixxel-proxy/README.md", "etc", "etc/systemd",
            "etc/systemd/system", "etc/systemd/system/pixxel-proxy.service", "etc/pixxel-proxy",
            "etc/pixxel-proxy/pixxel-proxy.yaml", "etc/pixxel-proxy/clients", "etc/pixxel-proxy/clients.example",
        ]), "creates nothing it does not need: \(everything)")
    }
}
