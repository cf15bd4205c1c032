import EventHTTP
import JobCache

/// Decisions made before a request is handled: whether a body may be read at all, and whether
/// a read asks the upstream to treat it as a write.
extension ProxyServer {
    /// Admission of a request that has a body, on its head alone, before the body is read: a
    /// read with a body, a caller without a valid token, or one that may not write is refused
    /// at once (and the connection closed), so no unauthenticated body is ever buffered.
    func admit(_ head: RequestParser.Head, peer: String) -> HeadRefusal? {
        let caller = authenticator.authenticate(authorization: head.headers["Authorization"])
        var extra: [(name: String, value: String)] = []
        let error: ProxyError
        if head.knownMethod?.isIdempotentRead == true {
            error = .badRequest("a \(head.methodName) request may not carry a body")
        } else if caller == .rejected {
            error = .unauthorized
            extra.append(("WWW-Authenticate", #"Bearer realm="pixxel-proxy""#))
        } else if caller.scopes.isDisjoint(with: [.write, .admin]) {
            error = .forbidden(Scopes.write.description)
        } else {
            return nil
        }
        // Refused like any other request: with its request id, a metric and an access line.
        let requestID = requestID(from: head.headers["X-Request-Id"])
        let route = RequestTarget.parse(head.target).map { Router.route(method: head.knownMethod ?? .get, target: $0, rules: settings.cacheRoutes).template }
        recordAnswer(method: head.knownMethod?.rawValue ?? "UNKNOWN", route: (try? route.get()) ?? Route.notFound.template,
                     status: error.status, client: caller.logName, peer: peer, requestID: requestID, cache: "none",
                     elapsed: .zero, upstreamDuration: nil, upstreamStatus: nil)
        return HeadRefusal(status: error.status,
                           headers: HTTPHeaders([("Content-Type", "application/json"), ("X-Request-Id", requestID)] + extra), body: error.body)
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
