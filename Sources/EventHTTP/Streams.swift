import CLibevent

/// How the server reads a request's body: whole, before the handler sees the request (bounded
/// by `ServerLimits.maxBodyBytes`), or streamed to the handler as it arrives, at most
/// `maxBytes` (a larger `Content-Length` is refused with 413 before the handler sees it; a
/// chunked body that grows past it fails the stream with `.tooLarge`).
public enum BodyReading: Sendable, Equatable {
    case whole
    case streamed(maxBytes: Int)
}

/// Why a streamed request body did not arrive whole.
public enum BodyStreamError: Error, Sendable, Equatable {
    /// A chunked body passed the limit.
    case tooLarge
    /// The chunked framing is invalid.
    case invalidFraming
    /// The client stopped sending, or left.
    case clientGone
    /// The client sent too slowly: it had `timeout` seconds of reading, plus one more per MiB
    /// delivered, and the body was not done (slowloris on an upload).
    case timedOut
}

/// A request body that arrives while the request is handled. Nothing is read from the client
/// (and no `100 Continue` sent) before `start`; `pause` stops taking bytes, so that the client
/// is slowed down by TCP once the connection's small input buffer is full. Loop thread only.
public final class RequestBodyStream {
    enum Framing {
        case length(remaining: Int)
        case chunked(RequestParser.ChunkedDecoder)
    }

    weak var connection: ServerConnection?
    var framing: Framing
    /// Bytes handed on so far.
    public private(set) var deliveredBytes = 0
    public private(set) var isComplete = false
    private(set) var isStarted = false
    public private(set) var isPaused = false
    /// Given each piece of body in an evbuffer it must empty.
    private var onData: ((OpaquePointer) -> Void)?
    private var onEnd: ((Result<Void, BodyStreamError>) -> Void)?
    /// One evbuffer reused for every piece.
    let scratch: OpaquePointer = evbuffer_new()

    init(connection: ServerConnection, framing: Framing) {
        self.connection = connection
        self.framing = framing
    }

    deinit { evbuffer_free(scratch) }

    /// The declared length, for a body framed by `Content-Length`; nil for a chunked one.
    public var declaredLength: Int? {
        if case .length(let remaining) = framing { return remaining + deliveredBytes }
        return nil
    }

    /// Starts reading: `onData` gets each piece as bytes it may keep, `onEnd` runs once.
    public func start(onData: @escaping ([UInt8]) -> Void, onEnd: @escaping (Result<Void, BodyStreamError>) -> Void) {
        start(evbuffer: { buffer in onData(bytes(of: buffer)) }, onEnd: onEnd)
    }

    /// Starts reading, each piece in an evbuffer that `onData` must empty (move it, no copy).
    func start(evbuffer onData: @escaping (OpaquePointer) -> Void, onEnd: @escaping (Result<Void, BodyStreamError>) -> Void) {
        guard !isStarted else { return }
        isStarted = true
        self.onData = onData
        self.onEnd = onEnd
        if isComplete { return finish(.success(())) }
        connection?.bodyWanted(self)
    }

    public func pause() {
        guard !isPaused else { return }
        isPaused = true
        connection?.bodyPaused(self)
    }

    public func resume() {
        guard isPaused else { return }
        isPaused = false
        connection?.bodyWanted(self)
    }

    var isReading: Bool { isStarted && !isPaused && !isComplete && onEnd != nil }

    /// Hands on what `scratch` holds.
    func deliver() {
        let length = evbuffer_get_length(scratch)
        guard length > 0 else { return }
        deliveredBytes += length
        onData?(scratch)
        evbuffer_drain(scratch, evbuffer_get_length(scratch))
    }

    func finish(_ result: Result<Void, BodyStreamError>) {
        if case .success = result { isComplete = true }
        guard let onEnd else { return }
        self.onEnd = nil
        onData = nil
        onEnd(result)
    }
}

/// The length of a streamed answer: known up front (`Content-Length`), or not (chunked to an
/// HTTP/1.1 client, ended by closing the connection for HTTP/1.0).
public enum StreamedLength: Sendable, Equatable {
    case known(Int)
    case unknown
}

