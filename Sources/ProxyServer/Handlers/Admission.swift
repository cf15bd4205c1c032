import EventHTTP
import JobCache

/// Decisions made before a request is handled: whether a body may be read at all, and whether
/// a read asks the upstream to treat it as a write.
extension ProxyServer {
    /// Admission of a request that has a body, on its head alone, before the body is read: a
    /// read with a body, a caller without a valid token, or one that may not write is refused
    /// at once (and the connection closed), so no unauthenticated body is ever buffered.
    func admit(_ head: RequestParser.Head) -> HeadRefusal? {
        func refusal(_ error: ProxyError, _ extra: [(name: String, value: String)] = []) -> HeadRefusal {
            HeadRefusal(status: error.status, headers: HTTPHeaders([("Content-Type", "application/json")] + extra), body: error.body)
        }
        if head.knownMethod?.isIdempotentRead == true {
            return refusal(.badRequest("a \(head.methodName) request may not carry a body"))
        }
        let caller = authenticator.authenticate(authorization: head.headers["Authorization"])
        if caller == .rejected { return refusal(.unauthorized, [("WWW-Authenticate", #"Bearer realm="pixxel-proxy""#)]) }
        if caller.scopes.isDisjoint(with: [.write, .admin]) { return refusal(.forbidden(Scopes.write.description)) }
        return nil
    }

    /// Why a read must not go upstream as it is, or nil: a field or parameter that asks the
    /// upstream (or a framework in front of it) to treat the request as another method.
    static func methodOverrideProblem(_ headers: HTTPHeaders, rawQuery: String?) -> String? {
        for field in headers where methodOverrideFields.contains(normalizedFieldName(field.name)) {
            return "\(field.name) is not allowed on a read"
        }
        if QueryDecoding.pairs(rawQuery)?.contains(where: { $0.name.lowercased() == "_method" }) == true {
            return "_method is not allowed on a read"
        }
        return nil
    }

    static let methodOverrideFields: Set<String> = ["x-http-method-override", "x-http-method", "x-method-override"]

    /// A field name lowercased with `_` read as `-`, as some servers read it.
    static func normalizedFieldName(_ name: String) -> String {
        String(name.lowercased().map { $0 == "_" ? "-" : $0 })
    }
}
