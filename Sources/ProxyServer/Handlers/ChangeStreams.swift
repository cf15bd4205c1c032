import EventHTTP
import JobCache
import ResponseCache

/// The change streams open now (`GET /v0/workflows/{w}/jobs?watch=1`, or the list route with
/// `Accept: text/event-stream`): Server-Sent Events, one `job` event per new or changed job
/// that matches the stream's filters. Every change is learnt from the workflow's list as the
/// cache stores it (`JobChanges`); each workflow with streams remembers which version of each
/// job its streams were told of. Owned by the loop thread.
final class ChangeStreams {
    final class Stream {
        let id: Int
        let workflow: String
        let filters: JobListFilters
        let client: String
        let response: ResponseStream
        /// For the recording step, once the stream ends.
        let exchange: Exchange
        /// The newest token sent: each event's `id:`.
        var newest: ChangeToken?
        /// Jobs to send, oldest change first, as ids: each is sent as the workflow's list has it
        /// when the connection has room (`pumpChangeStream`), so that a reader that falls
        /// behind costs the proxy ids, not bytes, and gets each job's latest version once.
        /// A job that changes again while queued moves to the end (nil where it was): sent at its
        /// old place as it is now, its newer id covered the older jobs still queued behind it,
        /// which a reader resuming from that id then never got (found by review).
        private var backlog: [CompactID?] = []
        private var backlogStart = 0
        private var queued: [CompactID: Int] = [:]
        /// When the reader last took bytes (or the stream opened).
        var lastProgress = ContinuousClock.now

        var hasBacklog: Bool { !queued.isEmpty }

        func enqueue(_ id: CompactID) {
            if let place = queued[id] { backlog[place] = nil }
            queued[id] = backlog.count
            backlog.append(id)
        }

        func dequeue() -> CompactID? {
            while backlogStart < backlog.count {
                let id = backlog[backlogStart]
                backlogStart += 1
                if let id {
                    queued[id] = nil
                    compact()
                    return id
                }
            }
            compact()
            return nil
        }

        /// Drops what was sent from the front once it is most of the backlog (places in `queued`
        /// move with it).
        private func compact() {
            if backlogStart == backlog.count {
                backlog.removeAll(keepingCapacity: backlog.count < 1024)
                backlogStart = 0
            } else if backlogStart >= 4096, backlogStart * 2 >= backlog.count {
                backlog.removeFirst(backlogStart)
                for (id, place) in queued { queued[id] = place - backlogStart }
                backlogStart = 0
            }
        }

        init(id: Int, workflow: String, filters: JobListFilters, client: String, response: ResponseStream, exchange: Exchange) {
            self.id = id
            self.workflow = workflow
            self.filters = filters
            self.client = client
            self.response = response
            self.exchange = exchange
        }
    }

    struct Watched {
        var streams: [Int: Stream] = [:]
        /// The list the streams were last told of (its versions are what was published): a job
        /// that leaves a stream's filters (a running job that completes, on `status=running`) is
        /// sent once more, as it is now; every event is rendered from it.
        var list: JobListDocument
        /// Where each job is in `list`.
        var index: [CompactID: Int]

        init(list: JobListDocument) {
            self.list = list
            index = Self.index(of: list)
        }

        static func index(of list: JobListDocument) -> [CompactID: Int] {
            Dictionary(list.jobs.indices.map { (list.jobs[$0].compactID, $0) }) { first, _ in first }
        }
    }

    private(set) var byWorkflow: [String: Watched] = [:]
    /// Streams open, being opened, or ended with bytes still on their way, in all and per
    /// client: a slot is taken before the list is fetched (many starts at once cannot pass the
    /// caps), and given back once the stream's connection has closed, so that the caps bound
    /// what streams hold (found by review: a stream ended by an overflow kept its unsent bytes
    /// until the write timeout while its slot went to a new stream).
    private(set) var count = 0
    /// Streams ended whose connection still sends what they were given.
    private var flushing: [Stream] = []
    private(set) var perClient: [String: Int] = [:]
    private var lastID = 0
    var stored = StoredSinceLook<String>()
    var heartbeat: LoopTimer?
    var sweep: LoopTimer?
    var refreshes = RefreshSchedule()
    /// Streams ended because their reader was too slow, since start.
    private(set) var overflows = 0

