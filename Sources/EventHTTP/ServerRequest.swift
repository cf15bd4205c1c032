import CLibevent

/// One request received by an `HTTPServer`. Answer it exactly once with `respond`, on the loop
/// thread; it may be kept and answered later (after an upstream call).
///
/// libevent detaches a request whose client went away before the answer and frees it when
/// the answer is finally sent, so answering late is always safe; `isClientGone` tells whether
/// anybody is still listening.
public final class ServerRequest {
    private var raw: OpaquePointer?
    /// Weak: once the server (and with it libevent's evhttp and every request) is freed, a
    /// request still held somewhere must not touch its libevent request again.
    private weak var server: HTTPServer?
    private var connection: OpaquePointer?

    /// The method; `nil` for one libevent does not know (answer it 405).
    public let knownMethod: HTTPMethod?
    /// The method, or GET for an unknown one (check `knownMethod` first).
    public var method: HTTPMethod { knownMethod ?? .get }
    /// The request target as sent: path and query, percent-encoding untouched.
    public let uri: String
    public let headers: HTTPHeaders
    /// The client's address, for logs.
    public let peer: String
    /// Set when the client's connection closed before the answer.
    public private(set) var isClientGone = false
    /// Called once if the client's connection closes before the answer.
    public var onClientGone: (() -> Void)?

    init(_ raw: OpaquePointer, server: HTTPServer) {
        self.raw = raw
        self.server = server
        knownMethod = HTTPMethod(libevent: evhttp_request_get_command(raw))
        uri = evhttp_request_get_uri(raw).map { String(cString: $0) } ?? "/"
        headers = HTTPHeaders(keyvalq: evhttp_request_get_input_headers(raw))
        connection = evhttp_request_get_connection(raw)
        var address: UnsafeMutablePointer<CChar>?
        var port: UInt16 = 0
        evhttp_connection_get_peer(connection, &address, &port)
        peer = address.map { "\(String(cString: $0)):\(port)" } ?? "unknown"
        evhttp_connection_set_closecb(connection, { _, context in
            Unmanaged<ServerRequest>.fromOpaque(context!).takeUnretainedValue().clientClosed()
        }, Unmanaged.passUnretained(self).toOpaque())
    }

    deinit {
        // A request dropped without an answer would hang its client and leak in libevent.
        if raw != nil { respond(status: 500, headers: HTTPHeaders(), body: []) }
    }

    /// The request body (bounded by `ServerLimits.maxBodyBytes`).
    public lazy var body: [UInt8] = bytes(of: raw.flatMap { evhttp_request_get_input_buffer($0) })

    public var isAnswered: Bool { raw == nil }

    /// Sends the answer. `Content-Length`, `Date` and `Connection` are added by libevent.
    public func respond(status: Int, reason: String? = nil, headers: HTTPHeaders, body: [UInt8]) {
        guard let raw else { return }
        self.raw = nil
        guard let server else { return }  // evhttp_free already released the request
        if let connection, !isClientGone {
            evhttp_connection_set_closecb(connection, nil, nil)
        }
        connection = nil
        headers.write(to: evhttp_request_get_output_headers(raw))
        let buffer = evbuffer_new()
        if knownMethod == .head {
            evhttp_add_header(evhttp_request_get_output_headers(raw), "Content-Length", String(body.count))
        } else if !body.isEmpty {
            body.withUnsafeBytes { _ = evbuffer_add(buffer, $0.baseAddress, $0.count) }
        }
        // libevent frees a detached request (client gone) inside send_reply without writing.
        let awaitingFlush = evhttp_request_get_connection(raw) != nil
        if awaitingFlush {
            evhttp_request_set_on_complete_cb(raw, { _, context in
                Unmanaged<HTTPServer>.fromOpaque(context!).takeUnretainedValue().answerFlushed()
            }, Unmanaged.passUnretained(server).toOpaque())
        }
        evhttp_send_reply(raw, Int32(status), reason ?? reasonPhrase(status), buffer)
        evbuffer_free(buffer)
        server.requestAnswered(awaitingFlush: awaitingFlush)
    }

    private func clientClosed() {
        isClientGone = true
        let callback = onClientGone
        onClientGone = nil
        callback?()
    }
}

/// The standard reason phrase for the statuses this project sends.
public func reasonPhrase(_ status: Int) -> String {
    switch status {
    case 200: "OK"
    case 201: "Created"
    case 202: "Accepted"
    case 204: "No Content"
    case 304: "Not Modified"
    case 400: "Bad Request"
    case 401: "Unauthorized"
    case 403: "Forbidden"
    case 404: "Not Found"
    case 405: "Method Not Allowed"
    case 408: "Request Timeout"
    case 409: "Conflict"
    case 413: "Content Too Large"
    case 422: "Unprocessable Content"
    case 429: "Too Many Requests"
    case 500: "Internal Server Error"
    case 502: "Bad Gateway"
    case 503: "Service Unavailable"
    case 504: "Gateway Timeout"
    default: "Status \(status)"
    }
}
