import EventHTTP
import Foundation
import PixxelSim
import ProxyConfig
import Testing

/// The pass-through routes stream both ways: downloads and uploads of any size with bounded
/// memory, Range and conditional requests, HEAD, a client that leaves, an upstream that breaks.
@Suite struct StreamingTests {
    /// The simulator's seed of a job's download (as `SimServer.seed(of:)` makes it).
    static func jobPayload(_ jobID: String, size: Int) -> SimPayload {
        SimPayload(size: size, seed: SimServer.seed(of: "job/\(jobID)"))
    }

    struct Setup {
        let sim: SimServer
        let proxy: ProxyHarness
        let workflow: String
        let job: String
        var downloadTarget: String { "/v0/workflows/\(workflow)/jobs/\(job)/download" }
    }

    static func setUp(configure: @escaping (inout ProxySettings) -> Void = { _ in }) throws -> Setup {
        let (sim, simPort) = try startSimulator()
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)", configure: configure)
        let workflow = sim.workflowIDs[0]
        let list = try proxy.get("/v0/workflows/\(workflow)/jobs", token: proxy.readToken)
        let job = try #require((try JSONSerialization.jsonObject(with: Data(list.body)) as? [String: Any])?["jobs"] as? [[String: Any]])[0]["id"] as! String
        return Setup(sim: sim, proxy: proxy, workflow: workflow, job: job)
    }

    @Test func aRangeGives206WithTheRightBytes() async throws {
        let setup = try Self.setUp()
        defer { setup.sim.stop() }
        let size = 1 << 20
        let payload = Self.jobPayload(setup.job, size: size)
        for (header, range) in [("bytes=100-65635", 100..<65_636), ("bytes=1000000-", 1_000_000..<size), ("bytes=-500", (size - 500)..<size)] {
            let answer = try setup.proxy.get(setup.downloadTarget + "?size=\(size)", token: setup.proxy.readToken, headers: [("Range", header)])
            #expect(answer.status == 206, "\(header)")
            #expect(answer.header("Content-Range") == "bytes \(range.lowerBound)-\(range.upperBound - 1)/\(size)")
            #expect(answer.body == payload.bytes(range), "\(header): the bytes of that range")
        }
        let beyond = try setup.proxy.get(setup.downloadTarget + "?size=\(size)", token: setup.proxy.readToken, headers: [("Range", "bytes=\(size)-")])
        #expect(beyond.status == 416 && beyond.header("Content-Range") == "bytes */\(size)")
        await setup.proxy.stop()
    }

    @Test func headCarriesTheUpstreamsHeadersAndConditionalRequestsGet304() async throws {
        let setup = try Self.setUp()
        defer { setup.sim.stop() }
        let head = try StreamingHTTPClient.download(port: setup.proxy.port, target: setup.downloadTarget + "?size=12345", method: "HEAD",
                                                   headers: [("Authorization", setup.proxy.readToken)])
        #expect(head.status == 200 && head.bodyBytes == 0)
        #expect(head.header("Content-Length") == "12345", "the length the GET would have")
        let etag = try #require(head.header("ETag"))
        #expect(head.header("Last-Modified") != nil && head.header("Accept-Ranges") == "bytes")
        let notModified = try setup.proxy.get(setup.downloadTarget + "?size=12345", token: setup.proxy.readToken, headers: [("If-None-Match", etag)])
        #expect(notModified.status == 304 && notModified.body.isEmpty && notModified.header("ETag") == etag)
        let since = try setup.proxy.get(setup.downloadTarget + "?size=12345", token: setup.proxy.readToken,
                                        headers: [("If-Modified-Since", head.header("Last-Modified")!)])
        #expect(since.status == 304)
        await setup.proxy.stop()
    }

    @Test(arguments: [false, true])
    func anUpstreamThatBreaksMidBodyBreaksTheClientsAnswer(chunked: Bool) async throws {
        let setup = try Self.setUp()
        defer { setup.sim.stop() }
        var faults = setup.sim.faults
        faults.breakAfterBytes = 3 << 20
        setup.sim.faults = faults
        let target = setup.downloadTarget + "?size=\(8 << 20)" + (chunked ? "&chunked=1" : "")
        let answer = try StreamingHTTPClient.download(port: setup.proxy.port, target: target, headers: [("Authorization", setup.proxy.readToken)])
        #expect(answer.status == 200)
        #expect(answer.header(chunked ? "Transfer-Encoding" : "Content-Length") == (chunked ? "chunked" : String(8 << 20)))
        #expect(!answer.complete, "the client sees the answer broken (\(answer.bodyBytes) bytes), never one that looks whole")
        #expect(answer.bodyBytes <= 3 << 20)
        #expect(setup.sim.stats.downloadsBroken == 1)
        // The proxy goes on serving.
        faults.breakAfterBytes = nil
        setup.sim.faults = faults
        let whole = try StreamingHTTPClient.download(port: setup.proxy.port, target: setup.downloadTarget + "?size=4096",
                                                     headers: [("Authorization", setup.proxy.readToken)])
        #expect(whole.complete && whole.bodyBytes == 4096)
        await setup.proxy.stop()
    }

    @Test func aClientThatLeavesMidDownloadClosesTheUpstreamConnection() async throws {
        let setup = try Self.setUp()
        defer { setup.sim.stop() }
        let answer = try StreamingHTTPClient.download(port: setup.proxy.port, target: setup.downloadTarget + "?size=\(512 << 20)",
                                                      headers: [("Authorization", setup.proxy.readToken)], leaveAfter: 2 << 20)
        #expect(answer.status == 200 && !answer.complete)
        #expect(eventually { setup.sim.stats.downloadsLeft == 1 }, "the simulator saw its client (the proxy) leave")
        #expect(setup.sim.stats.downloadsCompleted == 0)
        await setup.proxy.stop()
    }

    @Test(arguments: [false, true])
    func uploadsStreamUpWholeAndFramedAsSent(chunked: Bool) async throws {
        let setup = try Self.setUp()
        defer { setup.sim.stop() }
        let payload = SimPayload(size: 3 << 20 + 17, seed: 99)
        let answer = try StreamingHTTPClient.upload(port: setup.proxy.port, target: "/v0/uploads/scene.tif",
                                                    headers: [("Authorization", setup.proxy.writeToken)], payload: payload, chunked: chunked)
        #expect(answer.status == 200, "\(answer.text)")
        let document = try #require(try JSONSerialization.jsonObject(with: Data(answer.body)) as? [String: Any])
        #expect(document["bytes"] as? Int == payload.size)
        #expect(document["fnv1a64"] as? String == StreamingHTTPClient.fnv(payload), "every byte arrived, in order")
        #expect(setup.sim.stats.lastHeaders[chunked ? "transfer-encoding" : "content-length"] == (chunked ? "chunked" : String(payload.size)))
        await setup.proxy.stop()
    }

    /// An upload that takes longer than `upstream.timeout_seconds` is not cut off: the timeout
    /// counts from its last byte to the answer's head (and as idle time while it flows).
    @Test func anUploadSlowerThanTheUpstreamTimeoutStillGoesThrough() async throws {
        let setup = try Self.setUp { $0.upstreamTimeoutSeconds = 1 }
        defer { setup.sim.stop() }
        let payload = SimPayload(size: 3 << 20, seed: 3)
        let answer = try StreamingHTTPClient.upload(port: setup.proxy.port, target: "/v0/uploads/slow", headers: [("Authorization", setup.proxy.writeToken)],
                                                    payload: payload, chunked: false, bytesPerSecond: 1 << 20)
        #expect(answer.status == 200 && answer.text.contains(#""bytes":\#(payload.size)"#), "\(answer.status) \(answer.text)")
        await setup.proxy.stop()
    }

    @Test func anUploadOverTheLimitIs413BeforeOrAsSoonAsItPassesIt() async throws {
        let setup = try Self.setUp { $0.listenMaxUploadBytes = 1 << 20 }
        defer { setup.sim.stop() }
        let declared = try setup.proxy.request("PUT", "/v0/uploads/big", token: setup.proxy.writeToken, body: [UInt8](repeating: 1, count: (1 << 20) + 1))
        #expect(declared.status == 413 && declared.text.contains("payload_too_large"))
        let payload = SimPayload(size: 2 << 20, seed: 1)
        let chunked = try StreamingHTTPClient.upload(port: setup.proxy.port, target: "/v0/uploads/big",
                                                     headers: [("Authorization", setup.proxy.writeToken)], payload: payload, chunked: true)
        #expect(chunked.status == 413)
        #expect(setup.sim.stats.uploadBytes <= 1 << 20, "no more than the limit went upstream")
        #expect(!setup.sim.stats.requests.keys.contains("PUT upload") || setup.sim.stats.downloadsCompleted == 0)
        // A read token may not upload at all, and nothing of its body is read.
        let reader = try setup.proxy.request("PUT", "/v0/uploads/x", token: setup.proxy.readToken, body: [1, 2, 3])
        #expect(reader.status == 403)
        await setup.proxy.stop()
    }

    @Test func anUploadThatWaitsFor100ContinueGetsIt() async throws {
        let setup = try Self.setUp()
        defer { setup.sim.stop() }
        let fd = try RawHTTPClient.connect(port: setup.proxy.port, timeoutSeconds: 10)
        defer { close(fd) }
        let head = "PUT /v0/uploads/c HTTP/1.1\r\nHost: h\r\nAuthorization: \(setup.proxy.writeToken)\r\nExpect: 100-continue\r\n"
            + "Content-Length: 5\r\nConnection: close\r\n\r\n"
        try StreamingHTTPClient.sendAll(fd, Array(head.utf8))
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = recv(fd, &buffer, buffer.count, 0)
        #expect(String(decoding: buffer[0..<max(n, 0)], as: UTF8.self).hasPrefix("HTTP/1.1 100 Continue\r\n\r\n"))
        try StreamingHTTPClient.sendAll(fd, Array("hello".utf8))
        var reply: [UInt8] = []
        while case let count = recv(fd, &buffer, buffer.count, 0), count > 0 { reply += buffer[0..<count] }
        let answer = try RawHTTPClient.parse(reply)
        #expect(answer.status == 200 && answer.text.contains(#""bytes":5"#))
        await setup.proxy.stop()
    }

    @Test func anAssetDownloadGoesPendingThenReadyThenStreams() async throws {
        let setup = try Self.setUp()
        defer { setup.sim.stop() }
        let created = try setup.proxy.request("POST", "/v0/aois/aoi-7/downloads", token: setup.proxy.writeToken)
        #expect(created.status == 202)
        let id = try #require((try JSONSerialization.jsonObject(with: Data(created.body)) as? [String: Any])?["download_id"] as? String)
        let pending = try setup.proxy.get("/v0/aois/aoi-7/downloads/\(id)", token: setup.proxy.readToken)
        #expect(pending.text.contains(#""status":"pending""#))
        #expect(try setup.proxy.get("/v0/aois/aoi-7/downloads/\(id)/file", token: setup.proxy.readToken).status == 409)
        setup.sim.advanceClock(by: 5)
        let ready = try setup.proxy.get("/v0/aois/aoi-7/downloads/\(id)", token: setup.proxy.readToken)
        #expect(ready.text.contains(#""status":"ready""#), "not cached: the status moved on")
        let file = try StreamingHTTPClient.download(port: setup.proxy.port, target: "/v0/aois/aoi-7/downloads/\(id)/file?size=300000",
                                                    headers: [("Authorization", setup.proxy.readToken)], keep: [0, 299_000], keepLength: 1000)
        let payload = SimPayload(size: 300_000, seed: SimServer.seed(of: "asset/\(id)"))
        #expect(file.complete && file.bodyBytes == 300_000)
        #expect(file.kept[0] == payload.bytes(0..<1000) && file.kept[299_000] == payload.bytes(299_000..<300_000))
        await setup.proxy.stop()
    }
}

