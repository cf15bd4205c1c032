import CLibevent

#if canImport(Glibc)
import Glibc
#endif

/// Limits of the HTTP front end.
public struct ServerLimits: Sendable {
    /// Largest request line plus headers; larger requests get 431 and a closed connection.
    public var maxHeaderBytes: Int
    /// Largest request body; larger ones get 413 before being read.
    public var maxBodyBytes: Int
    /// Read and write timeout of a client connection; also closes idle keep-alive connections.
    public var timeoutSeconds: Double
    /// Connections open at once; further ones are closed as soon as accepted.
    public var maxConnections: Int

    public init(maxHeaderBytes: Int = 16_384, maxBodyBytes: Int = 10 << 20, timeoutSeconds: Double = 30,
                maxConnections: Int = 10_000) {
        self.maxHeaderBytes = maxHeaderBytes
        self.maxBodyBytes = maxBodyBytes
        self.timeoutSeconds = timeoutSeconds
        self.maxConnections = maxConnections
    }
}

public struct EventHTTPError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// An HTTP/1.1 server on one `EventLoop`: every request goes to one handler, which answers it
/// at once or later (from the loop thread) through `ServerRequest.respond`.
///
/// Written on libevent's listener and bufferevents rather than evhttp: evhttp copies every
/// header into its own lists, answers bad requests with HTML pages, and cannot send a reply
/// whose headers are already prepared. Here a request is parsed once from the input buffer, and
/// an answer is one small copy of its header lines plus the body by reference.
public final class HTTPServer {
    let loop: EventLoop
    public let limits: ServerLimits
    private let handler: (ServerRequest) -> Void
    private var listeners: [OpaquePointer] = []
    private var tls: TLSServerContext?
    /// Whether connections are TLS (their socket is not read directly).
    var isTLS: Bool { tls != nil }
    private var connections: [ObjectIdentifier: ServerConnection] = [:]
    let timeout: timeval
    private let dateLine = PerSecondText(format: "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", utc: true)

    /// Requests received and not yet answered.
    public private(set) var inFlight = 0
    /// Answers handed to a connection and not yet written out to their clients.
    public private(set) var unflushed = 0
    /// Looks at the head of a request that has a body, before any of the body is read or
    /// `100 Continue` is sent, once: how its body is read (default: whole, before the handler
    /// sees it), whether it is refused (answered at once and the connection closed, so that
    /// nobody can make the server buffer a body it would refuse anyway), and what was decided,
    /// which the request carries to the handler (`ServerRequest.admission`) so that nothing is
    /// decided twice. It is given the head and the client's address.
    public var admitHead: ((RequestParser.Head, String) -> HeadAdmission)?
    /// Told of a request refused after its head was parsed and before any handler saw it (the
    /// admission's refusal, a body over the limit or badly framed, a body too slow), with the
    /// head, the client's address, the refusal sent and what the admission decided (nil: it
    /// was not asked): for the recording step.
    public var onHeadRefused: ((RequestParser.Head, String, HeadRefusal, AnyObject?) -> Void)?
    /// Called each time the server has nothing in flight and nothing left to write (drain
    /// waits on it: stopping the loop earlier would drop answers still in the output buffers).
    public var onIdle: (() -> Void)?

    public init(loop: EventLoop, limits: ServerLimits, handler: @escaping (ServerRequest) -> Void) {
        self.loop = loop
        self.limits = limits
        self.handler = handler
        timeout = timeval(seconds: limits.timeoutSeconds)
    }

    deinit {
        readScratch.deallocate()
        for listener in listeners { evconnlistener_free(listener) }
        for connection in connections.values { connection.close() }
    }

    /// Serves HTTPS with `context` (used by the simulator and TLS tests).
    public func enableTLS(_ context: TLSServerContext) {
        tls = context
    }

