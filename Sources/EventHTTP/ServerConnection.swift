import CLibevent

#if canImport(Glibc)
import Glibc
#endif

/// One client connection of an `HTTPServer`: reads requests one at a time (pipelined ones wait
/// in the input buffer, answered in order), hands each to the server, writes the answers, and
/// notices a client that leaves while its answer is pending.
final class ServerConnection {
    private weak var server: HTTPServer?
    private var bufferEvent: OpaquePointer?
    let peer: String
    private let limits: ServerLimits
    /// A head whose body is still arriving, and its chunked body decoded so far.
    private var pendingHead: RequestParser.Head?
    /// The head parsed last, taken again when the client sends the same bytes (a poller).
    private var lastHead = RepeatedHead()
    /// The last request, answered and held by nobody else: the next one reuses it.
    private var spareRequest: ServerRequest?
    /// What the admission of the pending request decided (`HTTPServer.admitHead`), for its handler.
    private var pendingDecision: AnyObject?
    private var chunkedBody: RequestParser.ChunkedDecoder?
    /// When the request being read (head, then body) must have arrived: a client that sends a
    /// byte now and then is not idle, yet may not hold the connection for ever (slowloris).
    private var requestDeadline: ContinuousClock.Instant?
    private var sentContinue = false
    /// The request handed to the server and not answered yet. Not retained, so that a request
    /// the handler drops answers itself with a 500 in its deinit; unowned(unsafe) rather than
    /// weak (a side-table allocation per request) because it cannot dangle: every answer,
    /// that one included, clears it in `write` before the request is freed.
    private unowned(unsafe) var current: ServerRequest?
    private var awaitingAnswer = false
    private var closeAfterFlush = false
    /// Answers written to the output buffer and not yet out to the client.
    private var unflushedAnswers = 0
    private var processing = false
    /// Input is read up to here: a head and a body at their limits, plus chunked framing.
    private let readHighWater: Int
    /// Past this much unsent output, pipelined requests wait until the client reads.
    private static let outputHighWater = 4 << 20
    private static let maxSingleWrite = 1 << 20
    /// Input read ahead of a streamed body's consumer: past it, TCP slows the client down.
    private static let streamedReadHighWater = 256 << 10
    /// A request body streamed to the handler while it is handled, and its head.
    private var bodyStream: RequestBodyStream?
    private var bodyStreamHead: RequestParser.Head?
    /// An answer whose body is being written as it is produced.
    private var responseStream: ResponseStream?
    /// A streamed body's time: only time spent reading counts (not while the consumer waits
    /// for its upstream, or pauses), and it must keep up one MiB per `listen.timeout_seconds`.
    private var bodyTimer: LoopTimer?
    private var bodyReadingSince: ContinuousClock.Instant?
    private var bodyReadingSpent: Duration = .zero
    /// The connection's own read event on a plain socket (nil on TLS, where the bufferevent
    /// reads). A bufferevent sizes every read with ioctl(FIONREAD): one system call per request
    /// that a read into the input buffer's own space does without.
    private var reader: OpaquePointer?
    private var readerPending = false
    /// Reading is wanted (off once the connection ends after its answer).
    private var readingWanted = true
    /// The client sent its FIN after a complete request (`inputEnded`): nothing more arrives.
    private var clientFinished = false
    /// Input is read up to this (the bufferevent's read watermark, for TLS).
    private var inputLimit: Int

    var isOpen: Bool { bufferEvent != nil }

    /// Bytes written and not yet sent to the client.
    var pendingOutput: Int {
        guard let bufferEvent else { return 0 }
        return evbuffer_get_length(bufferevent_get_output(bufferEvent))
    }

    init(server: HTTPServer, bufferEvent: OpaquePointer, peer: String) {
        self.server = server
        self.bufferEvent = bufferEvent
        self.peer = peer
        limits = server.limits
        readHighWater = limits.maxHeaderBytes + 2 * limits.maxBodyBytes + 65_536
        inputLimit = readHighWater
    }

    func start() {
        guard let bufferEvent, let server else { return }
        let context = Unmanaged.passUnretained(self).toOpaque()
        bufferevent_setcb(bufferEvent, { _, context in
            Unmanaged<ServerConnection>.fromOpaque(context!).takeUnretainedValue().processInput()
        }, { _, context in
            Unmanaged<ServerConnection>.fromOpaque(context!).takeUnretainedValue().outputDrained()
        }, { _, events, context in
            Unmanaged<ServerConnection>.fromOpaque(context!).takeUnretainedValue().event(events)
        }, context)
        bufferevent_setwatermark(bufferEvent, Int16(EV_READ), 0, readHighWater)
        // libevent writes at most 16 KiB per readiness by default: a 19 KiB list would take two
        // writev calls and two loop iterations. One call sends a whole answer.
        bufferevent_set_max_single_write(bufferEvent, Self.maxSingleWrite)
        var timeout = server.timeout
        bufferevent_set_timeouts(bufferEvent, &timeout, &timeout)
        let fd = bufferevent_getfd(bufferEvent)
        if !server.isTLS, fd >= 0, let reader = event_new(server.loop.base, fd, Int16(EV_READ | EV_PERSIST), { _, what, context in
            Unmanaged<ServerConnection>.fromOpaque(context!).takeUnretainedValue().readable(what)
        }, context) {
            self.reader = reader
            bufferevent_enable(bufferEvent, Int16(EV_WRITE))
            updateReading()
        } else {
            bufferevent_enable(bufferEvent, Int16(EV_READ | EV_WRITE))
        }
    }

