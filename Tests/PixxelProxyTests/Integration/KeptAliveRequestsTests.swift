import Foundation
import PixxelSim
import ProxyServer
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// On one kept-alive connection each request is answered as itself, whatever came before it:
/// the connection takes a repeated head without parsing it again, reuses the answered request
/// object and dispatches requests that arrive whole straight from the read. Loopback only.
@Suite struct KeptAliveRequestsTests {
    static func get(_ target: String, token: String, extra: String = "") -> [UInt8] {
        Array("GET \(target) HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer \(token)\r\n\(extra)\r\n".utf8)
    }

    /// Reads `count` answers framed by Content-Length from `fd`.
    static func answers(_ count: Int, from fd: Int32) throws -> [RawResponse] {
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        var answers: [RawResponse] = []
        while answers.count < count {
            if let end = RawHTTPClient.find([13, 10, 13, 10], in: buffer) {
                let head = try RawHTTPClient.parse(Array(buffer[..<(end + 4)]))
                let length = Int(head.header("Content-Length") ?? "0") ?? 0
                if buffer.count >= end + 4 + length {
                    answers.append(try RawHTTPClient.parse(Array(buffer[..<(end + 4 + length)])))
                    buffer.removeFirst(end + 4 + length)
                    continue
                }
            }
            let n = recv(fd, &chunk, chunk.count, 0)
            guard n > 0 else { throw RawHTTPError(description: "closed after \(answers.count) answers (errno \(errno))") }
            buffer += chunk[0..<n]
        }
        #expect(buffer.isEmpty, "nothing beyond the answers asked for")
        return answers
    }

    @Test func aRepeatedHeadChangedByOneByteIsAnsweredAsTheNewRequest() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)")
        let workflow = sim.workflowIDs[0]
        let jobs = try #require(try proxy.get("/v0/workflows/\(workflow)/jobs", token: proxy.readToken).json?["jobs"] as? [[String: Any]])
        let ids = jobs.compactMap { $0["id"] as? String }
        // Two job ids of one length (UUIDs), so the heads differ in the id's bytes alone.
        let (a, b) = (ids[0], try #require(ids.first { $0 != ids[0] && $0.count == ids[0].count }))
        for id in [a, b] { _ = try proxy.get("/v0/workflows/\(workflow)/jobs/\(id)", token: proxy.readToken) }
        let token = proxy.readToken
        var wrongToken = Array(token.utf8)
        wrongToken[wrongToken.count - 1] = wrongToken.last == UInt8(ascii: "x") ? UInt8(ascii: "y") : UInt8(ascii: "x")
        let fd = try RawHTTPClient.connect(port: proxy.port, timeoutSeconds: 20)
        defer { close(fd) }
        let detail = { (id: String) in "/v0/workflows/\(workflow)/jobs/\(id)" }
        // One at a time, then all in one write (taken from one read).
        let sequence: [(bytes: [UInt8], status: Int, id: String?)] = [
            (Self.get(detail(a), token: token), 200, a),
            (Self.get(detail(a), token: token), 200, a),
            (Self.get(detail(b), token: token), 200, b),
            (Self.get(detail(a), token: String(decoding: wrongToken, as: UTF8.self)), 401, nil),
            (Self.get(detail(a), token: token), 200, a),
        ]
        for step in sequence {
            RawHTTPClient.send(step.bytes, to: fd)
            let answer = try #require(try Self.answers(1, from: fd).first)
            #expect(answer.status == step.status, "\(answer.text.prefix(200))")
            if let id = step.id { #expect(answer.json?["id"] as? String == id) }
        }
        RawHTTPClient.send(sequence.flatMap(\.bytes), to: fd)
        let together = try Self.answers(sequence.count, from: fd)
        #expect(together.map(\.status) == sequence.map(\.status))
        #expect(zip(together, sequence).allSatisfy { answer, step in step.id.map { answer.json?["id"] as? String == $0 } ?? true })
        await proxy.stop()
    }

    /// A hit, a job creation with a body, a miss answered later and a hit again: the request
    /// object a hit leaves is reused only when nothing else holds it, and each answer is its own.
    @Test func hitsCreationsAndMissesInterleaveOnOneConnection() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)")
        let workflow = sim.workflowIDs[0]
        let list = "/v0/workflows/\(workflow)/jobs"
        let other = "/v0/workflows/\(sim.workflowIDs[1])/jobs"
        _ = try proxy.get(list, token: proxy.writeToken)
        let body = #"{"name":"kept-alive","type":"IMAGE","parameters":{}}"#
        let create = Array("POST \(list)?project_id=p HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer \(proxy.writeToken)\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)".utf8)
        let fd = try RawHTTPClient.connect(port: proxy.port, timeoutSeconds: 20)
        defer { close(fd) }
        let steps: [[UInt8]] = [Self.get(list, token: proxy.writeToken), create, Self.get(other, token: proxy.writeToken),
                                Self.get(list, token: proxy.writeToken)]
        var answers: [RawResponse] = []
        for step in steps {
            RawHTTPClient.send(step, to: fd)
            answers += try Self.answers(1, from: fd)
        }
        #expect(answers.map(\.status) == [200, 200, 200, 200], "\(answers.map { $0.text.prefix(200) })")
        #expect(answers[0].header("Cache-Status")?.contains("hit") == true)
        #expect(answers[1].json?["id"] as? String != nil, "the created job: \(answers[1].text.prefix(200))")
        #expect(answers[2].header("Cache-Status")?.contains("miss") == true, "\(answers[2].headers)")
        let created = try #require(answers[1].json?["id"] as? String)
        let listed = (answers[3].json?["jobs"] as? [[String: Any]])?.compactMap { $0["id"] as? String } ?? []
        #expect(listed.contains(created), "the list after the creation shows it")
        #expect((answers[2].json?["jobs"] as? [[String: Any]])?.isEmpty == false, "the other workflow's list, not this one's")
        await proxy.stop()
    }
}
