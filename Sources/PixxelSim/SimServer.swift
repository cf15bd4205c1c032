import EventHTTP
import Foundation
import Synchronization

/// Faults the simulator injects into `/v0/` answers; settable by flags and at run time
/// (`POST /_sim/faults?error_rate=0.5...`). Rates are probabilities from 0 to 1.
public struct SimFaults: Sendable, Equatable {
    /// Delay before every answer.
    public var latencyMilliseconds = 0
    /// Share of requests answered 500.
    public var errorRate = 0.0
    /// Share of requests answered 429 with `Retry-After: retryAfterSeconds`.
    public var rateLimitRate = 0.0
    public var retryAfterSeconds = 1
    /// Share of requests never answered.
    public var hangRate = 0.0
    /// Share of requests answered 200 with a body that is not JSON.
    public var garbageRate = 0.0
    /// Downloads break the connection after this many body bytes (nil: never).
    public var breakAfterBytes: Int?

    public init() {}
}

/// Options of a simulator instance.
public struct SimOptions: Sendable {
    public var host = "127.0.0.1"
    public var port: UInt16 = 8788
    /// The key clients must send as `Authorization`; nil accepts anything.
    public var apiKey: String? = "sim-key"
    public var workflows = 3
    public var jobsPerWorkflow = 50
    public var pendingSeconds = 5.0
    public var runningSeconds = 30.0
    /// A running job's `updated_at` moves on this often.
    public var progressStepSeconds = 5.0
    public var seed: UInt64 = 42
    public var faults = SimFaults()
    /// Size of a job, task or asset download (a request may ask for another with `?size=`).
    public var downloadBytes = 8 << 20
    /// An asset download request is pending this long (simulated time), then ready.
    public var assetReadySeconds = 3.0
    public var tlsCertificateFile: String?
    public var tlsKeyFile: String?

    public init() {}
}

/// What the simulator has seen, for tests and `/_sim/stats`.
public struct SimStats: Sendable {
    /// `/v0/` requests received, by "METHOD /route-template".
    public var requests: [String: Int] = [:]
    public var total = 0
    /// The last `/v0/` request's method, raw target and Authorization header.
    public var lastMethod = ""
    public var lastTarget = ""
    public var lastAuthorization: String?
    public var lastHeaders: [String: String] = [:]
    /// Arrival time (monotonic seconds) of each `/v0/` request, at most the last 100,000.
    public var arrivals: [Double] = []
    /// Downloads begun, sent whole, broken by the fault, and left by their client.
    public var downloadsStarted = 0
    public var downloadsCompleted = 0
    public var downloadsBroken = 0
    public var downloadsLeft = 0
    /// Upload bytes received, over every upload.
    public var uploadBytes = 0
}

/// A simulator of the Pixxel Jobs API on its own event loop thread.
///
/// Unchecked Sendable: the HTTP server lives on the loop thread; what tests read and change
/// from other threads (`stats`, faults, the clock offset) is in the Mutex `shared`.
public final class SimServer: @unchecked Sendable {
    public let options: SimOptions
    private let loop = EventLoop()
    private var server: HTTPServer?
    private let store: SimJobStore
    public let workflowIDs: [String]
    private let shared: Mutex<(faults: SimFaults, stats: SimStats, clockOffset: Double)>
    private var hung: [ServerRequest] = []
    /// Asset download requests: id to (AOI, simulated time requested). Loop thread only.
    private var assetDownloads: [String: (aoi: String, requestedAt: Double)] = [:]
    private var idGenerator = SeededGenerator(seed: 7)
    private var thread: Thread?
    private let stopped = Mutex<Bool>(false)

    public init(options: SimOptions) {
        self.options = options
        store = SimJobStore(workflowCount: options.workflows, jobsPerWorkflow: options.jobsPerWorkflow,
                            pendingSeconds: options.pendingSeconds, runningSeconds: options.runningSeconds,
                            progressStepSeconds: options.progressStepSeconds,
                            seed: options.seed, now: Date().timeIntervalSince1970)
        workflowIDs = store.workflowIDs
        shared = Mutex((options.faults, SimStats(), 0))
    }

