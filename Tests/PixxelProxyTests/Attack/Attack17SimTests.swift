import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Issue 17 under attack: pixxel-sim's new download routes, on a `pixxel-sim` process of its
/// own (a crash there must not take the test process with it).
@Suite struct Attack17SimTests {
    /// `Range: bytes=0-9223372036854775807` (a valid range, RFC 9110 14.1.1: a last position
    /// past the end means "to the end") makes `SimByteRange.parse` compute `last + 1`, which
    /// overflows: the simulator traps and dies. Any client of the proxy (read scope) can send
    /// it, since Range goes through on pass-through routes.
    @Test func aRangeEndingAtIntMaxDoesNotCrashTheSimulator() throws {
        let process = try ChildProcess(builtExecutable("pixxel-sim"), ["--port", "0", "--api-key", "k", "--workflows", "1", "--jobs", "1"],
                                       environment: ["PATH": "/usr/bin:/bin"], stdout: .null, stderr: .pipe)
        defer {
            process.terminate()
            process.waitUntilExit()
        }
        let err = process.standardError!
        var log = ""
        while !(log.contains("workflow ") && log.hasSuffix("\n")) {
            let chunk = err.availableData
            if chunk.isEmpty { break }
            log += String(decoding: chunk, as: UTF8.self)
        }
        let port = try #require(log.range(of: #"127\.0\.0\.1:(\d+)"#, options: .regularExpression).flatMap { UInt16(log[$0].split(separator: ":").last!) })
        let workflow = try #require(log.range(of: #"workflow \S+"#, options: .regularExpression).map { String(log[$0].dropFirst("workflow ".count)) })
        let list = try RawHTTPClient.request(port: port, target: "/v0/workflows/\(workflow)/jobs", headers: [("Authorization", "k")])
        let job = try #require((list.json?["jobs"] as? [[String: Any]])?.first?["id"] as? String)
        let target = "/v0/workflows/\(workflow)/jobs/\(job)/download?size=100"
        let ranged = try? RawHTTPClient.request(port: port, target: target, headers: [("Authorization", "k"), ("Range", "bytes=10-9223372036854775807")],
                                                timeoutSeconds: 5)
        #expect(ranged?.status == 206 && ranged?.body.count == 90, "the simulator answered \(ranged.map { String($0.status) } ?? "nothing")")
        let after = try? RawHTTPClient.request(port: port, target: target, headers: [("Authorization", "k")])
        #expect(after?.status == 200, "the simulator is gone")
    }
}
