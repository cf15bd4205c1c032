import Foundation

/// `pixxel-proxy status`: the status page's figures as one screen of text, for ssh sessions.
/// Pure: it renders an `/admin/stats` document; fetching it is the command's job.
public enum StatusReport {
    public static func render(_ stats: [String: Any], url: String) -> String {
        let series = stats["series"] as? [String: [Any]] ?? [:]
        func counts(_ name: String) -> [Int] { (series[name] ?? []).map { int($0) } }
        let requests = counts("requests"), hits = counts("hits"), lookups = counts("lookups")
        let calls = counts("upstream_calls"), errors = counts("upstream_errors")
        let budget = stats["budget"] as? [String: Any] ?? [:]
        let memory = stats["memory"] as? [String: Any] ?? [:], disk = stats["disk"] as? [String: Any] ?? [:]
        let streams = stats["streams"] as? [String: Any] ?? [:]
        var lines: [String] = []
        func row(_ label: String, _ value: String) { lines.append(label.padding(toLength: 13, withPad: " ", startingAt: 0) + value) }

        let version = (stats["version"] as? String).map { " \(printable($0))" } ?? ""
        lines.append("pixxel-proxy\(version) at \(url)   up \(duration(int(stats["uptime_seconds"])))")
        // The verdict first, in the words the page and /readyz use.
        if let health = stats["health"] as? [String: Any], let state = health["state"] as? String {
            let reasons = (health["reasons"] as? [String] ?? []).map(printable)
            row("health", state.uppercased() + (reasons.isEmpty ? "" : ": " + reasons.joined(separator: "; ")))
        }
        row("requests/s", "\(number(average(requests, 10)))   \(sparkline(requests.suffix(60)))  (last minute)")
        // Over the cache's lookups only: a health check or a scrape is not a request the cache missed.
        let minuteLookups = lookups.suffix(60).reduce(0, +), minuteHits = hits.suffix(60).reduce(0, +)
        let lastMinute = minuteLookups == 0 ? "no cache lookups in the last minute"
            : "\(percent(min(1, Double(minuteHits) / Double(minuteLookups)))) in the last minute"
        row("hit ratio", "\(percent(double(stats["hit_ratio"]))) since start, \(lastMinute)")
        row("upstream/s", "\(number(average(calls, 10)))   \(sparkline(calls.suffix(60)))   saved since start \(int(stats["upstream_calls_saved"]))")
        let rate = double(budget["requests_per_second"])
        let pause = double(budget["pause_remaining_seconds"])
        row("budget", (rate > 0 ? "tokens \(number(double(budget["tokens"]))) of \(number(double(budget["burst"])))" : "unlimited")
            + "   waiting \(int(budget["queued"]))   pause " + (pause > 0 ? "\(number(pause)) s (upstream Retry-After)" : "none")
            + "   refused \(int(budget["refused"]))")
        if let shared = stats["shared"] as? [String: Any], let state = shared["state"] as? String, state != "off" {
            row("shared tier", "\(state == "up" ? "up" : "DOWN, acting alone")   hits \(int(shared["hits"]))   lease waits \(int(shared["lease_waits"]))"
                + "   tokens from Redis \(int(shared["budget_tokens_from_redis"]))   Redis errors \(int(shared["redis_errors"]))")
        }
        row("errors", "\(errors.suffix(60).reduce(0, +)) upstream errors in the last minute")
        row("streams", "\(int(streams["running"])) running, \(int(streams["queued"])) waiting")
        let changeStreams = stats["change_streams"] as? [String: Any] ?? [:]
        row("watchers", "\(int(changeStreams["open"])) change streams, \(int(stats["held_requests"])) held waits"
            + "   cut off as too slow \(int(changeStreams["overflows"]))")
        row("memory", tier(memory))
        row("disk", tier(disk))
        let clients = (stats["clients"] as? [String: Any] ?? [:]).map { ($0.key, int($0.value)) }
            .sorted { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }
        row("clients", clients.isEmpty ? "none" : clients.prefix(6).map { "\(printable($0.0)) \($0.1)" }.joined(separator: ", "))
        let workflows = stats["workflows"] as? [[String: Any]] ?? []
        row("workflows", workflows.isEmpty ? "none" : workflows.prefix(5).map { "\(printable($0["id"] as? String ?? "?")) \(int($0["requests"]))" }
            .joined(separator: ", "))
        let recent = (stats["recent_upstream_errors"] as? [[String: Any]] ?? []).suffix(5).reversed()
        if recent.isEmpty {
            row("last errors", "none")
        } else {
            for (index, error) in recent.enumerated() {
                let at = printable((error["at"] as? String).map { String($0.dropFirst(11).prefix(8)) } ?? "?")
                row(index == 0 ? "last errors" : "", "\(at) \(printable(error["route"] as? String ?? "?")) \(printable(error["outcome"] as? String ?? "?"))")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func tier(_ figures: [String: Any]) -> String {
        let bytes = double(figures["bytes"]), budget = double(figures["budget_bytes"])
        let share = budget > 0 ? min(1, bytes / budget) : 0
        let filled = Int((share * 20).rounded())
        return "\(int(figures["entries"])) entries, \(size(bytes)) of \(size(budget)) [" + String(repeating: "#", count: filled)
            + String(repeating: ".", count: 20 - filled) + "]"
    }

    /// Unicode blocks, one per value, scaled to the largest.
    static func sparkline<C: Collection>(_ values: C) -> String where C.Element == Int {
        let blocks = Array("▁▂▃▄▅▆▇█")
        let top = max(values.max() ?? 0, 1)
        return String(values.map { blocks[min(blocks.count - 1, $0 * (blocks.count - 1) / top)] })
    }

    /// A name from a request or the clients file, with control characters (a terminal's
    /// escape sequences) and format characters (bidi overrides and isolates, which reorder
    /// what a terminal shows) as `?`.
    static func printable(_ text: String) -> String {
        String(text.unicodeScalars.map { scalar -> Character in
            let category = scalar.properties.generalCategory
            let hidden = category == .control || category == .format || category == .lineSeparator || category == .paragraphSeparator
            return hidden ? "?" : Character(scalar)
        }.prefix(64))
    }

    static func average(_ values: [Int], _ last: Int) -> Double {
        let window = values.suffix(last)
        return window.isEmpty ? 0 : Double(window.reduce(0, +)) / Double(window.count)
    }

    /// Figures as the proxy sends them are counts and sizes: anything else a server at `--url`
    /// may send (negative, huge, not finite) is clamped to 0...1e15, so that no sum, bar or
    /// conversion below can trap.
    static let largest = 1e15
    static func int(_ value: Any?) -> Int { Int(double(value)) }
    static func double(_ value: Any?) -> Double {
        guard let number = (value as? NSNumber)?.doubleValue, number.isFinite else { return 0 }
        return min(max(number, 0), largest)
    }
    static func percent(_ share: Double) -> String { String(format: "%.1f%%", share * 100) }
    static func number(_ value: Double) -> String { value == value.rounded() ? String(Int(value)) : String(format: "%.1f", value) }

    static func size(_ bytes: Double) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = bytes, unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(Int(value)) B" : String(format: "%.1f", value) + " " + units[unit]
    }

    static func duration(_ seconds: Int) -> String {
        if seconds < 60 { return "\(seconds)s" }
        if seconds < 3600 { return "\(seconds / 60)m \(seconds % 60)s" }
        if seconds < 86_400 { return "\(seconds / 3600)h \(seconds % 3600 / 60)m" }
        return "\(seconds / 86_400)d \(seconds % 86_400 / 3600)h"
    }
}