    /// Listens and starts the loop thread; returns the bound port.
    @discardableResult
    public func start() throws -> UInt16 {
        signal(SIGPIPE, SIG_IGN)
        let server = HTTPServer(loop: loop, limits: ServerLimits(maxHeaderBytes: 65_536, maxBodyBytes: 1 << 20, timeoutSeconds: 120)) { [unowned self] in
            self.handle($0)
        }
        // Uploads are read as they arrive (counted, never held); other bodies whole.
        server.admitHead = { head, _ in HeadAdmission(reading: head.target.hasPrefix("/v0/uploads/") ? .streamed(maxBytes: Int.max) : .whole) }
        if let cert = options.tlsCertificateFile, let key = options.tlsKeyFile {
            server.enableTLS(try TLSServerContext(certificateChainFile: cert, privateKeyFile: key))
        }
        self.server = server
        let port = try server.bind(host: options.host, port: options.port)
        let thread = Thread { [self] in
            loop.run()
            for request in hung { request.respond(status: 503, headers: HTTPHeaders(), body: []) }
            hung = []
            self.server = nil
            stopped.withLock { $0 = true }
        }
        thread.name = "pixxel-sim-loop"
        thread.start()
        self.thread = thread
        return port
    }

    /// Stops the loop and waits for its thread to finish.
    public func stop() {
        loop.stop()
        while !stopped.withLock({ $0 }) && thread != nil { usleep(1000) }
    }

    public var faults: SimFaults {
        get { shared.withLock { $0.faults } }
        set { shared.withLock { $0.faults = newValue } }
    }

    public var stats: SimStats { shared.withLock { $0.stats } }

    /// Moves simulated time forward (jobs progress as if `seconds` had passed).
    public func advanceClock(by seconds: Double) {
        shared.withLock { $0.clockOffset += seconds }
    }

    private var now: Double { Date().timeIntervalSince1970 + shared.withLock { $0.clockOffset } }

    // MARK: handling

    private func handle(_ request: ServerRequest) {
        let (path, query) = Self.split(request.uri)
        let segments = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map { $0.removingPercentEncoding ?? String($0) }
        if segments.first == "_sim" { return handleControl(request, segments: Array(segments), query: query) }
        guard segments.first == "v0" else { return reply(request, 404, SimDocuments.error("not_found", "no such route")) }

        let faults = shared.withLock { state -> SimFaults in
            let template = Self.template(request.method, Array(segments))
            state.stats.requests[template, default: 0] += 1
            state.stats.total += 1
            if state.stats.arrivals.count >= 100_000 { state.stats.arrivals.removeFirst(10_000) }
            state.stats.arrivals.append(Double(DispatchTime.now().uptimeNanoseconds) / 1e9)
            state.stats.lastMethod = request.method.rawValue
            state.stats.lastTarget = request.uri
            state.stats.lastAuthorization = request.headers["Authorization"]
            state.stats.lastHeaders = Dictionary(request.headers.fields.map { ($0.name.lowercased(), $0.value) }, uniquingKeysWith: { $1 })
            return state.faults
        }
        if let apiKey = options.apiKey, request.headers["Authorization"] != apiKey {
            return reply(request, 401, SimDocuments.error("unauthorized", "invalid or missing API key"))
        }
        if Double.random(in: 0..<1) < faults.hangRate {
            if hung.count < 10_000 { hung.append(request) }
            return
        }
        let answer = { [self] in
            if Double.random(in: 0..<1) < faults.rateLimitRate {
                var headers = HTTPHeaders()
                headers.add("Retry-After", String(faults.retryAfterSeconds))
                return reply(request, 429, SimDocuments.error("rate_limited", "too many requests"), headers: headers)
            }
            if Double.random(in: 0..<1) < faults.errorRate {
                return reply(request, 500, SimDocuments.error("internal", "simulated failure"))
            }
            if Double.random(in: 0..<1) < faults.garbageRate {
                return reply(request, 200, Array("{\"jobs\": [ {\"id\": \"trunc".utf8))
            }
            route(request, Array(segments), query: query)
        }
        if faults.latencyMilliseconds > 0 {
            loop.schedule(after: Double(faults.latencyMilliseconds) / 1000) { answer() }
        } else {
            answer()
        }
    }

