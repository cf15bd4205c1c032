import EventHTTP
import Foundation
import JobCache
import ProxyConfig
import ResponseCache

/// The route phase: method, body and target checks, then the typed `Route`; what needs no
/// token is answered here.
struct RoutePhase: RequestPhase {
    func handle(_ exchange: inout Exchange, in server: ProxyServer, next: (inout Exchange) -> Void) {
        guard let target = server.route(&exchange) else { return }
        exchange.target = target
        next(&exchange)
    }
}

extension ProxyServer {
    /// Method, body and target checks, then the route. Answers (and returns nil for)
    /// what is refused here and the routes that need no token.
    func route(_ exchange: inout Exchange) -> RequestTarget? {
        let request = exchange.request
        guard request.knownMethod != nil else {
            exchange.extraHeaders.add("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
            finish(&exchange, error: ProxyError(status: 405, code: "method_not_allowed", message: "unknown method"))
            return nil
        }
        // A body on a read has no meaning (RFC 9110, 9.3.1-2) and is where smuggled requests
        // hide: refused before anything else, whatever the token.
        if request.method.isIdempotentRead, !request.body.isEmpty {
            finish(&exchange, error: .badRequest("a \(request.method.rawValue) request may not carry a body"))
            return nil
        }
        // A request with a body was parsed and routed at its admission.
        let admitted = request.admission as? AdmittedHead
        let target: RequestTarget
        switch admitted?.target ?? RequestTarget.parse(request.uri) {
        case .success(let parsed): target = parsed
        case .failure(let invalid):
            finish(&exchange, error: .badRequest(invalid.description))
            return nil
        }
        exchange.route = admitted?.route ?? Router.route(method: request.method, target: target, rules: settings.cacheRoutes)
        if request.method.isIdempotentRead, let problem = Self.methodOverrideProblem(request.headers, rawQuery: target.rawQuery) {
            finish(&exchange, error: .badRequest(problem))
            return nil
        }
        switch exchange.route {
        case .health:
            finish(&exchange, status: 200, body: Array(#"{"status":"ok"}"#.utf8))
        case .ready:
            // The verdict rides along: ready is not the same as well (a degraded proxy serves).
            let health = healthVerdict().publicJSON
            let readiness = readiness
            let answer: [String: Any] = readiness.ready ? ["status": "ready", "health": health] : [
                "error": ["code": "not_ready", "message": publicNotReadyReason, "details": NSNull()] as [String: Any],
                "health": health,
            ]
            let body = (try? JSONSerialization.data(withJSONObject: answer, options: [.sortedKeys])) ?? Data()
            finish(&exchange, status: readiness.ready ? 200 : 503, body: Array(body))
        case .adminPage:
            finish(&exchange, status: 200, headers: Self.statusPageHeaders, body: StatusPage.bytes)
        case .notFound:
            finish(&exchange, error: .notFound)
        case .methodNotAllowed(let allowed):
            exchange.extraHeaders.add("Allow", allowed.map(\.rawValue).joined(separator: ", "))
            finish(&exchange, error: ProxyError(status: 405, code: "method_not_allowed", message: "\(request.method.rawValue) is not allowed here"))
        // metrics.access: "auto" (open on a loopback listener, admin scope on any other), "open", "admin".
        case .metrics where settings.metricsAccess == "open" || (settings.metricsAccess == "auto" && SettingsParser.isLoopback(settings.listenHost)):
            finish(&exchange, status: 200, headers: Self.metricsHeaders, body: renderMetrics())
        default:
            return target
        }
        return nil
    }
}
