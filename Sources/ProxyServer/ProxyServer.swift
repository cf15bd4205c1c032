import EventHTTP
import Foundation
import JobCache
import Logging
import ProxyConfig
import Synchronization
import ResponseCache
import SharedTier
import Upstream

/// pixxel-proxy's server: one event loop thread that owns the HTTP front end, the upstream
/// client and all request state. Build it, optionally `installSignalHandlers()`, `start()`,
/// then `waitUntilStopped()` (or `shutdown()` from tests).
///
/// Unchecked Sendable: its mutable state is touched on the loop thread only (`handle` and the
/// cache assert it in debug builds); other threads reach it through `loop.execute`, and the
/// few cross-thread members (`stopState`) are behind a Mutex.
public final class ProxyServer: @unchecked Sendable {
    public let settings: ProxySettings
    let logger: Logger
    /// Where access lines go directly, formatted as `logger` would, when the process logs
    /// through a `BufferedLogOutput` (nil: through `logger`).
    let accessLogOutput: BufferedLogOutput?
    let loop = EventLoop()
    var httpServer: HTTPServer?
    let upstream: UpstreamClient
    var authenticator: Authenticator
    /// Counts the clients file's reloads: a caller decided before the last one is decided again.
    var clientsGeneration = 0
    /// Audit entries the store refused that went to the journal instead (`journalAudit`).
    var auditJournalFallbacks = 0
    private let clientsReloads = DispatchQueue(label: "pixxel-proxy.clients-reload")
    /// The cache of the job routes: `serve` is a cached route's whole journey.
    let cache: ResponseCache
    let metrics = ProxyMetrics()
    /// The status page's figures over time (loop thread only).
    var operatorStats = OperatorStats()
    /// When the process started serving (monotonic), for the page's uptime.
    let startedAt = ContinuousClock.now
    let hitPath = HitPathState()
    /// Requests waiting for their resource to change (`Prefer: wait`).
    let heldRequests = HeldRequests()
    /// Change streams open (`?watch=1`).
    let changeStreams = ChangeStreams()
    let budget: UpstreamBudget
    /// The tier several instances share through Redis (nil: `shared.redis_url` is empty).
    let shared: SharedLink?
    let gateway: UpstreamGateway
    let notifier: SystemdNotifier
    /// The audit of job creation; nil while the store cannot be opened (`StoreOpening`).
    var audit: AuditLog?
    /// Why the cache store could not be opened at start, until it can (nil: open).
    var storeProblem: String?
    var storeRetryTimer: LoopTimer?
    private var watchdogTimer: LoopTimer?
    /// Wall-clock seconds since 1970; injected so tests move time without sleeping.
    let clock: @Sendable () -> Double
    /// The budget's clock: monotonic seconds, or the injected clock in tests.
    let budgetClock: @Sendable () -> Double
    var isDraining = false
    /// The open-file limit in force (raised to the hard limit at start); nil if unknown.
    var descriptorLimit: Int?
    /// `openDescriptorCount`'s last count and when it was made (loop only).
    var descriptorCount: (at: ContinuousClock.Instant, count: Int)?
    var isReady = false
    private var signalHandlers: [SignalHandler] = []
    /// Runs on SIGHUP besides the clients reload (serve reloads the log level with it).
    public var onReload: (@Sendable () -> Void)?
    private let stopState = Mutex<(stopped: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    /// Reads the clients file and prepares the cache directory; throws with a message naming
    /// the setting at fault.
    public init(settings: ProxySettings, logger: Logger, accessLogOutput: BufferedLogOutput? = nil,
                clock: (@Sendable () -> Double)? = nil,
                environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        notifier = SystemdNotifier(environment: environment)
        self.settings = settings
        self.logger = logger
        self.accessLogOutput = accessLogOutput
        self.clock = clock ?? { Date().timeIntervalSince1970 }
        // A wall clock stepped backwards (NTP, an operator) must not stall the token bucket.
        budgetClock = clock ?? MonotonicClock.seconds
        let clock = self.clock
        // A store that cannot be opened (a full or read-only disk, a mount not there yet) does
        // not stop the start: the proxy serves from memory, says why in /readyz, and tries again.
        let store = Result { try Self.openStore(settings) }
        if settings.upstreamMaxConnections == 1 {
            logger.warning("upstream.max_connections is 1: a streamed pass-through transfer (a download) holds the only upstream connection, and the cached routes wait for it to end")
        }
        authenticator = Authenticator(clients: try Self.loadClients(settings), allowAnonymous: settings.allowAnonymous)
        let url = settings.upstreamURL
        do {
            upstream = try UpstreamClient(
                loop: loop,
                endpoint: UpstreamEndpoint(useTLS: url.scheme == .https, host: url.host, port: url.port,
                                           basePath: url.basePath, caFile: settings.upstreamCAFile),
                apiKey: settings.upstreamAPIKey?.value,
                limits: ClientLimits(maxConnections: settings.upstreamMaxConnections,
                                     timeoutSeconds: settings.upstreamTimeoutSeconds,
                                     maxResponseBytes: settings.upstreamMaxResponseBytes,
                                     maxQueued: settings.upstreamMaxQueue))
        } catch {
            throw SettingsError(key: "upstream.ca_file", "\(error)")
        }
        let loop = self.loop
        shared = settings.sharedRedisURL.map { SharedLink(loop: loop, settings: settings, url: $0) }
        budget = UpstreamBudget(scheduler: loop, rate: settings.upstreamRequestsPerSecond, burst: settings.upstreamBurst,
                                maxQueued: settings.upstreamMaxQueue, clock: budgetClock, shared: shared?.budget,
                                instances: settings.sharedInstances)
        budget.maxPauseSeconds = settings.upstreamMaxRetryAfterSeconds
        // Tokens are taken at the upstream's door: only when a connection can take the call.
        let upstream = self.upstream, budget = self.budget
        budget.canStart = { upstream.canStartNow }
        upstream.onCapacity = { [weak budget] in budget?.capacityFreed() }
        gateway = UpstreamGateway(loop: loop, client: upstream, budget: budget, clock: budgetClock, wallClock: clock,
                                  timeoutSeconds: settings.upstreamTimeoutSeconds, maxRetryAfterSeconds: settings.upstreamMaxRetryAfterSeconds)
        cache = ResponseCache(
            loop: loop, memoryBudgetBytes: settings.cacheMemoryMB << 20, disk: nil,
            policy: FreshnessPolicy(activeJobSeconds: settings.activeJobTTLSeconds, terminalJobSeconds: settings.terminalJobTTLSeconds,
                                    jobListSeconds: settings.jobListTTLSeconds, terminalStatuses: settings.terminalStatuses),
            staleWindows: .init(whileRevalidate: settings.staleWhileRevalidateSeconds, ifError: settings.staleIfErrorSeconds),
            maxWaitersPerFlight: settings.upstreamMaxQueue, clock: clock, fetcher: GatewayFetcher(gateway: gateway, clock: budgetClock), shared: shared?.tier)
        switch store {
        case .success(let opened): attach(opened)
        case .failure(let error): storeUnusable(error)
        }
        cache.onStored = { [unowned self] key, answer in
            entryStored(key, answer)
            listStoredForStreams(key, answer)
        }
        gateway.onPause = { [logger] status, seconds in
            logger.warning("upstream asked to wait", metadata: ["status": "\(status)", "seconds": "\(seconds)"])
        }
        httpServer = HTTPServer(
            loop: loop,
            limits: ServerLimits(maxHeaderBytes: settings.listenMaxHeaderBytes, maxBodyBytes: settings.listenMaxBodyBytes,
                                 timeoutSeconds: settings.listenTimeoutSeconds)
        ) { [unowned self] request in
            self.handle(request)
        }
        httpServer?.admitHead = { [unowned self] head, peer in self.admitHead(head, peer: peer) }
        httpServer?.onHeadRefused = { [unowned self] head, peer, refusal, decided in
            self.headRefused(head, peer: peer, refusal: refusal, decided: decided)
        }
        gateway.onOutcome = { [unowned self] route, outcome, duration in
            if let duration { metrics.upstreamRequest(route: route, outcome: outcome, duration: duration) } else {
                metrics.upstreamRequest(route: route, outcome: outcome)
            }
            // A call made (it has a duration); a refusal by the budget is not a call.
            if duration != nil {
                operatorStats.upstreamCall(at: Int(budgetClock()), wallTime: clock(), route: route, outcome: outcome,
                                           error: OperatorStats.isError(outcome))
            }
        }
    }

    static func loadClients(_ settings: ProxySettings) throws -> [ClientRecord] {
        let path = settings.clientsFile
        guard let data = FileManager.default.contents(atPath: path) else {
            let exists = FileManager.default.fileExists(atPath: path)
            if settings.allowAnonymous && !exists { return [] }
            if exists {
                // There, but not readable: creating it again is not the advice.
                throw SettingsError(key: "auth.clients_file", "cannot read \(path) (\(OSReason.unreadable(path)))").placed(nil)
            }
            throw SettingsError(key: "auth.clients_file", "\(path) does not exist; create it with `pixxel-proxy token add NAME --scopes read --clients-file \(path)`").placed(nil)
        }
        switch ClientsFile.parse(String(decoding: data, as: UTF8.self)) {
        case .success(let clients): return clients
        // The path says which file; whether the variable or the YAML named it is not known here
        // (found by review: it always said "(env PIXXEL_PROXY_AUTH_CLIENTS_FILE)").
        case .failure(let invalid): throw SettingsError(key: "auth.clients_file", "\(path) \(invalid)").placed(nil)
        }
    }

    /// Listens and starts the loop thread; returns the bound port (useful with port 0).
    @discardableResult
    public func start() throws -> UInt16 {
        // Writing to a socket whose peer left must give EPIPE, not kill the process.
        signal(SIGPIPE, SIG_IGN)
        guard let httpServer else { throw EventHTTPError("server already stopped") }
        // With a shared tier, connections wait in the backlog until this instance has joined
        // Redis (or failed to, bounded): answered earlier, from a disk that missed what the
        // others showed while it was down, a restarted instance would take jobs back in time.
        let descriptors = DescriptorLimit.raiseToHardLimit()
        descriptorLimit = descriptors
        httpServer.onAcceptTrouble = { [logger] trouble in
            switch trouble {
            case .paused(let reason):
                logger.warning("cannot accept connections: accepting paused, connections already open are served", metadata: [
                    "reason": "\(reason)", "descriptor_limit": "\(descriptors.map(String.init) ?? "unknown")",
                    "retry_ms": "\(Int(HTTPServer.acceptPauseSeconds * 1000))",
                ])
            case .resumed(let failures, let seconds):
                logger.notice("accepting connections again", metadata: [
                    "failed_accepts": "\(failures)", "seconds": "\(String(format: "%.1f", seconds))",
                ])
            }
        }
        let port = try httpServer.bind(host: settings.listenHost, port: settings.listenPort, accepting: shared == nil)
        isReady = true
        if let descriptors, descriptors < httpServer.limits.maxConnections + 256 {
            logger.warning("the descriptor limit is below the connections the proxy takes: raise LimitNOFILE (or ulimit -n)", metadata: [
                "descriptor_limit": "\(descriptors)", "max_connections": "\(httpServer.limits.maxConnections)",
            ])
        }
        logger.info("listening", metadata: [
            "version": "\(ProxyVersion.string)", "commit": "\(ProxyVersion.commit)",
            "descriptor_limit": "\(descriptors.map(String.init) ?? "unknown")",
            "address": "\(settings.listenHost):\(port)", "upstream": "\(settings.upstreamURL)",
            "clients": "\(authenticator.clients.count)", "api_key": "\(settings.upstreamAPIKey == nil ? "none" : "set")",
            "accepting": "\(shared == nil ? "now" : "once the shared tier is joined")",
        ])
        // The store is open (init) and the socket takes connections: tell systemd, then keep
        // its watchdog fed from the loop itself, so a stuck loop stops the pings and gets restarted.
        let serving = { [self] in
            notifier.notify("READY=1\nSTATUS=serving on \(settings.listenHost):\(port)\nMAINPID=\(getpid())")
        }
        if shared == nil { serving() }
        if let interval = notifier.watchdogInterval { scheduleWatchdog(every: interval) }
        // Connects in the background: until Redis is up the instance acts alone.
        startShared { [self] in
            self.httpServer?.startAccepting()
            serving()
        }
        let thread = Thread { [self] in
            loop.run()
            shared?.redis.stop()
            upstream.close()
            self.httpServer?.stopAccepting()
            self.httpServer = nil
            cache.flushDisk()
            let waiters = stopState.withLock { state in
                state.stopped = true
                let waiters = state.waiters
                state.waiters = []
                return waiters
            }
            for waiter in waiters { waiter.resume() }
        }
        thread.name = "pixxel-proxy-loop"
        thread.start()
        return port
    }

    /// SIGTERM and SIGINT drain and stop; SIGHUP reloads the clients file. Call before `start()`.
    public func installSignalHandlers() {
        for signalNumber in [SIGTERM, SIGINT, SIGHUP] { signal(signalNumber, SIG_IGN) }
        signalHandlers = [
            loop.onSignal(SIGTERM) { [unowned self] in self.beginDrain(reason: "SIGTERM") },
            loop.onSignal(SIGINT) { [unowned self] in self.beginDrain(reason: "SIGINT") },
            loop.onSignal(SIGHUP) { [unowned self] in
                self.reloadClients()
                self.onReload?()
            },
        ]
    }

    /// Returns once the loop has stopped.
    public func waitUntilStopped() async {
        await withCheckedContinuation { continuation in
            let done = stopState.withLock { state -> Bool in
                if state.stopped { return true }
                state.waiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// Drains (as on SIGTERM) and waits for the loop to stop. Safe from any thread.
    public func shutdown() async {
        beginShutdown()
        await waitUntilStopped()
    }

    /// Starts the drain (as on SIGTERM) without waiting. Safe from any thread.
    public func beginShutdown() {
        loop.execute { [self] in beginDrain(reason: "shutdown") }
    }

    /// Reloads the clients file off the loop thread; a broken file keeps the old clients.
    /// Reads run one at a time, in the order asked, so an older read never lands after a newer one.
    public func reloadClients() {
        let settings = self.settings
        clientsReloads.async { [self] in
            let result = Result { try Self.loadClients(settings) }
            loop.execute { [self] in
                switch result {
                case .success(let clients):
                    authenticator = Authenticator(clients: clients, allowAnonymous: settings.allowAnonymous)
                    clientsGeneration += 1
                    hitPath.callers.removeAll()
                    recheckHeldCallers()
                    recheckStreamCallers()
                    logger.notice("clients file reloaded", metadata: ["clients": "\(clients.count)"])
                case .failure(let error):
                    logger.error("clients file not reloaded, keeping the previous clients", metadata: ["error": "\(error)"])
                }
            }
        }
    }

    private func scheduleWatchdog(every interval: Double) {
        watchdogTimer = loop.schedule(after: interval) { [weak self] in
            self?.notifier.notify("WATCHDOG=1")
            self?.scheduleWatchdog(every: interval)
        }
    }

    /// Stops accepting, lets in-flight requests finish within `listen.drain_seconds`, then stops.
    func beginDrain(reason: String) {
        guard !isDraining, let httpServer else { return }
        isDraining = true
        isReady = false
        notifier.notify("STOPPING=1\nSTATUS=draining (\(reason))")
        httpServer.stopAccepting()
        answerHeldRequests()
        endChangeStreams()
        logger.notice("draining", metadata: ["reason": "\(reason)", "in_flight": "\(httpServer.inFlight)"])
        if httpServer.inFlight == 0 && httpServer.unflushed == 0 {
            loop.stop()
            return
        }
        httpServer.onIdle = { [loop] in loop.stop() }
        loop.schedule(after: settings.listenDrainSeconds) { [self] in
            logger.warning("drain time is over, stopping with requests unanswered",
                           metadata: ["in_flight": "\(self.httpServer?.inFlight ?? 0)"])
            loop.stop()
        }
    }
}

extension ProxyServer {
    /// Runs `read` on the loop and waits for its value: for readers on other threads (tests,
    /// drain logs). On the loop, or once it has stopped (nothing else touches its state then),
    /// `read` runs at once: waiting for a stopped loop would never end.
    func valueFromLoop<Value: Sendable>(_ read: @escaping @Sendable () -> Value) -> Value {
        if loop.isOnLoopOrNotRunning { return read() }
        let box = Mutex<Value?>(nil)
        let done = DispatchSemaphore(value: 0)
        loop.execute {
            box.withLock { $0 = read() }
            done.signal()
        }
        done.wait()
        return box.withLock { $0! }
    }

    /// Requests received and not yet answered (read from any thread; for tests and drain logs).
    public var inFlightRequests: Int {
        valueFromLoop { [self] in httpServer?.inFlight ?? 0 }
    }

    /// Client connections accepted since the start, and open now (read from any thread): a
    /// test knows the server has seen its connections, and is done with them, by both.
    public var clientConnections: (accepted: Int, open: Int) {
        valueFromLoop { [self] in (httpServer?.acceptedConnections ?? 0, httpServer?.openConnections ?? 0) }
    }

    /// When the budget let the latest upstream calls go, on its own clock, oldest first (read
    /// from any thread): what the rate promise is checked on through the real server.
    public var upstreamGrantInstants: [Double] {
        valueFromLoop { [self] in budget.recentGrantInstants }
    }
}

/// A snapshot of the memory tier, for tests and (later) /admin/stats.
public struct CacheStatistics: Sendable {
    public let entries: Int
    public let bytes: Int
    public let evictions: Int
    public let hits: Int
    public let misses: Int
    public let upstreamFetches: Int
    public let collapsed: Int
    /// Upstream fetches for cached resources in the air (foreground or background).
    public let inFlightFetches: Int
    /// Hits answered by the hit path (prepared bytes), a share of `hits`.
    public let preparedHits: Int
}

extension ProxyServer {
    /// Read from any thread: hops onto the loop and waits.
    public var cacheStatistics: CacheStatistics {
        valueFromLoop { [self] in
            let counters = cache.counters, tiers = cache.tierFigures
            return CacheStatistics(entries: tiers.memoryEntries, bytes: tiers.memoryBytes, evictions: tiers.evictions,
                                   hits: counters.hits, misses: counters.misses, upstreamFetches: counters.upstreamFetches,
                                   collapsed: tiers.collapsed, inFlightFetches: tiers.inFlightFetches,
                                   preparedHits: counters.preparedHits)
        }
    }
}
