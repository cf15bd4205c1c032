import CLibevent

#if canImport(Glibc)
import Glibc
#endif

/// Limits of a `StreamingClient`.
public struct StreamLimits: Sendable {
    /// From the end of the request (its last body byte sent) to the answer's head.
    public var headTimeoutSeconds: Double
    /// Longest time without progress, in either direction, once the transfer runs.
    public var idleTimeoutSeconds: Double
    public var maxHeadBytes: Int
    /// Transfers that may wait for a connection.
    public var maxQueued: Int

    public init(headTimeoutSeconds: Double = 30, idleTimeoutSeconds: Double = 30, maxHeadBytes: Int = 65_536, maxQueued: Int = 256) {
        self.headTimeoutSeconds = headTimeoutSeconds
        self.idleTimeoutSeconds = idleTimeoutSeconds
        self.maxHeadBytes = maxHeadBytes
        self.maxQueued = maxQueued
    }
}

/// What goes upstream for a streamed transfer: rebuilt from the client's parsed request, with
/// the header fields the caller keeps. The body (if any) is the client's request body stream,
/// framed as it was parsed: the same `Content-Length`, or chunked.
public struct RelayRequest: Sendable {
    public var method: HTTPMethod
    /// Origin-form target, already percent-encoded.
    public var target: String
    public var headers: HTTPHeaders

    public init(method: HTTPMethod, target: String, headers: HTTPHeaders) {
        self.method = method
        self.target = target
        self.headers = headers
    }
}

/// How a streamed transfer ended.
public enum RelayOutcome: Sendable, Equatable {
    /// The answer went to the client whole (`bytes` of body).
    case relayed(status: Int, bytes: Int)
    /// Nothing was answered: the caller answers (502, 503, 504 from the error).
    case failed(ClientError)
    /// The request body broke its limit or its framing before any answer: the caller answers
    /// 413 or 400.
    case bodyRefused(BodyStreamError)
    /// The answer had started and could not be completed: the client's connection was ended
    /// short, so it sees an error.
    case broken(status: Int, reason: String)
    /// The client left; the upstream request was abandoned and its connection closed.
    case clientGone
}

/// Streamed transfers to one origin, each on a connection of its own (closed afterwards), at
/// most as many at once as the shared `ConnectionAllowance` allows; the others wait in a
/// bounded queue. A transfer first `reserve`s a connection, so a caller that paces starts
/// (the upstream budget) takes its token only once a connection is there for it.
public final class StreamingClient {
    let loop: EventLoop
    let host: String
    let port: UInt16
    let tls: TLSClientContext?
    let limits: StreamLimits
    let allowance: ConnectionAllowance
    /// The client that shares the allowance: asked to close an idle connection when a
    /// transfer needs the room.
    private weak var buffered: HTTPClient?
    /// Transfers waiting for a connection. The next connection goes to the waiting client that
    /// holds the fewest, then to the one served longest ago, then to the earliest: clients in
    /// turn, so one client's queued downloads cannot keep another's request waiting.
    private var waiting: [Reservation] = []
    /// Transfers running (or granted) per client, and when each client was last granted one.
    private var running: [String: Int] = [:]
    private var lastGranted: [String: Int] = [:]
    private var grants = 0

    public init(loop: EventLoop, host: String, port: UInt16, tls: TLSClientContext?, limits: StreamLimits, sharingWith buffered: HTTPClient) {
        self.loop = loop
        self.host = host
        self.port = port
        self.tls = tls
        self.limits = limits
        self.buffered = buffered
        allowance = buffered.allowance
        allowance.bufferedFreed = { [weak self] in self?.grantWaiting() }
        // A buffered connection gone idle can be closed for a waiting transfer.
        allowance.bufferedIdled = { [weak self] in self?.grantWaiting() }
        // A transfer's connection goes to waiting transfers first: the cached routes keep a
        // connection of their own. With only one connection there is none to keep, so it goes
        // to the cached routes' waiting calls first, and the two take turns.
        let bufferedFirst = !allowance.keepsOneForBuffered
        allowance.streamedFreed = { [weak self, weak buffered] in
            if bufferedFirst { buffered?.capacityFreed() }
            self?.grantWaiting()
            if !bufferedFirst { buffered?.capacityFreed() }
        }
    }

