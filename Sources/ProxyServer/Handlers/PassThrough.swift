import EventHTTP
import ResponseCache
import Upstream

/// Every other `/v0/` route: streamed both ways through the upstream gateway, never cached.
/// Neither body is held whole: an answer flows to the client as it arrives (a slow client slows
/// the upstream read), a request body flows upstream as it arrives, framed as it was parsed.
extension ProxyServer {
    func relayPassThrough(_ exchange: Exchange, target: RequestTarget, headers: HTTPHeaders) {
        let box = ExchangeBox(exchange)
        let started = ContinuousClock.now
        gateway.relay(route: exchange.route.template, method: exchange.request.method, path: target.encodedPath, rawQuery: target.rawQuery,
                      headers: headers, from: exchange.request, client: exchange.caller.logName, answerHead: { [self] upstreamHeaders in
            // A `cache.routes` answer streamed through still says what the cache did.
            answerHead(fields: .headers(upstreamHeaders), requestID: box.exchange.requestID, outcome: box.exchange.finalCacheOutcome,
                       age: 0, extra: box.exchange.extraHeaders, close: box.exchange.closeConnection || isDraining, defaultContentType: false)
        }) { [self] result in
            var exchange = box.exchange
            exchange.upstreamDuration = ContinuousClock.now - started
            switch result {
            case .relayed(let status, _):
                exchange.upstreamStatus = status
                record(exchange.answerRecord(status: status))
            case .broken(let status, let reason):
                exchange.upstreamStatus = status
                logger.warning("a streamed answer broke off", metadata: ["request_id": "\(exchange.requestID)", "reason": "\(reason)"])
                record(exchange.answerRecord(status: status))
            case .clientGone:
                // nginx's "client closed request": nobody was there to answer.
                record(exchange.answerRecord(status: 499))
            case .failed(let failure):
                finish(&exchange, failure: FetchFailure(failure))
            case .bodyRefused(.tooLarge):
                finish(&exchange, error: ProxyError(status: 413, code: "payload_too_large",
                                                    message: "the request body is larger than \(settings.listenMaxUploadBytes) bytes"))
            case .bodyRefused(.timedOut):
                finish(&exchange, error: ProxyError(status: 408, code: "request_timeout", message: "the request body arrived too slowly"))
            case .bodyRefused:
                finish(&exchange, error: .badRequest("invalid chunked body"))
            }
        }
    }
}
