import Foundation
import Logging
import PixxelSim
import ProxyConfig
import ProxyServer
import Synchronization

/// Log lines captured from one server, to check what is (and is not) logged.
final class LogSink: @unchecked Sendable {
    private let lines = Mutex<[String]>([])
    func append(_ line: String) { lines.withLock { $0.append(line) } }
    var all: [String] { lines.withLock { $0 } }
}

struct CapturingLogHandler: LogHandler {
    let sink: LogSink
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        sink.append("\(event.level) \(event.message) \(merged.map { "\($0.key)=\($0.value)" }.sorted().joined(separator: " "))")
    }
}

/// A temporary directory removed when the test ends.
final class TemporaryDirectory: @unchecked Sendable {
    let path: String
    init() {
        path = NSTemporaryDirectory() + "pixxel-test-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }

    func file(_ name: String, _ contents: String) -> String {
        let full = path + "/" + name
        FileManager.default.createFile(atPath: full, contents: Data(contents.utf8))
        return full
    }
}

/// A proxy on an ephemeral port of 127.0.0.1 with three clients (reader, writer, admin).
final class ProxyHarness: @unchecked Sendable {
    static let apiKey = "sim-key-\(UUID().uuidString)"
    let directory = TemporaryDirectory()
    let logs = LogSink()
    let server: ProxyServer
    let port: UInt16
    let readToken: String
    let writeToken: String
    let adminToken: String

    /// Starts a proxy in front of `upstreamURL`; `configure` adjusts the settings.
    init(upstreamURL: String, clock: ManualClock? = nil, environment: [String: String] = [:],
         configure: (inout ProxySettings) -> Void = { _ in }) throws {
        let clientsFile = directory.path + "/clients"
        readToken = try ClientsFileWriter.add(name: "reader", scopesText: "read", path: clientsFile)
        writeToken = try ClientsFileWriter.add(name: "writer", scopesText: "read,write", path: clientsFile)
        adminToken = try ClientsFileWriter.add(name: "admin", scopesText: "read,write,admin", path: clientsFile)
        var settings = ProxySettings()
        settings.listenPort = 0
        settings.upstreamURL = UpstreamURL(parsing: upstreamURL)!
        settings.upstreamAPIKey = Secret(Self.apiKey, origin: "test")
        settings.clientsFile = clientsFile
        settings.cacheDirectory = directory.path + "/cache"
        settings.upstreamTimeoutSeconds = 10
        // A test's client can go unscheduled for longer than the 30 s default on two loaded
        // cores (a starved test thread once left a 5 MB answer unread past it, and the write
        // timeout rightly cut it off). A test about the timeout sets its own.
        settings.listenTimeoutSeconds = 300
        // Unlimited unless a test is about the budget: many tests make hundreds of calls.
        settings.upstreamRequestsPerSecond = 0
        // No stale serving unless a test is about it: freshness tests expect a refetch.
        settings.staleWhileRevalidateSeconds = 0
        settings.staleIfErrorSeconds = 0
        configure(&settings)
        let sink = logs
        let logger = Logger(label: "test") { _ in CapturingLogHandler(sink: sink) }
        if let clock {
            server = try ProxyServer(settings: settings, logger: logger, clock: { clock.now }, environment: environment)
        } else {
            server = try ProxyServer(settings: settings, logger: logger, environment: environment)
        }
        port = try server.start()
    }

    func get(_ target: String, token: String?, headers: [(String, String)] = []) throws -> RawResponse {
        try request("GET", target, token: token, headers: headers)
    }

    func request(_ method: String, _ target: String, token: String?, headers: [(String, String)] = [], body: [UInt8] = []) throws -> RawResponse {
        var all = headers
        if let token { all.append(("Authorization", token)) }
        return try RawHTTPClient.request(port: port, method: method, target: target, headers: all, body: body)
    }

    func stop() async {
        await server.shutdown()
    }
}

/// A simulator on an ephemeral port that expects the harness's API key.
func startSimulator(configure: (inout SimOptions) -> Void = { _ in }) throws -> (SimServer, UInt16) {
    var options = SimOptions()
    options.port = 0
    options.apiKey = ProxyHarness.apiKey
    options.workflows = 2
    options.jobsPerWorkflow = 20
    configure(&options)
    let sim = SimServer(options: options)
    let port = try sim.start()
    return (sim, port)
}

/// How long a test waits for something that must happen before it calls it missing. A wait
/// ends as soon as the condition holds, so only a failing test pays for it; it is long because
/// on two loaded cores a thread or a child process can go unscheduled for seconds, and a short
/// bound then fails a test whose code is right.
let awaitedSeconds = 30.0

/// How long a fake peer holds a connection nobody closes: well past `awaitedSeconds`, so a
/// test that waits for the proxy to close one is never passed by the fake giving up first.
let fakePeerHoldSeconds = 120.0

/// Waits for `condition` (checked every 10 ms, for at most `seconds`): for state that another
/// thread changes, where there is nothing to block on.
func eventually(seconds: Double = awaitedSeconds, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try condition() { return true }
        usleep(10_000)
    }
    return try condition()
}

/// Where `swift build` put the executables (next to the test bundle).
func builtExecutable(_ name: String) -> String {
    let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
    var directory = bundle.deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = directory.appendingPathComponent(name).path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        directory = directory.deletingLastPathComponent()
    }
    let fromCwd = FileManager.default.currentDirectoryPath + "/.build/debug/" + name
    return fromCwd
}

/// A clock tests move by hand, so freshness is tested without sleeping.
final class ManualClock: @unchecked Sendable {
    private let value = Mutex(Date().timeIntervalSince1970)
    var now: Double { value.withLock { $0 } }
    func advance(_ seconds: Double) { value.withLock { $0 += seconds } }
}
