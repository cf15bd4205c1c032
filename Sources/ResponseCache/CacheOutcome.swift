/// What the cache did for one answer on a cached route. `Cache-Status` (RFC 9211), the
/// `cache` label of the metrics and the access line's `cache` field all derive from it.
public enum CacheOutcome: Sendable, Equatable {
    /// Why a request went upstream.
    public enum Forward: String, Sendable {
        /// Nothing cached.
        case miss
        /// Cached but expired or superseded.
        case stale
        /// The client asked for revalidation (`Cache-Control: no-cache`).
        case request
    }

    /// Answered from the cache: fresh (`ttl` > 0) or stale while one refresh runs (`ttl` <= 0).
    case hit(ttl: Int)
    /// Answered from the shared tier: memory had nothing fresh, another instance had fetched it.
    case sharedHit(ttl: Int)
    /// Went upstream (or waited on another request's fetch: `collapsed`). `upstreamStatus` is
    /// the upstream's status when it answered; `stored` when the answer was cached; `detail`
    /// why there is no cached answer to give: `superseded` (what the cache held is older than
    /// a version already shown, and the upstream gave nothing newer), or the error code when
    /// there was no answer.
    case forwarded(Forward, upstreamStatus: Int?, stored: Bool = false, collapsed: Bool = false, detail: String? = nil)
    /// Expired, then renewed by a fetch of its workflow's list (which answered 200), and served:
    /// the detail cost no call of its own.
    case revalidatedThroughList(collapsed: Bool)
    /// The upstream failed (`upstreamStatus`); a stale answer within its window was served.
    case staleOnError(upstreamStatus: Int, collapsed: Bool)
    /// A list query with parameters the proxy does not filter: forwarded as it is, never cached.
    case uriMiss
    /// Answered before any cache decision (a refusal, an error).
    case bypass
    /// A `cache.routes` answer too large to cache: streamed through as it is.
    case tooLargeToCache

    /// The `Cache-Status` value.
    public var cacheStatus: String {
        switch self {
        case .hit(let ttl):
            return "pixxel-proxy; hit; ttl=\(ttl)"
        case .sharedHit(let ttl):
            return "pixxel-proxy; hit; ttl=\(ttl); detail=shared"
        case .forwarded(let reason, let status, let stored, let collapsed, let detail):
            var text = "pixxel-proxy; fwd=\(reason.rawValue)"
            if let status { text += "; fwd-status=\(status)" }
            if let detail { text += "; detail=\(detail)" }
            if stored { text += "; stored" }
            if collapsed { text += "; collapsed" }
            return text
        case .revalidatedThroughList(let collapsed):
            return "pixxel-proxy; fwd=stale; fwd-status=200; detail=list-revalidated" + (collapsed ? "; collapsed" : "")
        case .staleOnError(let status, let collapsed):
            return "pixxel-proxy; fwd=stale; fwd-status=\(status)" + (collapsed ? "; collapsed" : "")
        case .uriMiss:
            return "pixxel-proxy; fwd=uri-miss"
        case .bypass:
            return "pixxel-proxy; fwd=bypass"
        case .tooLargeToCache:
            return "pixxel-proxy; fwd=bypass; detail=too-large"
        }
    }

    /// Appends the `Cache-Status` value to an answer head. A fresh hit's, the one made most
    /// often, is written from bytes made once.
    public func appendCacheStatus(to head: inout [UInt8]) {
        if case .hit(let ttl) = self {
            head += Self.hitPrefix
            head += String(ttl).utf8
        } else {
            head += cacheStatus.utf8
        }
    }

    private static let hitPrefix = Array("pixxel-proxy; hit; ttl=".utf8)

    /// A bounded label for metrics and the access line: hit, miss, stale, request, revalidated,
    /// uri-miss or bypass.
    public var label: String {
        switch self {
        case .hit, .sharedHit: "hit"
        case .forwarded(let reason, _, _, _, _): reason.rawValue
        case .revalidatedThroughList: "revalidated"
        case .staleOnError: "stale"
        case .uriMiss: "uri-miss"
        case .bypass, .tooLargeToCache: "bypass"
        }
    }
}
