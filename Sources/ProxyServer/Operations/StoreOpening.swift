import Dispatch
import EventHTTP
import JobCache
import ProxyConfig

/// The cache store and the audit, opened at start and, when that fails, again every
/// `storeRetrySeconds` until it works: a disk that is full or read-only for a while degrades
/// the proxy (memory tier only, `/readyz` 503 with the reason, audit entries to the journal),
/// it does not keep it from starting.
extension ProxyServer {
    static let storeRetrySeconds = 5.0

    struct OpenedStore: @unchecked Sendable {
        let disk: DiskStore
        let audit: AuditLog
    }

    static func openStore(_ settings: ProxySettings) throws -> OpenedStore {
        let disk = try DiskStore(directory: settings.cacheDirectory, budgetBytes: settings.cacheDiskMB << 20, maxPendingWrites: 10_000)
        return OpenedStore(disk: disk, audit: try AuditLog(directory: settings.cacheDirectory))
    }

    /// Puts an opened store to use (at start, or on the loop once a retry succeeded).
    func attach(_ store: OpenedStore) {
        for note in store.disk.openNotes { logger.warning("\(note)") }
        let path = store.disk.path
        store.disk.onCorruption { [logger] problem in
            logger.error("the cache store is corrupt; /readyz now fails; the next start moves it aside",
                         metadata: ["path": "\(path)", "error": "\(problem)"])
        }
        store.disk.onWriteStateChange { [logger] failure in
            if let failure {
                logger.warning("writes to the cache store fail; serving from memory, /readyz fails, each later write tries again",
                               metadata: ["path": "\(path)", "reason": "\(failure.reason)", "error": "\(failure)"])
            } else {
                logger.notice("writes to the cache store work again", metadata: ["path": "\(path)"])
            }
        }
        cache.attachDisk(store.disk)
        audit = store.audit
        if storeProblem != nil {
            logger.notice("the cache store is open again; disk tier and audit back in use", metadata: ["path": "\(path)"])
        }
        storeProblem = nil
    }

    /// Logged once; retried on a timer, each attempt off the loop (opening reads and writes the file).
    func storeUnusable(_ error: any Error) {
        if storeProblem == nil {
            logger.error("the cache store cannot be opened; serving from memory, /readyz fails, audit entries go to the journal; trying again every \(Int(Self.storeRetrySeconds)) s",
                         metadata: ["directory": "\(settings.cacheDirectory)", "error": "\(error)"])
        }
        storeProblem = "the cache store cannot be opened: \(error)"
        storeRetryTimer = loop.schedule(after: Self.storeRetrySeconds) { [weak self] in
            guard let self else { return }
            let settings = self.settings
            DispatchQueue.global().async { [weak self] in
                let store = Result { try Self.openStore(settings) }
                self?.loop.execute { [weak self] in
                    guard let self else { return }
                    switch store {
                    case .success(let opened): attach(opened)
                    case .failure(let error): storeUnusable(error)
                    }
                }
            }
        }
    }
}
