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
        var published: JobChanges.Published
        /// The list the versions were published from: a job that leaves a stream's filters (a
        /// running job that completes, on `status=running`) is sent once more, as it is now.
        var list: JobListDocument
    }

    private(set) var byWorkflow: [String: Watched] = [:]
    /// Streams open or being opened, in all and per client (a slot is taken before the list is
    /// fetched, so that many starts at once cannot pass the caps).
    private(set) var count = 0
    private(set) var perClient: [String: Int] = [:]
    private var lastID = 0
    /// Lists stored for watched workflows since they were last looked at.
    var changed: [String: CachedAnswer] = [:]
    var wakeScheduled = false
    var heartbeat: LoopTimer?
    var sweep: LoopTimer?
    var refreshes = RefreshSchedule()
    /// Streams ended because their reader was too slow, since start.
    private(set) var overflows = 0

    /// Takes a slot for `client`; false when a cap is reached.
    func reserve(for client: String, maxStreams: Int, maxPerClient: Int) -> Reservation {
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
        byWorkflow[stream.workflow, default: Watched(published: JobChanges.published(list), list: list)].streams[stream.id] = stream
    }

    /// Removes a stream (and its slot); nil when it was removed already.
    func remove(_ stream: Stream) -> Stream? {
        guard byWorkflow[stream.workflow]?.streams.removeValue(forKey: stream.id) != nil else { return nil }
        if byWorkflow[stream.workflow]?.streams.isEmpty == true {
            byWorkflow[stream.workflow] = nil
            refreshes.forget(.list(workflow: stream.workflow))
        }
        release(for: stream.client)
        return stream
    }

    func noteOverflow() { overflows += 1 }

    func isWatched(_ workflow: String) -> Bool { byWorkflow[workflow] != nil }

    var all: [Stream] { byWorkflow.values.flatMap { $0.streams.values } }

    var open: Int { byWorkflow.values.reduce(0) { $0 + $1.streams.count } }

    /// The events of a list stored for `workflow`, and the streams to send them to.
    func takeChanges(in list: JobListDocument, workflow: String) -> (indices: [Int], streams: [Stream], previous: JobListDocument?) {
        guard let watched = byWorkflow[workflow] else { return ([], [], nil) }
        let (indices, published) = JobChanges.changed(in: list, since: watched.published)
        byWorkflow[workflow]?.published = published
        byWorkflow[workflow]?.list = list
        return (indices, Array(watched.streams.values), watched.list)
    }
}

extension ProxyServer {
    /// Change streams open now (read from any thread).
    public var changeStreamCount: Int { valueFromLoop { [self] in changeStreams.open } }

    /// A reader may lag this far behind (bytes the connection holds unsent) before its stream is
    /// ended with `event: overflow`: a slow reader costs at most this plus one list.
    static let changeStreamMaxPendingBytes = 1 << 20

    /// Opens a change stream on `workflow`'s jobs: the workflow's list from the cache (as a list
    /// request would get it: an error is answered as such), then the first events (every job,
    /// or those changed since `Last-Event-ID`, or `event: reset` and every job), then one event
    /// per change the cache learns of, a comment every `watchHeartbeatSeconds`.
    func startChangeStream(_ exchange: Exchange, workflow: String, filters: JobListFilters) {
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
        let key = CacheKey.list(workflow: workflow)
        let box = ExchangeBox(exchange)
        cache.serve(CacheRequest(key: key, filters: JobListFilters(), revalidate: false, requestID: exchange.requestID, client: client)) { [self] delivery in
            var exchange = box.exchange
            exchange.cacheOutcome = delivery.outcome
            exchange.upstreamStatus = delivery.upstreamStatus
            exchange.upstreamDuration = delivery.upstreamDuration
            guard case .cached(let answer, _) = delivery.content, case .list(let list) = answer.document, !isDraining else {
                changeStreams.release(for: client)
                return isDraining && !exchange.request.isAnswered
                    ? finish(&exchange, error: ProxyError(status: 503, code: "draining", message: "the proxy is shutting down"))
                    : answer(&exchange, with: delivery, key: key, filters: filters)
            }
            openChangeStream(exchange, list: list, filters: filters, lastEventID: lastEventID)
        }
    }

    private func openChangeStream(_ exchange: Exchange, list: JobListDocument, filters: JobListFilters, lastEventID: String?) {
        guard case .listJobs(let workflow) = exchange.route else { return }
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
        var exchange = exchange
        exchange.waitingSince = .now
        let stream = ChangeStreams.Stream(id: changeStreams.nextID(), workflow: workflow, filters: filters, client: exchange.caller.logName,
                                          response: response, exchange: exchange)
        changeStreams.add(stream, list: list)
        response.onClientGone = { [weak self, weak stream] in
            guard let self, let stream else { return }
            endChangeStream(stream, status: 499)
        }
        // A FIN: the reader has gone (or half-closed, which a stream that never ends by itself
        // cannot serve either); without this the stream learnt it at the next failed write.
        response.onClientFinished = { [weak self, weak stream] in
            guard let self, let stream else { return }
            endChangeStream(stream, status: 499)
        }
        if exchange.request.method == .head { return endChangeStream(stream, status: 200) }
        var bytes: [UInt8] = []
        switch JobChanges.start(lastEventID: lastEventID, list: list, filters: filters, overlap: changeResumeOverlap, now: clock()) {
        case .everything(let indices), .resumed(let indices):
            appendJobEvents(indices, of: list, for: stream, into: &bytes)
        case .reset(let indices):
            EventStreamText.event("reset", id: nil, data: #"{"reason":"the Last-Event-ID cannot be resumed from: the current jobs follow"}"#.utf8,
                                  into: &bytes)
            appendJobEvents(indices, of: list, for: stream, into: &bytes)
        }
        // A stream with nothing to send yet says so at once: the head and a first line reach the
        // client now, not at the first change.
        if bytes.isEmpty { EventStreamText.comment("watching", into: &bytes) }
        stream.response.write(bytes)
        if changeStreams.heartbeat == nil { scheduleChangeHeartbeat() }
        if changeStreams.sweep == nil { scheduleChangeSweep() }
    }

