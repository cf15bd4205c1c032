/// Whether the proxy is well, in one word and the reasons for it: the one rule behind the status
/// page, `pixxel-proxy status`, `/readyz`'s body, `/admin/stats` and `pixxel_proxy_health`, so
/// that none of them can look healthy while another says it is not. Pure: it reads figures, not
/// the proxy.
public struct HealthVerdict: Equatable, Sendable {
    /// Ordered by severity; the raw value is the gauge's.
    public enum State: Int, Comparable, Sendable {
        case healthy = 0
        case degraded = 1
        case failing = 2

        public var name: String {
            switch self {
            case .healthy: "healthy"
            case .degraded: "degraded"
            case .failing: "failing"
            }
        }

        public static func < (a: State, b: State) -> Bool { a.rawValue < b.rawValue }
    }

    public let state: State
    /// In words an operator acts on, worst first; empty when healthy.
    public let reasons: [String]
    /// The same reasons without figures, paths or names (`upstream_failing`, `redis_down`):
    /// what `/readyz`, open to anyone, says (found by review: its body told any caller how
    /// close the proxy was to its descriptor limit, and a store error's paths).
    public let categories: [String]

    public init(state: State, reasons: [String], categories: [String] = []) {
        self.state = state
        self.reasons = reasons
        self.categories = categories
    }

    /// What the verdict is decided from, as the proxy's parts report it.
    public struct Figures: Sendable {
        /// Ready to serve (`/readyz`), and why not.
        public var ready = true
        public var notReadyReason: String?
        /// Upstream calls made over the last minute, and those that failed (an error status,
        /// a timeout, no connection).
        public var upstreamCallsLastMinute = 0
        public var upstreamFailuresLastMinute = 0
        /// Seconds left of a pause the upstream asked for (`Retry-After`).
        public var pauseRemainingSeconds = 0.0
        /// Callers waiting for an upstream token while none is left.
        public var budgetWaiters = 0
        public var budgetTokens = 1.0
        /// A shared tier configured, and whether this instance is joined to it.
        public var redisConfigured = false
        public var redisUp = false
        /// The cache store's last write failed, or one did in the last minute (a full or
        /// read-only disk), and the reason of the last failure.
        public var storeWritesFailing = false
        public var storeFailureReason: String?
        /// Descriptors open and the process's limit (nil: unknown).
        public var openDescriptors: Int?
        public var descriptorLimit: Int?
        /// Accepting is paused: accept(2) fails (out of descriptors).
        public var acceptPaused = false
        /// Client connections open, and how many the server takes.
        public var openConnections = 0
        public var maxConnections = Int.max

        public init() {}
    }

    /// At least this many calls in the last minute before their failure ratio decides anything:
    /// one failed call out of one is bad luck, not an outage.
    static let minimumCallsJudged = 3
    /// Failures over calls in the last minute from which the upstream counts as failing.
    static let failingRatio = 0.5
    /// Open descriptors over the limit from which new connections are at risk.
    static let descriptorWarningRatio = 0.9

    public static func decide(_ figures: Figures) -> HealthVerdict {
        var findings: [(State, String, String)] = []
        if !figures.ready {
            findings.append((.failing, "not ready: \(figures.notReadyReason ?? "the cache store is not usable")", "not_ready"))
        }
        if figures.acceptPaused {
            findings.append((.failing, "new connections cannot be accepted (out of file descriptors): accepting pauses and retries", "accept_failing"))
        }
        if figures.openConnections >= figures.maxConnections {
            findings.append((.degraded, "\(figures.openConnections) of \(figures.maxConnections) connections open: new ones are refused", "connections_full"))
        }
        let calls = figures.upstreamCallsLastMinute, failures = min(figures.upstreamFailuresLastMinute, calls)
        if failures > 0 {
            let ratio = Double(failures) / Double(calls)
            let judged = calls >= minimumCallsJudged && ratio >= failingRatio
            findings.append((judged ? .failing : .degraded, "\(failures) of \(calls) upstream calls failed in the last minute", "upstream_failing"))
        }
        if figures.pauseRemainingSeconds > 0 {
            findings.append((.degraded, "the upstream asked to wait (Retry-After): \(Int(figures.pauseRemainingSeconds.rounded(.up))) s left", "upstream_pause"))
        }
        if figures.budgetWaiters > 0, figures.budgetTokens < 1 {
            findings.append((.degraded, "the upstream budget is spent: \(figures.budgetWaiters) requests wait for it", "budget_spent"))
        }
        if figures.redisConfigured, !figures.redisUp {
            findings.append((.degraded, "Redis is configured but not reachable: this instance acts alone", "redis_down"))
        }
        if figures.storeWritesFailing {
            let reason = figures.storeFailureReason.map { " (\($0.replacingOccurrences(of: "_", with: " ")))" } ?? ""
            findings.append((.degraded, "writes to the cache store fail\(reason): new answers are kept in memory only", "store_failing"))
        }
        if let open = figures.openDescriptors, let limit = figures.descriptorLimit, limit > 0,
           Double(open) >= Double(limit) * descriptorWarningRatio {
            findings.append((open >= limit ? .failing : .degraded, "\(open) of \(limit) file descriptors open: new connections may be refused", "descriptors_low"))
        }
        let state = findings.map(\.0).max() ?? .healthy
        // Worst first, in the order found within a severity.
        let ordered = findings.enumerated().sorted { ($0.element.0, -$0.offset) > ($1.element.0, -$1.offset) }.map(\.element)
        return HealthVerdict(state: state, reasons: ordered.map(\.1), categories: ordered.map(\.2))
    }

    /// As `/admin/stats` carries it (for admins).
    public var json: [String: Any] { ["state": state.name, "reasons": reasons] }
    /// As `/readyz` carries it (for anyone): the state and the categories, no figures.
    public var publicJSON: [String: Any] { ["state": state.name, "reasons": categories] }
}
