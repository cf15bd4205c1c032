import EventHTTP
import Foundation
import ProxyConfig

extension StatusReport {
    /// Reads `/admin/stats` from a running proxy (HTTP or HTTPS, on a loop of its own), with
    /// `token` as the admin token. Throws a message fit for the terminal.
    public static func fetch(_ url: UpstreamURL, token: String, timeoutSeconds: Double = 5) async throws -> [String: Any] {
        let loop = EventLoop()
        let thread = Thread { loop.run() }
        thread.start()
        defer { loop.stop() }
        // Made on this thread, used on the loop's: handed over once, never shared.
        let tls = LoopBound(url.scheme == .https ? try TLSClientContext(caFile: nil) : nil, loop: loop)
        let result: Result<ClientResponse, ClientError> = await withCheckedContinuation { continuation in
            let resume = LoopBound({ (result: Result<ClientResponse, ClientError>) in continuation.resume(returning: result) }, loop: loop)
            loop.execute {
                let client = HTTPClient(loop: loop, host: url.host, port: url.port, tls: tls.value,
                                        limits: ClientLimits(maxConnections: 1, timeoutSeconds: timeoutSeconds, maxResponseBytes: 8 << 20))
                let request = ClientRequest(method: .get, target: url.basePath + "/admin/stats",
                                            headers: HTTPHeaders([("Authorization", "Bearer " + token), ("Accept", "application/json")]))
                client.send(request) { result in
                    resume.value(result)
                    client.close()
                }
            }
        }
        switch result {
        case .failure(let error):
            throw StatusError(description: "cannot read \(url)/admin/stats: \(Self.reason(error))")
        case .success(let response) where response.status == 401 || response.status == 403:
            throw StatusError(description: "\(url) refused the token (\(response.status)): an admin token is needed")
        case .success(let response) where response.status != 200:
            throw StatusError(description: "\(url)/admin/stats answered \(response.status)")
        case .success(let response):
            guard let stats = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any] else {
                throw StatusError(description: "\(url)/admin/stats did not answer a JSON object")
            }
            return stats
        }
    }

    public struct StatusError: Error, CustomStringConvertible {
        public let description: String
    }
}

extension StatusReport {
    /// A client failure in words (no enum case dumped on the terminal).
    static func reason(_ error: ClientError) -> String {
        switch error {
        case .timedOut: "no answer in time"
        case .unreachable(let detail): "\(detail) (is the proxy running, and is --url right?)"
        case .tls(let detail): "TLS failed: \(detail)"
        case .broken(let detail): "the connection broke: \(detail)"
        case .responseTooLarge: "the answer was too large"
        case .queueFull: "too many requests waiting"
        case .invalidRequest(let detail): "the request could not be sent: \(detail)"
        }
    }
}