    /// The socket is readable (or the read timeout passed): one recv into the input buffer's
    /// own space, up to `inputLimit`, then the requests it completes.
    private func readable(_ what: Int16) {
        guard let bufferEvent else { return }
        if what & Int16(EV_TIMEOUT) != 0 {
            // The client waits for an answer that takes a while (an upstream call): not idle.
            if awaitingAnswer, bodyStream?.isReading != true { return }
            // Nor is one still being sent answers (pipelined requests wait for it to read them):
            // the write timeout is what ends a client that stops reading. Found by review: a
            // pipelining client reading steadily was cut off at the read timeout.
            if pendingOutput > 0 { return }
            return close()
        }
        let input = bufferevent_get_input(bufferEvent)!
        if evbuffer_get_length(input) == 0, readsDirectly, let server { return readDirectly(into: server.readScratch, input: input) }
        let room = inputLimit - evbuffer_get_length(input)
        guard room > 0 else { return updateReading() }
        // The bufferevent keeps its input's end frozen except while it reads itself.
        evbuffer_unfreeze(input, 0)
        var vector = iovec()  // `evbuffer_iovec` is a macro for it
        var received = -1
        var failed = false
        if evbuffer_reserve_space(input, min(room, Self.readSize), &vector, 1) >= 1 {
            received = recv(bufferevent_getfd(bufferEvent), vector.iov_base, min(vector.iov_len, room), 0)
            failed = received < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR
            vector.iov_len = max(0, received)
            _ = evbuffer_commit_space(input, &vector, received > 0 ? 1 : 0)
        }
        evbuffer_freeze(input, 0)
        // A reset or an error: the client is gone. The end of the stream may not be.
        if failed { return close() }
        if received == 0 { return inputEnded() }
        guard received > 0 else { return }
        processInput()
    }

    /// Whether requests that arrive whole may be taken straight from the read (nothing is
    /// buffered, waited on, or being answered).
    private var readsDirectly: Bool {
        !processing && pendingHead == nil && bodyStream == nil && responseStream == nil && readsDirectlyAgain
    }

    /// One recv into the server's scratch space; the bodiless requests it holds whole are
    /// dispatched from there, the rest (a partial head, a body, requests after a miss) goes
    /// into the input for `processInput`, as any read does.
    private func readDirectly(into scratch: UnsafeMutableRawBufferPointer, input: OpaquePointer) {
        guard let bufferEvent else { return }
        let received = recv(bufferevent_getfd(bufferEvent), scratch.baseAddress, min(scratch.count, inputLimit), 0)
        if received < 0 {
            if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { return }
            return close()  // a reset or an error: the client is gone
        }
        if received == 0 { return inputEnded() }
        var taken = 0
        processing = true
        while taken < received, self.bufferEvent != nil, readsDirectlyAgain {
            guard case .complete(let head, let length) = parseHead(UnsafeRawBufferPointer(rebasing: scratch[taken..<received])),
                  !head.hasBody else { break }
            taken += length
            dispatch(head, body: [])
        }
        processing = false
        if taken < received, self.bufferEvent != nil {
            evbuffer_unfreeze(input, 0)
            _ = evbuffer_add(input, scratch.baseAddress! + taken, received - taken)
            evbuffer_freeze(input, 0)
        }
        processInput()
    }

    /// `readsDirectly` between requests of one read (`processing` is set meanwhile).
    private var readsDirectlyAgain: Bool {
        guard !awaitingAnswer, !closeAfterFlush, let bufferEvent else { return false }
        return evbuffer_get_length(bufferevent_get_output(bufferEvent)) <= Self.outputHighWater
    }

    /// A head from the start of `bytes`: the last one again when the client repeats its bytes.
    private func parseHead(_ bytes: UnsafeRawBufferPointer) -> RequestParser.HeadResult {
        if let repeated = lastHead.match(bytes) { return .complete(repeated.head, length: repeated.length) }
        let parsed = RequestParser.parseHead(bytes, maxHeadBytes: limits.maxHeaderBytes)
        if case .complete(let head, let length) = parsed { lastHead.remember(head, parsedFrom: bytes, length: length) }
        return parsed
    }