    /// Streamed transfers running now.
    public var runningCount: Int { allowance.streamed }
    /// Transfers waiting for a connection.
    public var queued: Int { waiting.count }

    /// A connection held for one transfer: `relay` it, or `release` it unused.
    public final class Slot {
        fileprivate weak var client: StreamingClient?
        private var held = true
        fileprivate let owner: String

        fileprivate init(client: StreamingClient, owner: String) {
            self.client = client
            self.owner = owner
        }

        deinit { release() }

        /// Gives the connection back unused.
        public func release() {
            guard held else { return }
            held = false
            client?.slotEnded(owner)
        }

        /// Sends `request` and streams its answer to `downstream`. `answerHead` turns the
        /// upstream's head into the head the client gets. `secondsLeft`: what remains
        /// of the request's own deadline (it may have waited for this connection and a budget
        /// token), which bounds the connect and, for a request without a body, the wait for the
        /// answer's head. `completion` runs once.
        public func relay(_ request: RelayRequest, from downstream: ServerRequest, secondsLeft: Double? = nil,
                          answerHead: @escaping (ResponseParser.Head) -> AnswerHead,
                          completion: @escaping (RelayOutcome) -> Void) {
            guard held, let client else { return completion(.failed(.unreachable("client closed"))) }
            held = false
            let owner = self.owner
            let transfer = StreamRelay(client: client, request: request, downstream: downstream, secondsLeft: secondsLeft,
                                       answerHead: answerHead) { outcome in
                client.slotEnded(owner)
                completion(outcome)
            }
            transfer.start()
        }
    }

    private final class Reservation {
        let client: String
        let granted: (Slot) -> Void
        let refused: (ClientError) -> Void
        var timer: LoopTimer?
        init(client: String, granted: @escaping (Slot) -> Void, refused: @escaping (ClientError) -> Void) {
            self.client = client
            self.granted = granted
            self.refused = refused
        }
    }

    /// Holds a connection for a transfer of `client`'s, now or when one frees up (within
    /// `timeoutSeconds`); waiting transfers get connections clients in turn.
    public func reserve(client: String, timeoutSeconds: Double, granted: @escaping (Slot) -> Void,
                        refused: @escaping (ClientError) -> Void) {
        loop.assertOnLoop()
        if waiting.isEmpty, let slot = takeSlot(for: client) { return granted(slot) }
        guard waiting.count < limits.maxQueued else { return refused(.queueFull) }
        let reservation = Reservation(client: client, granted: granted, refused: refused)
        reservation.timer = loop.schedule(after: timeoutSeconds) { [weak self, weak reservation] in
            guard let self, let reservation, let index = waiting.firstIndex(where: { $0 === reservation }) else { return }
            waiting.remove(at: index)
            reservation.refused(.timedOut)
        }
        waiting.append(reservation)
    }

    private func takeSlot(for owner: String) -> Slot? {
        if !allowance.canOpenStreamed, allowance.streamedHasRoom { _ = buffered?.closeOneIdle() }
        guard allowance.canOpenStreamed else { return nil }
        allowance.streamed += 1
        running[owner, default: 0] += 1
        grants += 1
        // Client names come from the clients file: a bounded set.
        if lastGranted.count >= 4096 { lastGranted.removeAll() }
        lastGranted[owner] = grants
        return Slot(client: self, owner: owner)
    }

    fileprivate func slotEnded(_ owner: String) {
        if let count = running[owner] { running[owner] = count > 1 ? count - 1 : nil }
        // Last: it may grant a waiting transfer at once.
        allowance.streamed -= 1
    }

    /// Not re-entered: taking a slot may close an idle connection, and a grant may release its
    /// slot at once (its client left, the budget refused it), both of which call back here; the
    /// loop below goes on by itself (a nested grant would empty the list under it).
    private var granting = false

    /// A connection may be free: waiting transfers get them, fewest held first.
    func grantWaiting() {
        guard !granting else { return }
        granting = true
        defer { granting = false }
        while !waiting.isEmpty {
            func rank(_ reservation: Reservation) -> (Int, Int) {
                (running[reservation.client] ?? 0, lastGranted[reservation.client] ?? 0)
            }
            let best = waiting.map(rank).min { $0 < $1 }!
            let next = waiting.first { rank($0) == best }!
            guard let slot = takeSlot(for: next.client) else { return }
            waiting.removeAll { $0 === next }
            next.timer?.cancel()
            next.granted(slot)
        }
    }
}

