import JobCache

/// Which cached resource: a workflow's full job list, or one job's detail. Ids are held in the
/// percent-encoded form they take upstream (`PercentEncoding.segment`), so two keys are equal
/// exactly when the upstream would be asked for the same path: no pair of distinct ids, whatever
/// bytes they hold (spaces, separators, canonically equivalent Unicode), shares an entry, in
/// memory, on disk, in a purge or in an invalidation.
public enum CacheKey: Hashable, Sendable, CustomStringConvertible {
    case list(workflow: String)
    /// The job's id is a `CompactID`: 16 bytes for a UUID, where a `String` would be a heap
    /// allocation per cached job.
    case detail(workflow: String, job: CompactID)
    /// A GET route of `cache.routes`: its path and query as they go upstream. Indirect, so a
    /// key is two strings wide: every cached entry's key sits in two dictionaries.
    indirect case route(CachedRouteResource)

    /// The key of a list, from the workflow's id as decoded from a request path.
    public static func list(workflowID: String) -> CacheKey { .list(workflow: PercentEncoding.segment(workflowID)) }

    /// The key of a detail, from ids as decoded from a request path or a document.
    public static func detail(workflowID: String, jobID: String) -> CacheKey {
        .detail(workflow: PercentEncoding.segment(workflowID), job: CompactID(PercentEncoding.segment(jobID)))
    }

    /// The key of a detail, from the workflow's encoded id and the job's id as a document holds it.
    public static func detail(workflow: String, jobID: CompactID) -> CacheKey {
        .detail(workflow: workflow, job: encoded(jobID))
    }

    /// A job's id as a key holds it: percent-encoded (a UUID needs no encoding, and is not
    /// made into text to find that out).
    public static func encoded(_ id: CompactID) -> CompactID {
        id.isInline ? id : CompactID(id.percentEncoded)
    }

    /// The key of a detail, from ids already encoded (`PercentEncoding.segment`).
    public static func detail(workflow: String, encodedJob: String) -> CacheKey {
        .detail(workflow: workflow, job: CompactID(encodedJob))
    }

    /// The workflow's id, encoded; for a `cache.routes` resource its path (which starts with
    /// `/`, which no encoded id holds, so it never names a workflow).
    public var workflow: String {
        switch self {
        case .list(let workflow), .detail(let workflow, _): workflow
        case .route(let resource): resource.path
        }
    }

    /// The job's id, encoded (details only; made anew for a UUID).
    public var job: String? {
        if case .detail(_, let job) = self { return job.text }
        return nil
    }

    /// The path the upstream is asked for.
    public var upstreamPath: String {
        switch self {
        case .list(let workflow): "/v0/workflows/\(workflow)/jobs"
        case .detail(let workflow, let job): "/v0/workflows/\(workflow)/jobs/\(job)"
        case .route(let resource): resource.path
        }
    }

    /// A `cache.routes` resource (not a job route's document).
    public var isRoute: Bool {
        if case .route = self { return true }
        return false
    }

    /// The query the upstream is asked with (the job routes ask without one).
    public var upstreamQuery: String? {
        if case .route(let resource) = self { return resource.query }
        return nil
    }

    /// The key as the disk tier stores it: injective, since encoded ids hold no `/`.
    public var diskKey: String {
        switch self {
        case .list(let workflow): "list/\(workflow)"
        case .detail(let workflow, let job): "detail/\(workflow)/\(job)"
        // An encoded path holds no `?`: no query, an empty one and any other stay apart.
        case .route(let resource): "route" + resource.path + (resource.query.map { "?" + $0 } ?? "")
        }
    }

    /// The client route that reads this resource, for metrics (never an id).
    public var routeTemplate: String {
        switch self {
        case .list: "/v0/workflows/{workflow_id}/jobs"
        case .detail: "/v0/workflows/{workflow_id}/jobs/{job_id}"
        case .route(let resource): resource.template
        }
    }

    public var description: String { diskKey }
}

/// A `cache.routes` resource: the path (percent-encoded as it goes upstream) and the query (as
/// forwarded; nil when there was no `?`). Two requests share an entry exactly when both are
/// equal; the rule's pattern and lifetime ride along and take no part in equality.
public struct CachedRouteResource: Hashable, Sendable {
    public let path: String
    public let query: String?
    /// The rule's pattern, which names the route in metrics.
    public let template: String
    /// Seconds a stored answer is fresh.
    public let lifetime: Double

    public init(path: String, query: String?, template: String, lifetime: Double) {
        self.path = path
        self.query = query
        self.template = template
        self.lifetime = lifetime
    }

    public static func == (lhs: CachedRouteResource, rhs: CachedRouteResource) -> Bool {
        lhs.path == rhs.path && lhs.query == rhs.query
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(path)
        hasher.combine(query)
    }

    /// Whether the path is `prefix` or under it (segment by segment: `/v0/blocks` covers
    /// `/v0/blocks/1`, not `/v0/blocksets`).
    public func isUnder(_ prefix: String) -> Bool {
        path == prefix || path.hasPrefix(prefix.hasSuffix("/") ? prefix : prefix + "/")
    }
}
