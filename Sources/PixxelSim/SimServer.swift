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
                func number(_ name: String) -> Double? { query[name]?.first.flatMap(Double.init) }
                if let value = number("latency_ms") { faults.latencyMilliseconds = Int(value) }
                if let value = number("error_rate") { faults.errorRate = value }
                if let value = number("rate_429") { faults.rateLimitRate = value }
                if let value = number("retry_after") { faults.retryAfterSeconds = Int(value) }
                if let value = number("hang_rate") { faults.hangRate = value }
                if let value = number("garbage_rate") { faults.garbageRate = value }
                self.faults = faults
            }
            let f = faults
            return reply(request, 200, SimDocuments.encode([
                "latency_ms": f.latencyMilliseconds, "error_rate": f.errorRate, "rate_429": f.rateLimitRate,
                "retry_after": f.retryAfterSeconds, "hang_rate": f.hangRate, "garbage_rate": f.garbageRate,
            ]))
        case "clock":
            if let seconds = query["advance"]?.first.flatMap(Double.init) { advanceClock(by: seconds) }
            return reply(request, 200, SimDocuments.encode(["now": now]))
        case "stats":
            let s = stats
            var document: [String: Any] = ["total": s.total, "requests": s.requests]
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
        return "\(method.rawValue) other"
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
