import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A real `redis-server` of the test's own, on a free loopback port, saving nothing; stopped
/// (or killed, and started again on the same port) by the test. Suites that use it declare
/// `.needs(.redisServer)`.
final class RedisProcess: @unchecked Sendable {
    let port: UInt16
    private var process: ChildProcess?

    private let extraArguments: [String]
    /// The password given with `--requirepass`, for the test's own commands.
    private let password: String?

    init(arguments: [String] = []) throws {
        port = try LoopbackPort.unused()
        extraArguments = arguments
        password = arguments.firstIndex(of: "--requirepass").map { arguments[$0 + 1] }
        try start()
    }

    /// Starts (again) on this port and waits until it answers PING.
    func start() throws {
        process = try ChildProcess(try RequiredTool.redisServer.require(), [
            "--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--protected-mode", "yes", "--logfile", "",
        ] + extraArguments, environment: ["PATH": "/usr/bin:/bin"], stdout: .null, stderr: .null)
        guard eventually({ (try? command(["PING"])) == "+PONG" }) else {
            throw RawHTTPError(description: "redis-server did not start on port \(port)")
        }
    }

    /// SIGKILL: Redis vanishes without a goodbye, as in a crash.
    func kill() {
        process?.signal(SIGKILL)
        process?.waitUntilExit()
        process = nil
    }

    /// SIGKILL too: it saves nothing, and a child spawned from a test thread may inherit a
    /// signal mask that blocks SIGTERM.
    func stop() { kill() }

    /// SIGSTOP: Redis hangs, connections open and silent, until `resume`.
    func pause() { process?.signal(SIGSTOP) }

    func resume() { process?.signal(SIGCONT) }

    var url: String { "redis://127.0.0.1:\(port)" }

    /// One command over a connection of its own; the reply's first line (`+OK`, `:1`, `$-1`,
    /// a bulk string's text, or `*N` followed by the elements' lines joined with newlines).
    @discardableResult
    func command(_ arguments: [String]) throws -> String {
        let bytes = ((password.map { [["AUTH", $0]] } ?? []) + [arguments, ["QUIT"]]).flatMap(Self.resp)
        let reply = String(decoding: try RawHTTPClient.exchange(port: port, bytes: bytes, timeoutSeconds: 5), as: UTF8.self)
        var lines = reply.components(separatedBy: "\r\n")
        // AUTH's +OK opens the reply, and the QUIT's closes it.
        if lines.last == "" { lines.removeLast() }
        if password != nil, lines.first == "+OK" { lines.removeFirst() }
        if lines.last == "+OK" { lines.removeLast() }
        guard let first = lines.first else { return "" }
        if first.hasPrefix("$"), first != "$-1", lines.count > 1 { return lines[1] }
        if first.hasPrefix("*") { return lines.filter { !$0.hasPrefix("$") && !$0.hasPrefix("*") }.joined(separator: "\n") }
        return first
    }

    /// Sends one command and returns its reply's first line without waiting for anything else:
    /// for `CLIENT PAUSE`, after which a QUIT would itself wait out the pause.
    @discardableResult
    func sendOnly(_ arguments: [String]) throws -> String {
        let bytes = ((password.map { [["AUTH", $0]] } ?? []) + [arguments]).flatMap(Self.resp)
        let fd = try RawHTTPClient.connect(port: port, timeoutSeconds: 5)
        defer { close(fd) }
        _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        var reply: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        let lines = password == nil ? 1 : 2
        while reply.split(separator: 10).count < lines || reply.last != 10 {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { throw RawHTTPError(description: "redis closed or timed out") }
            reply += buffer[0..<n]
        }
        return String(decoding: reply, as: UTF8.self).components(separatedBy: "\r\n").filter { !$0.isEmpty }.last ?? ""
    }

    /// One command in RESP: an array of bulk strings.
    static func resp(_ command: [String]) -> [UInt8] {
        var bytes = Array("*\(command.count)\r\n".utf8)
        for argument in command { bytes += Array("$\(argument.utf8.count)\r\n\(argument)\r\n".utf8) }
        return bytes
    }
}
