import EventHTTP

/// Where the upstream is and how to talk to it.
public struct UpstreamEndpoint: Sendable {
    public var useTLS: Bool
    public var host: String
    public var port: UInt16
    /// Prefix put before every forwarded path ("" for none).
    public var basePath: String
    public var caFile: String?

    public init(useTLS: Bool, host: String, port: UInt16, basePath: String = "", caFile: String? = nil) {
        self.useTLS = useTLS
        self.host = host
        self.port = port
        self.basePath = basePath
        self.caFile = caFile
    }
}

/// Why an upstream call gave nothing to pass on, with the status the client gets.
public struct UpstreamFailure: Error, Sendable, Equatable {
    /// 429 (budget), 502, 503 or 504.
    public let status: Int
    public let code: String
    public let message: String
    /// For 429: seconds the client should wait.
    public var retryAfter: Double?
    /// The connection broke before an answer: an idempotent request may be tried once more.
    public var retryable = false
    /// The answer was larger than the call allowed.
    public var tooLarge = false

    public init(status: Int, code: String, message: String, retryAfter: Double? = nil, retryable: Bool = false, tooLarge: Bool = false) {
        self.status = status
        self.code = code
        self.message = message
        self.retryAfter = retryAfter
        self.retryable = retryable
        self.tooLarge = tooLarge
    }
}

/// The one way to the upstream: adds the stored API key and the Host header, removes what must
/// not travel (the client's Authorization, hop-by-hop fields), and maps transport failures to
/// 502 (garbage, broken connection, TLS), 503 (unreachable, busy) and 504 (timeout).
public final class UpstreamClient {
    private let endpoint: UpstreamEndpoint
    private let apiKey: String?
    private let http: HTTPClient
    /// Pass-through transfers, streamed both ways; they share `http`'s connection allowance.
    private let streaming: StreamingClient

    public init(loop: EventLoop, endpoint: UpstreamEndpoint, apiKey: String?, limits: ClientLimits) throws {
        self.endpoint = endpoint
        self.apiKey = apiKey
        let tls = endpoint.useTLS ? try TLSClientContext(caFile: endpoint.caFile) : nil
        http = HTTPClient(loop: loop, host: endpoint.host, port: endpoint.port, tls: tls, limits: limits)
        streaming = StreamingClient(loop: loop, host: endpoint.host, port: endpoint.port, tls: tls,
                                    limits: StreamLimits(headTimeoutSeconds: limits.timeoutSeconds, idleTimeoutSeconds: limits.timeoutSeconds,
                                                         maxHeadBytes: limits.maxResponseHeaderBytes, maxQueued: limits.maxQueued),
                                    sharingWith: http)
    }

    /// Streamed transfers running now, and waiting for a connection.
    public var streamsRunning: Int { streaming.runningCount }
    public var streamsQueued: Int { streaming.queued }

    /// Holds a connection for a streamed transfer (see `StreamingClient.reserve`).
    public func reserveStream(client: String, timeoutSeconds: Double, granted: @escaping (StreamingClient.Slot) -> Void,
                              refused: @escaping (UpstreamFailure) -> Void) {
        streaming.reserve(client: client, timeoutSeconds: timeoutSeconds, granted: granted, refused: { refused(Self.failure(for: $0)) })
    }

    /// The request as it goes upstream for a streamed transfer: the base path, the encoded
    /// path and query, and the client's fields with the stored key.
    public func relayRequest(method: HTTPMethod, path: String, rawQuery: String?, clientHeaders: HTTPHeaders) -> RelayRequest {
        var target = endpoint.basePath + path
        if let rawQuery { target += "?" + rawQuery }
        return RelayRequest(method: method, target: target, headers: Self.forwardedHeaders(clientHeaders, apiKey: apiKey))
    }

    /// Upstream connections open now.
    public var openConnections: Int { http.openConnections }

    /// Whether a call sent now would start at once (see `HTTPClient.canStartNow`).
    public var canStartNow: Bool { http.canStartNow }