/// An answer whose body is written as it is produced. The client's connection buffers at most
/// about `highWater` bytes: past it `wantsMore` is false until the client has read enough, and
/// `onDrain` tells when to write again. An answer that cannot be completed is `abort`ed: the
/// connection closes without the chunked terminator (or short of the declared length), so the
/// client sees an error, never a truncated answer that looks whole. Loop thread only.
public final class ResponseStream {
    weak var connection: ServerConnection?
    let length: StreamedLength
    let chunked: Bool
    /// The answer has no body (HEAD, 204, 304): writes are ignored.
    let bodiless: Bool
    public private(set) var writtenBytes = 0
    public private(set) var isFinished = false
    /// Called when the client's buffer has room again after `wantsMore` was false.
    public var onDrain: (() -> Void)?
    /// Called once if the client leaves before the end.
    public var onClientGone: (() -> Void)?
    /// Called once if the client shuts its sending side (a FIN) before the end: gone, or
    /// reading on after a half-close.
    public var onClientFinished: (() -> Void)?
    /// Whatever the client sends while this answer is written is dropped, not kept for a next
    /// request: for an answer that ends with its connection (a change stream), whose client
    /// could otherwise park the connection's whole input limit for the stream's life.
    public var discardsInput = false
    public static let highWater = 1 << 20
    static let lowWater = 256 << 10

    init(connection: ServerConnection, length: StreamedLength, chunked: Bool, bodiless: Bool) {
        self.connection = connection
        self.length = length
        self.chunked = chunked
        self.bodiless = bodiless
    }

    /// Whether the client's buffer has room for more.
    public var wantsMore: Bool { (connection?.pendingOutput ?? 0) < Self.highWater }

    public var isClientGone: Bool { connection?.isOpen != true }

    /// Bytes written and not yet taken by the client's socket.
    public var pendingBytes: Int { connection?.pendingOutput ?? 0 }

    /// Writes bytes of the body (copied).
    public func write(_ bytes: [UInt8]) {
        guard !bytes.isEmpty, let scratch = evbuffer_new() else { return }
        defer { evbuffer_free(scratch) }
        bytes.withUnsafeBytes { _ = evbuffer_add(scratch, $0.baseAddress, $0.count) }
        write(evbuffer: scratch)
    }

    /// Moves everything `buffer` holds into the answer (no copy).
    func write(evbuffer buffer: OpaquePointer) {
        let count = evbuffer_get_length(buffer)
        guard !isFinished, count > 0, let connection, !bodiless else {
            // Nothing to send it to (finished, gone, or an answer without a body): dropped.
            evbuffer_drain(buffer, count)
            return
        }
        if case .known(let total) = length, writtenBytes + count > total {
            // More than declared would be read as the start of the next answer.
            evbuffer_drain(buffer, count)
            return abort()
        }
        writtenBytes += count
        connection.writeStreamed(buffer, chunked: chunked)
    }

    /// Ends the answer. An answer of known length that got fewer bytes is aborted instead.
    public func finish() {
        guard !isFinished else { return }
        if !bodiless, case .known(let total) = length, writtenBytes != total { return abort() }
        isFinished = true
        connection?.endStreamed(self, terminator: chunked && !bodiless)
    }

    /// Ends the answer and closes the connection now, dropping what the socket has not taken:
    /// for a client known to have gone.
    public func closeNow() {
        guard !isFinished else { return }
        isFinished = true
        onClientGone = nil
        onClientFinished = nil
        onDrain = nil
        connection?.close()
    }

    /// Ends the answer with an error the client can see: the connection closes short.
    public func abort() {
        guard !isFinished else { return }
        isFinished = true
        connection?.abortStreamed(self)
    }

    func clientGone() {
        guard !isFinished else { return }
        isFinished = true
        let callback = onClientGone
        onClientGone = nil
        onClientFinished = nil
        onDrain = nil
        callback?()
    }

    func clientFinished() {
        guard !isFinished else { return }
        let callback = onClientFinished
        onClientFinished = nil
        callback?()
    }

    func drained() {
        onDrain?()
    }
}

/// Moves everything `piece` holds into `output` as one chunk of a chunked body (RFC 9112 7.1):
/// size line, the bytes (moved, not copied), CRLF.
func appendChunk(_ piece: OpaquePointer, to output: OpaquePointer) {
    let sizeLine = String(evbuffer_get_length(piece), radix: 16) + "\r\n"
    _ = evbuffer_add(output, sizeLine, sizeLine.utf8.count)
    evbuffer_add_buffer(output, piece)
    _ = evbuffer_add(output, "\r\n", 2)
}

