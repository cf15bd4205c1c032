import Foundation
import EventHTTP
import JobCache
import ResponseCache
import Upstream

/// Requests that go upstream as they are (pass-through routes, job creation), and the one way
/// every upstream call is made (`callUpstream`: the budget, the call, Retry-After, one retry).
extension ProxyServer {
    /// Forwards the request upstream with the client's end-to-end fields; a created job is
    /// written through into the cache and audited before the client hears back.
    func forward(_ exchange: Exchange, target: RequestTarget, headers: HTTPHeaders) {
        let exchangeBox = ExchangeBox(exchange)
        let upstreamStarted = ContinuousClock.now
        let request = exchange.request
        callUpstream(route: exchange.route.template, method: exchange.upstreamMethod ?? request.method, path: target.encodedPath,
                     rawQuery: target.rawQuery,
                     clientHeaders: headers, body: request.body, client: exchange.caller.logName) { [self] result in
            exchangeBox.exchange.upstreamDuration = ContinuousClock.now - upstreamStarted
            // A job route's successful answer is decoded here, once; everything after takes the value.
            let decoded: DecodedAnswerBody? = switch result {
            case .success(let response) where exchangeBox.exchange.route.isJobRoute && (200..<300).contains(response.status):
                DecodedAnswerBody(response.body)
            default: nil
            }
            guard case .createJob(let workflowID) = exchangeBox.exchange.route else {
                return answerForwarded(result, decoded, exchangeBox)
            }
            // The audit entry and the written-through job are durable before the client hears
            // back: a crash cannot lose the record of a job that was created, nor make a
            // restarted proxy serve a list without it.
            var waiting = 2
            let answer = LoopBound({ [self] in
                waiting -= 1
                if waiting == 0 { answerForwarded(result, decoded, exchangeBox) }
            }, loop: loop)
            if case .success(let response) = result, let decoded, decoded.isJSONObject {
                cache.writeThrough(workflowID: workflowID, created: decoded, headers: response.headers, now: clock(), landed: answer.value)
            } else {
                answer.value()
            }
            let entry = auditEntry(for: result, createdJob: decoded?.job, exchange: exchangeBox.exchange, workflowID: workflowID,
                                   rawQuery: target.rawQuery)
            guard let audit else {
                journalAudit(entry, because: storeProblem ?? "the audit store is not open")
                return answer.value()
            }
            audit.record(entry) { [self] error in
                loop.execute { [self] in
                    if let error { journalAudit(entry, because: "\(error)") }
                    answer.value()
                }
            }
        }
    }

    /// An audit entry the store could not take (disk full, read-only) goes to the journal with
    /// every field the store has, and is counted: a job the upstream created is never left
    /// without a record of who created it. The creation is not refused after the fact: the
    /// upstream has already made the job, and the client must learn its id.
    func journalAudit(_ entry: AuditEntry, because error: String) {
        auditJournalFallbacks += 1
        logger.critical("audit entry written to the journal: the audit store refused it", metadata: [
            "audit_time": "\(Date(timeIntervalSince1970: entry.time).ISO8601Format(.iso8601.year().month().day().time(includingFractionalSeconds: true)))", "client": "\(entry.client)", "workflow_id": "\(entry.workflowID)",
            "project_id": "\(entry.projectID)", "job_id": "\(entry.jobID ?? "-")", "upstream_status": "\(entry.upstreamStatus)",
            "request_id": "\(entry.requestID)", "error": "\(error)",
        ])
    }

    /// `decoded`: a job route's 2xx answer, decoded (nil otherwise).
    private func answerForwarded(_ result: Result<ClientResponse, UpstreamFailure>, _ decoded: DecodedAnswerBody?, _ exchangeBox: ExchangeBox) {
        var exchange = exchangeBox.exchange
        switch result {
        case .success(let response):
            exchange.upstreamStatus = response.status
            if let decoded, !decoded.isJSONObject {
                return finish(&exchange, error: ProxyError(status: 502, code: "bad_gateway", message: "the upstream answered something that is not a JSON object"))
            }
            // A HEAD answer tells the length the GET would have had, or none when the
            // upstream did not say (a chunked answer).
            let headLength: HeadContentLength = exchange.request.method == .head && exchange.upstreamMethod == nil
                ? response.declaredContentLength.map(HeadContentLength.declared) ?? .unknown : .ofBody
            finish(&exchange, status: response.status, headers: response.headers, body: response.body, headContentLength: headLength)
        case .failure(let failure):
            finish(&exchange, failure: FetchFailure(failure))
        }
    }

    private func auditEntry(for result: Result<ClientResponse, UpstreamFailure>, createdJob: JobDetailDocument?, exchange: Exchange,
                            workflowID: String, rawQuery: String?) -> AuditEntry {
        let project = QueryDecoding.values(of: "project_id", in: rawQuery).first ?? ""
        let status = switch result {
        case .success(let response): response.status
        case .failure(let failure): failure.status
        }
        return AuditEntry(time: clock(), client: exchange.caller.logName, workflowID: workflowID, projectID: project,
                          jobID: createdJob?.job.id, upstreamStatus: status, requestID: exchange.requestID)
    }

    /// Every upstream call goes through the gateway (`Upstream.UpstreamGateway`: the budget,
    /// the call, Retry-After, one retry of a broken read). `hasFallback`: the caller has stale
    /// data to give, so it does not wait out an upstream pause.
    func callUpstream(route: String, method: HTTPMethod, path: String, rawQuery: String?, clientHeaders: HTTPHeaders, body: [UInt8],
                      client: String, priority: UpstreamBudget.Priority = .interactive, hasFallback: Bool = false, deadline: Double? = nil,
                      maxResponseBytes: Int? = nil, completion: @escaping (Result<ClientResponse, UpstreamFailure>) -> Void) {
        gateway.call(route: route, method: method, path: path, rawQuery: rawQuery, headers: clientHeaders, body: body, client: client,
                     priority: priority, hasFallback: hasFallback, deadline: deadline, maxResponseBytes: maxResponseBytes, completion: completion)
    }

    /// Why a job-creation query is refused, or nil when it has exactly one non-empty `project_id`.
    static func projectIDProblem(_ rawQuery: String?) -> String? {
        let values = QueryDecoding.values(of: "project_id", in: rawQuery)
        if values.isEmpty { return "project_id is required to create a job" }
        if values.count > 1 { return "project_id is given more than once" }
        if values[0].isEmpty { return "project_id is empty" }
        return nil
    }
}