    /// Takes a slot for `client`; false when a cap is reached.
    func reserve(for client: String, maxStreams: Int, maxPerClient: Int) -> Reservation {
        // Ended streams whose connection has closed since the last sweep give their slots back.
        _ = releaseClosed()
        if count >= maxStreams { return .full }
        if perClient[client, default: 0] >= maxPerClient { return .clientFull }
        count += 1
        perClient[client, default: 0] += 1
        return .reserved
    }

    enum Reservation { case reserved, full, clientFull }

    func release(for client: String) {
        count -= 1
        perClient[client, default: 1] -= 1
        if perClient[client] == 0 { perClient[client] = nil }
    }

    func nextID() -> Int {
        lastID += 1
        return lastID
    }

    /// Adds an open stream; a workflow watched for the first time starts from `list`'s versions.
    func add(_ stream: Stream, list: JobListDocument) {
        byWorkflow[stream.workflow, default: Watched(list: list)].streams[stream.id] = stream
    }

    /// Removes a stream from its workflow; nil when it was removed already. Its slot is given
    /// back by `closed`, once its connection is.
    func remove(_ stream: Stream) -> Stream? {
        guard byWorkflow[stream.workflow]?.streams.removeValue(forKey: stream.id) != nil else { return nil }
        if byWorkflow[stream.workflow]?.streams.isEmpty == true {
            byWorkflow[stream.workflow] = nil
            refreshes.forget(.list(workflow: stream.workflow))
        }
        flushing.append(stream)
        return stream
    }

    /// A stream that ended without being added (a HEAD): its slot is given back with its connection.
    func noteEnded(_ stream: Stream) { flushing.append(stream) }

    /// Gives back the slots of ended streams whose connection has closed; whether any remain.
    func releaseClosed() -> Bool {
        flushing.removeAll { stream in
            guard stream.response.isClientGone else { return false }
            release(for: stream.client)
            return true
        }
        return !flushing.isEmpty
    }

    func noteOverflow() { overflows += 1 }

    func isWatched(_ workflow: String) -> Bool { byWorkflow[workflow] != nil }

    var all: [Stream] { byWorkflow.values.flatMap { $0.streams.values } }

    var open: Int { byWorkflow.values.reduce(0) { $0 + $1.streams.count } }

    /// Slots taken now (streams open, opening, or ending).
    var slots: Int { count }

    /// The events of a list stored for `workflow`, and the streams to send them to.
    func takeChanges(in list: JobListDocument, workflow: String) -> (indices: [Int], streams: [Stream], previous: Watched?) {
        guard let watched = byWorkflow[workflow] else { return ([], [], nil) }
        let indices = JobChanges.changed(in: list, since: JobChanges.published(watched.list)).indices
        byWorkflow[workflow]?.list = list
        byWorkflow[workflow]?.index = Watched.index(of: list)
        return (indices, Array(watched.streams.values), watched)
    }
}

extension ProxyServer {
    /// Change streams open now (read from any thread).
    public var changeStreamCount: Int { valueFromLoop { [self] in changeStreams.open } }

    /// Slots taken by change streams now: open, opening, or ended and still sending (read from
    /// any thread).
    public var changeStreamSlots: Int { valueFromLoop { [self] in changeStreams.slots } }

