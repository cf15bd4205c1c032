import EventHTTP
import JobCache

/// Decisions made before a request is handled: whether a body may be read at all (and how),
/// and whether a read asks the upstream to treat it as a write.
extension ProxyServer {
    /// Admission of a request that has a body, on its head alone, before the body is read:
    /// its request id, target, route and caller, decided here once and carried on the request
    /// (`AdmittedHead`), and how its body is read (streamed for the pass-through routes, bounded
    /// by `listen.max_upload_bytes`; whole for those whose body the proxy reads itself). A read
    /// with a body, a caller without a valid token, or one that may not write is refused at
    /// once (and the connection closed), so no unauthenticated body is ever buffered.
    func admitHead(_ head: RequestParser.Head, peer: String) -> HeadAdmission {
        let method = head.knownMethod ?? .get
        let target = RequestTarget.parse(head.target)
        let route = (try? target.get()).map { Router.route(method: method, target: $0, rules: settings.cacheRoutes) } ?? .notFound
        let caller = authenticator.authenticate(authorization: head.headers["Authorization"])
        let admitted = AdmittedHead(requestID: requestID(from: head.headers["X-Request-Id"]), target: target, route: route, caller: caller,
                                    clientsGeneration: clientsGeneration)
        let reading: BodyReading = head.knownMethod != nil && route == .passThrough
            ? .streamed(maxBytes: settings.listenMaxUploadBytes == 0 ? Int.max : settings.listenMaxUploadBytes) : .whole
        var extra: [(name: String, value: String)] = []
        let error: ProxyError
        if head.knownMethod?.isIdempotentRead == true {
            error = .badRequest("a \(head.methodName) request may not carry a body")
        } else if caller.isRejected {
            error = .unauthorized
            extra.append(("WWW-Authenticate", #"Bearer realm="pixxel-proxy""#))
        } else if caller.scopes.isDisjoint(with: [.write, .admin]) {
            error = .forbidden(Scopes.write.description)
        } else {
            return HeadAdmission(reading: reading, decided: admitted)
        }
        // Refused like any other request, with its request id; recorded when it is sent (`headRefused`).
        let refusal = HeadRefusal(status: error.status, headers: HTTPHeaders([("Content-Type", "application/json"), ("X-Request-Id", admitted.requestID)] + extra),
                                  body: error.body)
        return HeadAdmission(reading: reading, refusal: refusal, decided: admitted)
    }

    /// The recording step for a request refused before any handler saw it (by its admission,
    /// for a body over the limit, badly framed or too slow), with the request id its refusal
    /// carried ("-" when the refusal carried none).
    func headRefused(_ head: RequestParser.Head, peer: String, refusal: HeadRefusal, decided: AnyObject?) {
        let admitted = decided as? AdmittedHead
        record(AnswerRecord(method: head.knownMethod?.rawValue ?? "UNKNOWN", route: (admitted?.route ?? .notFound).template,
                            status: refusal.status, client: admitted?.caller.logName ?? Caller.rejected.logName, peer: peer,
                            requestID: refusal.headers["X-Request-Id"] ?? "-", cache: "none", elapsed: .zero,
                            upstreamDuration: nil, upstreamStatus: nil, workflow: nil))
    }

    /// Why a read must not go upstream as it is, or nil: a field or parameter that asks the
    /// upstream (or a framework in front of it) to treat the request as another method.
    static func methodOverrideProblem(_ headers: HTTPHeaders, rawQuery: String?) -> String? {
        for field in headers where isMethodOverride(field.name) {
            return "\(field.name) is not allowed on a read"
        }
        if QueryDecoding.pairs(rawQuery)?.contains(where: { $0.name.lowercased() == "_method" }) == true {
            return "_method is not allowed on a read"
        }
        return nil
    }

    /// `X-HTTP-Method-Override`, `X-HTTP-Method` or `X-Method-Override`, in any case. Spellings
    /// with `_` never get this far: the request parser refuses them.
    static func isMethodOverride(_ name: String) -> Bool {
        name.caseInsensitiveEquals("x-http-method-override") || name.caseInsensitiveEquals("x-http-method")
            || name.caseInsensitiveEquals("x-method-override")
    }
}

/// What the admission of a request with a body decided from its head, carried on the request
/// (`ServerRequest.admission`) so that the handler neither parses, routes nor authenticates it
/// again. The caller holds only while the clients file it was decided by is the current one.
final class AdmittedHead {
    let requestID: String
    let target: Result<RequestTarget, RequestTarget.Invalid>
    let route: Route
    let caller: Caller
    /// `ProxyServer.clientsGeneration` when the caller was decided.
    let clientsGeneration: Int

    init(requestID: String, target: Result<RequestTarget, RequestTarget.Invalid>, route: Route, caller: Caller, clientsGeneration: Int) {
        self.requestID = requestID
        self.target = target
        self.route = route
        self.caller = caller
        self.clientsGeneration = clientsGeneration
    }
}
