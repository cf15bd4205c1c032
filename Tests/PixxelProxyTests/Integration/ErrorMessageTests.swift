import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Every startup and CLI error a person meets names the file (and line), the key, what was
/// expected and the OS's reason; no Foundation error domain or Swift enum case reaches them.
@Suite struct ErrorMessageTests {
    struct Case: CustomStringConvertible {
        let name: String
        let arguments: [String]
        let environment: [String: String]
        let expected: [String]
        var description: String { name }
    }

    static let foreign = ["NSCocoaErrorDomain", "Error Domain=", "unreachable(", "NSPOSIXErrorDomain", "Optional("]

    @Test func eachBrokenConfigurationOrPathGetsAMessageToActOn() throws {
        let directory = TemporaryDirectory()
        let clients = directory.file("clients", "")
        let unreadable = directory.file("unreadable", "x")
        chmod(unreadable, 0)
        let asRoot = getuid() == 0
        let ttl = directory.file("ttl.yaml", "cache:\n  ttl: 10\n")
        let port = directory.file("port.yaml", "listen:\n  host: 127.0.0.1\n  port: nope\n")
        let unknown = directory.file("unknown.yaml", "listen:\n  port: 8787\n  hots: 127.0.0.1\n")
        let notYAML = directory.file("broken.yaml", "listen: [\n")
        let cases: [Case] = [
            Case(name: "a config file that does not exist", arguments: ["check-config", "--config", "/nonexistent.yaml"], environment: [:],
                 expected: ["config file /nonexistent.yaml does not exist"]),
            Case(name: "a directory as the config file", arguments: ["check-config", "--config", directory.path], environment: [:],
                 expected: ["config file \(directory.path) is a directory"]),
            Case(name: "a section given a value", arguments: ["check-config", "--config", ttl], environment: [:],
                 expected: ["\(ttl):2: cache.ttl is a section, not a value", "cache.ttl.job_list_seconds"]),
            Case(name: "a wrong value in the file", arguments: ["check-config", "--config", port], environment: ["PIXXEL_PROXY_AUTH_CLIENTS_FILE": clients],
                 expected: ["\(port):3: listen.port: expected a whole number from 0 to 65535, got \"nope\""]),
            Case(name: "the same wrong value from the environment", arguments: ["check-config"],
                 environment: ["PIXXEL_PROXY_LISTEN_PORT": "nope", "PIXXEL_PROXY_AUTH_CLIENTS_FILE": clients],
                 expected: ["listen.port (env PIXXEL_PROXY_LISTEN_PORT): expected a whole number"]),
            Case(name: "an unknown key, with its line", arguments: ["check-config", "--config", unknown], environment: [:],
                 expected: ["\(unknown):3: unknown key listen.hots"]),
            Case(name: "a file that is not YAML", arguments: ["check-config", "--config", notYAML], environment: [:],
                 expected: ["\(notYAML) is not valid YAML"]),
            Case(name: "a clients file that does not exist", arguments: ["check-config"],
                 environment: ["PIXXEL_PROXY_AUTH_CLIENTS_FILE": directory.path + "/missing"],
                 expected: ["\(directory.path)/missing does not exist; create it with `pixxel-proxy token add"]),
            Case(name: "a cache directory that is a file", arguments: ["check-config"],
                 environment: ["PIXXEL_PROXY_AUTH_CLIENTS_FILE": clients, "PIXXEL_PROXY_CACHE_DIRECTORY": clients],
                 expected: ["cache.directory \(clients): exists and is not a directory"]),
            Case(name: "a status URL nothing listens on", arguments: ["status", "--url", "http://127.0.0.1:9", "--token-file", clients],
                 environment: [:], expected: ["cannot read http://127.0.0.1:9/admin/stats:", "is the proxy running"]),
            Case(name: "a token file that does not exist", arguments: ["status", "--token-file", "/nonexistent-token"], environment: [:],
                 expected: ["cannot read /nonexistent-token (no such file or directory)"]),
        ] + (asRoot ? [] : [
            Case(name: "a clients file that cannot be read", arguments: ["check-config"], environment: ["PIXXEL_PROXY_AUTH_CLIENTS_FILE": unreadable],
                 expected: ["cannot read \(unreadable) (permission denied)"]),
        ])
        for each in cases {
            let run = try ProcessTests.run(each.arguments, environment: each.environment)
            #expect(run.status != 0, "\(each): exited 0")
            for text in each.expected { #expect(run.stderr.contains(text), "\(each): \(run.stderr)") }
            for text in Self.foreign { #expect(!run.stderr.contains(text), "\(each): \(run.stderr)") }
        }
    }

    @Test func aCacheDirectoryThatCannotBeCreatedIsLoggedWithTheReason() throws {
        let directory = TemporaryDirectory()
        let file = directory.file("a-file", "x")
        let clients = directory.file("clients", "")
        let log = LogSink()
        // serve starts without its store (it retries every 5 s) and says why, in words.
        let (process, _) = try ProcessTests.startServe(simPort: 9, clients: clients, directory: directory,
                                                       extraEnvironment: ["PIXXEL_PROXY_CACHE_DIRECTORY": file + "/cache"], log: log)
        defer { process.terminate(); process.waitUntilExit() }
        let text = log.all.joined()
        #expect(text.contains("cannot create the cache directory \(file): not a directory") || text.contains("the cache directory \(file) exists and is not a directory"),
                "\(text)")
        for foreign in Self.foreign { #expect(!text.contains(foreign), "\(text)") }
    }
}