    private func route(_ request: ServerRequest, _ segments: [String], query: [String: [String]]) {
        let now = self.now
        if segments == ["v0", "workflows"], request.method == .get {
            return reply(request, 200, SimDocuments.encode(["workflows": workflowIDs.map { ["id": $0, "name": "NDVI \($0.prefix(4))"] }]))
        }
        if let handled = routeOther(request, segments, query: query, now: now), handled { return }
        guard segments.count >= 4, segments[1] == "workflows", segments[3] == "jobs" else {
            return reply(request, 404, SimDocuments.error("not_found", "no such route"))
        }
        let workflowID = segments[2]
        guard let jobs = store.jobs(in: workflowID) else {
            return reply(request, 404, SimDocuments.error("not_found", "no such workflow"))
        }
        switch (request.method, segments.count) {
        case (.get, 4), (.head, 4):
            switch SimFilter.parse(query) {
            case .failure(let invalid): return reply(request, 400, SimDocuments.error("bad_request", invalid.message))
            case .success(let filter):
                let items = jobs.filter { filter.matches($0, now: now) }.map { SimDocuments.listItem($0, now: now) }
                return reply(request, 200, SimDocuments.encode(["jobs": items, "x_generated_by": "pixxel-sim"]))
            }
        case (.get, 6) where segments[5] == "download", (.head, 6) where segments[5] == "download":
            guard let job = jobs.first(where: { $0.id == segments[4] }) else {
                return reply(request, 404, SimDocuments.error("not_found", "no such job"))
            }
            return download(request, query: query, seed: Self.seed(of: "job/\(job.id)"))
        case (.get, 8) where segments[5] == "tasks" && segments[7] == "download",
             (.head, 8) where segments[5] == "tasks" && segments[7] == "download":
            guard jobs.contains(where: { $0.id == segments[4] }) else {
                return reply(request, 404, SimDocuments.error("not_found", "no such job"))
            }
            return download(request, query: query, seed: Self.seed(of: "task/\(segments[4])/\(segments[6])"))
        case (.get, 5), (.head, 5):
            guard let job = jobs.first(where: { $0.id == segments[4] }) else {
                return reply(request, 404, SimDocuments.error("not_found", "no such job"))
            }
            return reply(request, 200, SimDocuments.encode(SimDocuments.detail(job, now: now)))
        case (.post, 4):
            guard let projectID = query["project_id"]?.first, !projectID.isEmpty else {
                return reply(request, 400, SimDocuments.error("bad_request", "project_id is required"))
            }
            let job = store.createJob(workflowID: workflowID, projectID: projectID, createdBy: "user-api", now: now)!
            return reply(request, 200, SimDocuments.encode(SimDocuments.detail(job, now: now)))
        default:
            return reply(request, 405, SimDocuments.error("method_not_allowed", "method not allowed"))
        }
    }

