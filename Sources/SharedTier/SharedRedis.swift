import CLibevent
import EventHTTP

#if canImport(Glibc)
import Glibc
#endif

/// The proxy's link to the Redis that several instances share: a command connection and a
/// subscriber connection (a subscribed connection takes no other command), both on the loop.
///
/// It is either up (both connections ready, scripts loaded, channel subscribed) or down; while
/// down every command fails at once with `.unavailable`, so a request never waits for a Redis
/// that is not there, and it reconnects by itself with a growing pause (0.1 s doubling to 2 s).
/// A heartbeat (PING each second) finds a Redis that stopped answering without closing.
/// Loop-bound.
public final class SharedRedis {
    public struct Options: Sendable {
        public var host: String
        public var port: Int
        public var user: String?
        public var password: String?
        public var database: Int
        public var keyPrefix: String
        /// The longest wait for one command on a request's path.
        public var commandTimeout: Double
        /// This instance's name on the channel (its own messages are not news to it).
        public var instanceID: String

        public init(host: String, port: Int, user: String? = nil, password: String? = nil, database: Int = 0, keyPrefix: String,
                    commandTimeout: Double, instanceID: String) {
            self.host = host
            self.port = port
            self.user = user
            self.password = password
            self.database = database
            self.keyPrefix = keyPrefix
            self.commandTimeout = commandTimeout
            self.instanceID = instanceID
        }
    }

    /// What was counted since start, for `/admin/stats` and `/metrics`.
    public struct Counters: Sendable {
        public var commands = 0
        /// Commands that failed: timed out, refused by Redis, or sent while it was away.
        public var errors = 0
        public var timeouts = 0
        public var connects = 0
        public var disconnects = 0
        public var messagesReceived = 0
        public var messagesSent = 0

        public init() {}
    }

    public let options: Options
    private let loop: EventLoop
    private var commands: RedisConnection?
    private var subscriber: RedisConnection?
    private var scriptHashes: [ObjectIdentifier: String] = [:]
    private let scripts: [RedisScript]
    private var reconnectDelay = 0.1
    private var reconnectTimer: LoopTimer?
    private var heartbeat: LoopTimer?
    private var stopped = false
    private var connecting = false
    public private(set) var isUp = false
    public private(set) var counters = Counters()
    /// Why the link last went down (for the log line and `/admin/stats`), and since when.
    public private(set) var lastProblem: String?
    public private(set) var downSince: Double?

    /// The channel every instance of this prefix listens on.
    public var channel: String { options.keyPrefix + "events" }

    /// Runs on the loop when the link comes up (true) or goes down (false, with why). Called on
    /// changes only, so the log says it once, not per request.
    public var onHealthChange: ((Bool, String?) -> Void)?
    /// Messages of the other instances (own messages are dropped).
    public var onMessage: ((String) -> Void)?

    public init(loop: EventLoop, options: Options) {
        self.loop = loop
        self.options = options
        scripts = SharedScripts.all
    }

    /// Starts connecting; returns at once.
    public func start() {
        loop.assertOnLoop()
        stopped = false
        downSince = MonotonicSeconds.now()
        connect()
    }

    public func stop() {
        loop.assertOnLoop()
        stopped = true
        connecting = false
        attemptTimer?.cancel()
        reconnectTimer?.cancel()
        heartbeat?.cancel()
        tearDown(reason: nil)
    }

    // MARK: Connecting

    /// Each attempt to connect has a number: a step of an attempt that was given up (its timer
    /// ran out, a connection closed) finds it stale and does nothing.
    private var attempt = 0
    private var attemptTimer: LoopTimer?

    private func connect() {
        guard !stopped, !connecting else { return }
        connecting = true
        attempt += 1
        let current = attempt
        let timeout = max(1, options.commandTimeout)
        // The whole sequence (resolve, two connections, AUTH, scripts, SUBSCRIBE) has a bound:
        // a step Redis never answers (a refused SUBSCRIBE closes nothing at once) must not leave
        // the link "connecting" for ever, unreported.
        attemptTimer = loop.schedule(after: 4 * timeout + 2) { [weak self] in
            guard let self, connecting, attempt == current else { return }
            failedToConnect("Redis did not complete the connection (AUTH, scripts or SUBSCRIBE) in time")
        }
        let live = { [weak self] in self.map { !$0.stopped && $0.connecting && $0.attempt == current } ?? false }
        resolve(options.host) { [self] address in
            guard live() else { return }
            guard let address else { return failedToConnect("cannot resolve \(options.host)") }
            let commandLink = RedisConnection(loop: loop)
            commandLink.open(ip: address, port: options.port, timeout: timeout) { [self] ok in
                guard live() else { return commandLink.close() }
                guard ok else { return failedToConnect("cannot connect to \(options.host):\(options.port)") }
                commands = commandLink
                commandLink.onClose = { [weak self] in self?.linkClosed("the connection to Redis closed", attempt: current) }
                handshake(commandLink, timeout: timeout) { [self] problem in
                    guard live() else { return }
                    if let problem { return failedToConnect(problem) }
                    loadScripts(timeout: timeout) { [self] problem in
                        guard live() else { return }
                        if let problem { return failedToConnect(problem) }
                        openSubscriber(address: address, timeout: timeout, attempt: current, live: live)
                    }
                }
            }
        }
    }

