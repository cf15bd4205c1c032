import Foundation

/// `# HELP` for every metric `/metrics` has (swift-metrics' factory registers them without
/// help text, and the registry refuses a second registration whose help differs), and the
/// conventional `pixxel_proxy_build_info` and `process_*` series, which are figures of the
/// process read at scrape time rather than counters kept by the proxy.
enum MetricsHelp {
    static let texts: [String: String] = [
        "pixxel_proxy_requests_total": "Answers sent to clients, by route template, status and cache outcome.",
        "pixxel_proxy_request_duration_seconds": "Time from a request's head to its answer handed to the socket, by route template; the wait a client asks for (Prefer: wait, a change stream) is left out.",
        "pixxel_proxy_requests_in_flight": "Requests received and not yet answered.",
        "pixxel_proxy_upstream_requests_total": "Calls to the upstream, by route template and outcome (status or failure).",
        "pixxel_proxy_upstream_duration_seconds": "Time of each upstream call, by route template.",
        "pixxel_proxy_upstream_connections_open": "Connections to the upstream open now.",
        "pixxel_proxy_upstream_budget_tokens": "Upstream calls the rate budget allows now.",
        "pixxel_proxy_upstream_budget_queue_length": "Callers waiting for an upstream call from the budget.",
        "pixxel_proxy_upstream_budget_refused_total": "Callers refused because the budget's queue was full or their wait too long.",
        "pixxel_proxy_upstream_retry_after_pauses_total": "Pauses the upstream asked for with Retry-After.",
        "pixxel_proxy_upstream_retry_after_remaining_seconds": "Seconds left of the current Retry-After pause (0: none).",
        "pixxel_proxy_cache_hits_total": "Lookups answered from a cache tier (memory, disk or Redis).",
        "pixxel_proxy_cache_misses_total": "Lookups that went upstream.",
        "pixxel_proxy_cache_disk_hits_total": "Hits answered from the disk tier.",
        "pixxel_proxy_cache_evictions_total": "Entries evicted from the memory tier to stay within its budget.",
        "pixxel_proxy_cache_collapsed_total": "Requests that waited on another's upstream call for the same resource instead of making one.",
        "pixxel_proxy_cache_stale_served_total": "Stale answers served by the cache (an upstream failure or a revalidation under way); requests_total{cache=\"stale\"} counts the answers a client got, which can differ when one stale entry answers several waiters.",
        "pixxel_proxy_cache_background_refreshes_total": "Revalidations made in the background while a stale answer was served.",
        "pixxel_proxy_cache_list_revalidations_total": "Job lists revalidated against the upstream.",
        "pixxel_proxy_cache_write_throughs_total": "Jobs created through the proxy and written into the cached list.",
        "pixxel_proxy_cache_disk_dropped_writes_total": "Writes to the disk tier dropped because its queue was full.",
        "pixxel_proxy_cache_entries": "Entries held, by tier.",
        "pixxel_proxy_cache_bytes": "Bytes held, by tier.",
        "pixxel_proxy_store_write_errors_total": "Writes to the cache store that failed, by reason (disk_full, read_only, io_error, busy, corrupt, other).",
        "pixxel_proxy_invalidation_renewals_total": "Cached job details a list confirmed unchanged (freshness renewed).",
        "pixxel_proxy_invalidation_invalidations_total": "Cached job details a list showed changed (superseded).",
        "pixxel_proxy_invalidation_rejected_out_of_order_total": "Upstream answers older than a version already shown, not stored.",
        "pixxel_proxy_invalidation_list_entry_updates_total": "Entries of cached lists patched from a newer job detail.",
        "pixxel_proxy_audit_journal_fallbacks_total": "Audit entries of job creation written to the journal because the store refused them.",
        "pixxel_proxy_accept_failures_total": "Failed accepts of new connections (out of file descriptors); accepting pauses 500 ms after each.",
        "pixxel_proxy_connections_refused_total": "Connections closed at once because the server held its maximum of connections.",
        "pixxel_proxy_health": "The health verdict: 0 healthy, 1 degraded, 2 failing (reasons in /admin/stats and /readyz).",
        "pixxel_proxy_shared_up": "1 while this instance is joined to Redis, 0 while it acts alone (exported only with a shared tier).",
        "pixxel_proxy_ready": "1 while /readyz answers 200, 0 while it fails (draining, the cache store unusable).",
        "pixxel_proxy_shared_hits_total": "Lookups the shared tier (Redis) answered, counted by the tier.",
        "pixxel_proxy_shared_misses_total": "Lookups the shared tier (Redis) could not answer.",
        "pixxel_proxy_shared_stores_total": "Answers stored in Redis.",
        "pixxel_proxy_shared_lease_waits_total": "Misses that waited on another instance's upstream call (a lease) instead of making one.",
        "pixxel_proxy_shared_lease_takeovers_total": "Leases taken over from an instance that did not finish its call in time.",
        "pixxel_proxy_shared_invalidations_received_total": "Invalidation messages received from other instances.",
        "pixxel_proxy_shared_budget_tokens_total": "Upstream calls granted by the budget kept in Redis.",
        "pixxel_proxy_shared_budget_local_tokens_total": "Upstream calls granted by this instance's local share while Redis was away.",
        "pixxel_proxy_shared_redis_errors_total": "Redis commands that failed.",
        "pixxel_proxy_shared_redis_disconnects_total": "Connections to Redis lost.",
        "pixxel_proxy_shared_learnings_incomplete_total": "Lists whose jobs' newer versions could not all be read from Redis.",
        "pixxel_proxy_build_info": "The running build: its version and the commit it was built from (unknown when the build was not told: a build outside make, the package and the install script).",
        "process_cpu_seconds_total": "User and system CPU time spent, in seconds.",
        "process_resident_memory_bytes": "Resident memory size, in bytes.",
        "process_virtual_memory_bytes": "Virtual memory size, in bytes.",
        "process_open_fds": "Open file descriptors.",
        "process_max_fds": "The open file descriptor limit.",
        "process_start_time_seconds": "When the process started, in seconds since the Unix epoch.",
    ]