    /// The client shut its sending side (a FIN on a plain socket). After a complete request that
    /// is no departure (`nc -N`, scripts that shut down their write side once the request is
    /// out): what it sent is answered, then the connection closes. Found by an outside test: a
    /// job created that way was created upstream while its client heard nothing. Idle, or with a
    /// head or body cut short, the client has left.
    private func inputEnded() {
        guard let bufferEvent else { return }
        let input = bufferevent_get_input(bufferEvent)!
        // A body cut short can never be whole: that request is not answered.
        let bodyCutShort = pendingHead.map { !Self.bodyIsBuffered(for: $0, chunked: chunkedBody, in: input) } ?? false
        guard !bodyCutShort, bodyStream.map({ Self.streamCanFinish($0, from: input) }) ?? true else { return close() }
        clientFinished = true
        stopReading()
        // What is buffered is answered, then the connection ends once its output is written
        // (`endIfClientFinished`, from `processInput`): closing here at once dropped the rest
        // of an answer the socket had not taken yet (found by review).
        processInput()
        // An answer that waits for something other than the request (a held request, a change
        // stream) is told: its client may have gone for good, which a FIN cannot tell apart
        // from a half-close, and it would otherwise learn so only from a failed write.
        if awaitingAnswer, let current { current.clientFinished() }
        responseStream?.clientFinished()
    }

    /// Ends the connection once what is already in its output is written (answers to the
    /// requests before a FIN), taking no further request from its input.
    private func closeOnceWritten() {
        guard bufferEvent != nil else { return }
        if let stream = bodyStream {
            bodyStream = nil
            bodyStreamHead = nil
            bodyTimer?.cancel()
            bodyTimer = nil
            stream.finish(.failure(.clientGone))
        }
        stopReading()
        if pendingOutput == 0 { return close() }
        closeAfterFlush = true
    }

    /// Whether the input holds the rest of a streamed body: its length, or the end of its
    /// chunks (a copy of the decoder tried on what is buffered). Found by review: a complete
    /// upload sat whole in the input while its stream waited for the upstream connection.
    private static func streamCanFinish(_ stream: RequestBodyStream, from input: OpaquePointer) -> Bool {
        if stream.isComplete { return true }
        let available = evbuffer_get_length(input)
        switch stream.framing {
        case .length(let remaining):
            return available >= remaining
        case .chunked(let decoder):
            return chunksEnd(decoder, in: input)
        }
    }

    /// Whether the input holds the last chunk of a body `decoder` has read so far (a copy of
    /// it is tried on what is buffered; the input is not consumed).
    private static func chunksEnd(_ decoder: RequestParser.ChunkedDecoder, in input: OpaquePointer, after offset: Int = 0) -> Bool {
        let available = evbuffer_get_length(input)
        guard available > offset, let start = evbuffer_pullup(input, -1) else { return false }
        var probe = decoder
        _ = probe.feed(UnsafeRawBufferPointer(start: start + offset, count: available - offset)) { _ in }
        if case .done = probe.progress { return true }
        return false
    }

    /// The same for a body read whole before the handler sees it.
    /// A decoder to probe `head`'s chunked body with (nil for a body framed by length).
    private static func probeDecoder(_ head: RequestParser.Head) -> RequestParser.ChunkedDecoder? {
        head.isChunked ? RequestParser.ChunkedDecoder(maxBodyBytes: .max) : nil
    }

    /// `offset`: where the body starts in the input (after its head, when that is still there).
    private static func bodyIsBuffered(for head: RequestParser.Head, chunked: RequestParser.ChunkedDecoder?, in input: OpaquePointer,
                                       after offset: Int = 0) -> Bool {
        if let chunked { return chunksEnd(chunked, in: input, after: offset) }
        return evbuffer_get_length(input) - offset >= head.contentLength ?? 0
    }

    /// Once the client has sent all it will (`inputEnded`) and nothing it sent waits for an
    /// answer, the connection ends when its output is written.
    private func endIfClientFinished() {
        guard clientFinished, !processing, !awaitingAnswer, bodyStream == nil, responseStream == nil, !closeAfterFlush,
              let bufferEvent else { return }
        // Requests still in the input, held back by unsent output, are answered first.
        let output = bufferevent_get_output(bufferEvent)!
        if evbuffer_get_length(output) > Self.outputHighWater, evbuffer_get_length(bufferevent_get_input(bufferEvent)) > 0 { return }
        if evbuffer_get_length(output) == 0 { return close() }
        closeAfterFlush = true
    }

