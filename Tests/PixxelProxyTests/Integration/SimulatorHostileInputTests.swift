import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// pixxel-sim's download routes take hostile ranges and break points without crashing, on a
/// `pixxel-sim` process of its own (a crash there must not take the test process with it).
@Suite struct SimulatorHostileInputTests {
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

    /// Starts `pixxel-sim` with key "k"; returns the process, its port and a job download target.
    static func startSim() throws -> (ChildProcess, UInt16, String) {
        let process = try ChildProcess(builtExecutable("pixxel-sim"), ["--port", "0", "--api-key", "k", "--workflows", "1", "--jobs", "1"],
                                       environment: ["PATH": "/usr/bin:/bin"], stdout: .null, stderr: .pipe)
        let err = process.standardError!
        var log = ""
        while !(log.contains("workflow ") && log.hasSuffix("\n")) {
            let chunk = err.availableData
            if chunk.isEmpty { break }
            log += String(decoding: chunk, as: UTF8.self)
        }
        Thread { while !err.availableData.isEmpty {} }.start()
        guard let port = log.range(of: #"127\.0\.0\.1:(\d+)"#, options: .regularExpression).flatMap({ UInt16(log[$0].split(separator: ":").last!) }),
              let workflow = log.range(of: #"workflow \S+"#, options: .regularExpression).map({ String(log[$0].dropFirst("workflow ".count)) }) else {
            process.terminate()
            throw RawHTTPError(description: "pixxel-sim did not start: \(log)")
        }
        let list = try RawHTTPClient.request(port: port, target: "/v0/workflows/\(workflow)/jobs", headers: [("Authorization", "k")])
        guard let job = (list.json?["jobs"] as? [[String: Any]])?.first?["id"] as? String else { throw RawHTTPError(description: "no job") }
        return (process, port, "/v0/workflows/\(workflow)/jobs/\(job)/download")
    }

    /// `POST /_sim/faults?break_after_bytes=1e19`: the knob is read as a Double and converted
    /// with `Int(value)` (SimServer.swift:258), which traps for a value past Int.max (as
    /// `latency_ms` and `retry_after` do). A typo in a fault script kills the simulator.
    @Test func aHugeBreakAfterBytesDoesNotCrashTheSimulator() throws {
        let (process, port, target) = try Self.startSim()
        defer {
            process.terminate()
            process.waitUntilExit()
        }
        let set = try? RawHTTPClient.request(port: port, method: "POST", target: "/_sim/faults?break_after_bytes=1e19",
                                             headers: [("Authorization", "k")])
        #expect(set.map { [200, 400].contains($0.status) } == true, "the simulator answered \(set.map { String($0.status) } ?? "nothing")")
        let after = try? RawHTTPClient.request(port: port, target: target + "?size=100", headers: [("Authorization", "k")])
        #expect(after?.status == 200, "the simulator is gone")
    }

    /// A `break_after_bytes` that fits an Int, and a download asked from a high offset:
    /// `SimPayloadWriter` computes `range.lowerBound + breakAfter` (SimDownloads.swift:87),
    /// which overflows and traps. Any client of the proxy can send the Range.
    @Test func aBreakPointPastIntMaxFromARangeDoesNotCrashTheSimulator() throws {
        let (process, port, target) = try Self.startSim()
        defer {
            process.terminate()
            process.waitUntilExit()
        }
        let set = try RawHTTPClient.request(port: port, method: "POST", target: "/_sim/faults?break_after_bytes=9000000000000000000",
                                            headers: [("Authorization", "k")])
        #expect(set.status == 200)
        let ranged = try? StreamingHTTPClient.download(port: port, target: target + "?size=2000000000000000000",
                                                       headers: [("Authorization", "k"), ("Range", "bytes=1000000000000000000-")], leaveAfter: 1000)
        #expect(ranged?.status == 206, "the simulator answered \(ranged.map { String($0.status) } ?? "nothing")")
        let after = try? RawHTTPClient.request(port: port, target: target + "?size=100", headers: [("Authorization", "k")])
        #expect(after?.status == 200, "the simulator is gone")
    }
}
