import CLibevent

/// One request received by an `HTTPServer`. Answer it exactly once with `respond`, on the loop
/// thread; it may be kept and answered later (after an upstream call). Answering after the
/// client left is safe and writes nothing; `isClientGone` tells whether anybody still listens.
public final class ServerRequest {
    private var connection: ServerConnection?
    private weak var server: HTTPServer?
    private var answered = false

    /// The method; `nil` for one this server does not know (answer it 405).
    public private(set) var knownMethod: HTTPMethod?
    /// The method, or GET for an unknown one (check `knownMethod` first).
    public var method: HTTPMethod { knownMethod ?? .get }
    /// The request target as sent: path and query, percent-encoding untouched.
    public private(set) var uri = ""
    public private(set) var headers = HTTPHeaders()
    /// The request body (bounded by `ServerLimits.maxBodyBytes`); empty when it is streamed.
    public private(set) var body: [UInt8] = []
    /// The body, when the server streams it (`HTTPServer.bodyReading`): read it from here.
    public private(set) var bodyStream: RequestBodyStream?
    /// The HTTP minor version the client spoke.
    public var httpMinorVersion: Int { minorVersion }
    /// The client's address, for logs.
    public private(set) var peer = ""
    private var minorVersion = 1
    private var keepAlive = true
    /// Set when the client's connection closed before the answer.
    public private(set) var isClientGone = false
    /// Called once if the client's connection closes before the answer.
    public var onClientGone: (() -> Void)?
    /// Called once if the client shuts its sending side (a FIN) before the answer: it may wait
    /// for the answer (a half-close) or have gone.
    public var onClientFinished: (() -> Void)?
    /// Set once the client has sent its FIN before the answer (whether or not anyone was told).
    public private(set) var hasClientFinished = false
    /// What the server's admission decided from the head (`HTTPServer.admitHead`; nil for a
    /// request without a body, which is not admitted apart).
    public private(set) var admission: AnyObject?

    init(head: RequestParser.Head, body: [UInt8], bodyStream: RequestBodyStream?, peer: String, admission: AnyObject?,
         connection: ServerConnection, server: HTTPServer) {
        take(head: head, body: body, bodyStream: bodyStream, peer: peer, admission: admission, connection: connection, server: server)
    }

    /// Makes this answered request, which nothing else holds, the connection's next one: a
    /// hit then allocates no request object (the connection checks it is answered and unshared).
    func reuse(head: RequestParser.Head, body: [UInt8], bodyStream: RequestBodyStream?, peer: String, admission: AnyObject?,
               connection: ServerConnection, server: HTTPServer) {
        precondition(answered, "only an answered request is reused")
        answered = false
        isClientGone = false
        hasClientFinished = false
        onClientGone = nil
        onClientFinished = nil
        take(head: head, body: body, bodyStream: bodyStream, peer: peer, admission: admission, connection: connection, server: server)
    }

    private func take(head: RequestParser.Head, body: [UInt8], bodyStream: RequestBodyStream?, peer: String, admission: AnyObject?,
                      connection: ServerConnection, server: HTTPServer) {
        self.admission = admission
        knownMethod = head.knownMethod
        uri = head.target
        headers = head.headers
        self.body = body
        self.bodyStream = bodyStream
        self.peer = peer
        minorVersion = head.minorVersion
        keepAlive = head.keepAlive
        self.connection = connection
        self.server = server
    }

    /// Lets go of what the answered request held (its target, fields, body), so that an idle
    /// connection keeping this object for its next request holds none of it: with a 14 KiB head,
    /// about 20 KiB per idle connection (found by review). Empty values allocate nothing.
    func forgetContent() {
        uri = ""
        headers = HTTPHeaders()
        body = []
        bodyStream = nil
        admission = nil
        onClientGone = nil
        onClientFinished = nil
    }

    deinit {
        // A request dropped without an answer would leave its client waiting.
        if !answered { respond(status: 500, headers: HTTPHeaders(), body: []) }
    }

    public var isAnswered: Bool { answered }

