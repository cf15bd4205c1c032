import Foundation
import ProxyConfig

#if canImport(Glibc)
import Glibc
#endif

/// What `check-config` checks on disk beyond the settings themselves: that the service could
/// use the paths they name (as the user running the check: the unit runs it as the service's
/// user, `ExecStartPre`). Each problem names the key, the path and the OS's reason.
public enum ConfigPathCheck {
    public static func problems(_ settings: ProxySettings) -> [String] {
        var problems: [String] = []
        if let problem = directoryProblem(settings.cacheDirectory) { problems.append("cache.directory \(settings.cacheDirectory): \(problem)") }
        if !(settings.allowAnonymous && !FileManager.default.fileExists(atPath: settings.clientsFile)), access(settings.clientsFile, R_OK) != 0 {
            problems.append("auth.clients_file \(settings.clientsFile): cannot be read (\(String(cString: strerror(errno))))")
        }
        return problems
    }

    /// Nil when `path` is a writable directory, or does not exist and its nearest existing
    /// ancestor is one (the proxy creates it).
    static func directoryProblem(_ path: String) -> String? {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { return "exists and is not a directory" }
            return access(path, W_OK | X_OK) == 0 ? nil : "not writable (\(String(cString: strerror(errno))))"
        }
        var ancestor = (path as NSString).deletingLastPathComponent
        while !ancestor.isEmpty, !FileManager.default.fileExists(atPath: ancestor) {
            ancestor = (ancestor as NSString).deletingLastPathComponent
        }
        let existing = ancestor.isEmpty ? "." : ancestor
        return access(existing, W_OK | X_OK) == 0 ? nil : "does not exist and cannot be created in \(existing) (\(String(cString: strerror(errno))))"
    }
}