    /// Whether the answer being written is the last this connection carries: the client sent
    /// its FIN and no request follows this one in the input.
    var answersLastRequest: Bool {
        guard clientFinished, let bufferEvent else { return false }
        let input = bufferevent_get_input(bufferEvent)!
        let available = evbuffer_get_length(input)
        guard available > 0 else { return true }
        // What follows in the input can never grow: a request cut short there is never
        // answered, so this answer is the last (found by review: it went without
        // `Connection: close` before a half-sent head, and the connection ended after it).
        let length = min(available, limits.maxHeaderBytes + 1)
        guard let start = evbuffer_pullup(input, length) else { return true }
        switch RequestParser.parseHead(UnsafeRawBufferPointer(start: start, count: length), maxHeadBytes: limits.maxHeaderBytes) {
        case .incomplete: return true
        case .invalid: return false  // answered in turn, with its own refusal
        case .complete(let head, let headLength):
            // Its body, by length or chunks, as `processInput` checks it after the FIN.
            return !Self.bodyIsBuffered(for: head, chunked: Self.probeDecoder(head), in: input, after: headLength)
        }
    }

    /// One read takes up to this much (libevent's own reads take 4 KiB): with libevent's chain
    /// header, one 16 KiB allocation. Found by review: 64 KiB reserved 128 KiB of address
    /// space for every connection with a byte of input waiting.
    static let readSize = (16 << 10) - 128

    /// Keeps the read event added while reading is wanted and the input has room, as the
    /// bufferevent's read watermark did: a full input stops reading until requests are taken.
    private func updateReading() {
        guard let bufferEvent else { return }
        guard let reader else {
            bufferevent_setwatermark(bufferEvent, Int16(EV_READ), 0, inputLimit)
            if !readingWanted { bufferevent_disable(bufferEvent, Int16(EV_READ)) }
            return
        }
        let wanted = readingWanted && evbuffer_get_length(bufferevent_get_input(bufferEvent)) < inputLimit
        guard wanted != readerPending else { return }
        readerPending = wanted
        if wanted {
            var timeout = server?.timeout ?? timeval(tv_sec: 60, tv_usec: 0)
            event_add(reader, &timeout)
        } else {
            event_del(reader)
        }
    }

    private func stopReading() {
        readingWanted = false
        updateReading()
    }

    /// Closes the socket at once; an answer still pending is told its client is gone.
    func close() {
        guard let bufferEvent else { return }
        self.bufferEvent = nil
        if let reader {
            self.reader = nil
            event_free(reader)
        }
        bufferevent_free(bufferEvent)
        spareRequest = nil
        withExtendedLifetime(self) {
            let lost = unflushedAnswers
            unflushedAnswers = 0
            server?.answersFlushed(lost)
            if awaitingAnswer, let current { current.clientGone() }
            bodyTimer?.cancel()
            bodyTimer = nil
            if let stream = bodyStream {
                bodyStream = nil
                stream.finish(.failure(.clientGone))
            }
            if let stream = responseStream {
                responseStream = nil
                server?.requestAnswered(awaitingFlush: false)
                stream.clientGone()
            }
            server?.connectionClosed(self)
        }
    }

    private func event(_ events: Int16) {
        if events & Int16(BEV_EVENT_TIMEOUT) != 0, events & Int16(BEV_EVENT_READING) != 0, awaitingAnswer,
           bodyStream?.isReading != true, let bufferEvent {
            // The client waits for an answer that takes a while (an upstream call): not idle.
            // Reading stays on to notice the client leaving.
            bufferevent_enable(bufferEvent, Int16(EV_READ))
            return
        }
        if events & Int16(BEV_EVENT_CONNECTED) != 0 { return }
        close()
    }

    private func outputDrained() {
        if let responseStream {
            // Below the low-water mark: the producer may write again.
            return responseStream.drained()
        }
        let flushed = unflushedAnswers
        unflushedAnswers = 0
        if closeAfterFlush {
            close()
            server?.answersFlushed(flushed)
            return
        }
        server?.answersFlushed(flushed)
        processInput()
    }