    private func openSubscriber(address: String, timeout: Double, attempt current: Int, live: @escaping () -> Bool) {
        let link = RedisConnection(loop: loop)
        link.open(ip: address, port: options.port, timeout: timeout) { [self] ok in
            guard live() else { return link.close() }
            guard ok else { return failedToConnect("cannot connect the subscriber to \(options.host):\(options.port)") }
            subscriber = link
            link.onClose = { [weak self] in
                self?.linkClosed("the subscriber's connection to Redis closed (a refused SUBSCRIBE ends it too: may the user use the channel?)",
                                 attempt: current)
            }
            link.onMessage = { [weak self] _, payload in self?.received(payload) }
            handshake(link, timeout: timeout, selectDatabase: false) { [self] problem in
                guard live() else { return }
                if let problem { return failedToConnect(problem) }
                link.subscribe(channel) { [self] confirmed in
                    guard live() else { return }
                    guard confirmed else { return failedToConnect("cannot subscribe to \(channel)") }
                    cameUp()
                }
            }
        }
    }

    /// A connection closed: while up, the link broke; while this attempt connects, it failed.
    private func linkClosed(_ problem: String, attempt closedAttempt: Int) {
        if isUp { return linkBroke(problem) }
        if connecting, attempt == closedAttempt { failedToConnect(problem) }
    }

    /// AUTH and SELECT, as the URL asks.
    private func handshake(_ link: RedisConnection, timeout: Double, selectDatabase: Bool = true, done: @escaping (String?) -> Void) {
        let select = { [self] in
            guard selectDatabase, options.database != 0 else { return done(nil) }
            link.send([Array("SELECT".utf8), Array(String(options.database).utf8)], timeout: timeout) { [self] result in
                if case .failure(let failure) = result { return done("SELECT \(options.database) failed: \(Self.describe(failure))") }
                done(nil)
            }
        }
        guard let password = options.password else { return select() }
        var auth = [Array("AUTH".utf8)]
        if let user = options.user { auth.append(Array(user.utf8)) }
        auth.append(Array(password.utf8))
        link.send(auth, timeout: timeout) { result in
            // Redis's own words on a failed AUTH never hold the password.
            if case .failure(let failure) = result { return done("AUTH failed: \(Self.describe(failure))") }
            select()
        }
    }

    private func loadScripts(timeout: Double, done: @escaping (String?) -> Void) {
        var remaining = scripts[...]
        func next() {
            guard let script = remaining.popFirst() else { return done(nil) }
            commands?.send([Array("SCRIPT".utf8), Array("LOAD".utf8), Array(script.source.utf8)], timeout: timeout) { [self] result in
                let hash: String
                switch result {
                case .success(let value):
                    guard let text = value.text else { return done("SCRIPT LOAD of \(script.name) gave no hash") }
                    hash = text
                case .failure(let failure):
                    return done("SCRIPT LOAD of \(script.name) failed: \(Self.describe(failure))")
                }
                scriptHashes[ObjectIdentifier(script)] = hash
                next()
            }
        }
        next()
    }

    private func cameUp() {
        // The command connection may have closed while the subscriber was being set up.
        guard commands?.isUp == true else { return failedToConnect("the connection to Redis closed") }
        attemptTimer?.cancel()
        attemptTimer = nil
        connecting = false
        reconnectDelay = 0.1
        isUp = true
        lastProblem = nil
        downSince = nil
        counters.connects += 1
        onHealthChange?(true, nil)
        scheduleHeartbeat()
    }

    private func failedToConnect(_ problem: String) {
        attemptTimer?.cancel()
        attemptTimer = nil
        connecting = false
        tearDown(reason: nil)
        if lastProblem == nil || isUp { onHealthChange?(false, problem) }
        lastProblem = problem
        scheduleReconnect()
    }

    private func linkBroke(_ problem: String) {
        guard isUp else { return }
        connecting = false
        tearDown(reason: problem)
        scheduleReconnect()
    }

    /// Closes both connections; when it was up, says so once.
    private func tearDown(reason: String?) {
        let wasUp = isUp
        isUp = false
        heartbeat?.cancel()
        heartbeat = nil
        let links = [commands, subscriber]
        commands = nil
        subscriber = nil
        for link in links {
            link?.onClose = nil
            link?.close()
        }
        if wasUp {
            counters.disconnects += 1
            downSince = MonotonicSeconds.now()
            lastProblem = reason ?? "stopped"
            if let reason { onHealthChange?(false, reason) }
        }
    }

    private func scheduleReconnect() {
        guard !stopped else { return }
        reconnectTimer?.cancel()
        let delay = reconnectDelay
        reconnectDelay = min(2, reconnectDelay * 2)
        reconnectTimer = loop.schedule(after: delay) { [weak self] in self?.connect() }
    }

