import EventHTTP
import JobCache
import ResponseCache

/// Requests held by `Prefer: wait` (RFC 7240): each until the bytes its client would get differ
/// from the ETag it sent (then 200), until its wait is over (then 304), or until the server
/// drains (304, and the connection closes). Owned by the loop thread.
final class HeldRequests {
    struct Held {
        let box: ExchangeBox
        let key: CacheKey
        let filters: JobListFilters
        let gzip: Bool
        let entityTag: EntityTag
        /// Whether the answer says `Vary: Accept-Encoding` (as a 304 must when a 200 would).
        let varies: Bool
        let deadline: ContinuousClock.Instant
    }

    private var byKey: [CacheKey: [Int: Held]] = [:]
    private var lastID = 0
    private(set) var count = 0
    var stored = StoredSinceLook<CacheKey>()
    /// The timer of the once-a-second look at deadlines and freshness, while any is held.
    var sweep: LoopTimer?
    var refreshes = RefreshSchedule()

    var keys: [CacheKey] { Array(byKey.keys) }

    func isWaiting(on key: CacheKey) -> Bool { byKey[key] != nil }

    func add(_ held: Held) -> Int {
        lastID += 1
        byKey[held.key, default: [:]][lastID] = held
        count += 1
        return lastID
    }

    func remove(_ id: Int, key: CacheKey) -> Held? {
        guard let held = byKey[key]?.removeValue(forKey: id) else { return nil }
        if byKey[key]?.isEmpty == true {
            byKey[key] = nil
            refreshes.forget(key)
        }
        count -= 1
        return held
    }

    func held(on key: CacheKey) -> [(id: Int, held: Held)] {
        (byKey[key] ?? [:]).map { ($0.key, $0.value) }
    }

    func all() -> [(id: Int, held: Held)] {
        byKey.values.flatMap { $0.map { ($0.key, $0.value) } }
    }
}

extension ProxyServer {
    /// Requests held by `Prefer: wait` now (read from any thread).
    public var heldRequestCount: Int { valueFromLoop { [self] in heldRequests.count } }

    /// Holds a request that would be answered 304 when it asks to wait (`Prefer: wait=N` on a
    /// job or a list, not yet held, not while draining); false when it is to be answered now.
    func holdsUntilChanged(_ exchange: Exchange, key: CacheKey, filters: JobListFilters, gzip: Bool, entityTag: EntityTag, varies: Bool) -> Bool {
        var exchange = exchange
        exchange.waitingSince = .now
        guard !exchange.hasWaited, !isDraining, !key.isRoute, settings.watchMaxWaitSeconds > 0,
              let seconds = WaitPreference.seconds(in: exchange.request.headers), seconds > 0 else { return false }
        // What happened while the cache looked (a revalidation can take a while) is not missed:
        // a client gone or finished is answered now; a token revoked meanwhile is refused
        // (found by review: such requests were held to their deadline, or answered with data).
        if exchange.request.isClientGone {
            answerDeparted(exchange, status: 304)
            return true
        }
        if exchange.request.hasClientFinished { return false }
        if answeredAsRevoked(&exchange) { return true }
        let wait = min(Double(seconds), settings.watchMaxWaitSeconds)
        let held = HeldRequests.Held(box: ExchangeBox(exchange), key: key, filters: filters, gzip: gzip, entityTag: entityTag, varies: varies,
                                     deadline: .now + .milliseconds(Int(wait * 1000)))
        let id = heldRequests.add(held)
        // A client that leaves is answered at once (nothing reaches it; the request is done,
        // and recorded as nginx's 499). One that sends its FIN may have left or may read on
        // after a half-close: it is answered as it stands now, rather than holding the
        // connection and the resource's refreshes until the deadline (found by review).
        exchange.request.onClientGone = { [weak self] in
            guard let self, let held = heldRequests.remove(id, key: key) else { return }
            answerUnchanged(held, recordedAs: 499)
        }
        exchange.request.onClientFinished = { [weak self] in
            guard let self, let held = heldRequests.remove(id, key: key) else { return }
            answerHeld(held)
        }
        if heldRequests.sweep == nil { scheduleHeldSweep() }
        return true
    }

