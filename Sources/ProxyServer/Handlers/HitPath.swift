import EventHTTP
import JobCache
import ResponseCache

/// What the hit path remembers between requests. Everything here is a shortcut for work the
/// full path (`handle`) does; none of it decides anything the full path would decide otherwise.
final class HitPathState {
    /// Request targets already parsed and routed to a cached route, as sent (so a target is
    /// parsed once, not on every hit). Bounded: emptied when full.
    var targets: [String: CachedTarget] = [:]
    /// Authorization values already verified, and who they belong to (a hash and a constant-time
    /// comparison per client saved on each hit). Bounded, and emptied whenever the clients file
    /// is reloaded, so a revoked token stops working at once.
    var callers: [String: Caller] = [:]
    var requestIDs = RequestIDGenerator()
    /// The header lines of the answer being written, kept from answer to answer so that making
    /// them allocates nothing once the buffer has grown.
    private var linesBuffer = LentBuffer(maxKeptCapacity: 4096)

    func takeLinesBuffer() -> [UInt8] { linesBuffer.take() }

    func returnLinesBuffer(_ buffer: [UInt8]) { linesBuffer.giveBack(buffer) }

    static let maxTargets = 4096
    static let maxCallers = 256

    func remember(_ target: CachedTarget, for uri: String) {
        if targets.count >= Self.maxTargets { targets.removeAll(keepingCapacity: true) }
        targets[uri] = target
    }

    func remember(_ caller: Caller, for authorization: String) {
        guard case .client = caller else { return }
        if callers.count >= Self.maxCallers { callers.removeAll(keepingCapacity: true) }
        callers[authorization] = caller
    }
}

/// A request target that names a cached resource, with its list filters. A class: the hit
/// path keeps up to `HitPathState.maxTargets` of them, and a table of 144-byte values took
/// 1.3 MB however many it held (it keeps its capacity when emptied); of references, 0.2 MB
/// and the targets it holds.
final class CachedTarget {
    let key: CacheKey
    let filters: JobListFilters
    let routeTemplate: String
    let metrics: ProxyMetrics.HitRecorder

    init(key: CacheKey, filters: JobListFilters, routeTemplate: String, metrics: ProxyMetrics.HitRecorder) {
        self.key = key
        self.filters = filters
        self.routeTemplate = routeTemplate
        self.metrics = metrics
    }
}

/// Request ids made without randomness per request: a random prefix drawn once per process,
/// then a counter (unique within the process, and across restarts by the prefix). 15 bytes, so
/// that each is a small string, made without an allocation: 6 random characters (30 bits),
/// then the counter in 9 characters (45 bits, 11 years at 100k requests a second). Digits and
/// lower-case letters only, the counter fixed-width: no two ids differ by case alone, none
/// starts with `-`, and one process's ids sort in the order they were made (found by review).
struct RequestIDGenerator {
    private let prefix: [UInt8] = {
        guard let bytes = OpenSSLCrypto.randomBytes(6) else { preconditionFailure("OpenSSL RAND_bytes failed") }
        return bytes.map { RequestIDGenerator.digits[Int($0 & 31)] }
    }()
    private var counter: UInt64 = 0

    mutating func next() -> String {
        counter &+= 1
        let count = counter
        return String(unsafeUninitializedCapacity: 15) { buffer in
            for index in 0..<6 { buffer[index] = prefix[index] }
            for place in 0..<9 {
                buffer[14 - place] = Self.digits[Int((count >> UInt64(5 * place)) & 31)]
            }
            return 15
        }
    }

    /// 32 characters in ASCII order (digits before letters), all of them `isRequestIDByte`.
    private static let digits = Array("0123456789abcdefghijklmnopqrstuv".utf8)
}

extension ProxyServer {
    /// Answers a fresh memory hit for a target and token seen before: the cache journey's first
    /// step (`serveFromMemory`) and the one answer writer, without parsing, routing or hashing
    /// the token again; false (having done nothing) for anything else, which the full path then
    /// takes. No JSON, and the body goes out by reference.
    func serveFreshHit(_ request: ServerRequest) -> Bool {
        guard !isDraining, let method = request.knownMethod, method == .get || method == .head, request.body.isEmpty,
              let target = hitPath.targets[request.uri] else { return false }
        let headers = request.headers
        var authorization: String?
        var clientRequestID: String?
        var conditional = false
        var encodings = AcceptEncoding()
        // The first of each, as the full path reads them (`HTTPHeaders` subscript).
        for field in headers {
            if field.name.caseInsensitiveEquals("authorization") {
                if authorization == nil { authorization = field.value }
            } else if field.name.caseInsensitiveEquals("x-request-id") {
                if clientRequestID == nil { clientRequestID = field.value }
            } else if field.name.caseInsensitiveEquals("if-none-match") {
                conditional = true
            } else if field.name.caseInsensitiveEquals("accept-encoding") {
                encodings.read(field.value)
            } else if field.name.caseInsensitiveEquals("cache-control") || field.name.caseInsensitiveEquals("pragma") {
                return false  // possibly a request to revalidate: the full path reads it
            } else if field.name.caseInsensitiveEquals("prefer") {
                return false  // possibly a wait (`Prefer: wait`), which the full path holds
            } else if field.name.caseInsensitiveEquals("accept") {
                if Self.namesEventStream(field.value) { return false }  // a change stream, which the full path opens
            } else if Self.isMethodOverride(field.name) {
                return false  // refused by the full path, as everywhere else
            }
        }
        guard let authorization, let caller = hitPath.callers[authorization], caller.scopes.contains(.read),
              let delivery = cache.serveFromMemory(target.key), case .cached(let answer, let age) = delivery.content else { return false }
        let started = ContinuousClock.now
        let requestID = requestID(from: clientRequestID)
        let served = cache.served(answer, key: target.key, filters: target.filters, gzip: encodings.acceptsGzip)
        let status = conditional && Self.isNotModified(headers, entityTag: served.entityTag) ? 304 : 200
        writeAnswer(request, status: status, fields: .prepared(answer.preparedHeaderLines), body: status == 304 ? .bytes([]) : .shared(served.bytes),
                    requestID: requestID, outcome: delivery.outcome, age: age, extra: nil, close: false, representation: Representation(served))
        record(AnswerRecord(method: method.rawValue, route: target.routeTemplate, status: status, client: caller.logName, peer: request.peer,
                            requestID: requestID, cache: delivery.outcome.label, elapsed: ContinuousClock.now - started,
                            upstreamDuration: nil, upstreamStatus: nil, workflow: target.key.isRoute ? nil : target.key.workflow),
               hitRecorder: status == 200 ? target.metrics : nil)
        return true
    }
}
