import Foundation
import Testing

@Suite struct InstallTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path

    func install(into root: String) throws -> (Int32, String) {
        try runProcess("/bin/bash", [Self.repository + "/deploy/install.sh"],
                       environment: ["PATH": "/usr/bin:/bin", "DESTDIR": root, "BIN": builtExecutable("pixxel-proxy")])
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
