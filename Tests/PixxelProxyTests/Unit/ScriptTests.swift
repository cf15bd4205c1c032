import Foundation
import Testing

/// The shell scripts parse, and the bench fills in every placeholder of its nginx template
/// (the benchmark itself is not a test: it needs nginx and wrk and minutes).
@Suite struct ScriptTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path

    @Test(arguments: [".ci/run", "scripts/install-deps.sh", "scripts/run-tests.sh", "scripts/run-demo.sh", "deploy/install.sh", "deploy/build-deb.sh", "bench/run.sh"])
    func parses(_ script: String) throws {
        let (status, output) = try runProcess("/bin/bash", ["-n", Self.repository + "/" + script])
        #expect(status == 0, "\(output)")
    }

    @Test func theBenchFillsEveryPlaceholderOfItsNginxTemplate() throws {
        let template = try String(contentsOfFile: Self.repository + "/bench/nginx.conf.in", encoding: .utf8)
        let script = try String(contentsOfFile: Self.repository + "/bench/run.sh", encoding: .utf8)
        let placeholders = Set(template.matches(of: /@[A-Z_]+@/).map { String($0.output) })
        #expect(!placeholders.isEmpty)
        for placeholder in placeholders {
            #expect(script.contains("s|\(placeholder)|"), "bench/run.sh never fills \(placeholder)")
        }
    }
}
