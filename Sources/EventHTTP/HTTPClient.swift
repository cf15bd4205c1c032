import CLibevent

#if canImport(Glibc)
import Glibc
#endif

/// A request to send with `HTTPClient`.
public struct ClientRequest: Sendable {
    public var method: HTTPMethod
    /// Origin-form target: an already percent-encoded path, with its query.
    public var target: String
    public var headers: HTTPHeaders
    public var body: [UInt8]
    /// This request's whole-request timeout, when shorter than `ClientLimits.timeoutSeconds`.
    public var timeoutSeconds: Double?
    /// This request's largest answer body, when smaller than `ClientLimits.maxResponseBytes`.
    public var maxResponseBytes: Int?

    public init(method: HTTPMethod, target: String, headers: HTTPHeaders = HTTPHeaders(), body: [UInt8] = []) {
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
    }
}

/// An answer received by `HTTPClient`.
public struct ClientResponse: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: [UInt8]
    /// The answer's `Content-Length` as the peer declared it: for HEAD, the length of the body
    /// a GET would have had.
    public var declaredContentLength: Int?

    public init(status: Int, headers: HTTPHeaders, body: [UInt8], declaredContentLength: Int? = nil) {
        self.status = status
        self.headers = headers
        self.body = body
        self.declaredContentLength = declaredContentLength
    }
}

/// Why a request got no usable answer.
public enum ClientError: Error, Sendable, Equatable {
    /// No answer within the whole-request timeout.
    case timedOut
    /// The connection could not be made (refused, no route, name not resolved).
    case unreachable(String)
    /// The TLS handshake or certificate verification failed.
    case tls(String)
    /// The peer broke the connection or answered something that is not HTTP.
    case broken(String)
    /// The answer was larger than `ClientLimits.maxResponseBytes`.
    case responseTooLarge
    /// Every connection was busy and the wait queue was full.
    case queueFull
    /// The request cannot be written as one well-framed HTTP/1.1 request (a target or header
    /// with bytes that would end a line, a framing field set by the caller): nothing was sent.
    case invalidRequest(String)
}

/// Limits of an `HTTPClient`.
public struct ClientLimits: Sendable {
    public var maxConnections: Int
    /// Whole-request timeout, from `send` (queueing included) to the last byte of the answer.
    public var timeoutSeconds: Double
    public var maxResponseBytes: Int
    public var maxResponseHeaderBytes: Int
    /// Requests that may wait for a free connection.
    public var maxQueued: Int

    public init(maxConnections: Int = 8, timeoutSeconds: Double = 30, maxResponseBytes: Int = 64 << 20,
                maxResponseHeaderBytes: Int = 65_536, maxQueued: Int = 1024) {
        self.maxConnections = maxConnections
        self.timeoutSeconds = timeoutSeconds
        self.maxResponseBytes = maxResponseBytes
        self.maxResponseHeaderBytes = maxResponseHeaderBytes
        self.maxQueued = maxQueued
    }
}

/// An HTTP/1.1 client for one origin on an `EventLoop`: a pool of at most `maxConnections`
/// keep-alive connections (libevent runs one request at a time per connection), a bounded
/// queue for the rest, and a whole-request timeout. A connection that closed or failed is
/// never reused: libevent's reconnect of TLS connections has had bugs.
public final class HTTPClient {
    let loop: EventLoop
    let host: String
    let port: UInt16
    let tls: TLSClientContext?
    let limits: ClientLimits
    private var idle: [ClientConnection] = []
    /// Shared with a `StreamingClient` to the same origin: connections open at once, both kinds.
    let allowance: ConnectionAllowance
    private var openCount = 0 {
        didSet { allowance.buffered = openCount }
    }
    private var queue: [ClientCall] = []
    private var closed = false

    public init(loop: EventLoop, host: String, port: UInt16, tls: TLSClientContext?, limits: ClientLimits,
                allowance: ConnectionAllowance? = nil) {
        self.allowance = allowance ?? ConnectionAllowance(maxConnections: limits.maxConnections)
        self.loop = loop
        self.host = host
        self.port = port
        self.tls = tls
        self.limits = limits
    }

    deinit {
        close()
    }

