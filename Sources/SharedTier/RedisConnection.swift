import CHiredis
import CLibevent
import EventHTTP

/// One connection to Redis through hiredis's asynchronous API, attached to the proxy's own
/// `event_base`: nothing on it blocks the loop, and every command has a timer of its own.
///
/// Loop-bound: created, used and closed on the loop thread. hiredis owns the context's memory;
/// this object is found from its callbacks through the context's `data` pointer, and stays
/// alive until hiredis has called back for the last time (`close` frees the context on a
/// later turn of the loop, never from inside one of hiredis's callbacks).
final class RedisConnection {
    private let loop: EventLoop
    private var context: UnsafeMutablePointer<redisAsyncContext>?
    private var connectTimer: LoopTimer?
    private var connected = false
    private var closed = false
    private var onConnect: ((Bool) -> Void)?
    /// Called once when the connection ends after it was up (by either side).
    var onClose: (() -> Void)?
    /// Messages of the channels subscribed to: (channel, payload).
    var onMessage: ((String, [UInt8]) -> Void)?

    /// Keeps this object alive while hiredis may still call back into it.
    private var selfWhileOpen: RedisConnection?

    init(loop: EventLoop) {
        self.loop = loop
    }

    /// Connects to a numeric address; `completion` runs on the loop with whether the connection
    /// is up, within `timeout` seconds.
    func open(ip: String, port: Int, timeout: Double, completion: @escaping (Bool) -> Void) {
        loop.assertOnLoop()
        guard let made = pp_redis_connect(ip, Int32(port), loop.base) else { return completion(false) }
        if made.pointee.err != 0 {
            redisAsyncFree(made)
            return completion(false)
        }
        context = made
        selfWhileOpen = self
        onConnect = completion
        made.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        redisAsyncSetConnectCallback(made, { context, status in
            guard let connection = RedisConnection.owner(of: context) else { return }
            connection.connectFinished(ok: status == REDIS_OK)
        })
        redisAsyncSetDisconnectCallback(made, { context, _ in
            guard let connection = RedisConnection.owner(of: context) else { return }
            connection.disconnected()
        })
        connectTimer = loop.schedule(after: timeout) { [weak self] in
            guard let self, !connected else { return }
            close()
        }
    }

    private static func owner(of context: UnsafePointer<redisAsyncContext>?) -> RedisConnection? {
        guard let data = context?.pointee.data else { return nil }
        return Unmanaged<RedisConnection>.fromOpaque(data).takeUnretainedValue()
    }

    private func connectFinished(ok: Bool) {
        connectTimer?.cancel()
        connectTimer = nil
        if ok {
            connected = true
            let completion = onConnect
            onConnect = nil
            completion?(true)
        } else {
            // hiredis frees the context after this callback.
            context = nil
            finish()
        }
    }

    /// hiredis ended the connection (an error, the server closed it, or our free): it frees
    /// the context itself once this returns.
    private func disconnected() {
        context = nil
        finish()
    }

    private func finish() {
        guard !closed else { return }
        closed = true
        connectTimer?.cancel()
        connectTimer = nil
        if let onConnect {
            self.onConnect = nil
            onConnect(false)
        } else {
            onClose?()
        }
        onClose = nil
        onMessage = nil
        // Released on a later turn: hiredis may still be inside a callback into this object.
        let keep = selfWhileOpen
        selfWhileOpen = nil
        loop.schedule(after: 0) { _ = keep }
    }

    var isUp: Bool { connected && !closed && context != nil }

    /// Ends the connection: every command waiting gets `.unavailable`, `onClose` runs (or the
    /// open's completion with false). Safe to call more than once, and from a reply's callback.
    func close() {
        guard !closed else { return }
        guard let context else { return finish() }
        self.context = nil
        // Freed on a later turn of the loop: inside one of hiredis's callbacks a free would pull
        // the context from under it. The callbacks it makes while freeing still find this object.
        loop.schedule(after: 0) { [self] in
            // hiredis may have ended it meanwhile (and freed it then).
            guard !closed else { return }
            redisAsyncFree(context)
            finish()
        }
    }