/// Memory while streaming, measured on a `pixxel-proxy serve` process of its own (the test
/// process holds other tests' data, so its own RSS says nothing).
@Suite(.serialized) struct StreamingMemoryTests {
    struct Running {
        let sim: SimServer
        let process: ChildProcess
        let port: UInt16
        let token: String
        let directory: TemporaryDirectory
        let target: String
        let job: String

        func stop() {
            process.terminate()
            process.waitUntilExit()
            sim.stop()
        }
    }

    static func start() throws -> Running {
        let (sim, simPort) = try startSimulator()
        let directory = TemporaryDirectory()
        let clients = directory.path + "/clients"
        let token = try ProcessTests.run(["token", "add", "t", "--scopes", "read,write", "--clients-file", clients]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let (process, port) = try ProcessTests.startServe(simPort: simPort, clients: clients, directory: directory)
        let workflow = sim.workflowIDs[0]
        let list = try? RawHTTPClient.request(port: port, target: "/v0/workflows/\(workflow)/jobs", headers: [("Authorization", token)])
        guard let list, let jobs = (try? JSONSerialization.jsonObject(with: Data(list.body)) as? [String: Any])?["jobs"] as? [[String: Any]],
              let job = jobs.first?["id"] as? String else {
            // Nothing else stops this process if the test ends here.
            process.terminate()
            process.waitUntilExit()
            sim.stop()
            throw RawHTTPError(description: "the proxy process did not list the jobs")
        }
        return Running(sim: sim, process: process, port: port, token: token, directory: directory,
                       target: "/v0/workflows/\(workflow)/jobs/\(job)/download", job: job)
    }

    /// The proxy's RSS after a small transfer has warmed its buffers and allocator.
    static func baseline(_ running: Running) throws -> Int {
        let warm = try StreamingHTTPClient.download(port: running.port, target: running.target + "?size=\(4 << 20)",
                                                    headers: [("Authorization", running.token)])
        #expect(warm.complete)
        return running.process.residentBytes
    }

    @Test func aTwoGiBDownloadGrowsTheProxysRSSByLessThan32MiB() throws {
        let running = try Self.start()
        defer { running.stop() }
        let before = try Self.baseline(running)
        var peak = before
        let size = 2 << 30
        let checks = [0, (1 << 30) + 12_345, size - 4096]
        let answer = try StreamingHTTPClient.download(port: running.port, target: running.target + "?size=\(size)",
                                                      headers: [("Authorization", running.token)], keep: checks) { _ in
            peak = max(peak, running.process.residentBytes)
        }
        #expect(answer.complete && answer.bodyBytes == size)
        let payload = StreamingTests.jobPayload(running.job, size: size)
        for start in checks { #expect(answer.kept[start] == payload.bytes(start..<(start + 4096)), "bytes at \(start)") }
        #expect(peak - before < 32 << 20, "RSS grew by \((peak - before) >> 20) MiB")
    }

    @Test func aSlowReaderSlowsTheUpstreamInsteadOfGrowingMemory() throws {
        let running = try Self.start()
        defer { running.stop() }
        let before = try Self.baseline(running)
        var peak = before
        let size = 256 << 20
        // 1 MiB/s for 3 MiB: were the proxy reading the upstream regardless, the simulator would
        // have sent all 256 MiB by then and the proxy would hold it.
        let slow = try StreamingHTTPClient.download(port: running.port, target: running.target + "?size=\(size)",
                                                    headers: [("Authorization", running.token)], bytesPerSecond: 1 << 20,
                                                    leaveAfter: 3 << 20) { _ in
            peak = max(peak, running.process.residentBytes)
        }
        #expect(slow.status == 200 && slow.bodyBytes >= 3 << 20)
        #expect(running.sim.stats.downloadsCompleted == 1, "only the warm-up download finished upstream")
        #expect(peak - before < 32 << 20, "RSS grew by \((peak - before) >> 20) MiB")
    }

    @Test func a50MiBUploadStreamsUpWithBoundedMemory() throws {
        let running = try Self.start()
        defer { running.stop() }
        let before = try Self.baseline(running)
        var peak = before
        let payload = SimPayload(size: 50 << 20, seed: 5)
        let digest = StreamingHTTPClient.fnv(payload)
        for chunked in [false, true] {
            let answer = try StreamingHTTPClient.upload(port: running.port, target: "/v0/uploads/big.tif", headers: [("Authorization", running.token)],
                                                        payload: payload, chunked: chunked) { _ in
                peak = max(peak, running.process.residentBytes)
            }
            #expect(answer.status == 200, "\(answer.text)")
            #expect(answer.text.contains(#""bytes":\#(payload.size)"#) && answer.text.contains(digest))
        }
        #expect(peak - before < 32 << 20, "RSS grew by \((peak - before) >> 20) MiB")
    }
}
