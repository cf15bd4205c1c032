import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A program some tests need that the Swift build does not bring. `scripts/install-deps.sh
/// --for-tests` installs every one. A test names what it needs with `.needs(...)`:
/// - where a tool is missing, the test is skipped with one line naming the tool and its package;
/// - under `PIXXEL_TESTS_REQUIRE_ALL=1` (`.ci/run` sets it) the test runs anyway and
///   `require()` fails it with what to install, so CI never passes while checking nothing.
struct RequiredTool: Sendable, CustomStringConvertible {
    let name: String
    let candidates: [String]
    /// The Debian package that provides it.
    let package: String

    static let chromium = RequiredTool(name: "chromium", candidates: ["/usr/bin/chromium", "/usr/bin/chromium-browser"], package: "chromium")
    static let node = RequiredTool(name: "node", candidates: ["/usr/bin/node", "/usr/local/bin/node"], package: "nodejs")
    static let promtool = RequiredTool(name: "promtool", candidates: ["/usr/bin/promtool", "/usr/local/bin/promtool"], package: "prometheus")
    static let dpkgDeb = RequiredTool(name: "dpkg-deb", candidates: ["/usr/bin/dpkg-deb"], package: "dpkg")
    static let dpkgShlibdeps = RequiredTool(name: "dpkg-shlibdeps", candidates: ["/usr/bin/dpkg-shlibdeps"], package: "dpkg-dev")
    static let systemdAnalyze = RequiredTool(name: "systemd-analyze", candidates: ["/usr/bin/systemd-analyze"], package: "systemd")
    static let lintian = RequiredTool(name: "lintian", candidates: ["/usr/bin/lintian"], package: "lintian")
    static let redisServer = RequiredTool(name: "redis-server", candidates: ["/usr/bin/redis-server", "/usr/local/bin/redis-server"],
                                          package: "redis-server")
    static let nginx = RequiredTool(name: "nginx", candidates: ["/usr/sbin/nginx"], package: "nginx-light")

    /// Set by `.ci/run`: a missing tool fails the run instead of skipping its tests.
    static var everyToolRequired: Bool { ProcessInfo.processInfo.environment["PIXXEL_TESTS_REQUIRE_ALL"] == "1" }

    /// Where it is: the usual places, then PATH (a node from nvm, a tool in /opt), as
    /// `install-deps.sh` looks for it with `command -v`.
    var path: String? {
        let onPath = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map { "\($0)/\(name)" }
        return (candidates + onPath).first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    var description: String { "\(name) (apt-get install \(package))" }

    /// The tool's path, or an error that says what to install.
    func require() throws -> String {
        guard let path else {
            throw MissingTool(description: "\(name) is missing: install it with `apt-get install \(package)` or "
                + "`scripts/install-deps.sh --for-tests`; PIXXEL_TESTS_REQUIRE_ALL=1 does not let its tests be skipped")
        }
        return path
    }

    struct MissingTool: Error, CustomStringConvertible {
        let description: String
    }
}

extension Trait where Self == ConditionTrait {
    /// Runs the test where every tool is installed, or wherever `PIXXEL_TESTS_REQUIRE_ALL=1`
    /// (the test then fails on what is missing); otherwise skips it, naming what is missing.
    static func needs(_ tools: RequiredTool...) -> Self {
        let missing = tools.filter { $0.path == nil }
        let comment = Comment(rawValue: "needs " + missing.map(\.description).joined(separator: ", ")
            + "; scripts/install-deps.sh --for-tests installs it")
        return .enabled(if: missing.isEmpty || RequiredTool.everyToolRequired, comment)
    }

    /// Runs the test as root, where the package tests can install into a throwaway root.
    static var needsRoot: Self {
        .enabled(if: getuid() == 0 || RequiredTool.everyToolRequired, "needs root (dpkg --root runs maintainer scripts)")
    }
}