    /// Opens a change stream on `workflowID`'s jobs: the workflow's list from the cache (as a
    /// list request would get it: an error is answered as such), then the first events (every
    /// job, or those changed since `Last-Event-ID`, or `event: reset` and every job), then one
    /// event per change the cache learns of, a comment every `watchHeartbeatSeconds`.
    func startChangeStream(_ exchange: Exchange, workflowID: String, filters: JobListFilters) {
        var exchange = exchange
        let client = exchange.caller.logName
        if isDraining {
            return finish(&exchange, error: ProxyError(status: 503, code: "draining", message: "the proxy is shutting down"))
        }
        switch changeStreams.reserve(for: client, maxStreams: settings.watchMaxStreams, maxPerClient: settings.watchMaxStreamsPerClient) {
        case .full:
            return finish(&exchange, error: ProxyError(status: 503, code: "too_many_streams",
                                                      message: "the proxy has \(settings.watchMaxStreams) change streams open (watch.max_streams)"))
        case .clientFull:
            return finish(&exchange, error: ProxyError(status: 429, code: "too_many_streams",
                                                      message: "this client has \(settings.watchMaxStreamsPerClient) change streams open (watch.max_streams_per_client)"))
        case .reserved:
            break
        }
        let lastEventID = exchange.request.headers["Last-Event-ID"]
        // The key a list request for this workflow uses (the id percent-encoded), so that the
        // stream learns of what that list learns.
        let key = CacheKey.list(workflowID: workflowID)
        let box = ExchangeBox(exchange)
        cache.serve(CacheRequest(key: key, filters: JobListFilters(), revalidate: false, requestID: exchange.requestID, client: client)) { [self] delivery in
            var exchange = box.exchange
            exchange.cacheOutcome = delivery.outcome
            exchange.upstreamStatus = delivery.upstreamStatus
            exchange.upstreamDuration = delivery.upstreamDuration
            guard case .cached(let answer, _) = delivery.content, case .list(let list) = answer.document, !isDraining else {
                changeStreams.release(for: client)
                return isDraining
                    ? finish(&exchange, error: ProxyError(status: 503, code: "draining", message: "the proxy is shutting down"))
                    : self.answer(&exchange, with: delivery, key: key, filters: filters)
            }
            openChangeStream(exchange, key: key, list: list, filters: filters, lastEventID: lastEventID)
        }
    }

    private func openChangeStream(_ exchange: Exchange, key: CacheKey, list: JobListDocument, filters: JobListFilters, lastEventID: String?) {
        var exchange = exchange
        // What happened while the list was on its way is not missed (found by review): a
        // client that sent its FIN (or left) gets no stream, and a token revoked meanwhile is
        // refused.
        if exchange.request.isClientGone || exchange.request.hasClientFinished {
            changeStreams.release(for: exchange.caller.logName)
            return answerDeparted(exchange, status: 204, headers: HTTPHeaders([("Connection", "close")]))
        }
        if answeredAsRevoked(&exchange) { return changeStreams.release(for: exchange.caller.logName) }
        var fields = HTTPHeaders()
        fields.add("Content-Type", "text/event-stream; charset=utf-8")
        fields.add("Cache-Control", "no-store")
        // A stream ends with its connection: nothing follows it on the connection, and a proxy
        // in between must not keep the connection for another request.
        let head = answerHead(fields: .headers(fields), requestID: exchange.requestID, outcome: exchange.finalCacheOutcome, age: 0,
                              extra: exchange.extraHeaders, close: true)
        guard let response = exchange.request.startStreamedAnswer(status: 200, head: head, length: .unknown) else {
            changeStreams.release(for: exchange.caller.logName)
            return record(exchange.answerRecord(status: 499))
        }
        response.discardsInput = true
        exchange.waitingSince = .now
        let stream = ChangeStreams.Stream(id: changeStreams.nextID(), workflow: key.workflow, filters: filters, client: exchange.caller.logName,
                                          response: response, exchange: exchange)
        if exchange.request.method == .head {
            // Nothing to watch for: the head is all (the workflow's versions are not indexed for it).
            response.finish()
            changeStreams.noteEnded(stream)
            return record(exchange.answerRecord(status: 200))
        }
        changeStreams.add(stream, list: list)
        // A reader that leaves, or sends its FIN (gone, or half-closed, which a stream that
        // never ends by itself cannot serve either), ends its stream at once, and its
        // connection with it: nothing it was sent is kept for it.
        response.onClientGone = { [weak self, weak stream] in
            guard let self, let stream else { return }
            endChangeStream(stream, status: 499, closeNow: true)
        }
        response.onClientFinished = { [weak self, weak stream] in
            guard let self, let stream else { return }
            endChangeStream(stream, status: 499, closeNow: true)
        }
        response.onDrain = { [weak self, weak stream] in
            guard let self, let stream else { return }
            stream.lastProgress = .now
            pumpChangeStream(stream)
        }
        var first: [UInt8] = []
        switch JobChanges.start(lastEventID: lastEventID, list: list, filters: filters, overlap: changeResumeOverlap, now: clock()) {
        case .everything(let indices), .resumed(let indices):
            for index in indices { stream.enqueue(list.jobs[index].compactID) }
        case .reset(let indices):
            EventStreamText.event("reset", id: nil, data: #"{"reason":"the Last-Event-ID cannot be resumed from: the current jobs follow"}"#,
                                  into: &first)
            for index in indices { stream.enqueue(list.jobs[index].compactID) }
        }
        // A stream with nothing to send yet says so at once: the head and a first line reach the
        // client now, not at the first change.
        if first.isEmpty && !stream.hasBacklog { EventStreamText.comment("watching", into: &first) }
        if !first.isEmpty { stream.response.write(first) }
        pumpChangeStream(stream)
        if changeStreams.heartbeat == nil { scheduleChangeHeartbeat() }
        if changeStreams.sweep == nil { scheduleChangeSweep() }
    }

