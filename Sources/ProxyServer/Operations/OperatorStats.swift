/// What the status page and `pixxel-proxy status` show over time, kept small: per-second counts
/// for the last five minutes in a ring, requests per client and per workflow (bounded), and
/// the last upstream errors. Pure: seconds come in as whole numbers of a monotonic clock.
struct OperatorStats {
    struct Second: Equatable {
        var requests = 0
        /// Answers that looked in the cache (hit, miss, stale, revalidation): the hit ratio's base.
        var lookups = 0
        var hits = 0
        var upstreamCalls = 0
        var upstreamErrors = 0
    }

    struct UpstreamError: Equatable {
        /// Wall-clock seconds since 1970.
        let at: Double
        let route: String
        let outcome: String
    }

    static let window = 300
    static let maxWorkflows = 512
    static let maxClients = 1024
    static let maxErrors = 20

    private var ring = [Second](repeating: Second(), count: window)
    /// The second the ring's newest slot counts.
    private var newest: Int?
    private(set) var clients: [String: Int] = [:]
    private(set) var workflows: [String: Int] = [:]
    private(set) var recentErrors: [UpstreamError] = []

    /// Moves the ring on to `second`, emptying the slots of the seconds skipped.
    private mutating func advance(to second: Int) {
        guard let last = newest else {
            newest = second
            return
        }
        guard second > last else { return }
        for skipped in (last + 1)...min(second, last + Self.window) { ring[Self.slot(skipped)] = Second() }
        newest = second
    }

    private static func slot(_ second: Int) -> Int {
        ((second % window) + window) % window
    }

    /// One answer sent (any route, the hit path's too). `lookup`: it looked in the cache.
    /// `workflow`: for an answer the caller was allowed (a refused request must not write what
    /// the operator reads).
    mutating func answered(at second: Int, hit: Bool, lookup: Bool = false, client: String, workflow: String?) {
        advance(to: second)
        guard let newest, second > newest - Self.window else { return }
        ring[Self.slot(second)].requests += 1
        if hit || lookup { ring[Self.slot(second)].lookups += 1 }
        if hit { ring[Self.slot(second)].hits += 1 }
        if clients[client] != nil || clients.count < Self.maxClients { clients[client, default: 0] += 1 }
        if let workflow { count(workflow) }
    }

    /// Counts a workflow's request. Full, the table works as Space-Saving does: the quietest
    /// makes room and the newcomer takes its count plus one, so a workflow that becomes busy
    /// late climbs to the top (its count may be over by the evicted one's, never under), and
    /// two newcomers cannot keep evicting each other at 1. Ids are kept to 128 characters.
    private mutating func count(_ workflow: String) {
        let workflow = workflow.count > Self.maxWorkflowIDLength ? String(workflow.prefix(Self.maxWorkflowIDLength)) + "…" : workflow
        if workflows[workflow] == nil, workflows.count >= Self.maxWorkflows,
           let quietest = workflows.min(by: { $0.value < $1.value }) {
            workflows.removeValue(forKey: quietest.key)
            workflows[workflow] = quietest.value
        }
        workflows[workflow, default: 0] += 1
    }

    static let maxWorkflowIDLength = 128

    /// One upstream call made (`error`: not an answer a client could use: 5xx, 429, a failure).
    mutating func upstreamCall(at second: Int, wallTime: Double, route: String, outcome: String, error: Bool) {
        advance(to: second)
        guard let newest, second > newest - Self.window else { return }
        ring[Self.slot(second)].upstreamCalls += 1
        guard error else { return }
        ring[Self.slot(second)].upstreamErrors += 1
        recentErrors.append(UpstreamError(at: wallTime, route: route, outcome: outcome))
        if recentErrors.count > Self.maxErrors { recentErrors.removeFirst(recentErrors.count - Self.maxErrors) }
    }

    /// Upstream calls and errors over the 60 whole seconds before `second`: the window the
    /// page's figures show, so the verdict and the page never disagree (found by review).
    mutating func upstreamLastMinute(at second: Int) -> (calls: Int, errors: Int) {
        advance(to: second)
        return ((second - 60)..<second).reduce(into: (0, 0)) { sum, each in
            sum.0 += ring[Self.slot(each)].upstreamCalls
            sum.1 += ring[Self.slot(each)].upstreamErrors
        }
    }

    /// The last `count` whole seconds before `second`, oldest first (the current one is still
    /// filling, so it is left out).
    mutating func series(before second: Int, count: Int = window - 1) -> [Second] {
        advance(to: second)
        let count = min(count, Self.window - 1)
        return ((second - count)..<second).map { ring[Self.slot($0)] }
    }

    /// The busiest workflows, most requests first (ties by id).
    func busiestWorkflows(_ limit: Int) -> [(id: String, requests: Int)] {
        workflows.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.prefix(limit).map { ($0.key, $0.value) }
    }

    /// Whether an upstream outcome (a status or a failure code) is an error for the page.
    static func isError(_ outcome: String) -> Bool {
        guard let status = Int(outcome) else { return outcome != "budget_refused" }
        return status >= 500 || status == 429
    }
}
