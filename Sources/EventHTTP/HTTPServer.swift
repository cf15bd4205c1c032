import CLibevent

#if canImport(Glibc)
import Glibc
#endif

/// Limits of the HTTP front end; libevent's defaults are unlimited or 50 s, so each is chosen here.
public struct ServerLimits: Sendable {
    /// Largest request line plus headers; larger requests are refused by libevent.
    public var maxHeaderBytes: Int
    /// Largest request body; larger ones get 413 from libevent before being read.
    public var maxBodyBytes: Int
    /// Read and write timeout of a client connection; also closes idle keep-alive connections.
    public var timeoutSeconds: Double

    public init(maxHeaderBytes: Int = 16_384, maxBodyBytes: Int = 10 << 20, timeoutSeconds: Double = 30) {
        self.maxHeaderBytes = maxHeaderBytes
        self.maxBodyBytes = maxBodyBytes
        self.timeoutSeconds = timeoutSeconds
    }
}

public struct EventHTTPError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// An evhttp server on one `EventLoop`: every request goes to one handler, which answers it
/// at once or later (from the loop thread) through `ServerRequest.respond`.
public final class HTTPServer {
    let loop: EventLoop
    private let http: OpaquePointer
    private let handler: (ServerRequest) -> Void
    private var listeners: [OpaquePointer] = []
    private var tls: TLSServerContext?

    /// Requests received and not yet answered.
    public private(set) var inFlight = 0
    /// Answers handed to libevent and not yet written out to their clients.
    public private(set) var unflushed = 0
    /// Called each time the server has nothing in flight and nothing left to write (drain
    /// waits on it: stopping the loop earlier would drop answers still in the output buffers).
    public var onIdle: (() -> Void)?

    public init(loop: EventLoop, limits: ServerLimits, handler: @escaping (ServerRequest) -> Void) {
        self.loop = loop
        self.handler = handler
        guard let http = evhttp_new(loop.base) else { fatalError("libevent: evhttp_new failed") }
        self.http = http
        evhttp_set_max_headers_size(http, limits.maxHeaderBytes)
        evhttp_set_max_body_size(http, limits.maxBodyBytes)
        var timeout = timeval(seconds: limits.timeoutSeconds)
        evhttp_set_timeout_tv(http, &timeout)
        // libevent answers methods outside this set itself (501, an HTML page). Every method it
        // knows, and the bit it gives unknown ones (EVHTTP_REQ_UNKNOWN_, 1 << 15 in 2.1), are let
        // through so that the router answers them in the proxy's own error shape.
        let methods = HTTPMethod.allCases.reduce(UInt16(1 << 15)) { $0 | UInt16($1.libeventType.rawValue) }
        evhttp_set_allowed_methods(http, methods)
        evhttp_set_default_content_type(http, "application/json")
        evhttp_set_gencb(http, { request, context in
            guard let request else { return }
            Unmanaged<HTTPServer>.fromOpaque(context!).takeUnretainedValue().accept(request)
        }, Unmanaged.passUnretained(self).toOpaque())
    }

    deinit {
        evhttp_free(http)
    }

    /// Serves HTTPS with `context` (used by the simulator and TLS tests).
    public func enableTLS(_ context: TLSServerContext) {
        tls = context
        evhttp_set_bevcb(http, { base, context in
            let server = Unmanaged<HTTPServer>.fromOpaque(context!).takeUnretainedValue()
            let ssl = SSL_new(server.tls!.context)
            return bufferevent_openssl_socket_new(
                base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, Int32(BEV_OPT_CLOSE_ON_FREE.rawValue))
        }, Unmanaged.passUnretained(self).toOpaque())
    }

    /// Listens on `host:port` (port 0 picks a free one) and returns the bound port.
    @discardableResult
    public func bind(host: String, port: UInt16) throws -> UInt16 {
        guard let handle = evhttp_bind_socket_with_handle(http, host, port) else {
            throw EventHTTPError("cannot listen on \(host):\(port): \(String(cString: strerror(errno)))")
        }
        listeners.append(handle)
        var address = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let fd = evhttp_bound_socket_get_fd(handle)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) == 0 }
        }
        guard ok else { return port }
        let family = address.ss_family
        return withUnsafePointer(to: &address) { pointer -> UInt16 in
            if family == sa_family_t(AF_INET6) {
                return pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) }
            }
            return pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) }
        }
    }

    /// Closes the listening sockets; requests already accepted carry on.
    public func stopAccepting() {
        for handle in listeners { evhttp_del_accept_socket(http, handle) }
        listeners.removeAll()
    }

    private func accept(_ raw: OpaquePointer) {
        inFlight += 1
        handler(ServerRequest(raw, server: self))
    }

    func requestAnswered(awaitingFlush: Bool) {
        inFlight -= 1
        if awaitingFlush { unflushed += 1 }
        checkIdle()
    }

    func answerFlushed() {
        unflushed -= 1
        checkIdle()
    }

    private func checkIdle() {
        if inFlight == 0 && unflushed == 0 { onIdle?() }
    }
}
