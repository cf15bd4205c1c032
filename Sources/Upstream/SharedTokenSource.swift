/// Where the budget's tokens come from when several instances share one budget (the shared
/// tier on Redis). The budget asks it one token at a time, and falls back to its local share
/// (`requests_per_second / shared.instances`) whenever it is not available.
public protocol SharedTokenSource: AnyObject {
    /// Whether it can be asked now (Redis is up).
    var isAvailable: Bool { get }
    /// Asks for one token; `answer` runs on the loop.
    func takeToken(_ answer: @escaping (SharedTokenAnswer) -> Void)
    /// Tells every instance that the upstream asked for a pause of `seconds`.
    func sharePause(seconds: Double)
}

public enum SharedTokenAnswer: Equatable, Sendable {
    case granted
    /// No token for this many seconds; `paused`: because the upstream paused everyone.
    case wait(seconds: Double, paused: Bool)
    /// Redis did not answer (in time): this call is made with the local share.
    case unavailable
}