    /// How far before a `Last-Event-ID` a resume starts again (`JobChanges.start`): two list
    /// freshness windows, at least a minute, the time within which a change learnt late (the
    /// list showing it after a detail showed a later change of another job) is learnt.
    var changeResumeOverlap: Double { max(60, 2 * settings.jobListTTLSeconds) }

    /// What a stream's connection is given at a time: the rest of its backlog waits until the
    /// reader has taken it (`onDrain`), so that a stream holds at most about this much unsent
    /// (plus one event), whatever the list's size or the reader's pace.
    static let changeStreamBatchBytes = 256 << 10

    /// Sends a stream's backlog while its connection has room, each job as the workflow's list
    /// has it now, each event's `id:` the newest token so far (a job dated over a day ahead does
    /// not move it: the proxy's own id would then be refused as from the future; found by review).
    func pumpChangeStream(_ stream: ChangeStreams.Stream) {
        guard let watched = changeStreams.byWorkflow[stream.workflow], stream.hasBacklog, !stream.response.isFinished else { return }
        var bytes: [UInt8] = []
        var newest = stream.newest
        let latestBelievable = ChangeToken.microseconds(at: clock() + 86_400)
        while stream.response.pendingBytes + bytes.count < Self.changeStreamBatchBytes, let id = stream.dequeue() {
            guard let index = watched.index[id] else { continue }
            let token = ChangeToken(watched.list.jobs[index])
            if token.microseconds != .min, token.microseconds <= latestBelievable, newest.map({ token > $0 }) ?? true { newest = token }
            EventStreamText.event("job", id: newest?.description, data: watched.list.entryBytes(at: index), into: &bytes)
        }
        guard !bytes.isEmpty else { return }
        stream.response.write(bytes)
        stream.newest = newest
    }

    /// Told of every list stored for a watched workflow: its streams are looked at once the
    /// current event is done (not inside the cache's own step).
    func listStoredForStreams(_ key: CacheKey, _ answer: CachedAnswer) {
        guard case .list(let workflow) = key, changeStreams.isWatched(workflow) else { return }
        guard changeStreams.stored.note(workflow, answer) else { return }
        loop.schedule(after: 0) { [weak self] in self?.sendChanges() }
    }

    private func sendChanges() {
        for (workflow, answer) in changeStreams.stored.take() {
            guard case .list(let list) = answer.document else { continue }
            let (indices, streams, previous) = changeStreams.takeChanges(in: list, workflow: workflow)
            guard !indices.isEmpty else { continue }
            // Which jobs each filter set is told of is decided once per set, not per stream.
            for (filters, group) in Dictionary(grouping: streams, by: \.filters) {
                let told = indices.compactMap { index -> CompactID? in
                    let job = list.jobs[index]
                    // A job that matched the filters before (in the list the streams were told
                    // of) and no longer does is sent once more, as it is now.
                    let matchedBefore = { previous.flatMap { previous in previous.index[job.compactID].map { previous.list.jobs[$0] } }?
                        .matches(filters) ?? false }
                    return job.matches(filters) || (!filters.isEmpty && matchedBefore()) ? job.compactID : nil
                }
                for stream in group {
                    for id in told { stream.enqueue(id) }
                    pumpChangeStream(stream)
                }
            }
        }
    }