    /// Called each time a call ends and its connection is free or gone.
    public var onCapacity: (() -> Void)? {
        get { http.onCapacity }
        set { http.onCapacity = newValue }
    }

    /// Sends a request. `path` is percent-encoded and starts with `/`; `rawQuery` is sent as is.
    /// `timeoutSeconds`: the whole call's limit, when shorter than the client's.
    public func send(method: HTTPMethod, path: String, rawQuery: String?, clientHeaders: HTTPHeaders, body: [UInt8],
                     timeoutSeconds: Double? = nil, maxResponseBytes: Int? = nil,
                     completion: @escaping (Result<ClientResponse, UpstreamFailure>) -> Void) {
        var target = endpoint.basePath + path
        if let rawQuery { target += "?" + rawQuery }
        var request = ClientRequest(method: method, target: target, headers: Self.forwardedHeaders(clientHeaders, apiKey: apiKey), body: body)
        request.timeoutSeconds = timeoutSeconds
        request.maxResponseBytes = maxResponseBytes
        http.send(request) { result in
            switch result {
            case .success(var response):
                response.headers = Self.passedBackHeaders(response.headers)
                completion(.success(response))
            case .failure(let error):
                completion(.failure(Self.failure(for: error)))
            }
        }
    }

    /// Fails queued calls and closes idle connections.
    public func close() { http.close() }

    /// The client's headers as sent upstream: the stored key replaces any Authorization.
    static func forwardedHeaders(_ headers: HTTPHeaders, apiKey: String?) -> HTTPHeaders {
        var out = endToEndFields(of: headers, alsoDropping: ["authorization", "expect"])
        if let apiKey { out.set("Authorization", apiKey) }
        return out
    }

    /// The upstream's headers as passed to the client (libevent adds its own Date).
    public static func passedBackHeaders(_ headers: HTTPHeaders) -> HTTPHeaders {
        endToEndFields(of: headers, alsoDropping: ["date"])
    }

    /// `headers` less hop-by-hop fields, `Proxy-*` fields, those named in `Connection` (but
    /// never the proxy's own `X-Request-Id`), and `alsoDropping`.
    static func endToEndFields(of headers: HTTPHeaders, alsoDropping extra: Set<String>) -> HTTPHeaders {
        let connectionTokens = Set(headers.values("Connection").flatMap { $0.split(separator: ",") }
            .map { $0.trimmingCharacters(in: " ").lowercased() }).subtracting(["x-request-id"])
        return HTTPHeaders(headers.fields.filter { field in
            let name = field.name.lowercased()
            return !hopByHopHeaderNames.contains(name) && !name.hasPrefix("proxy-") && !connectionTokens.contains(name)
                && !extra.contains(name)
        })
    }

    public static func failure(for error: ClientError) -> UpstreamFailure {
        switch error {
        case .timedOut:
            UpstreamFailure(status: 504, code: "upstream_timeout", message: "the upstream did not answer in time")
        case .unreachable(let reason):
            UpstreamFailure(status: 503, code: "upstream_unreachable", message: "the upstream is unreachable: \(reason)")
        case .queueFull:
            UpstreamFailure(status: 503, code: "upstream_busy", message: "too many requests are waiting for the upstream")
        case .tls(let reason):
            UpstreamFailure(status: 502, code: "upstream_tls", message: "TLS to the upstream failed: \(reason)")
        case .broken(let reason):
            UpstreamFailure(status: 502, code: "bad_gateway", message: reason, retryable: reason.contains("closed the connection"))
        case .invalidRequest(let reason):
            UpstreamFailure(status: 500, code: "internal_error", message: "refused to forward the request: \(reason)")
        case .responseTooLarge:
            UpstreamFailure(status: 502, code: "bad_gateway", message: "the upstream's answer is larger than upstream.max_response_bytes",
                            tooLarge: true)
        }
    }
}

extension Substring {
    func trimmingCharacters(in set: Character) -> String {
        var view = self
        while view.first == set { view.removeFirst() }
        while view.last == set { view.removeLast() }
        return String(view)
    }
}