    /// Parses and dispatches whatever complete requests the input holds, one at a time.
    func processInput() {
        guard !processing else { return }
        processing = true
        defer {
            processing = false
            // What was taken from the input may make room to read again.
            updateReading()
            if clientFinished { endIfClientFinished() }
        }
        if let stream = bodyStream {
            feed(stream)
            // The next request's head comes after this body.
            if bodyStream != nil { return }
        }
        if responseStream?.discardsInput == true, let bufferEvent {
            let input = bufferevent_get_input(bufferEvent)!
            evbuffer_drain(input, evbuffer_get_length(input))
            return
        }
        while let bufferEvent, !awaitingAnswer, !closeAfterFlush {
            if evbuffer_get_length(bufferevent_get_output(bufferEvent)) > Self.outputHighWater { return }
            let input = bufferevent_get_input(bufferEvent)!
            let available = evbuffer_get_length(input)
            guard available > 0 else { return }
            let now = ContinuousClock.now
            if requestDeadline == nil { requestDeadline = now + .seconds(limits.timeoutSeconds) }
            if let head = pendingHead {
                guard readBody(head, input: input, available: available) else {
                    // After the client's FIN the rest of this body never comes.
                    if clientFinished { return closeOnceWritten() }
                    return overdue(now)
                }
                continue
            }
            let length = min(available, limits.maxHeaderBytes + 1)
            guard let start = evbuffer_pullup(input, length) else { return }
            switch parseHead(UnsafeRawBufferPointer(start: start, count: length)) {
            case .incomplete:
                return overdue(now)
            case .invalid(let status, let message):
                return refuse(status, message)
            case .complete(let head, let headLength):
                evbuffer_drain(input, headLength)
                // After the client's FIN, a request whose body is not all here is not one: it
                // is neither admitted nor sent anywhere (found by review: a cut-short upload
                // opened an upstream transfer and held the connection for its deadline).
                if clientFinished, head.hasBody,
                   !Self.bodyIsBuffered(for: head, chunked: Self.probeDecoder(head), in: input) {
                    return closeOnceWritten()
                }
                let admission = head.hasBody ? server?.admitHead?(head, peer) : nil
                let reading = admission?.reading ?? .whole
                let limit = if case .streamed(let maxBytes) = reading { maxBytes } else { limits.maxBodyBytes }
                if let declared = head.contentLength, declared > limit {
                    return refuse(413, "the request body is larger than \(limit) bytes", head: head, decided: admission?.decided)
                }
                guard head.hasBody else {
                    dispatch(head, body: [])
                    continue
                }
                // Nobody's body is read (nor 100 Continue sent) before the head is admitted.
                if let refusal = admission?.refusal {
                    return refuse(refusal, head: head, decided: admission?.decided)
                }
                pendingDecision = admission?.decided
                if reading != .whole {
                    startBodyStream(head, maxBytes: limit)
                    continue
                }
                pendingHead = head
                chunkedBody = head.isChunked ? RequestParser.ChunkedDecoder(maxBodyBytes: limits.maxBodyBytes) : nil
                sentContinue = false
                // The body gets time in proportion to its size: one more timeout per MiB.
                let bodyBytes = head.contentLength ?? limits.maxBodyBytes
                requestDeadline = now + .seconds(limits.timeoutSeconds * (1 + Double(bodyBytes) / Double(1 << 20)))
                // A client waiting for 100 Continue has sent nothing of its body yet.
                if evbuffer_get_length(input) == 0 { sendContinueIfAsked(head) }
            }
        }
    }

    /// Closes a connection whose request has not arrived by its deadline (408).
    private func overdue(_ now: ContinuousClock.Instant) {
        if let requestDeadline, now > requestDeadline {
            refuse(408, "the request took too long to arrive", head: pendingHead, decided: pendingDecision)
        }
    }

    /// Takes the body of `head` if it has all arrived; false while waiting (or after refusing).
    private func readBody(_ head: RequestParser.Head, input: OpaquePointer, available: Int) -> Bool {
        if var decoder = chunkedBody {
            // Only what has not been consumed stays in the buffer: each byte is decoded once.
            guard let start = evbuffer_pullup(input, -1) else { return false }
            let consumed = decoder.feed(UnsafeRawBufferPointer(start: start, count: available))
            evbuffer_drain(input, consumed)
            chunkedBody = decoder
            switch decoder.progress {
            case .done:
                pendingHead = nil
                chunkedBody = nil
                dispatch(head, body: decoder.body)
                return true
            case .needMore:
                sendContinueIfAsked(head)
                return false
            case .tooLarge:
                refuse(413, "the request body is larger than \(limits.maxBodyBytes) bytes", head: head, decided: pendingDecision)
                return false
            case .invalid:
                refuse(400, "invalid chunked body", head: head, decided: pendingDecision)
                return false
            }
        }
        let length = head.contentLength ?? 0
        guard available >= length else {
            sendContinueIfAsked(head)
            return false
        }
        let body = [UInt8](unsafeUninitializedCapacity: length) { storage, count in
            count = Int(evbuffer_remove(input, storage.baseAddress, length))
        }
        pendingHead = nil
        dispatch(head, body: body)
        return true
    }

    // MARK: Streamed request bodies

    /// Hands the request to the server at once; its body follows through `bodyStream`.
    private func startBodyStream(_ head: RequestParser.Head, maxBytes: Int) {
        guard let bufferEvent else { return }
        let framing: RequestBodyStream.Framing = head.isChunked
            ? .chunked(RequestParser.ChunkedDecoder(maxBodyBytes: maxBytes)) : .length(remaining: head.contentLength ?? 0)
        let stream = RequestBodyStream(connection: self, framing: framing)
        bodyStream = stream
        bodyStreamHead = head
        sentContinue = false
        // A small read-ahead: a consumer that pauses slows the client down instead of
        // letting this connection buffer megabytes. The idle timeout still applies.
        inputLimit = Self.streamedReadHighWater
        updateReading()
        dispatch(head, body: [], bodyStream: stream)
    }

    /// The consumer of `stream` started or resumed reading.
    func bodyWanted(_ stream: RequestBodyStream) {
        guard stream === bodyStream, let bufferEvent, let head = bodyStreamHead else { return }
        if bodyReadingSince == nil { bodyReadingSince = .now }
        checkBodyPace(stream)
        if evbuffer_get_length(bufferevent_get_input(bufferEvent)) == 0 { sendContinueIfAsked(head) }
        if !processing {
            processInput()
        } else {
            feed(stream)
            updateReading()
        }
    }