/// One streamed transfer: a connection of its own to the upstream, the request head then the
/// client's body as it arrives, the answer's head then its body to the client as it arrives.
/// Each side's buffer is bounded: a slow reader on one side stops reads on the other.
final class StreamRelay {
    private enum Stage {
        case connecting
        /// The request is on its way; the answer's head has not come.
        case awaitingHead
        case body(ResponseParser.Framing, RequestParser.ChunkedDecoder?)
        case done
    }

    private let client: StreamingClient
    private let request: RelayRequest
    private let downstream: ServerRequest
    private let answerHead: (ResponseParser.Head) -> AnswerHead
    private var completion: ((RelayOutcome) -> Void)?
    /// The request's own deadline, from now (see `Slot.relay`).
    private let secondsLeft: Double
    private var bufferEvent: OpaquePointer?
    private var ssl: OpaquePointer?
    private var stage = Stage.connecting
    private var connected = false
    private var headTimer: LoopTimer?
    private var response: ResponseStream?
    private var status = 0
    private var remaining = 0
    private var relayedBytes = 0
    /// The request's body has all gone out (or there is none).
    private var requestSent = false
    /// The upstream closed its side; what it sent may still be in the input, for a slow client.
    private var upstreamClosed = false
    /// It closed with an error (a reset): an answer framed by the close is then broken, not whole.
    private var upstreamFailedMidAnswer = false
    private var chunkedUpload = false
    private let scratch: OpaquePointer = evbuffer_new()
    /// Held while libevent may call back.
    private var retainedSelf: StreamRelay?

    /// Upload bytes buffered for the upstream before the client is paused; answer bytes read
    /// ahead from the upstream before its reads stop.
    static let uploadHighWater = 1 << 20
    static let uploadLowWater = 256 << 10
    static let readAhead = 256 << 10

    init(client: StreamingClient, request: RelayRequest, downstream: ServerRequest, secondsLeft: Double?,
         answerHead: @escaping (ResponseParser.Head) -> AnswerHead, completion: @escaping (RelayOutcome) -> Void) {
        self.secondsLeft = min(secondsLeft ?? client.limits.headTimeoutSeconds, client.limits.headTimeoutSeconds)
        self.client = client
        self.request = request
        self.downstream = downstream
        self.answerHead = answerHead
        self.completion = completion
    }

    deinit { evbuffer_free(scratch) }