    /// Told by the cache of every entry it stores: held requests on that key are looked at once
    /// the current event is done (not inside the cache's own step).
    func entryStored(_ key: CacheKey, _ answer: CachedAnswer) {
        guard heldRequests.count > 0, heldRequests.isWaiting(on: key) else { return }
        guard heldRequests.stored.note(key, answer) else { return }
        loop.schedule(after: 0) { [weak self] in self?.wakeChanged() }
    }

    /// Answers the held requests whose bytes changed.
    private func wakeChanged() {
        for (key, answer) in heldRequests.stored.take() {
            for (id, held) in heldRequests.held(on: key) {
                let served = cache.served(answer, key: key, filters: held.filters, gzip: held.gzip)
                guard served.entityTag != held.entityTag, let held = heldRequests.remove(id, key: key) else { continue }
                answerHeld(held)
            }
        }
    }

    /// Once a second while any request is held: answers those whose wait is over, and keeps each
    /// held resource fresh (`refreshWatched`).
    private func scheduleHeldSweep() {
        heldRequests.sweep = loop.schedule(after: 1) { [weak self] in
            guard let self else { return }
            heldRequests.sweep = nil
            let now = ContinuousClock.now
            for (id, held) in heldRequests.all() where held.deadline <= now {
                if let held = heldRequests.remove(id, key: held.key) { answerHeld(held) }
            }
            refreshWatched(heldRequests.keys, schedule: &heldRequests.refreshes, client: "prefer-wait") {
                [weak self] key in self?.heldRequests.refreshes.timed[key] = nil
            }
            if heldRequests.count > 0 { scheduleHeldSweep() }
        }
    }

    /// Answers a held request as the cache now has it: 200 if its bytes changed meanwhile, else 304.
    private func answerHeld(_ held: HeldRequests.Held) {
        var exchange = held.box.exchange
        exchange.hasWaited = true
        exchange.request.onClientGone = nil
        exchange.request.onClientFinished = nil
        exchange.extraHeaders.add("Preference-Applied", "wait")
        serveCached(exchange, CacheRequest(key: held.key, filters: held.filters, revalidate: false, requestID: exchange.requestID,
                                           client: exchange.caller.logName))
    }

    /// Answers a held request 304 at once, without looking in the cache (a drain, a client
    /// gone: then it is recorded as `recordedAs`, though nothing reaches the client).
    private func answerUnchanged(_ held: HeldRequests.Held, recordedAs recorded: Int? = nil) {
        var exchange = held.box.exchange
        exchange.hasWaited = true
        exchange.request.onClientFinished = nil
        exchange.extraHeaders.add("Preference-Applied", "wait")
        exchange.extraHeaders.add("ETag", held.entityTag.quoted)
        if held.varies { exchange.extraHeaders.add("Vary", "Accept-Encoding") }
        guard let recorded else { return finish(&exchange, status: 304, headers: HTTPHeaders(), body: []) }
        answerDeparted(exchange, status: 304, recordedAs: recorded)
    }

    /// After the clients file is reloaded: a held request whose token no longer reads is
    /// answered as a new request with it would be (401 or 403), not with the resource.
    func recheckHeldCallers() {
        for (id, held) in heldRequests.all() {
            var exchange = held.box.exchange
            guard !isStillAllowed(exchange), heldRequests.remove(id, key: held.key) != nil else { continue }
            exchange.request.onClientGone = nil
            exchange.request.onClientFinished = nil
            _ = authorize(&exchange)
        }
    }


    /// On drain: every held request is answered 304 now (the drain closes each connection).
    func answerHeldRequests() {
        heldRequests.sweep?.cancel()
        heldRequests.sweep = nil
        heldRequests.refreshes.cancelAll()
        for (id, held) in heldRequests.all() {
            if let held = heldRequests.remove(id, key: held.key) { answerUnchanged(held) }
        }
    }
}