    /// Sends the answer. `Content-Length` and `Date` (unless given) are added here, and
    /// `Connection` as the exchange needs; `Content-Length`, `Transfer-Encoding` and
    /// `Connection` among `headers` are replaced (`Connection: close` is honoured).
    /// `headContentLength`: for an answer to HEAD, the `Content-Length` to send (see
    /// `HeadContentLength`).
    public func respond(status: Int, reason: String? = nil, headers: HTTPHeaders, body: [UInt8],
                        headContentLength: HeadContentLength = .ofBody) {
        let close = headers.values("Connection").contains { $0.caseInsensitiveEquals("close") }
        let wire = headers.wireLines()
        send(status: status, reason: reason, headerLines: wire.lines, addDate: !wire.hasDate, body: .bytes(body), close: close,
             headContentLength: headContentLength)
    }

    /// Sends an answer whose header lines are made (`Name: value\r\n` each, without
    /// `Content-Length` or `Connection`; `Date` too unless `addDate` is false). A `.shared`
    /// body is sent by reference. `close`: the connection ends after this answer.
    public func respond(status: Int, headerLines: [UInt8], addDate: Bool, body: ResponseBody, close: Bool = false,
                        headContentLength: HeadContentLength = .ofBody) {
        send(status: status, reason: nil, headerLines: headerLines, addDate: addDate, body: body, close: close,
             headContentLength: headContentLength)
    }

    /// Starts an answer whose body follows through the returned stream (nil when the client
    /// has gone). `length`: the body's `Content-Length` if known; otherwise the body is chunked
    /// (HTTP/1.1) or ends with the connection (HTTP/1.0). For HEAD, 204 and 304 no body is sent
    /// and `length` is the `Content-Length` to declare. Header fields as for `respond`.
    public func startStreamedAnswer(status: Int, reason: String? = nil, headers: HTTPHeaders, length: StreamedLength) -> ResponseStream? {
        let wire = headers.wireLines()
        let close = headers.values("Connection").contains { $0.caseInsensitiveEquals("close") }
        return startStreamedAnswer(status: status, reason: reason, head: AnswerHead(lines: wire.lines, addDate: !wire.hasDate, close: close),
                                   length: length)
    }

    /// The same with the head's fields made (`AnswerHead`).
    public func startStreamedAnswer(status: Int, reason: String? = nil, head answerHead: AnswerHead, length: StreamedLength) -> ResponseStream? {
        guard !answered else { return nil }
        answered = true
        onClientGone = nil
        onClientFinished = nil
        guard let server else { return nil }
        let connection = self.connection
        self.connection = nil
        guard let connection, connection.isOpen, !isClientGone else {
            server.requestAnswered(awaitingFlush: false)
            return nil
        }
        let bodiless = (100..<200).contains(status) || status == 204 || status == 304 || knownMethod == .head
        let chunked = !bodiless && length == .unknown && minorVersion == 1
        // A body that ends with the connection, or a request body not all read yet, ends it.
        let close = answerHead.close || !keepAlive || server.isDraining || (!bodiless && length == .unknown && !chunked)
            || connection.answersLastRequest
            || bodyStream?.isComplete == false
        var head = statusLine(status, reason)
        head += answerHead.lines
        if chunked {
            head += Array("Transfer-Encoding: chunked\r\n".utf8)
        } else if case .known(let count) = length, status != 204, !(100..<200).contains(status) {
            head += contentLengthPrefix
            head += String(count).utf8
            head += crlf
        }
        if answerHead.addDate { head += server.currentDateLine() }
        if close {
            head += connectionClose
        } else if minorVersion == 0 {
            head += connectionKeepAlive
        }
        head += crlf
        let stream = ResponseStream(connection: connection, length: bodiless ? .known(0) : length, chunked: chunked, bodiless: bodiless)
        connection.streamedAnswerCloses = close
        guard connection.beginStreamed(head: head, stream: stream) else {
            server.requestAnswered(awaitingFlush: false)
            return nil
        }
        return stream
    }

