import EventHTTP

/// The authorize phase: the caller (decided at admission for a request with a body) and its
/// scope for the route; 401 or 403 answered here.
struct AuthorizePhase: RequestPhase {
    func handle(_ exchange: inout Exchange, in server: ProxyServer, next: (inout Exchange) -> Void) {
        guard server.authorize(&exchange) else { return }
        next(&exchange)
    }
}

extension ProxyServer {
    /// The caller and its scope for the route. Answers 401 or 403 and returns false.
    func authorize(_ exchange: inout Exchange) -> Bool {
        let authorization = exchange.request.headers["Authorization"]
        // A request with a body was authenticated at its admission, unless the clients file
        // was reloaded since (a token revoked while the body arrived is refused).
        if let admitted = exchange.request.admission as? AdmittedHead, admitted.clientsGeneration == clientsGeneration {
            exchange.caller = admitted.caller
        } else {
            exchange.caller = authenticator.authenticate(authorization: authorization)
        }
        exchange.callerGeneration = clientsGeneration
        if let authorization { hitPath.remember(exchange.caller, for: authorization) }
        if exchange.caller.isRejected {
            exchange.extraHeaders.add("WWW-Authenticate", #"Bearer realm="pixxel-proxy""#)
            finish(&exchange, error: .unauthorized)
            return false
        }
        let needed: Scopes
        switch exchange.route {
        case .adminPurge, .adminStats, .metrics: needed = .admin
        default: needed = exchange.request.method.isIdempotentRead ? .read : .write
        }
        guard exchange.caller.scopes.contains(needed) else {
            finish(&exchange, error: .forbidden(needed.description))
            return false
        }
        return true
    }

    /// Whether the caller of a request held or streamed since before a reload may still read.
    func isStillAllowed(_ exchange: Exchange) -> Bool {
        authenticator.authenticate(authorization: exchange.request.headers["Authorization"]).scopes.contains(.read)
    }

    /// A request that waited (a revalidation, a list on its way) across a reload that revoked its
    /// token is answered as a new request with that token would be (401 or 403); true then.
    func answeredAsRevoked(_ exchange: inout Exchange) -> Bool {
        guard exchange.callerGeneration != clientsGeneration, !isStillAllowed(exchange) else { return false }
        _ = authorize(&exchange)
        return true
    }
}