    func start() {
        if let problem = HTTPClient.framingProblem(ClientRequest(method: request.method, target: request.target, headers: request.headers)) {
            return end(.failed(.invalidRequest(problem)))
        }
        retainedSelf = self
        downstream.onClientGone = { [weak self] in self?.end(.clientGone) }
        if downstream.isClientGone { return end(.clientGone) }
        let loop = client.loop
        if let tls = client.tls {
            let ssl = SSL_new(tls.context)
            self.ssl = ssl
            let isIPLiteral = client.host.contains(":") || client.host.allSatisfy { $0.isNumber || $0 == "." }
            if !isIPLiteral { _ = pp_ssl_set_sni(ssl, client.host) }
            _ = pp_ssl_verify_peer_name(ssl, client.host, isIPLiteral ? 1 : 0)
            bufferEvent = bufferevent_openssl_socket_new(loop.base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                                         Int32(BEV_OPT_CLOSE_ON_FREE.rawValue | BEV_OPT_DEFER_CALLBACKS.rawValue))
            // A close without TLS close_notify is an error, not an end: an answer framed by the
            // close could otherwise be cut by a forged FIN and look whole.
            if let bufferEvent { bufferevent_openssl_set_allow_dirty_shutdown(bufferEvent, 0) }
        } else {
            bufferEvent = bufferevent_socket_new(loop.base, -1, Int32(BEV_OPT_CLOSE_ON_FREE.rawValue | BEV_OPT_DEFER_CALLBACKS.rawValue))
        }
        guard let bufferEvent else { return end(.failed(.unreachable("cannot create a connection"))) }
        let context = Unmanaged.passUnretained(self).toOpaque()
        bufferevent_setcb(bufferEvent, { _, context in
            Unmanaged<StreamRelay>.fromOpaque(context!).takeUnretainedValue().readable()
        }, { _, context in
            Unmanaged<StreamRelay>.fromOpaque(context!).takeUnretainedValue().writable()
        }, { _, events, context in
            Unmanaged<StreamRelay>.fromOpaque(context!).takeUnretainedValue().event(events)
        }, context)
        bufferevent_setwatermark(bufferEvent, Int16(EV_READ), 0, Self.readAhead)
        // TLS reads go through OpenSSL in libevent's read loop: let one turn take a whole read-ahead.
        if client.tls != nil { bufferevent_set_max_single_read(bufferEvent, Self.readAhead) }
        bufferevent_setwatermark(bufferEvent, Int16(EV_WRITE), Self.uploadLowWater, 0)
        // Until the answer's head, the head timer (not a read timeout) bounds the wait: an
        // upload may take far longer than the idle timeout while the upstream says nothing.
        var idle = timeval(seconds: client.limits.idleTimeoutSeconds)
        bufferevent_set_timeouts(bufferEvent, nil, &idle)
        bufferevent_enable(bufferEvent, Int16(EV_READ | EV_WRITE))
        writeHead(to: bufferevent_get_output(bufferEvent))
        // The request's deadline bounds the connect (nothing else bounds a silent SYN) and, for a
        // request without a body, the answer's head: the time spent waiting for a connection
        // and a token is not given a whole timeout again.
        armHeadTimer(after: max(secondsLeft, 0.001))
        if bufferevent_socket_connect_hostname(bufferEvent, loop.dns, AF_UNSPEC, client.host, Int32(client.port)) != 0 {
            return end(.failed(.unreachable("cannot connect to \(client.host):\(client.port)")))
        }
    }

    private func armHeadTimer(after seconds: Double) {
        headTimer?.cancel()
        headTimer = client.loop.schedule(after: seconds) { [weak self] in
            guard let self else { return }
            if case .body = stage { return }
            end(.failed(.timedOut))
        }
    }

    private func writeHead(to output: OpaquePointer) {
        var head = "\(request.method.rawValue) \(request.target) HTTP/1.1\r\n"
        let hostPart = client.host.contains(":") ? "[\(client.host)]" : client.host
        let defaultPort: UInt16 = client.tls == nil ? 80 : 443
        head += "Host: \(client.port == defaultPort ? hostPart : "\(hostPart):\(client.port)")\r\n"
        for field in request.headers { head += "\(field.name): \(field.value)\r\n" }
        if let body = downstream.bodyStream {
            if let length = body.declaredLength {
                head += "Content-Length: \(length)\r\n"
            } else {
                chunkedUpload = true
                head += "Transfer-Encoding: chunked\r\n"
            }
        } else if [.post, .put, .patch].contains(request.method) {
            head += "Content-Length: 0\r\n"
        }
        // One transfer per connection: the framing of the next can never be in doubt.
        head += "Connection: close\r\n\r\n"
        _ = evbuffer_add(output, head, head.utf8.count)
    }

    private func event(_ events: Int16) {
        if events & Int16(BEV_EVENT_CONNECTED) != 0 {
            connected = true
            // An upload may take far longer than the timeout while it flows: its head timer
            // starts again once its last byte has gone out.
            if downstream.bodyStream != nil {
                headTimer?.cancel()
                headTimer = nil
            }
            return startUpload()
        }
        if events & Int16(BEV_EVENT_TIMEOUT) != 0 {
            return upstreamFailed(.timedOut)
        }
        if events & Int16(BEV_EVENT_EOF) != 0 {
            // Whatever arrived before the end is still in the input: it goes out as the
            // client reads, and the answer ends (whole or broken) when the input runs dry.
            upstreamClosed = true
            readable()
            if case .body = stage { return }
            return upstreamFailed(.broken("the upstream closed the connection before the answer was complete"))
        }
        if case .body = stage {
            // What arrived before the error still goes out; the answer then ends broken unless its
            // own framing shows it whole (a reset after a whole answer leaves it whole).
            upstreamClosed = true
            upstreamFailedMidAnswer = true
            return pump()
        }
        if !connected {
            if let ssl, SSL_get_verify_result(ssl) != X509_V_OK {
                return upstreamFailed(.tls("certificate verification failed"))
            }
            return upstreamFailed(.unreachable("cannot connect to \(client.host):\(client.port)"))
        }
        upstreamFailed(.broken("read or write error on the upstream connection"))
    }

