import Testing
@testable import ProxyServer
import EventHTTP

@Suite struct RequestTargetTests {
    @Test(arguments: [
        "/v0/workflows/../jobs", "/v0/workflows/%2e%2e/jobs", "/v0/workflows/%2E%2e/jobs", "/v0/./x",
        "/v0/workflows/%2e/jobs", "/v0/a%2fb", "/v0/a%2F..%2F..", "/v0/a%5cb", "/v0/a%00b", "/v0/a%0d%0ab",
        "/v0/a%zz", "/v0/a%2", "/v0//jobs", "v0/jobs", "/v0/a#frag", "/v0/a b", "/v0/a\\b", "/v0/%ff%fe",
        "/v0/jobs?x=%zz", "/v0/jobs?x=a b",
    ])
    func refusesUnsafeTargets(_ uri: String) {
        guard case .failure = RequestTarget.parse(uri) else {
            Issue.record("accepted \(uri)")
            return
        }
    }

    @Test func decodesSegmentsAndKeepsTheRawQuery() throws {
        let target = try RequestTarget.parse("/v0/workflows/wf%201/jobs/j%C3%A9?status=running&x=%41").get()
        #expect(target.segments == ["v0", "workflows", "wf 1", "jobs", "jé"])
        #expect(target.rawQuery == "status=running&x=%41")
        #expect(target.encodedPath == "/v0/workflows/wf%201/jobs/j%C3%A9")
    }

    @Test func doubleEncodedDotsTravelAsLiteralText() throws {
        // "%252e%252e" decodes once to the literal "%2e%2e": not a dot segment, and re-encoded.
        let target = try RequestTarget.parse("/v0/workflows/%252e%252e/jobs").get()
        #expect(target.segments[2] == "%2e%2e")
        #expect(target.encodedPath == "/v0/workflows/%252e%252e/jobs")
    }

    @Test func idsAreForwardedPercentEncoded() {
        #expect(RequestTarget.encodeSegment("a:b@c;d") == "a%3Ab%40c%3Bd")
        #expect(RequestTarget.encodeSegment("abc-_.~09") == "abc-_.~09")
    }

    @Test func keepsATrailingSlash() throws {
        let target = try RequestTarget.parse("/v0/workflows/").get()
        #expect(target.segments == ["v0", "workflows"])
        #expect(target.encodedPath == "/v0/workflows/")
    }
}

@Suite struct RouterTests {
    func route(_ method: HTTPMethod, _ uri: String) -> Route {
        Router.route(method: method, target: try! RequestTarget.parse(uri).get())
    }

    @Test func jobRoutes() {
        #expect(route(.get, "/v0/workflows/w1/jobs") == .listJobs(workflowID: "w1"))
        #expect(route(.head, "/v0/workflows/w1/jobs") == .listJobs(workflowID: "w1"))
        #expect(route(.post, "/v0/workflows/w1/jobs") == .createJob(workflowID: "w1"))
        #expect(route(.get, "/v0/workflows/w1/jobs/j1") == .getJob(workflowID: "w1", jobID: "j1"))
    }

    @Test func everythingElseUnderV0PassesThrough() {
        #expect(route(.get, "/v0/workflows") == .passThrough)
        #expect(route(.delete, "/v0/workflows/w1/jobs/j1") == .passThrough)
        #expect(route(.patch, "/v0/aois/a1") == .passThrough)
        #expect(route(.get, "/v0/workflows/w1/jobs/j1/download") == .passThrough)
        #expect(route(.get, "/v0/workflows/w1/jobs/") == .passThrough)
    }

    @Test func operationsRoutesAndTheRest() {
        #expect(route(.get, "/healthz") == .health)
        #expect(route(.get, "/readyz") == .ready)
        #expect(route(.post, "/healthz") == .methodNotAllowed(allowed: [.get, .head]))
        #expect(route(.trace, "/v0/workflows") != .passThrough)
        #expect(route(.get, "/") == .notFound)
        #expect(route(.get, "/v1/workflows") == .notFound)
    }

    @Test func templatesNeverContainIDs() {
        #expect(!route(.get, "/v0/workflows/secret-wf/jobs/secret-job").template.contains("secret"))
    }
}