    /// Why `request` cannot go out as exactly one request, or nil. libevent writes the target
    /// and the fields as given; the framing fields are this client's alone to write.
    static func framingProblem(_ request: ClientRequest) -> String? {
        guard !request.target.isEmpty, request.target.utf8.allSatisfy(RequestParser.isVisibleASCII) else {
            return "the request target has bytes that are not visible ASCII"
        }
        for field in request.headers {
            guard !field.name.isEmpty, field.name.utf8.allSatisfy(RequestParser.isTokenByte) else { return "invalid header field name" }
            guard field.value.utf8.allSatisfy(RequestParser.isFieldValueByte) else { return "invalid header field value" }
            let name = field.name.lowercased()
            if name == "content-length" || name == "transfer-encoding" || name == "host" || name == "connection" {
                return "the \(field.name) field is written by the client itself"
            }
        }
        return nil
    }

    /// Connections open now (busy or idle).
    public var openConnections: Int { openCount }

    /// Whether a request sent now would start at once (an idle connection, or room for a new
    /// one, and nobody queued ahead of it).
    public var canStartNow: Bool {
        queue.isEmpty && (idle.contains { $0.isUsable } || allowance.canOpenBuffered)
    }

    /// Called (on the loop) each time a request ends and its connection is free or gone, so
    /// that a caller pacing its starts (the upstream budget) can start the next one.
    public var onCapacity: (() -> Void)?

    /// Sends `request`; `completion` runs once on the loop thread.
    public func send(_ request: ClientRequest, completion: @escaping (Result<ClientResponse, ClientError>) -> Void) {
        guard !closed else { return completion(.failure(.unreachable("client closed"))) }
        if let problem = Self.framingProblem(request) { return completion(.failure(.invalidRequest(problem))) }
        let call = ClientCall(request: request, completion: completion)
        call.timer = loop.schedule(after: min(request.timeoutSeconds ?? limits.timeoutSeconds, limits.timeoutSeconds)) { [weak self, weak call] in
            guard let self, let call else { return }
            self.timeOut(call)
        }
        if dispatch(call) { return }
        if queue.count < limits.maxQueued {
            queue.append(call)
        } else {
            call.finish(.failure(.queueFull))
        }
    }

    /// Starts `call` on an idle connection or a new one; false when all are busy.
    private func dispatch(_ call: ClientCall) -> Bool {
        if let connection = takeIdleConnection() {
            start(call, on: connection)
        } else if allowance.canOpenBuffered {
            openCount += 1
            start(call, on: ClientConnection(client: self))
        } else {
            return false
        }
        return true
    }

    /// A streamed transfer freed a connection: queued calls may start.
    func capacityFreed() {
        while !queue.isEmpty, allowance.canOpenBuffered || idle.contains(where: { $0.isUsable }) {
            let next = queue.removeFirst()
            if !dispatch(next) {
                queue.insert(next, at: 0)
                break
            }
        }
        onCapacity?()
    }

    /// Closes one idle connection so that a streamed transfer may open one; false if none.
    func closeOneIdle() -> Bool {
        guard let connection = idle.popLast() else { return false }
        discard(connection)
        return true
    }

    /// Fails queued calls and closes idle connections; busy ones close when their call ends.
    public func close() {
        closed = true
        let waiting = queue
        queue.removeAll()
        for call in waiting { call.finish(.failure(.unreachable("client closed"))) }
        for connection in idle { connection.free() }
        openCount -= idle.count
        idle.removeAll()
    }

    private func takeIdleConnection() -> ClientConnection? {
        while let connection = idle.popLast() {
            if connection.isUsable { return connection }
            discard(connection)
        }
        return nil
    }

    private func start(_ call: ClientCall, on connection: ClientConnection) {
        call.connection = connection
        connection.busy = true
        if !connection.start(call) {
            finish(call, .failure(.broken("cannot start the request")))
        }
    }

    private func timeOut(_ call: ClientCall) {
        if let index = queue.firstIndex(where: { $0 === call }) {
            queue.remove(at: index)
            call.finish(.failure(.timedOut))
            return
        }
        guard let connection = call.connection else { return }
        // Cancelling resets the connection; it is dropped rather than reused.
        connection.cancel(call)
        finish(call, .failure(.timedOut))
    }

    /// Ends `call`, recycles its connection, and starts the next queued call.
    func finish(_ call: ClientCall, _ result: Result<ClientResponse, ClientError>) {
        guard let connection = call.connection else { return }
        call.connection = nil
        connection.busy = false
        if case .success = result, connection.isUsable, !closed {
            idle.append(connection)
        } else {
            discard(connection)
        }
        call.finish(result)
        // Dequeue before starting: a start that fails at once re-enters `finish`.
        if !queue.isEmpty {
            let next = queue.removeFirst()
            if !dispatch(next) { queue.insert(next, at: 0) }
        }
        onCapacity?()
        if !idle.isEmpty { allowance.bufferedIdled?() }
    }