    private func send(status: Int, reason: String?, headerLines: [UInt8], addDate: Bool, body: ResponseBody, close requestedClose: Bool,
                      headContentLength: HeadContentLength = .ofBody) {
        guard !answered else { return }
        answered = true
        onClientGone = nil
        onClientFinished = nil
        guard let server else { return }
        let connection = self.connection
        self.connection = nil
        guard let connection, connection.isOpen, !isClientGone else {
            server.requestAnswered(awaitingFlush: false)
            return
        }
        let close = requestedClose || !keepAlive || server.isDraining || bodyStream?.isComplete == false || connection.answersLastRequest
        let hasBody = !(100..<200).contains(status) && status != 204 && status != 304
        let sendsBody = hasBody && knownMethod != .head && body.count > 0
        // The head is assembled in the server's reusable buffer, then copied out once.
        var head = server.takeHeadBuffer()
        head += statusLine(status, reason)
        head += headerLines
        var length: Int? = body.count
        if knownMethod == .head {
            switch headContentLength {
            case .ofBody: break
            case .declared(let declared): length = declared
            case .unknown: length = nil
            }
        }
        if hasBody, let length {
            head += contentLengthPrefix
            head += String(length).utf8
            head += crlf
        }
        if addDate { head += server.currentDateLine() }
        if close {
            head += connectionClose
        } else if minorVersion == 0 {
            head += connectionKeepAlive
        }
        head += crlf
        let written = connection.write(head: head, body: sendsBody ? body : nil, close: close)
        server.returnHeadBuffer(head)
        server.requestAnswered(awaitingFlush: written)
        connection.answered()
    }

    func clientFinished() {
        hasClientFinished = true
        let callback = onClientFinished
        onClientFinished = nil
        callback?()
    }

    func clientGone() {
        isClientGone = true
        let callback = onClientGone
        onClientGone = nil
        callback?()
    }
}

/// An answer's header fields, made: `Name: value\r\n` lines without `Content-Length`,
/// `Transfer-Encoding` or `Connection` (the server writes those), whether the server adds
/// `Date`, and whether the connection ends after the answer.
public struct AnswerHead: Sendable {
    public let lines: [UInt8]
    public let addDate: Bool
    public let close: Bool

    public init(lines: [UInt8], addDate: Bool, close: Bool) {
        self.lines = lines
        self.addDate = addDate
        self.close = close
    }
}

/// The `Content-Length` of an answer to HEAD, which carries no body: that of the body given
/// (an answer the server made from a GET's body), one declared by the upstream, or none
/// (the upstream did not say, e.g. a chunked answer).
public enum HeadContentLength: Sendable {
    case ofBody
    case declared(Int)
    case unknown
}

private let crlf: [UInt8] = [UInt8(ascii: "\r"), UInt8(ascii: "\n")]
private let contentLengthPrefix = Array("Content-Length: ".utf8)
private let connectionClose = Array("Connection: close\r\n".utf8)
private let connectionKeepAlive = Array("Connection: keep-alive\r\n".utf8)

/// `HTTP/1.1 200 OK\r\n`; the usual ones are formatted once.
private func statusLine(_ status: Int, _ reason: String?) -> [UInt8] {
    if reason == nil, status == 200 { return ok200 }
    return Array("HTTP/1.1 \(status) \(reason ?? reasonPhrase(status))\r\n".utf8)
}

private let ok200 = Array("HTTP/1.1 200 OK\r\n".utf8)

/// The standard reason phrase for the statuses this project sends.
public func reasonPhrase(_ status: Int) -> String {
    switch status {
    case 100: "Continue"
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
    case 417: "Expectation Failed"
    case 422: "Unprocessable Content"
    case 429: "Too Many Requests"
    case 431: "Request Header Fields Too Large"
    case 500: "Internal Server Error"
    case 501: "Not Implemented"
    case 502: "Bad Gateway"
    case 503: "Service Unavailable"
    case 504: "Gateway Timeout"
    case 505: "HTTP Version Not Supported"
    default: "Status \(status)"
    }
}