    private func handleControl(_ request: ServerRequest, segments: [String], query: [String: [String]]) {
        if let apiKey = options.apiKey, request.headers["Authorization"] != apiKey {
            return reply(request, 401, SimDocuments.error("unauthorized", "invalid or missing API key"))
        }
        switch segments.dropFirst().first {
        case "workflows":
            return reply(request, 200, SimDocuments.encode(["workflows": workflowIDs]))
        case "faults":
            if request.method == .post {
                var faults = self.faults
                // Clamped before any conversion to Int: `1e19` must not trap the simulator.
                func number(_ name: String) -> Double? {
                    query[name]?.first.flatMap(Double.init).flatMap { $0.isFinite ? min(max($0, -1), 1e15) : nil }
                }
                if let value = number("latency_ms") { faults.latencyMilliseconds = Int(value) }
                if let value = number("error_rate") { faults.errorRate = value }
                if let value = number("rate_429") { faults.rateLimitRate = value }
                if let value = number("retry_after") { faults.retryAfterSeconds = Int(value) }
                if let value = number("hang_rate") { faults.hangRate = value }
                if let value = number("garbage_rate") { faults.garbageRate = value }
                if let value = number("break_after_bytes") { faults.breakAfterBytes = value < 0 ? nil : Int(value) }
                self.faults = faults
            }
            let f = faults
            return reply(request, 200, SimDocuments.encode([
                "latency_ms": f.latencyMilliseconds, "error_rate": f.errorRate, "rate_429": f.rateLimitRate,
                "retry_after": f.retryAfterSeconds, "hang_rate": f.hangRate, "garbage_rate": f.garbageRate,
                "break_after_bytes": f.breakAfterBytes.map { $0 as Any } ?? NSNull(),
            ]))
        case "clock":
            if let seconds = query["advance"]?.first.flatMap(Double.init) { advanceClock(by: seconds) }
            return reply(request, 200, SimDocuments.encode(["now": now]))
        case "stats":
            let s = stats
            var document: [String: Any] = ["total": s.total, "requests": s.requests, "downloads_started": s.downloadsStarted,
                                           "downloads_completed": s.downloadsCompleted, "downloads_broken": s.downloadsBroken,
                                           "downloads_left": s.downloadsLeft, "upload_bytes": s.uploadBytes]
            // `?arrivals=1`: each call's arrival and the same monotonic clock's now, so a soak
            // can count calls per second at the upstream.
            if query["arrivals"] != nil {
                document["arrivals"] = s.arrivals
                document["now_monotonic"] = Double(DispatchTime.now().uptimeNanoseconds) / 1e9
            }
            return reply(request, 200, SimDocuments.encode(document))
        case "truth":
            return reply(request, 200, SimDocuments.encode(["now": now, "jobs": store.truth()]))
        default:
            return reply(request, 404, SimDocuments.error("not_found", "no such control route"))
        }
    }

    private func reply(_ request: ServerRequest, _ status: Int, _ body: [UInt8], headers: HTTPHeaders = HTTPHeaders()) {
        var headers = headers
        headers.add("Content-Type", "application/json")
        request.respond(status: status, headers: headers, body: body)
    }

    static func template(_ method: HTTPMethod, _ segments: [String]) -> String {
        if segments.count == 4, segments[1] == "workflows", segments[3] == "jobs" { return "\(method.rawValue) list" }
        if segments.count == 5, segments[1] == "workflows", segments[3] == "jobs" { return "\(method.rawValue) detail" }
        if segments.last == "download" || segments.last == "file" { return "\(method.rawValue) download" }
        if segments.count == 3, segments[1] == "workflows" { return "\(method.rawValue) workflow" }
        if segments.count == 2, ["blocks", "indices", "projects"].contains(segments[1]) { return "\(method.rawValue) \(segments[1])" }
        if segments.count >= 2, segments[1] == "uploads" { return "\(method.rawValue) upload" }
        return "\(method.rawValue) other"
    }

    // MARK: the rest of the API: read-mostly documents, downloads, uploads