    /// `text` with a `# HELP` line before each `# TYPE` line that has none.
    static func withHelp(_ text: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(text.count + texts.count * 96)
        var previousWasHelp = false
        for line in text.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            if !previousWasHelp, line.starts(with: "# TYPE ".utf8) {
                let name = String(decoding: line.dropFirst(7).prefix { $0 != UInt8(ascii: " ") }, as: UTF8.self)
                out += "# HELP \(name) \(escaped(texts[name] ?? name.replacingOccurrences(of: "_", with: " ")))\n".utf8
            }
            previousWasHelp = line.starts(with: "# HELP ".utf8)
            out += line
            out.append(UInt8(ascii: "\n"))
        }
        if out.last == UInt8(ascii: "\n"), text.last != UInt8(ascii: "\n") { out.removeLast() }
        return out
    }

    /// HELP text escapes backslash and newline.
    private static func escaped(_ help: String) -> String {
        help.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n")
    }

    /// `pixxel_proxy_build_info` and the `process_*` series, read from /proc now.
    static func processText(version: String, commit: String, descriptorLimit: Int?) -> [UInt8] {
        var lines: [String] = []
        func series(_ name: String, _ type: String, _ value: String, labels: String = "") {
            lines.append("# HELP \(name) \(texts[name] ?? name)")
            lines.append("# TYPE \(name) \(type)")
            lines.append("\(name)\(labels) \(value)")
        }
        series("pixxel_proxy_build_info", "gauge", "1", labels: "{version=\"\(version)\",commit=\"\(commit)\"}")
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let page = Double(sysconf(Int32(_SC_PAGESIZE)))
        // /proc/self/stat: the fields after the command's closing parenthesis (which may hold spaces).
        if let stat = procFile("/proc/self/stat"), let close = stat.lastIndex(of: ")") {
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            // fields[0] is field 3 (state): utime is field 14, stime 15, starttime 22, vsize 23, rss 24.
            func field(_ number: Int) -> Double? { fields.count > number - 3 ? Double(fields[number - 3]) : nil }
            if let utime = field(14), let stime = field(15) { series("process_cpu_seconds_total", "counter", "\((utime + stime) / ticks)") }
            if let rss = field(24) { series("process_resident_memory_bytes", "gauge", "\(Int(rss * page))") }
            if let vsize = field(23) { series("process_virtual_memory_bytes", "gauge", "\(Int(vsize))") }
            if let start = field(22), let boot = bootTime() { series("process_start_time_seconds", "gauge", "\(Int(boot + start / ticks))") }
        }
        if let open = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") { series("process_open_fds", "gauge", "\(open.count)") }
        if let descriptorLimit { series("process_max_fds", "gauge", "\(descriptorLimit)") }
        return Array((lines.joined(separator: "\n") + "\n").utf8)
    }

    /// A /proc file read to its end (`String(contentsOfFile:)` stops at 4 KiB there, and
    /// /proc/stat's interrupt line alone is longer).
    static func procFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16_384)
        while true {
            let count = read(fd, &chunk, chunk.count)
            guard count > 0 else { break }
            bytes += chunk[..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func bootTime() -> Double? {
        guard let text = procFile("/proc/stat") else { return nil }
        return text.split(separator: "\n").first { $0.hasPrefix("btime ") }.flatMap { Double($0.dropFirst(6)) }
    }
}
