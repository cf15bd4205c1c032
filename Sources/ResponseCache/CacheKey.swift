import JobCache

/// Which cached resource: a workflow's full job list, or one job's detail. Ids are held in the
/// percent-encoded form they take upstream (`PercentEncoding.segment`), so two keys are equal
/// exactly when the upstream would be asked for the same path: no pair of distinct ids, whatever
/// bytes they hold (spaces, separators, canonically equivalent Unicode), shares an entry, in
/// memory, on disk, in a purge or in an invalidation.
public enum CacheKey: Hashable, Sendable, CustomStringConvertible {
    case list(workflow: String)
    case detail(workflow: String, job: String)

    /// The key of a list, from the workflow's id as decoded from a request path.
    public static func list(workflowID: String) -> CacheKey { .list(workflow: PercentEncoding.segment(workflowID)) }

    /// The key of a detail, from ids as decoded from a request path or a document.
    public static func detail(workflowID: String, jobID: String) -> CacheKey {
        .detail(workflow: PercentEncoding.segment(workflowID), job: PercentEncoding.segment(jobID))
    }

    /// The workflow's id, encoded.
    public var workflow: String {
        switch self {
        case .list(let workflow), .detail(let workflow, _): workflow
        }
    }

    /// The job's id, encoded (details only).
    public var job: String? {
        if case .detail(_, let job) = self { return job }
        return nil
    }

    /// The path the upstream is asked for.
    public var upstreamPath: String {
        switch self {
        case .list(let workflow): "/v0/workflows/\(workflow)/jobs"
        case .detail(let workflow, let job): "/v0/workflows/\(workflow)/jobs/\(job)"
        }
    }

    /// The key as the disk tier stores it: injective, since encoded ids hold no `/`.
    public var diskKey: String {
        switch self {
        case .list(let workflow): "list/\(workflow)"
        case .detail(let workflow, let job): "detail/\(workflow)/\(job)"
        }
    }

    /// The client route that reads this resource, for metrics (never an id).
    public var routeTemplate: String {
        switch self {
        case .list: "/v0/workflows/{workflow_id}/jobs"
        case .detail: "/v0/workflows/{workflow_id}/jobs/{job_id}"
        }
    }

    public var description: String { diskKey }
}