    /// Routes outside the job routes; nil (or false) when `segments` is none of them.
    private func routeOther(_ request: ServerRequest, _ segments: [String], query: [String: [String]], now: Double) -> Bool? {
        let method = request.method
        switch (method, segments.count) {
        case (.get, 3) where segments[1] == "workflows", (.head, 3) where segments[1] == "workflows":
            guard workflowIDs.contains(segments[2]) else { reply(request, 404, SimDocuments.error("not_found", "no such workflow")); return true }
            reply(request, 200, SimDocuments.encode([
                "id": segments[2], "name": "NDVI \(segments[2].prefix(4))", "blocks": ["blk-ingest", "blk-ndvi"],
                "created_at": "2026-11-01T00:00:00Z", "x_served_at": now,
            ]))
            return true
        case (.get, 2), (.head, 2):
            let names = ["blocks": "blk", "indices": "idx", "projects": "prj"]
            guard let prefix = names[segments[1]] else { return nil }
            // `x_served_at` changes every call: a second answer from a cache shows the first's.
            let items = (1...5).map { ["id": "\(prefix)-\($0)", "name": "\(segments[1]) \($0)"] }
            var document: [String: Any] = [segments[1]: items, "x_served_at": now]
            if let page = query["page"]?.first { document["page"] = page }
            reply(request, 200, SimDocuments.encode(document))
            return true
        case (.post, 4) where segments[1] == "aois" && segments[3] == "downloads":
            let id = idGenerator.uuid()
            assetDownloads[id] = (segments[2], now)
            reply(request, 202, SimDocuments.encode(["download_id": id, "status": "pending"]))
            return true
        case (.get, 5) where segments[1] == "aois" && segments[3] == "downloads":
            guard let asset = assetDownloads[segments[4]], asset.aoi == segments[2] else {
                reply(request, 404, SimDocuments.error("not_found", "no such download")); return true
            }
            let ready = now - asset.requestedAt >= options.assetReadySeconds
            var document: [String: Any] = ["download_id": segments[4], "status": ready ? "ready" : "pending"]
            document["download_url"] = ready ? "/v0/aois/\(segments[2])/downloads/\(segments[4])/file" : NSNull()
            reply(request, 200, SimDocuments.encode(document))
            return true
        case (.get, 6) where segments[1] == "aois" && segments[3] == "downloads" && segments[5] == "file",
             (.head, 6) where segments[1] == "aois" && segments[3] == "downloads" && segments[5] == "file":
            guard let asset = assetDownloads[segments[4]], asset.aoi == segments[2] else {
                reply(request, 404, SimDocuments.error("not_found", "no such download")); return true
            }
            guard now - asset.requestedAt >= options.assetReadySeconds else {
                reply(request, 409, SimDocuments.error("not_ready", "the download is still being prepared")); return true
            }
            download(request, query: query, seed: Self.seed(of: "asset/\(segments[4])"))
            return true
        case (.put, 3) where segments[1] == "uploads", (.post, 3) where segments[1] == "uploads":
            upload(request)
            return true
        default:
            return nil
        }
    }

    public static func seed(of name: String) -> UInt64 {
        // FNV-1a: stable across runs, unlike Hasher.
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in name.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return hash
    }

    /// A payload of `?size=` bytes (default `downloadBytes`), with `Range`, `If-None-Match` and
    /// `If-Modified-Since`; `?chunked=1` sends it chunked (no length). Broken mid-body by the
    /// `break_after_bytes` fault.
    private func download(_ request: ServerRequest, query: [String: [String]], seed: UInt64) {
        let size = query["size"]?.first.flatMap(Int.init).map { max(0, $0) } ?? options.downloadBytes
        let payload = SimPayload(size: size, seed: seed)
        let etag = "\"sim-\(String(seed, radix: 16))-\(size)\""
        let lastModified = "Mon, 23 Nov 2026 05:00:00 GMT"
        var headers = HTTPHeaders([("Content-Type", "application/octet-stream"), ("ETag", etag), ("Last-Modified", lastModified),
                                   ("Accept-Ranges", "bytes")])
        if request.headers["If-None-Match"] == etag || request.headers["If-Modified-Since"] == lastModified {
            _ = request.startStreamedAnswer(status: 304, headers: headers, length: .unknown)?.finish()
            return
        }
        var status = 200
        var range = 0..<size
        switch SimByteRange.parse(request.headers["Range"], size: size) {
        case .whole: break
        case .partial(let part):
            status = 206
            range = part
            headers.add("Content-Range", "bytes \(part.lowerBound)-\(part.upperBound - 1)/\(size)")
        case .unsatisfiable:
            headers.add("Content-Range", "bytes */\(size)")
            return reply(request, 416, SimDocuments.error("range_not_satisfiable", "the range starts past the end"), headers: headers)
        }
        let length: StreamedLength = query["chunked"]?.first == "1" ? .unknown : .known(range.count)
        guard let stream = request.startStreamedAnswer(status: status, headers: headers, length: length) else { return }
        if request.method == .head { return stream.finish() }
        let breakAfter = faults.breakAfterBytes
        shared.withLock { $0.stats.downloadsStarted += 1 }
        stream.onClientGone = { [self] in shared.withLock { $0.stats.downloadsLeft += 1 } }
        let writer = SimPayloadWriter(stream: stream, payload: payload, range: range, breakAfter: breakAfter) { [self] broken in
            shared.withLock { if broken { $0.stats.downloadsBroken += 1 } else { $0.stats.downloadsCompleted += 1 } }
        }
        writer.run()
    }