    /// Listens on `host:port` (port 0 picks a free one) and returns the bound port.
    /// `accepting` false: the socket listens (connections wait in its backlog) but none is
    /// taken until `startAccepting()`.
    @discardableResult
    public func bind(host: String, port: UInt16, accepting: Bool = true) throws -> UInt16 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE
        var found: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &found)
        guard status == 0, let address = found else {
            throw EventHTTPError("cannot listen on \(host):\(port): \(String(cString: gai_strerror(status)))")
        }
        defer { freeaddrinfo(found) }
        let flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC | (accepting ? 0 : LEV_OPT_DISABLED)
        guard let listener = evconnlistener_new_bind(loop.base, { _, fd, address, length, context in
            Unmanaged<HTTPServer>.fromOpaque(context!).takeUnretainedValue().accept(fd, address, length)
        }, Unmanaged.passUnretained(self).toOpaque(), UInt32(flags), SOMAXCONN, address.pointee.ai_addr,
            Int32(address.pointee.ai_addrlen)) else {
            throw EventHTTPError("cannot listen on \(host):\(port): \(String(cString: strerror(errno)))")
        }
        // Without an error callback libevent warns on stderr for every failed accept, and a
        // level-triggered listener out of descriptors fails at once again: a million lines in
        // three seconds (found by an operator's test under `ulimit -n 64`).
        evconnlistener_set_error_cb(listener) { _, context in
            Unmanaged<HTTPServer>.fromOpaque(context!).takeUnretainedValue().acceptFailed(errno)
        }
        listeners.append(listener)
        return Self.localPort(of: evconnlistener_get_fd(listener)) ?? port
    }

    /// What an accept that failed (out of descriptors, usually) is told to the server's owner:
    /// once when an episode starts, once when accepting works again.
    public enum AcceptTrouble: Sendable, Equatable {
        /// Accepting paused; the OS's reason (`strerror`).
        case paused(reason: String)
        /// An accept worked again after `failures` failed ones over `seconds`.
        case resumed(failures: Int, seconds: Double)
    }
    public var onAcceptTrouble: ((AcceptTrouble) -> Void)?
    /// Accepts that failed since the server started.
    public private(set) var acceptFailures = 0
    private var acceptTroubleSince: ContinuousClock.Instant?
    private var lastAcceptFailure: ContinuousClock.Instant?
    private var acceptFailuresInEpisode = 0
    /// Accepting is paused, or failed within the last `acceptCalmSeconds` (for the verdict).
    public var isAcceptTroubled: Bool { acceptTroubleSince != nil }
    /// Connections open now, those accepted since the server started (every one the kernel
    /// handed over), and those closed at once because `maxConnections` were open.
    public var openConnections: Int { connections.count }
    public private(set) var acceptedConnections = 0
    public private(set) var refusedAtCapacity = 0
    /// An episode ends once accepts have worked this long after the last failure: with clients
    /// churning at the limit, one accept that worked between failures ended it and the next
    /// failure began another, two log lines each time (found by review).
    static let acceptCalmSeconds = 2.0
    private var acceptPause: LoopTimer?
    private var acceptCalmCheck: LoopTimer?

    private static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
    /// How long accepting pauses after a failed accept (nginx's accept_mutex_delay): connections
    /// wait in the backlog meanwhile, and those already open are served.
    public static let acceptPauseSeconds = 0.5

    private func acceptFailed(_ error: Int32) {
        acceptFailures += 1
        lastAcceptFailure = .now
        acceptFailuresInEpisode += 1
        if acceptTroubleSince == nil {
            acceptTroubleSince = .now
            onAcceptTrouble?(.paused(reason: String(cString: strerror(error))))
        }
        for listener in listeners { evconnlistener_disable(listener) }
        acceptPause?.cancel()
        acceptPause = loop.schedule(after: Self.acceptPauseSeconds) { [weak self] in
            guard let self, !self.isDraining else { return }
            self.acceptPause = nil
            for listener in self.listeners { evconnlistener_enable(listener) }
        }
    }

    /// An accept worked: an episode of failures, if any, is over.
    private func acceptWorked() {
        guard let since = acceptTroubleSince else { return }
        if let last = lastAcceptFailure, ContinuousClock.now - last < .seconds(Self.acceptCalmSeconds) {
            // Calm not long enough yet: look again when it would be (no later accept may come).
            guard acceptCalmCheck == nil else { return }
            let wait = Self.acceptCalmSeconds - Self.seconds(ContinuousClock.now - last)
            acceptCalmCheck = loop.schedule(after: max(0.01, wait)) { [weak self] in
                self?.acceptCalmCheck = nil
                self?.acceptWorked()
            }
            return
        }
        let elapsed = ContinuousClock.now - since
        let failures = acceptFailuresInEpisode
        acceptTroubleSince = nil
        acceptFailuresInEpisode = 0
        onAcceptTrouble?(.resumed(failures: failures, seconds: Self.seconds(elapsed)))
    }

    /// Takes the connections waiting in the backlog of sockets bound with `accepting: false`,
    /// and every later one.
    public func startAccepting() {
        loop.assertOnLoop()
        guard !isDraining else { return }
        for listener in listeners { evconnlistener_enable(listener) }
    }

    /// Closes the listening sockets; connections already open carry on.
    /// Stops accepting connections and starts draining: from now on every answer carries
    /// `Connection: close` and its connection closes after it, so keep-alive clients stop
    /// sending here (whenever the request began).
    public func stopAccepting() {
        acceptPause?.cancel()
        acceptPause = nil
        acceptCalmCheck?.cancel()
        acceptCalmCheck = nil
        for listener in listeners { evconnlistener_free(listener) }
        listeners.removeAll()
        isDraining = true
    }

    /// Set by `stopAccepting`.
    public private(set) var isDraining = false

    private func accept(_ fd: Int32, _ address: UnsafeMutablePointer<sockaddr>?, _ length: Int32) {
        if acceptTroubleSince != nil { acceptWorked() }
        acceptedConnections += 1
        guard connections.count < limits.maxConnections else {
            refusedAtCapacity += 1
            Glibc.close(fd)
            return
        }
        // Answers are written whole as soon as they are ready: Nagle's algorithm would hold a
        // second segment back until the client's delayed ACK, 40 ms later.
        var on: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
        let bufferEvent: OpaquePointer?
        if let tls {
            bufferEvent = bufferevent_openssl_socket_new(loop.base, fd, SSL_new(tls.context), BUFFEREVENT_SSL_ACCEPTING,
                                                         Int32(BEV_OPT_CLOSE_ON_FREE.rawValue))
            if let bufferEvent { bufferevent_openssl_set_allow_dirty_shutdown(bufferEvent, 1) }
        } else {
            bufferEvent = bufferevent_socket_new(loop.base, fd, Int32(BEV_OPT_CLOSE_ON_FREE.rawValue))
        }
        guard let bufferEvent else {
            Glibc.close(fd)
            return
        }
        let connection = ServerConnection(server: self, bufferEvent: bufferEvent, peer: Self.describe(address))
        connections[ObjectIdentifier(connection)] = connection
        connection.start()
    }

    func connectionClosed(_ connection: ServerConnection) {
        connections.removeValue(forKey: ObjectIdentifier(connection))
    }

    func dispatch(_ request: ServerRequest) {
        inFlight += 1
        handler(request)
    }

    func requestAnswered(awaitingFlush: Bool) {
        inFlight -= 1
        if awaitingFlush { unflushed += 1 }
        checkIdle()
    }

    func answersFlushed(_ count: Int) {
        guard count > 0 else { return }
        unflushed -= count
        checkIdle()
    }

    private func checkIdle() {
        if inFlight == 0 && unflushed == 0 { onIdle?() }
    }

    /// `Date: ...\r\n`, formatted once a second.
    func currentDateLine() -> [UInt8] { dateLine.bytes }

    /// One buffer for assembling answer heads, lent out and given back.
    private var headBuffer = LentBuffer()
    /// Where a connection with nothing buffered reads (`ServerConnection.readable`): requests
    /// that arrive whole are parsed from here and only a remainder is copied into the
    /// connection's input, so a kept-alive hit allocates no input buffer. One per server: the
    /// loop reads one connection at a time.
    let readScratch = UnsafeMutableRawBufferPointer.allocate(byteCount: ServerConnection.readSize, alignment: 16)

    func takeHeadBuffer() -> [UInt8] { headBuffer.take() }

    func returnHeadBuffer(_ buffer: [UInt8]) { headBuffer.giveBack(buffer) }

    static func localPort(of fd: Int32) -> UInt16? {
        var address = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) == 0 }
        }
        guard ok else { return nil }
        return withUnsafePointer(to: &address) { pointer in
            if pointer.pointee.ss_family == sa_family_t(AF_INET6) {
                return pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) }
            }
            return pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) }
        }
    }

    /// `address:port` of a peer, for logs.
    static func describe(_ address: UnsafeMutablePointer<sockaddr>?) -> String {
        guard let address else { return "unknown" }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        switch Int32(address.pointee.sa_family) {
        case AF_INET:
            return address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { inet in
                var ip = inet.pointee.sin_addr
                inet_ntop(AF_INET, &ip, &text, socklen_t(text.count))
                return "\(Self.text(text)):\(UInt16(bigEndian: inet.pointee.sin_port))"
            }
        case AF_INET6:
            return address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { inet in
                var ip = inet.pointee.sin6_addr
                inet_ntop(AF_INET6, &ip, &text, socklen_t(text.count))
                return "[\(Self.text(text))]:\(UInt16(bigEndian: inet.pointee.sin6_port))"
            }
        default:
            return "unknown"
        }
    }

    private static func text(_ characters: [CChar]) -> String {
        String(decoding: characters.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
