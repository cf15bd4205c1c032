/// The budget's promise over a record of call instants: in every window [tᵢ, tⱼ] the calls
/// that started fit `burst + rate·(tⱼ − tᵢ)`. One call too many is a whole call over, so the
/// check needs no slack when the instants are the budget's own (`upstreamGrantInstants`).
/// Where they are arrival times at an upstream in another process, `slackSeconds` widens each
/// window by what delivery may shift an arrival; below one token's time (1/rate) a call too
/// many is still caught.
func budgetWindowViolations(_ instants: [Double], rate: Double, burst: Double, slackSeconds: Double = 0) -> [String] {
    let sorted = instants.sorted()
    var violations: [String] = []
    for i in sorted.indices {
        for j in i..<sorted.count {
            let window = sorted[j] - sorted[i]
            // 1e-9: the budget's own arithmetic in Double, not a tolerance for late timers.
            if Double(j - i + 1) > burst + rate * (window + slackSeconds) + 1e-9 {
                violations.append("\(j - i + 1) calls in \(window) s")
            }
        }
    }
    return violations
}