    /// A command in flight: completed once, by its reply, its timer or the connection's end.
    private final class Pending {
        var completion: ((Result<RedisValue, RedisFailure>) -> Void)?
        var timer: LoopTimer?
        init(_ completion: @escaping (Result<RedisValue, RedisFailure>) -> Void) { self.completion = completion }

        func complete(_ result: Result<RedisValue, RedisFailure>) {
            timer?.cancel()
            timer = nil
            let completion = self.completion
            self.completion = nil
            completion?(result)
        }
    }

    /// Sends one command (its arguments as bytes, no quoting involved) and calls `completion`
    /// on the loop with the reply, or a failure after `timeout` seconds. A timed-out command's
    /// late reply is dropped.
    func send(_ arguments: [[UInt8]], timeout: Double, completion: @escaping (Result<RedisValue, RedisFailure>) -> Void) {
        loop.assertOnLoop()
        guard isUp, let context else { return completion(.failure(.unavailable)) }
        let pending = Pending(completion)
        let box = Unmanaged.passRetained(pending)
        let status = Self.withArgv(arguments) { count, argv, lengths in
            redisAsyncCommandArgv(context, { _, reply, privdata in
                guard let privdata else { return }
                let pending = Unmanaged<Pending>.fromOpaque(privdata).takeRetainedValue()
                guard let reply else { return pending.complete(.failure(.unavailable)) }
                let value = RedisValue(reply.assumingMemoryBound(to: redisReply.self))
                if case .error(let message) = value { return pending.complete(.failure(.replied(message))) }
                pending.complete(.success(value))
            }, box.toOpaque(), count, argv, lengths)
        }
        guard status == REDIS_OK else {
            box.release()
            return completion(.failure(.unavailable))
        }
        pending.timer = loop.schedule(after: timeout) { [weak pending] in
            pending?.complete(.failure(.timedOut))
        }
    }

    /// Subscribes to `channel`; its messages go to `onMessage`, and `confirmed` runs once Redis
    /// has confirmed the subscription (or with false when it could not be sent).
    func subscribe(_ channel: String, confirmed: @escaping (Bool) -> Void) {
        loop.assertOnLoop()
        guard isUp, let context else { return confirmed(false) }
        subscriptionConfirmed = confirmed
        let status = Self.withArgv([Array("SUBSCRIBE".utf8), Array(channel.utf8)]) { count, argv, lengths in
            // The callback runs for the confirmation and for every message, so its data is this
            // object (kept alive while open), not a one-shot box.
            redisAsyncCommandArgv(context, { context, reply, _ in
                guard let connection = RedisConnection.owner(of: context), let reply else { return }
                connection.pushed(RedisValue(reply.assumingMemoryBound(to: redisReply.self)))
            }, nil, count, argv, lengths)
        }
        if status != REDIS_OK {
            subscriptionConfirmed = nil
            confirmed(false)
        }
    }

    private var subscriptionConfirmed: ((Bool) -> Void)?

    private func pushed(_ value: RedisValue) {
        let parts = value.elements
        guard parts.count == 3, let kind = parts[0].text else { return }
        switch kind {
        case "subscribe":
            let confirmed = subscriptionConfirmed
            subscriptionConfirmed = nil
            confirmed?(true)
        case "message":
            guard let channel = parts[1].text, case .string(let payload) = parts[2] else { return }
            onMessage?(channel, payload)
        default:
            break
        }
    }

    /// Lays the arguments out in one buffer and calls `body` with hiredis's argv form; hiredis
    /// copies the command into its output buffer before returning.
    private static func withArgv(_ arguments: [[UInt8]],
                                 _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> Int32) -> Int32 {
        let joined: [UInt8] = arguments.flatMap { $0 } + [0]
        return joined.withUnsafeBufferPointer { buffer in
            buffer.baseAddress!.withMemoryRebound(to: CChar.self, capacity: buffer.count) { base in
                var pointers: [UnsafePointer<CChar>?] = []
                var lengths: [Int] = []
                var offset = 0
                for argument in arguments {
                    pointers.append(base + offset)
                    lengths.append(argument.count)
                    offset += argument.count
                }
                return pointers.withUnsafeMutableBufferPointer { argv in
                    lengths.withUnsafeBufferPointer { lengthBuffer in
                        body(Int32(arguments.count), argv.baseAddress!, lengthBuffer.baseAddress!)
                    }
                }
            }
        }
    }
}