    func connectionClosed(_ connection: ClientConnection) {
        if !connection.busy, let index = idle.firstIndex(where: { $0 === connection }) {
            idle.remove(at: index)
            discard(connection)
        }
    }

    private func discard(_ connection: ClientConnection) {
        openCount -= 1
        // libevent may still be inside this connection's callbacks: free it on the next turn.
        loop.schedule(after: 0) { connection.free() }
    }
}

/// One request on its way through an `HTTPClient`.
final class ClientCall {
    let request: ClientRequest
    private var completion: ((Result<ClientResponse, ClientError>) -> Void)?
    var timer: LoopTimer?
    var connection: ClientConnection?
    var raw: OpaquePointer?
    var failure: evhttp_request_error?

    init(request: ClientRequest, completion: @escaping (Result<ClientResponse, ClientError>) -> Void) {
        self.request = request
        self.completion = completion
    }

    func finish(_ result: Result<ClientResponse, ClientError>) {
        timer?.cancel()
        timer = nil
        let completion = self.completion
        self.completion = nil
        completion?(result)
    }
}

/// One evhttp client connection (and, for HTTPS, its own bufferevent and SSL object).
final class ClientConnection {
    private unowned let client: HTTPClient
    private var connection: OpaquePointer?
    private var ssl: OpaquePointer?
    private var closedByPeer = false
    private var everSent = false
    var busy = false

    init(client: HTTPClient) {
        self.client = client
        let loop = client.loop
        var bufferEvent: OpaquePointer?
        if let tls = client.tls {
            let ssl = SSL_new(tls.context)
            self.ssl = ssl
            let isIPLiteral = client.host.contains(":") || client.host.allSatisfy { $0.isNumber || $0 == "." }
            if !isIPLiteral { _ = pp_ssl_set_sni(ssl, client.host) }
            _ = pp_ssl_verify_peer_name(ssl, client.host, isIPLiteral ? 1 : 0)
            bufferEvent = bufferevent_openssl_socket_new(
                loop.base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                Int32(BEV_OPT_CLOSE_ON_FREE.rawValue | BEV_OPT_DEFER_CALLBACKS.rawValue))
            // Servers often close TLS connections without close_notify; the HTTP framing
            // (Content-Length or chunked) still tells whether the answer was complete.
            bufferevent_openssl_set_allow_dirty_shutdown(bufferEvent, 1)
        }
        connection = evhttp_connection_base_bufferevent_new(loop.base, loop.dns, bufferEvent, client.host, client.port)
        evhttp_connection_set_max_body_size(connection, client.limits.maxResponseBytes)
        evhttp_connection_set_max_headers_size(connection, client.limits.maxResponseHeaderBytes)
        var timeout = timeval(seconds: client.limits.timeoutSeconds)
        evhttp_connection_set_timeout_tv(connection, &timeout)
        evhttp_connection_set_retries(connection, 0)
        evhttp_connection_set_closecb(connection, { _, context in
            let connection = Unmanaged<ClientConnection>.fromOpaque(context!).takeUnretainedValue()
            connection.closedByPeer = true
            connection.client.connectionClosed(connection)
        }, Unmanaged.passUnretained(self).toOpaque())
    }

    deinit { free() }

    var isUsable: Bool { connection != nil && !closedByPeer }

    func free() {
        guard let connection else { return }
        self.connection = nil
        evhttp_connection_set_closecb(connection, nil, nil)
        evhttp_connection_free(connection)  // frees the bufferevent and, with it, the SSL object
        ssl = nil
    }

