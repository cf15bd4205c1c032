/// How long cached answers stay fresh: by the job's status for details (a finished job never
/// changes), one duration for lists. Time comes in as a value; the policy has no clock.
public struct FreshnessPolicy: Sendable {
    public var activeJobSeconds: Double
    public var terminalJobSeconds: Double
    public var jobListSeconds: Double
    /// Lowercased.
    public var terminalStatuses: Set<String>

    public init(activeJobSeconds: Double, terminalJobSeconds: Double, jobListSeconds: Double, terminalStatuses: [String]) {
        self.activeJobSeconds = activeJobSeconds
        self.terminalJobSeconds = terminalJobSeconds
        self.jobListSeconds = jobListSeconds
        self.terminalStatuses = Set(terminalStatuses.map { $0.lowercased() })
    }

    public func isTerminal(_ status: String?) -> Bool {
        status.map { terminalStatuses.contains($0.lowercased()) } ?? false
    }

    /// Freshness lifetime of a job detail with `status`.
    public func lifetime(ofJobWithStatus status: String?) -> Double {
        isTerminal(status) ? terminalJobSeconds : activeJobSeconds
    }

    /// Seconds of freshness left (negative once expired) for an entry stored at `storedAt`.
    public static func remaining(storedAt: Double, lifetime: Double, now: Double) -> Double {
        storedAt + lifetime - now
    }
}