    /// The connection is up: the client's body may flow now (and `100 Continue` go out).
    private func startUpload() {
        guard let body = downstream.bodyStream else { return uploadFinished() }
        body.start(evbuffer: { [weak self] piece in self?.upload(piece) }, onEnd: { [weak self] result in
            guard let self else { return }
            switch result {
            case .success: uploadFinished()
            // The answer came whole before the body was read: the rest is never read, and the
            // answer's completion reports it with its status (this is not a client gone, 499).
            case .failure(.clientGone) where response?.isFinished == true: return
            case .failure(.clientGone): end(.clientGone)
            case .failure(let error):
                if case .body = stage { return abortAnswer("the request body was refused") }
                end(.bodyRefused(error))
            }
        })
    }

    private func upload(_ piece: OpaquePointer) {
        guard let bufferEvent else { return }
        let output = bufferevent_get_output(bufferEvent)!
        if chunkedUpload { appendChunk(piece, to: output) } else { evbuffer_add_buffer(output, piece) }
        if evbuffer_get_length(output) > Self.uploadHighWater { downstream.bodyStream?.pause() }
    }

    private func uploadFinished() {
        guard !requestSent, let bufferEvent else { return }
        requestSent = true
        if chunkedUpload { _ = evbuffer_add(bufferevent_get_output(bufferEvent), "0\r\n\r\n", 5) }
        if case .awaitingHead = stage {} else if case .connecting = stage {} else { return }
        stage = .awaitingHead
        if downstream.bodyStream != nil { armHeadTimer(after: client.limits.headTimeoutSeconds) }
    }

    private func writable() {
        // The upstream took most of what was buffered: more of the upload may come.
        downstream.bodyStream?.resume()
    }

    private func readable() {
        guard let bufferEvent else { return }
        let input = bufferevent_get_input(bufferEvent)!
        // Take all the socket has (up to the read-ahead) in this turn, not 4 KiB of it.
        if client.tls == nil, !upstreamClosed, !readAvailable(bufferEvent, upTo: Self.readAhead) {
            // The socket failed under our own read (a reset, reported once): as libevent would.
            return event(Int16(BEV_EVENT_READING | BEV_EVENT_ERROR))
        }
        switch stage {
        case .connecting, .awaitingHead:
            readHead(input)
        case .body:
            pump()
        case .done:
            return
        }
    }

    private func readHead(_ input: OpaquePointer) {
        while true {
            let available = evbuffer_get_length(input)
            guard available > 0 else { return }
            let length = min(available, client.limits.maxHeadBytes + 1)
            guard let start = evbuffer_pullup(input, length) else { return }
            switch ResponseParser.parseHead(UnsafeRawBufferPointer(start: start, count: length), maxHeadBytes: client.limits.maxHeadBytes,
                                            requestMethod: request.method) {
            case .incomplete:
                return
            case .invalid(let reason):
                return upstreamFailed(.broken("the upstream answered something that is not HTTP: \(reason)"))
            case .complete(let head, let headLength):
                evbuffer_drain(input, headLength)
                // Interim answers (100 Continue, 103 Early Hints) are dropped (RFC 9110 15.2); the
                // final one follows. 101 would switch protocols: not this proxy's to pass on.
                if head.status == 101 {
                    return upstreamFailed(.broken("the upstream switched protocols, which this proxy does not pass on"))
                }
                if (100..<200).contains(head.status) { continue }
                return startAnswer(head)
            }
        }
    }