    /// Moves whatever body the input holds to the stream's consumer, while it reads.
    private func feed(_ stream: RequestBodyStream) {
        // An upload moves in large reads, not libevent's 4 KiB per turn (see `readAvailable`).
        if let bufferEvent, stream.isReading, server?.isTLS == false, !readAvailable(bufferEvent, upTo: Self.streamedReadHighWater) {
            return close()  // the client's socket failed (a reset): it is gone
        }
        while let bufferEvent, stream === bodyStream, stream.isReading {
            let input = bufferevent_get_input(bufferEvent)!
            let available = evbuffer_get_length(input)
            switch stream.framing {
            case .length(let remaining):
                if remaining > 0 {
                    // After the client's FIN, a body the input cannot finish never will.
                    guard available > 0 else { return clientFinished ? closeOnceWritten() : () }
                    let taken = min(remaining, available)
                    evbuffer_remove_buffer(input, stream.scratch, taken)
                    stream.framing = .length(remaining: remaining - taken)
                    stream.deliver()
                }
                if case .length(0) = stream.framing { endBodyStream(.success(())) }
            case .chunked(var decoder):
                guard available > 0, let start = evbuffer_pullup(input, -1) else { return clientFinished ? closeOnceWritten() : () }
                let scratch = stream.scratch
                let consumed = decoder.feed(UnsafeRawBufferPointer(start: start, count: available)) { piece in
                    _ = evbuffer_add(scratch, piece.baseAddress, piece.count)
                }
                evbuffer_drain(input, consumed)
                stream.framing = .chunked(decoder)
                stream.deliver()
                switch decoder.progress {
                case .needMore: if consumed == 0 { return clientFinished ? closeOnceWritten() : () }
                case .done: endBodyStream(.success(()))
                case .tooLarge: endBodyStream(.failure(.tooLarge))
                case .invalid: endBodyStream(.failure(.invalidFraming))
                }
            }
        }
    }

    /// The consumer paused: the time until it resumes is not the client's.
    func bodyPaused(_ stream: RequestBodyStream) {
        guard stream === bodyStream, let since = bodyReadingSince else { return }
        bodyReadingSpent += .now - since
        bodyReadingSince = nil
        bodyTimer?.cancel()
        bodyTimer = nil
    }

    /// Ends a streamed body that is late (408), or arms a timer for when it would be.
    private func checkBodyPace(_ stream: RequestBodyStream) {
        bodyTimer?.cancel()
        bodyTimer = nil
        guard stream === bodyStream, let since = bodyReadingSince, let loop = server?.loop else { return }
        let allowed = limits.timeoutSeconds * (1 + Double(stream.deliveredBytes) / Double(1 << 20))
        let spent = bodyReadingSpent + (.now - since)
        let remaining = allowed - (Double(spent.components.seconds) + Double(spent.components.attoseconds) / 1e18)
        guard remaining > 0 else { return endBodyStream(.failure(.timedOut)) }
        bodyTimer = loop.schedule(after: remaining) { [weak self, weak stream] in
            guard let self, let stream else { return }
            checkBodyPace(stream)
        }
    }

    private func endBodyStream(_ result: Result<Void, BodyStreamError>) {
        guard let stream = bodyStream, let bufferEvent else { return }
        bodyStream = nil
        bodyStreamHead = nil
        bodyTimer?.cancel()
        bodyTimer = nil
        bodyReadingSince = nil
        bodyReadingSpent = .zero
        if case .failure = result {
            // What follows in the input is not a request: nothing more is read.
            closeAfterFlush = true
        }
        inputLimit = readHighWater
        updateReading()
        stream.finish(result)
    }

    // MARK: Streamed answers

    /// Writes the head of a streamed answer; its body follows through `stream`.
    func beginStreamed(head: [UInt8], stream: ResponseStream) -> Bool {
        current = nil
        guard let bufferEvent, responseStream == nil else { return false }
        responseStream = stream
        let output = bufferevent_get_output(bufferEvent)!
        head.withUnsafeBytes { _ = evbuffer_add(output, $0.baseAddress, $0.count) }
        // The producer is told to write again once the client has read down to this.
        bufferevent_setwatermark(bufferEvent, Int16(EV_WRITE), ResponseStream.lowWater, 0)
        return true
    }

    func writeStreamed(_ buffer: OpaquePointer, chunked: Bool) {
        guard let bufferEvent else { return }
        let output = bufferevent_get_output(bufferEvent)!
        if chunked { appendChunk(buffer, to: output) } else { evbuffer_add_buffer(output, buffer) }
    }

    /// The streamed answer is whole: the next request may be read once it is out.
    func endStreamed(_ stream: ResponseStream, terminator: Bool) {
        guard stream === responseStream else { return }
        finishStreamed(close: false, terminator: terminator)
    }