    /// A PING a second; no answer within a second (or the command timeout, if longer) takes the
    /// link down: a Redis that hangs without closing is found, not waited on by every request.
    private func scheduleHeartbeat() {
        heartbeat = loop.schedule(after: 1) { [weak self] in
            guard let self, isUp, let commands else { return }
            commands.send([Array("PING".utf8)], timeout: max(1, options.commandTimeout)) { [weak self] result in
                guard let self, isUp else { return }
                if case .failure(let failure) = result, failure != .unavailable || commands.isUp {
                    linkBroke("Redis did not answer a PING (\(Self.describe(failure)))")
                    return
                }
                scheduleHeartbeat()
            }
        }
    }

    // MARK: Commands

    /// Sends one command; fails at once with `.unavailable` while the link is down.
    public func send(_ arguments: [[UInt8]], completion: @escaping (Result<RedisValue, RedisFailure>) -> Void) {
        loop.assertOnLoop()
        guard isUp, let commands else {
            return completion(.failure(.unavailable))
        }
        counters.commands += 1
        commands.send(arguments, timeout: options.commandTimeout) { [weak self] result in
            if case .failure(let failure) = result { self?.count(failure) }
            completion(result)
        }
    }

    /// Runs a script by its hash (loaded at connect); loads it again if Redis lost it (a restart
    /// between the load and now, or SCRIPT FLUSH).
    public func run(_ script: RedisScript, keys: [String], arguments: [[UInt8]], completion: @escaping (Result<RedisValue, RedisFailure>) -> Void) {
        guard let hash = scriptHashes[ObjectIdentifier(script)] else { return completion(.failure(.unavailable)) }
        let tail = [Array(String(keys.count).utf8)] + keys.map { Array($0.utf8) } + arguments
        send([Array("EVALSHA".utf8), Array(hash.utf8)] + tail) { [self] result in
            guard case .failure(.replied(let message)) = result, message.hasPrefix("NOSCRIPT") else { return completion(result) }
            send([Array("EVAL".utf8), Array(script.source.utf8)] + tail, completion: completion)
        }
    }

    /// Tells the other instances `message` (one line of text).
    public func publish(_ message: String) {
        guard isUp else { return }
        counters.messagesSent += 1
        send([Array("PUBLISH".utf8), Array(channel.utf8), Array("\(options.instanceID) \(message)".utf8)]) { _ in }
    }

    private func received(_ payload: [UInt8]) {
        let text = String(decoding: payload, as: UTF8.self)
        guard let space = text.firstIndex(of: " ") else { return }
        guard text[..<space] != options.instanceID else { return }
        counters.messagesReceived += 1
        onMessage?(String(text[text.index(after: space)...]))
    }

    private func count(_ failure: RedisFailure) {
        counters.errors += 1
        if failure == .timedOut { counters.timeouts += 1 }
    }

    static func describe(_ failure: RedisFailure) -> String {
        switch failure {
        case .timedOut: "no answer in time"
        case .unavailable: "connection lost"
        case .replied(let message): String(message.prefix(200))
        }
    }

    // MARK: Names

    /// Redis's numeric address for `host`: literals as they are, `localhost` as 127.0.0.1, other
    /// names through the loop's asynchronous resolver (hiredis would block on getaddrinfo).
    private func resolve(_ host: String, completion: @escaping (String?) -> Void) {
        if host == "localhost" { return completion("127.0.0.1") }
        var probe = in6_addr()
        if inet_pton(AF_INET, host, &probe) == 1 || inet_pton(AF_INET6, host, &probe) == 1 { return completion(host) }
        let request = DNSRequest(completion)
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        let context = Unmanaged.passRetained(request).toOpaque()
        evdns_getaddrinfo(loop.dns, host, nil, &hints, { result, addresses, context in
            let request = Unmanaged<DNSRequest>.fromOpaque(context!).takeRetainedValue()
            defer { if let addresses { evutil_freeaddrinfo(addresses) } }
            guard result == 0, let first = addresses, let address = first.pointee.ai_addr else { return request.completion(nil) }
            var text = [CChar](repeating: 0, count: 64)
            if first.pointee.ai_family == AF_INET6 {
                address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { _ = inet_ntop(AF_INET6, &$0.pointee.sin6_addr, &text, 64) }
            } else {
                address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { _ = inet_ntop(AF_INET, &$0.pointee.sin_addr, &text, 64) }
            }
            request.completion(String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }, context)
    }

    private final class DNSRequest {
        let completion: (String?) -> Void
        init(_ completion: @escaping (String?) -> Void) { self.completion = completion }
    }
}

/// A Lua script run with EVALSHA: several steps that must be atomic in Redis.
public final class RedisScript: Sendable {
    public let name: String
    public let source: String
    public init(name: String, source: String) {
        self.name = name
        self.source = source
    }
}

/// Monotonic seconds for the link's own bookkeeping.
enum MonotonicSeconds {
    static func now() -> Double {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
    }
}
