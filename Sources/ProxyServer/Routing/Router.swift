import EventHTTP
import JobCache
import ProxyConfig

/// What the proxy does with a request, decided from its method and path alone.
public enum Route: Sendable, Equatable {
    case health
    case ready
    case listJobs(workflowID: String)
    case getJob(workflowID: String, jobID: String)
    case createJob(workflowID: String)
    /// A GET or HEAD of another route that a `cache.routes` rule caches.
    case cachedRoute(CacheRouteRule)
    /// Any other request under `/v0/`: streamed through as it is, never cached.
    case passThrough
    /// `POST /admin/purge?workflow_id=W[&job_id=J]`
    case adminPurge
    /// `GET /admin/stats`
    case adminStats
    /// `GET /admin/`: the status page (it holds no data; no token needed)
    case adminPage
    /// `GET /metrics`: Prometheus text
    case metrics
    case notFound
    case methodNotAllowed(allowed: [HTTPMethod])

    /// A stable name for logs and metrics (never an id).
    public var template: String {
        switch self {
        case .health: "/healthz"
        case .ready: "/readyz"
        case .listJobs, .createJob: "/v0/workflows/{workflow_id}/jobs"
        case .getJob: "/v0/workflows/{workflow_id}/jobs/{job_id}"
        case .cachedRoute(let rule): rule.pattern
        case .passThrough: "/v0/*"
        case .adminPurge: "/admin/purge"
        case .adminStats: "/admin/stats"
        case .adminPage: "/admin/"
        case .metrics: "/metrics"
        case .notFound, .methodNotAllowed: "unmatched"
        }
    }

    /// The workflow a job route is about, percent-encoded as it goes upstream (for the status
    /// page's busiest workflows); nil off the job routes.
    public var workflow: String? {
        switch self {
        case .listJobs(let workflowID), .getJob(let workflowID, _), .createJob(let workflowID): PercentEncoding.segment(workflowID)
        default: nil
        }
    }

    /// The three Pixxel job routes, whose answers must be JSON objects.
    public var isJobRoute: Bool {
        switch self {
        case .listJobs, .getJob, .createJob: true
        default: false
        }
    }

    /// Whether the answer carries `Cache-Status` and `Age` (the cached routes).
    public var isCachedRoute: Bool {
        switch self {
        case .listJobs, .getJob, .cachedRoute: true
        default: false
        }
    }
}

/// Pure routing: `(method, path segments)` to a `Route`.
public enum Router {
    /// `rules`: `cache.routes`, the first that matches a GET or HEAD of another route applies.
    public static func route(method: HTTPMethod, target: RequestTarget, rules: [CacheRouteRule] = []) -> Route {
        let path = target.segments
        if path == ["healthz"] || path == ["readyz"] {
            guard method == .get || method == .head else { return .methodNotAllowed(allowed: [.get, .head]) }
            return path == ["healthz"] ? .health : .ready
        }
        if path == ["metrics"] {
            return method == .get || method == .head ? .metrics : .methodNotAllowed(allowed: [.get, .head])
        }
        if path == ["admin", "purge"] {
            return method == .post ? .adminPurge : .methodNotAllowed(allowed: [.post])
        }
        if path == ["admin"] {
            return method == .get || method == .head ? .adminPage : .methodNotAllowed(allowed: [.get, .head])
        }
        if path == ["admin", "stats"] {
            return method == .get || method == .head ? .adminStats : .methodNotAllowed(allowed: [.get, .head])
        }
        guard path.first == "v0" else { return .notFound }
        guard method != .trace && method != .connect else {
            return .methodNotAllowed(allowed: [.get, .head, .post, .put, .patch, .delete, .options])
        }
        if !target.trailingSlash, path.count == 4 || path.count == 5, path[1] == "workflows", path[3] == "jobs" {
            let workflowID = path[2]
            if path.count == 4 {
                switch method {
                case .get, .head: return .listJobs(workflowID: workflowID)
                case .post: return .createJob(workflowID: workflowID)
                default: return .passThrough
                }
            }
            if method == .get || method == .head { return .getJob(workflowID: workflowID, jobID: path[4]) }
        }
        if method == .get || method == .head, !target.trailingSlash, let rule = rules.first(where: { $0.matches(path) }) {
            return .cachedRoute(rule)
        }
        return .passThrough
    }
}