    /// The streamed answer cannot be completed: the connection closes once what was written
    /// is out, without a terminator, so the client sees the answer broken.
    func abortStreamed(_ stream: ResponseStream) {
        guard stream === responseStream else { return }
        finishStreamed(close: true, terminator: false)
    }

    private func finishStreamed(close: Bool, terminator: Bool) {
        responseStream = nil
        guard let bufferEvent else { return }
        bufferevent_setwatermark(bufferEvent, Int16(EV_WRITE), 0, 0)
        if terminator { _ = evbuffer_add(bufferevent_get_output(bufferEvent), "0\r\n\r\n", 5) }
        awaitingAnswer = false
        unflushedAnswers += 1
        // A request body not read to its end leaves bytes that are not a request.
        if close || streamedAnswerCloses || bodyStream != nil {
            bodyStream?.finish(.failure(.clientGone))
            bodyStream = nil
            bodyTimer?.cancel()
            bodyTimer = nil
            closeAfterFlush = true
            stopReading()
        }
        server?.requestAnswered(awaitingFlush: true)
        // With nothing left to send, the write callback will not come: look at the input now.
        if evbuffer_get_length(bufferevent_get_output(bufferEvent)) == 0 { outputDrained() } else { answered() }
    }

    /// The streamed answer's head said `Connection: close`.
    var streamedAnswerCloses = false

    private func sendContinueIfAsked(_ head: RequestParser.Head) {
        guard head.expectsContinue, head.minorVersion == 1, !sentContinue, let bufferEvent else { return }
        sentContinue = true
        let line = "HTTP/1.1 100 Continue\r\n\r\n"
        _ = bufferevent_write(bufferEvent, line, line.utf8.count)
    }

    private func dispatch(_ head: RequestParser.Head, body: [UInt8], bodyStream: RequestBodyStream? = nil) {
        requestDeadline = nil
        guard let server else { return }
        streamedAnswerCloses = false
        var request: ServerRequest
        if let spare = spareRequest {
            spareRequest = nil
            spare.reuse(head: head, body: body, bodyStream: bodyStream, peer: peer, admission: pendingDecision, connection: self, server: server)
            request = spare
        } else {
            request = ServerRequest(head: head, body: body, bodyStream: bodyStream, peer: peer, admission: pendingDecision,
                                    connection: self, server: server)
        }
        pendingDecision = nil
        current = request
        awaitingAnswer = true
        server.dispatch(request)
        // Answered at once (a hit) and kept by nobody: the next request takes this object. One
        // that carried a body is let go rather than holding the body until then.
        if request.isAnswered, body.isEmpty, bodyStream == nil, isKnownUniquelyReferenced(&request) {
            request.forgetContent()
            spareRequest = request
        }
    }

    /// Writes an answer (head bytes, then the body) and reads on unless the exchange ends the
    /// connection. `counted`: the server counts the answer as awaiting its flush. Returns
    /// whether the answer waits in the output buffer (false: sent already, or the connection
    /// is closed).
    func write(head: [UInt8], body: ResponseBody?, close: Bool, counted: Bool = true) -> Bool {
        awaitingAnswer = false
        current = nil
        guard let bufferEvent else { return false }
        var close = close
        if let stream = bodyStream {
            // Answered before its body was all read: the rest is never read.
            bodyStream = nil
            bodyStreamHead = nil
            bodyTimer?.cancel()
            bodyTimer = nil
            close = true
            stream.finish(.failure(.clientGone))
        }
        let output = bufferevent_get_output(bufferEvent)!
        // With nothing queued before it, the answer goes out at once: one sendmsg, and no
        // EV_WRITE turned on and off again (two epoll_ctl) for an answer the socket takes
        // whole. What the socket does not take waits in the output buffer, as every answer
        // did before, and the bufferevent writes it when the socket drains.
        let sent = close || evbuffer_get_length(output) != 0 ? 0 : sendAtOnce(head: head, body: body, fd: bufferevent_getfd(bufferEvent))
        let bodyCount = switch body {
        case .bytes(let bytes)?: bytes.count
        case .shared(let shared)?: shared.count
        case nil: 0
        }
        if sent == head.count + bodyCount { return false }
        if sent < head.count {
            head.withUnsafeBytes { _ = evbuffer_add(output, $0.baseAddress! + sent, $0.count - sent) }
        }
        let bodySent = max(0, sent - head.count)
        switch body {
        case .bytes(let bytes)?: bytes.withUnsafeBytes { _ = evbuffer_add(output, $0.baseAddress! + bodySent, $0.count - bodySent) }
        case .shared(let shared)?: shared.addReference(to: output, from: bodySent)
        case nil: break
        }
        if counted { unflushedAnswers += 1 }
        if close {
            closeAfterFlush = true
            stopReading()
        }
        return true
    }