    /// A reader that has taken nothing for this long while jobs wait for it is too slow: its
    /// stream ends with `event: overflow` (what it holds is bounded anyway; the stream's slot
    /// goes to a reader that reads).
    var changeStreamStallSeconds: Double { 2 * settings.watchHeartbeatSeconds }

    /// Ends a stream whose reader fell behind, with `event: overflow` carrying the id of the
    /// last event it was sent (where it resumes from).
    private func overflow(_ stream: ChangeStreams.Stream) {
        var last: [UInt8] = []
        EventStreamText.event("overflow", id: stream.newest?.description,
                              data: #"{"reason":"the reader fell too far behind: resume with Last-Event-ID"}"#, into: &last)
        stream.response.write(last)
        changeStreams.noteOverflow()
        logger.notice("a change stream's reader fell behind: stream ended", metadata: [
            "request_id": "\(stream.exchange.requestID)", "client": "\(stream.client)", "pending_bytes": "\(stream.response.pendingBytes)",
        ])
        endChangeStream(stream, status: 200)
    }

    /// Every `watchHeartbeatSeconds`: a comment to each stream with nothing waiting, and the end
    /// of each whose reader has stalled.
    private func scheduleChangeHeartbeat() {
        changeStreams.heartbeat = loop.schedule(after: settings.watchHeartbeatSeconds) { [weak self] in
            guard let self else { return }
            changeStreams.heartbeat = nil
            var beat: [UInt8] = []
            EventStreamText.comment("heartbeat", into: &beat)
            let now = ContinuousClock.now
            for stream in changeStreams.all {
                if stream.hasBacklog {
                    if now - stream.lastProgress > .milliseconds(Int(changeStreamStallSeconds * 1000)) { overflow(stream) }
                } else if stream.response.pendingBytes < Self.changeStreamBatchBytes {
                    stream.response.write(beat)
                }
            }
            if changeStreams.open > 0 { scheduleChangeHeartbeat() }
        }
    }

    /// Once a second while any stream is open or ending: each watched list is kept fresh
    /// (`refreshWatched`), so that a stream learns of a change within the freshness bound even
    /// when no client asks, and the slots of ended streams whose connection closed are given back.
    private func scheduleChangeSweep() {
        changeStreams.sweep = loop.schedule(after: 1) { [weak self] in
            guard let self else { return }
            changeStreams.sweep = nil
            refreshWatched(changeStreams.byWorkflow.keys.map { .list(workflow: $0) }, schedule: &changeStreams.refreshes, client: "watch") {
                [weak self] key in self?.changeStreams.refreshes.timed[key] = nil
            }
            let ending = changeStreams.releaseClosed()
            if changeStreams.open > 0 || ending { scheduleChangeSweep() }
        }
    }

    /// Ends a stream and records it: its connection closes once what was written is out, or at
    /// once (`closeNow`: a reader gone).
    private func endChangeStream(_ stream: ChangeStreams.Stream, status: Int, closeNow: Bool = false) {
        guard changeStreams.remove(stream) != nil else { return }
        stream.response.onClientGone = nil
        stream.response.onClientFinished = nil
        if closeNow { stream.response.closeNow() } else { stream.response.finish() }
        record(stream.exchange.answerRecord(status: status))
        if changeStreams.sweep == nil, !isDraining { scheduleChangeSweep() }
        // A stream closed at once has its slot back now.
        if closeNow { _ = changeStreams.releaseClosed() }
    }

    /// After the clients file is reloaded: a stream whose token no longer reads ends.
    func recheckStreamCallers() {
        for stream in changeStreams.all where !isStillAllowed(stream.exchange) { endChangeStream(stream, status: 401) }
    }

    /// On drain: every stream ends now (a client resumes elsewhere with its last id).
    func endChangeStreams() {
        changeStreams.heartbeat?.cancel()
        changeStreams.heartbeat = nil
        changeStreams.sweep?.cancel()
        changeStreams.sweep = nil
        changeStreams.refreshes.cancelAll()
        for stream in changeStreams.all { endChangeStream(stream, status: 200) }
    }
}