    /// Starts `call` on this connection. The call is retained until libevent calls back.
    func start(_ call: ClientCall) -> Bool {
        guard let connection else { return false }
        let context = Unmanaged.passRetained(call).toOpaque()
        guard let raw = evhttp_request_new({ raw, context in
            let call = Unmanaged<ClientCall>.fromOpaque(context!).takeRetainedValue()
            call.raw = nil
            call.connection?.complete(call, raw)
        }, context) else {
            Unmanaged<ClientCall>.fromOpaque(context).release()
            return false
        }
        call.raw = raw
        evhttp_request_set_error_cb(raw) { error, context in
            Unmanaged<ClientCall>.fromOpaque(context!).takeUnretainedValue().failure = error
        }
        let output = evhttp_request_get_output_headers(raw)
        let hostPart = client.host.contains(":") ? "[\(client.host)]" : client.host
        let defaultPort: UInt16 = client.tls == nil ? 80 : 443
        evhttp_add_header(output, "Host", client.port == defaultPort ? hostPart : "\(hostPart):\(client.port)")
        call.request.headers.write(to: output)
        // Every body goes out framed by an exact Content-Length, whatever the method: libevent
        // adds one only for POST and PUT, and a body without one would be read upstream as
        // the next request on this connection. POST, PUT and PATCH say "0" when empty.
        let body = call.request.body
        if !body.isEmpty || [.post, .put, .patch].contains(call.request.method) {
            evhttp_add_header(output, "Content-Length", String(body.count))
            body.withUnsafeBytes { _ = evbuffer_add(evhttp_request_get_output_buffer(raw), $0.baseAddress, $0.count) }
        }
        everSent = true
        // Per request: the limit stays with the connection, which a later call may reuse.
        evhttp_connection_set_max_body_size(connection, min(call.request.maxResponseBytes ?? .max, client.limits.maxResponseBytes))
        if evhttp_make_request(connection, raw, call.request.method.libeventType, call.request.target) != 0 {
            // libevent frees the request on failure, and will not call back.
            call.raw = nil
            Unmanaged<ClientCall>.fromOpaque(context).release()
            return false
        }
        return true
    }

    /// Abandons `call` (timeout): libevent resets the connection and drops the request.
    func cancel(_ call: ClientCall) {
        guard let raw = call.raw else { return }
        call.raw = nil
        closedByPeer = true
        evhttp_cancel_request(raw)
        Unmanaged<ClientCall>.passUnretained(call).release()
    }

    private func complete(_ call: ClientCall, _ raw: OpaquePointer?) {
        guard let raw, evhttp_request_get_response_code(raw) != 0 else {
            client.finish(call, .failure(classifyFailure(call.failure)))
            return
        }
        // libevent takes any 1xx but 100 for the final answer (with no body): the real one
        // would follow on this connection and be read as the next request's answer.
        if (100..<200).contains(evhttp_request_get_response_code(raw)) {
            closedByPeer = true
            client.finish(call, .failure(.broken("the upstream sent an interim (1xx) answer, which this proxy does not pass on")))
            return
        }
        // Bytes past the end of the answer belong to no request of ours: the framing is in
        // doubt, so the connection is not used again (they would be read as the next answer).
        if let connection, let bufferEvent = evhttp_connection_get_bufferevent(connection),
           evbuffer_get_length(bufferevent_get_input(bufferEvent)) > 0 {
            closedByPeer = true
        }
        let headers = HTTPHeaders(keyvalq: evhttp_request_get_input_headers(raw))
        let response = ClientResponse(
            status: Int(evhttp_request_get_response_code(raw)),
            headers: headers,
            body: bytes(of: evhttp_request_get_input_buffer(raw)),
            declaredContentLength: headers["Content-Length"].flatMap(RequestParser.decimal))
        client.finish(call, .success(response))
    }

    private func classifyFailure(_ failure: evhttp_request_error?) -> ClientError {
        if let ssl {
            let verify = SSL_get_verify_result(ssl)
            if verify != X509_V_OK {
                return .tls("certificate verification failed: \(String(cString: X509_verify_cert_error_string(verify)))")
            }
            if ERR_peek_error() != 0 { return .tls("handshake failed: \(openSSLErrorText())") }
        }
        switch failure {
        case EVREQ_HTTP_TIMEOUT: return .timedOut
        case EVREQ_HTTP_DATA_TOO_LONG: return .responseTooLarge
        case EVREQ_HTTP_INVALID_HEADER: return .broken("the upstream answered something that is not HTTP")
        case EVREQ_HTTP_EOF: return .broken("the upstream closed the connection before the answer was complete")
        case EVREQ_HTTP_BUFFER_ERROR: return .broken("read or write error on the upstream connection")
        case nil:
            // libevent reports a failed connect without an error code.
            return .unreachable("cannot connect to \(client.host):\(client.port)")
        default: return .broken("upstream connection failed")
        }
    }
}
