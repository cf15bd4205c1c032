#if canImport(Glibc)
import Glibc
#endif

/// The process's limit on open file descriptors: every connection, upstream connection and
/// file takes one, so it bounds the connections the proxy can hold.
enum DescriptorLimit {
    /// Raises the soft limit to the hard one (as nginx's worker_rlimit_nofile lets an operator
    /// do, and as a server that takes 10,000 connections must: systemd's default soft limit is
    /// 1024); returns the limit in force afterwards, nil if it cannot be read.
    /// The soft limit now (nil if it cannot be read).
    static func current() -> Int? {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return nil }
        return limit.rlim_cur > rlim_t(Int.max) ? Int.max : Int(limit.rlim_cur)
    }

    static func raiseToHardLimit() -> Int? {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return nil }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        // RLIM_INFINITY is all ones: beyond any Int.
        return limit.rlim_cur > rlim_t(Int.max) ? Int.max : Int(limit.rlim_cur)
    }
}
