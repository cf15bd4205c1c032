import EventHTTP
import Foundation
import JobCache
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
        let store = settings.cacheDirectory + "/" + DiskStore.fileName
        if isDirectory(store) { problems.append("cache.directory \(settings.cacheDirectory): its store \(DiskStore.fileName) is a directory") }
        if !(settings.allowAnonymous && !FileManager.default.fileExists(atPath: settings.clientsFile)) {
            if isDirectory(settings.clientsFile) {
                problems.append("auth.clients_file \(settings.clientsFile): is a directory, not a file")
            } else if access(settings.clientsFile, R_OK) != 0 {
                problems.append("auth.clients_file \(settings.clientsFile): cannot be read (\(OSReason.text(errno)))")
            }
        }
        // Loaded as `serve` loads it: a readable file that holds no certificate passed before
        // and stopped `serve` (found by review).
        // serve loads it only for an https upstream; neither does this check otherwise (found by
        // review: an http deployment with a stale ca_file would stop at ExecStartPre).
        if settings.upstreamURL.scheme == .https, let caFile = settings.upstreamCAFile {
            if isDirectory(caFile) {
                problems.append("upstream.ca_file \(caFile): is a directory, not a PEM file")
            } else {
                do { _ = try TLSClientContext(caFile: caFile) } catch {
                    problems.append("upstream.ca_file \(caFile): OpenSSL loads no certificate from it (\(Self.openSSLReason(error)))")
                }
            }
        }
        if let problem = listenHostProblem(settings.listenHost) { problems.append("listen.host \(settings.listenHost): \(problem)") }
        return problems
    }

    /// Run as root, every path passes `access()`, while the packaged unit runs the service as a
    /// dynamic user of no group: a file it reads must be readable by others. Said as a warning,
    /// since root may be the service's user too (found by review: a clients file `token add`
    /// created 0640 root:root passed `sudo pixxel-proxy check-config`).
    public static func warningsAsRoot(_ settings: ProxySettings, effectiveUser: uid_t) -> [String] {
        guard effectiveUser == 0 else { return [] }
        var status = stat()
        guard stat(settings.clientsFile, &status) == 0, status.st_mode & S_IFMT == S_IFREG, status.st_mode & S_IROTH == 0 else { return [] }
        let mode = String(status.st_mode & 0o777, radix: 8)
        return ["auth.clients_file \(settings.clientsFile) is mode 0\(mode): the packaged service (DynamicUser) cannot read it; chmod o+r \(settings.clientsFile)"]
    }

    static func isDirectory(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
    }

    /// OpenSSL's own words at the end of its error line ("no certificate or crl found").
    static func openSSLReason(_ error: any Error) -> String {
        let text = "\(error)"
        return text.components(separatedBy: ":").last.map { $0.trimmingCharacters(in: .whitespaces) }.flatMap { $0.isEmpty ? nil : $0 } ?? text
    }

    /// Nil when `host` is a name, or an address this machine could listen on. A numeric host
    /// is parsed as one (`999.1.1.1` passed the check and stopped `serve`); a name is left to
    /// `serve`, as resolving it here may wait on DNS.
    static func listenHostProblem(_ host: String) -> String? {
        let looksNumeric = host.contains(":") || host.allSatisfy { $0.isNumber || $0 == "." }
        guard looksNumeric else { return nil }
        var hints = addrinfo()
        hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var found: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &found)
        if let found { freeaddrinfo(found) }
        return status == 0 ? nil : "not an IPv4 or IPv6 address"
    }

    /// Nil when `path` is a writable directory, or does not exist and its nearest existing
    /// ancestor is one (the proxy creates it).
    static func directoryProblem(_ path: String) -> String? {
        if FileManager.default.fileExists(atPath: path) {
            guard isDirectory(path) else { return "exists and is not a directory" }
            return access(path, W_OK | X_OK) == 0 ? nil : "not writable (\(OSReason.text(errno)))"
        }
        var ancestor = (path as NSString).deletingLastPathComponent
        while !ancestor.isEmpty, !FileManager.default.fileExists(atPath: ancestor) {
            ancestor = (ancestor as NSString).deletingLastPathComponent
        }
        let existing = ancestor.isEmpty ? "." : ancestor
        guard isDirectory(existing) || existing == "." else { return "cannot be created: \(existing) is not a directory" }
        return access(existing, W_OK | X_OK) == 0 ? nil : "does not exist and cannot be created in \(existing) (\(OSReason.text(errno)))"
    }
}