    /// How far before a `Last-Event-ID` a resume starts again (`JobChanges.start`): two list
    /// freshness windows, at least a minute, the time within which a change learnt late (the
    /// list showing it after a detail showed a later change of another job) is learnt.
    var changeResumeOverlap: Double { max(60, 2 * settings.jobListTTLSeconds) }

    /// `job` events for `indices` of `list` that match the stream's filters (or matched them in
    /// `previous`, the list the stream was told of before); the stream's newest token moves on
    /// with each.
    private func appendJobEvents(_ indices: [Int], of list: JobListDocument, for stream: ChangeStreams.Stream, into bytes: inout [UInt8],
                                 previous: (list: JobListDocument, index: [CompactID: Int])? = nil) {
        for index in indices {
            let job = list.jobs[index]
            guard job.matches(stream.filters)
                    || previous.map({ previous in previous.index[job.compactID].map { previous.list.jobs[$0].matches(stream.filters) } ?? false }) == true
            else { continue }
            let token = ChangeToken(list.jobs[index])
            if stream.newest.map({ token > $0 }) ?? true { stream.newest = token }
            EventStreamText.event("job", id: stream.newest?.description, data: list.entryBytes(at: index), into: &bytes)
        }
    }

    /// Told of every list stored for a watched workflow: its streams are looked at once the
    /// current event is done (not inside the cache's own step).
    func listStoredForStreams(_ key: CacheKey, _ answer: CachedAnswer) {
        guard case .list(let workflow) = key, changeStreams.isWatched(workflow) else { return }
        changeStreams.changed[workflow] = answer
        guard !changeStreams.wakeScheduled else { return }
        changeStreams.wakeScheduled = true
        loop.schedule(after: 0) { [weak self] in self?.sendChanges() }
    }

    private func sendChanges() {
        changeStreams.wakeScheduled = false
        let changed = changeStreams.changed
        changeStreams.changed = [:]
        for (workflow, answer) in changed where !answer.isSuperseded {
            guard case .list(let list) = answer.document else { continue }
            let (indices, streams, previous) = changeStreams.takeChanges(in: list, workflow: workflow)
            guard !indices.isEmpty else { continue }
            let anyFiltered = streams.contains { !$0.filters.isEmpty }
            let before = previous.flatMap { previous in !anyFiltered ? nil :
                (list: previous, index: Dictionary(previous.jobs.indices.map { (previous.jobs[$0].compactID, $0) }) { first, _ in first })
            }
            for stream in streams {
                var bytes: [UInt8] = []
                appendJobEvents(indices, of: list, for: stream, into: &bytes, previous: stream.filters.isEmpty ? nil : before)
                send(bytes, to: stream)
            }
        }
    }

    /// Writes to a stream, unless its reader has fallen too far behind: then the stream ends
    /// with `event: overflow` (the reader may resume from its last id).
    private func send(_ bytes: [UInt8], to stream: ChangeStreams.Stream) {
        guard !bytes.isEmpty else { return }
        guard stream.response.pendingBytes <= Self.changeStreamMaxPendingBytes else {
            var last: [UInt8] = []
            EventStreamText.event("overflow", id: stream.newest?.description,
                                  data: #"{"reason":"the reader fell too far behind: resume with Last-Event-ID"}"#.utf8, into: &last)
            stream.response.write(last)
            changeStreams.noteOverflow()
            logger.notice("a change stream's reader fell behind: stream ended", metadata: [
                "request_id": "\(stream.exchange.requestID)", "client": "\(stream.client)", "pending_bytes": "\(stream.response.pendingBytes)",
            ])
            return endChangeStream(stream, status: 200)
        }
        stream.response.write(bytes)
    }

    private func scheduleChangeHeartbeat() {
        changeStreams.heartbeat = loop.schedule(after: settings.watchHeartbeatSeconds) { [weak self] in
            guard let self else { return }
            changeStreams.heartbeat = nil
            var beat: [UInt8] = []
            EventStreamText.comment("heartbeat", into: &beat)
            for stream in changeStreams.all { send(beat, to: stream) }
            if changeStreams.open > 0 { scheduleChangeHeartbeat() }
        }
    }

    /// Once a second while any stream is open: each watched list is kept fresh
    /// (`refreshWatched`), so that a stream learns of a change within the freshness bound even
    /// when no client asks.
    private func scheduleChangeSweep() {
        changeStreams.sweep = loop.schedule(after: 1) { [weak self] in
            guard let self else { return }
            changeStreams.sweep = nil
            refreshWatched(changeStreams.byWorkflow.keys.map { .list(workflow: $0) }, schedule: &changeStreams.refreshes, client: "watch") {
                [weak self] key in self?.changeStreams.refreshes.timed[key] = nil
            }
            if changeStreams.open > 0 { scheduleChangeSweep() }
        }
    }

    /// Ends a stream (the connection closes once what was written is out) and records it.
    private func endChangeStream(_ stream: ChangeStreams.Stream, status: Int) {
        guard changeStreams.remove(stream) != nil else { return }
        stream.response.onClientGone = nil
        stream.response.onClientFinished = nil
        stream.response.finish()
        record(stream.exchange.answerRecord(status: status))
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
