/// An error the proxy answers itself, in the upstream's shape:
/// `{"error": {"code": "...", "message": "...", "details": ...}}`.
public struct ProxyError: Error, Sendable, Equatable {
    public let status: Int
    public let code: String
    public let message: String
    public let details: String?

    public init(status: Int, code: String, message: String, details: String? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.details = details
    }

    public static func badRequest(_ message: String) -> ProxyError { ProxyError(status: 400, code: "bad_request", message: message) }
    public static let unauthorized = ProxyError(status: 401, code: "unauthorized", message: "a valid token is required in the Authorization header")
    public static func forbidden(_ scope: String) -> ProxyError {
        ProxyError(status: 403, code: "forbidden", message: "this token lacks the \(scope) scope")
    }
    public static let notFound = ProxyError(status: 404, code: "not_found", message: "no such route")

    /// The JSON body.
    public var body: [UInt8] {
        let details = self.details.map(jsonString) ?? "null"
        return Array("{\"error\":{\"code\":\(jsonString(code)),\"message\":\(jsonString(message)),\"details\":\(details)}}".utf8)
    }
}

/// A JSON string literal for `text`.
func jsonString(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where scalar.value < 0x20:
            let hex = String(scalar.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}