    private func startAnswer(_ head: ResponseParser.Head) {
        guard let bufferEvent else { return }
        headTimer?.cancel()
        headTimer = nil
        status = head.status
        let length: StreamedLength
        switch head.framing {
        // No body: the length the upstream declared (HEAD, 304), or none; never one it did not give.
        case .none: length = head.declaredLength.map(StreamedLength.known) ?? .unknown
        case .length(let count): length = .known(count)
        case .chunked, .untilClose: length = .unknown
        }
        guard let response = downstream.startStreamedAnswer(status: head.status, head: answerHead(head), length: length) else {
            return end(.clientGone)
        }
        self.response = response
        response.onClientGone = { [weak self] in self?.end(.clientGone) }
        response.onDrain = { [weak self] in self?.pump() }
        if case .length(let count) = head.framing { remaining = count }
        stage = .body(head.framing, head.framing == .chunked ? RequestParser.ChunkedDecoder(maxBodyBytes: Int.max) : nil)
        // From here, silence in either direction for the idle timeout ends the transfer.
        var idle = timeval(seconds: client.limits.idleTimeoutSeconds)
        bufferevent_set_timeouts(bufferEvent, &idle, &idle)
        pump()
    }

    /// Moves answer bytes from the upstream to the client while the client's buffer has room;
    /// reading stops (the input fills to its watermark, then TCP holds the upstream back) until
    /// the client drains.
    private func pump() {
        guard let bufferEvent, let response, case .body(let framing, var decoder) = stage else { return }
        let input = bufferevent_get_input(bufferEvent)!
        while response.wantsMore {
            let available = evbuffer_get_length(input)
            switch framing {
            case .none:
                return complete()
            case .length:
                if remaining == 0 { return complete() }
                guard available > 0 else { return inputRanDry() }
                let taken = min(remaining, available)
                evbuffer_remove_buffer(input, scratch, taken)
                remaining -= taken
                relayedBytes += taken
                response.write(evbuffer: scratch)
            case .untilClose:
                guard available > 0 else { return inputRanDry() }
                relayedBytes += available
                evbuffer_remove_buffer(input, scratch, available)
                response.write(evbuffer: scratch)
            case .chunked:
                guard available > 0 else { return inputRanDry() }
                guard var current = decoder, let start = evbuffer_pullup(input, -1) else { return }
                let scratch = self.scratch
                let consumed = current.feed(UnsafeRawBufferPointer(start: start, count: available)) { piece in
                    _ = evbuffer_add(scratch, piece.baseAddress, piece.count)
                }
                evbuffer_drain(input, consumed)
                decoder = current
                stage = .body(framing, current)
                relayedBytes += evbuffer_get_length(scratch)
                response.write(evbuffer: scratch)
                switch current.progress {
                case .done: return complete()
                case .invalid, .tooLarge: return abortAnswer("the upstream's chunked framing is invalid")
                case .needMore: if consumed == 0 { return inputRanDry() }
                }
            }
            if response.isFinished { return }
        }
    }

    /// Nothing more to pass on for now: after the upstream's end, the answer ends here, whole
    /// only when it was framed by the end of the connection.
    private func inputRanDry() {
        guard upstreamClosed, case .body(let framing, _) = stage else { return }
        if framing == .untilClose, !upstreamFailedMidAnswer { return complete() }
        abortAnswer("the upstream closed the connection before the answer was complete")
    }

    private func complete() {
        guard let response else { return }
        response.finish()
        end(.relayed(status: status, bytes: relayedBytes))
    }

    private func abortAnswer(_ reason: String) {
        response?.abort()
        end(.broken(status: status, reason: reason))
    }

    private func upstreamFailed(_ error: ClientError) {
        if case .body = stage {
            let reason: String
            if case .broken(let text) = error { reason = text } else { reason = "the upstream connection failed mid-answer" }
            return abortAnswer(reason)
        }
        end(.failed(error))
    }

    /// Frees the connection (which closes it: an abandoned request never lingers upstream) and
    /// reports once.
    private func end(_ outcome: RelayOutcome) {
        guard let completion else { return }
        self.completion = nil
        stage = .done
        headTimer?.cancel()
        headTimer = nil
        if let response, !response.isFinished {
            // Ended before the answer was whole (client gone or failure): never a short answer
            // that looks whole.
            response.abort()
        }
        response?.onDrain = nil
        response?.onClientGone = nil
        downstream.onClientGone = nil
        if let bufferEvent {
            self.bufferEvent = nil
            bufferevent_setcb(bufferEvent, nil, nil, nil, nil)
            bufferevent_free(bufferEvent)
            ssl = nil
        }
        completion(outcome)
        retainedSelf = nil
    }
}