    /// Sends what the socket takes of `head` and `body` in one call; the bytes sent (0 on
    /// EAGAIN or an error, which the bufferevent's own write then meets). Not on TLS.
    private func sendAtOnce(head: [UInt8], body: ResponseBody?, fd: Int32) -> Int {
        guard fd >= 0, server?.isTLS == false, responseStream == nil else { return 0 }
        return head.withUnsafeBytes { head in
            switch body {
            case .bytes(let bytes)?: return bytes.withUnsafeBytes { Self.sendMessage(fd, head, $0) }
            // The holder's address, valid while the holder lives. No closure value is made here
            // to be called from another closure: its context was allocated on every answer.
            case .shared(let shared)?: return withExtendedLifetime(shared) { Self.sendMessage(fd, head, shared.heldBuffer) }
            case nil: return Self.sendMessage(fd, head, UnsafeRawBufferPointer(start: nil, count: 0))
            }
        }
    }

    /// One sendmsg of `head` and `body`; the bytes sent, 0 on an error.
    private static func sendMessage(_ fd: Int32, _ head: UnsafeRawBufferPointer, _ body: UnsafeRawBufferPointer) -> Int {
        var vectors = (iovec(iov_base: UnsafeMutableRawPointer(mutating: head.baseAddress), iov_len: head.count),
                       iovec(iov_base: UnsafeMutableRawPointer(mutating: body.baseAddress), iov_len: body.count))
        // sendmsg rather than writev: MSG_NOSIGNAL, so a peer gone gives EPIPE, not SIGPIPE.
        let sent = withUnsafeMutablePointer(to: &vectors) {
            $0.withMemoryRebound(to: iovec.self, capacity: 2) { vector in
                var message = msghdr()
                message.msg_iov = vector
                message.msg_iovlen = body.isEmpty ? 1 : 2
                return sendmsg(fd, &message, Int32(MSG_NOSIGNAL))
            }
        }
        return max(0, sent)
    }

    /// Continues with pipelined requests once an answer given later (not from inside the
    /// handler) is written.
    func answered() {
        if !processing { processInput() }
    }

    /// Answers a request the server cannot take (bad framing, over a limit) and closes.
    /// `head`: the request's, when it was parsed (the server's recording step is told); `decided`:
    /// what its admission decided.
    private func refuse(_ status: Int, _ message: String, head: RequestParser.Head? = nil, decided: AnyObject? = nil) {
        let body = Array("{\"error\":{\"code\":\"\(errorCode(status))\",\"message\":\"\(message)\",\"details\":null}}".utf8)
        refuse(HeadRefusal(status: status, headers: HTTPHeaders([("Content-Type", "application/json")]), body: body), head: head, decided: decided)
    }

    /// Answers `refusal` and closes: the request's body, if any, is never read.
    private func refuse(_ refusal: HeadRefusal, head: RequestParser.Head? = nil, decided: AnyObject? = nil) {
        guard let server else { return }
        if let head { server.onHeadRefused?(head, peer, refusal, decided) }
        pendingHead = nil
        pendingDecision = nil
        chunkedBody = nil
        var head = Array("HTTP/1.1 \(refusal.status) \(reasonPhrase(refusal.status))\r\n".utf8)
        head += refusal.headers.wireLines().lines
        head += Array("Content-Length: \(refusal.body.count)\r\n".utf8)
        head += server.currentDateLine()
        head += Array("Connection: close\r\n\r\n".utf8)
        // Not a request the server counted: its flush needs no accounting.
        _ = write(head: head, body: .bytes(refusal.body), close: true, counted: false)
    }

    private func errorCode(_ status: Int) -> String {
        switch status {
        case 408: "request_timeout"
        case 413: "payload_too_large"
        case 417: "expectation_failed"
        case 431: "request_header_fields_too_large"
        case 501: "not_implemented"
        case 505: "http_version_not_supported"
        default: "bad_request"
        }
    }
}

/// What `HTTPServer.admitHead` decided of a request with a body, from its head.
public struct HeadAdmission {
    public let reading: BodyReading
    /// Set: the request is answered with it, and its body is never read.
    public let refusal: HeadRefusal?
    /// Carried to the handler as `ServerRequest.admission`.
    public let decided: AnyObject?

    public init(reading: BodyReading = .whole, refusal: HeadRefusal? = nil, decided: AnyObject? = nil) {
        self.reading = reading
        self.refusal = refusal
        self.decided = decided
    }
}

/// An answer to a request refused on its head alone (see `HTTPServer.admitHead`).
public struct HeadRefusal: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: [UInt8]

    public init(status: Int, headers: HTTPHeaders, body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

/// The body of an answer: bytes to copy, or bytes to send by reference.
public enum ResponseBody {
    case bytes([UInt8])
    case shared(any HeldBytes)

    public var count: Int {
        switch self {
        case .bytes(let bytes): bytes.count
        case .shared(let shared): shared.count
        }
    }
}
