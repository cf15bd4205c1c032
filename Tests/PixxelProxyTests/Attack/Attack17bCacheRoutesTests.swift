import Foundation
import ProxyConfig
import Testing

/// Second review of issue 17: `cache.routes` and the upstream's `Cache-Control`.
@Suite struct Attack17bCacheRoutesTests {
    /// What held: `no-store`, `private` and `no-cache` are found however the upstream spells
    /// them (case, a quoted argument, among other directives, in a second field, odd spacing).
    @Test(arguments: [
        "Cache-Control: No-Store\r\n", "Cache-Control: no-store=\"x\"\r\n", "Cache-Control: max-age=60,PRIVATE\r\n",
        "Cache-Control: max-age=60\r\ncache-control: no-cache\r\n", "Cache-Control: public ,\t no-store \r\n",
        "Cache-Control: private=\"set-cookie, x\", max-age=60\r\n", "Cache-Control: no-cache=\"Set-Cookie\"\r\n",
    ])
    func everySpellingOfADirectiveThatForbidsStoringIsHonoured(_ fields: String) async throws {
        let upstream = try FakeUpstream { _ in FakeUpstream.json(200, #"{"n":1}"#, extraHeaders: fields) }
        defer { upstream.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(upstream.port)") {
            $0.cacheRoutes = [try! CacheRouteRule.parse("/v0/links/{id} 300").get()]
        }
        _ = try proxy.get("/v0/links/1", token: proxy.readToken)
        let second = try proxy.get("/v0/links/1", token: proxy.writeToken)
        #expect(second.status == 200 && upstream.received.count == 2, "\(fields): \(second.header("Cache-Status") ?? "?")")
        await proxy.stop()
    }
}