    /// Reads an upload as it arrives and answers its length and FNV-1a 64 digest.
    private func upload(_ request: ServerRequest) {
        guard let body = request.bodyStream else {
            let digest = Self.fnv(request.body, into: 0xcbf2_9ce4_8422_2325)
            return reply(request, 200, SimDocuments.encode(["bytes": request.body.count, "fnv1a64": String(digest, radix: 16)]))
        }
        var digest: UInt64 = 0xcbf2_9ce4_8422_2325
        var count = 0
        body.start(onData: { piece in
            digest = Self.fnv(piece, into: digest)
            count += piece.count
        }, onEnd: { [self] result in
            shared.withLock { $0.stats.uploadBytes += count }
            switch result {
            case .success: reply(request, 200, SimDocuments.encode(["bytes": count, "fnv1a64": String(digest, radix: 16)]))
            case .failure: reply(request, 400, SimDocuments.error("bad_request", "the upload did not arrive whole"))
            }
        })
    }

    static func fnv(_ bytes: [UInt8], into start: UInt64) -> UInt64 {
        var hash = start
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return hash
    }

    static func split(_ uri: String) -> (String, [String: [String]]) {
        guard let mark = uri.firstIndex(of: "?") else { return (uri, [:]) }
        var query: [String: [String]] = [:]
        for item in uri[uri.index(after: mark)...].split(separator: "&") {
            let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = parts[0].replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String(parts[0])
            let value = parts.count > 1 ? (parts[1].replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String(parts[1])) : ""
            query[name, default: []].append(value)
        }
        return (String(uri[..<mark]), query)
    }
}

/// The list filters as the Pixxel API documents them.
struct SimFilter {
    var id: String?, status: String?, createdBy: String?, createdOn: String?

    struct Invalid: Error { let message: String }

    static func parse(_ query: [String: [String]]) -> Result<SimFilter, Invalid> {
        var filter = SimFilter()
        for (name, values) in query {
            guard values.count == 1 else { return .failure(Invalid(message: "\(name) given more than once")) }
            let value = values[0]
            switch name {
            case "id": filter.id = value
            case "status": filter.status = value.lowercased()
            case "created_by": filter.createdBy = value
            case "created_on":
                let date = String(value.prefix(10))
                let parts = date.split(separator: "-")
                guard parts.count == 3, parts[0].count == 4, parts.allSatisfy({ Int($0) != nil }) else {
                    return .failure(Invalid(message: "created_on must be an ISO 8601 date"))
                }
                filter.createdOn = date
            default: break
            }
        }
        return .success(filter)
    }

    func matches(_ job: SimJob, now: Double) -> Bool {
        if let id, job.id != id { return false }
        if let status, job.status(at: now) != status { return false }
        if let createdBy, job.createdBy != createdBy { return false }
        if let createdOn, SimDocuments.timestamp(job.createdAt, offsetMinutes: 0).prefix(10) != createdOn { return false }
        return true
    }
}
