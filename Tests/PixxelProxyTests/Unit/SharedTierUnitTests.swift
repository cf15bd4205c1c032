import Foundation
import JobCache
import ProxyServer
import ProxyConfig
import SharedTier
import Testing
import Upstream

/// The shared tier's pure parts: the URL, the entry codec, the messages, and the budget
/// taking its tokens from a source that answers as Redis would (issue 14).
@Suite struct SharedTierUnitTests {
    @Test func redisURLsParseAndNeverPrintThePassword() throws {
        let plain = try #require(RedisURL(parsing: "redis://127.0.0.1:6380/2"))
        #expect(plain.host == "127.0.0.1" && plain.port == 6380 && plain.database == 2 && plain.password == nil)
        #expect(RedisURL(parsing: "redis://cache.internal")?.port == 6379)
        #expect(RedisURL(parsing: "redis://[::1]:7000")?.host == "::1")
        let secret = try #require(RedisURL(parsing: "redis://:p%40ss:word@10.0.0.5:6379/0"))
        #expect(secret.password?.value == "p@ss:word")
        #expect(secret.description == "redis://:<redacted>@10.0.0.5:6379/0")
        #expect(!"\(secret)".contains("p@ss") && !"\(String(reflecting: secret))".contains("p@ss"))
        let acl = try #require(RedisURL(parsing: "redis://proxy:s3cret@h:1/1"))
        #expect(acl.user == "proxy" && acl.description == "redis://proxy:<redacted>@h:1/1")
    }

    @Test(arguments: ["", "http://h:6379", "redis://", "redis://h:0", "redis://h:65536", "redis://h:x", "redis://h/16000",
                      "redis://h/-1", "redis://h/db", "redis://h?timeout=1", "redis://h#x", "redis://user@h", "redis://:@h",
                      "redis://:%zz@h", "redis://h h", "redis://[::1", "redis://::1:6379", "redis://:a\u{0}b@h"])
    func redisURLsRefuseWhatIsNotOne(_ text: String) {
        #expect(RedisURL(parsing: text) == nil)
    }

    @Test func theSharedKeysParseWithTheirDefaultsAndLimits() throws {
        let defaults = try SettingsParser.parse([:])
        #expect(defaults.sharedRedisURL == nil && defaults.sharedKeyPrefix == "pixxel-proxy:" && defaults.sharedTimeoutMilliseconds == 50
                && defaults.sharedInstances == 2)
        #expect(try SettingsParser.parse(["shared.redis_url": .scalar("  ")]).sharedRedisURL == nil, "empty is off")
        let on = try SettingsParser.parse(["shared.redis_url": .scalar("redis://127.0.0.1:6379"), "shared.instances": .scalar("3")])
        #expect(on.sharedRedisURL?.host == "127.0.0.1" && on.sharedInstances == 3)
        for (key, value) in [("shared.redis_url", "redis://:hunter2@h:99999"), ("shared.timeout_ms", "0"), ("shared.instances", "0"),
                             ("shared.key_prefix", "a b")] {
            #expect(throws: SettingsError.self) { try SettingsParser.parse([key: .scalar(value)]) }
        }
        // The refusal never echoes a URL that may hold a password.
        do {
            _ = try SettingsParser.parse(["shared.redis_url": .scalar("redis://:hunter2@h:99999")])
        } catch {
            #expect(!"\(error)".contains("hunter2"))
        }
    }

    @Test func anEntryGoesThroughTheCodecUnchanged() throws {
        let record = DiskRecord(key: "detail/w/j", kind: .detail, workflowID: "w", jobID: "j", body: Array(#"{"id":"j","x":[1,2]}"#.utf8),
                                headers: ["Content-Type:application/json", "X-Odd: a:b"], storedAt: 1_795_000_000.25, lifetime: 10,
                                updatedAt: 1_794_999_999.5)
        let decoded = try #require(SharedEntryCodec.decode(SharedEntryCodec.payload(of: record)))
        #expect(decoded.kind == .detail && decoded.body == record.body && decoded.headers == record.headers)
        #expect(decoded.storedAt == record.storedAt && decoded.lifetime == record.lifetime)
        #expect(SharedEntryCodec.isPlausible(decoded, validatedAt: record.storedAt))
        #expect(!SharedEntryCodec.isPlausible(decoded, validatedAt: 1e300))
        #expect(String(decoding: SharedEntryCodec.field(1_795_000_000.25), as: UTF8.self) == "1795000000.250000")
        #expect(SharedEntryCodec.field(.nan).isEmpty && SharedEntryCodec.field(nil).isEmpty)
    }

    @Test func anyBytesDecodeToAnEntryOrNothing() {
        var generator = SystemRandomNumberGenerator()
        let valid = SharedEntryCodec.payload(of: DiskRecord(key: "list/w", kind: .list, workflowID: "w", jobID: nil, body: [1, 2, 3],
                                                            headers: ["A:b"], storedAt: 1, lifetime: 1))
        for length in 0..<valid.count { _ = SharedEntryCodec.decode(Array(valid.prefix(length))) }
        for _ in 0..<2000 {
            var bytes = Array("PXS1".utf8) + (0..<Int.random(in: 0..<64, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            if bytes.count > 4, Bool.random(using: &generator) { bytes[4] = 2 }
            _ = SharedEntryCodec.decode(bytes)
        }
        // A header count or length past the end is refused, not read.
        #expect(SharedEntryCodec.decode(Array("PXS1".utf8) + [2] + [UInt8](repeating: 0, count: 16) + [255, 255, 255, 255]) == nil)
    }

    @Test func messagesRoundTripAndNonsenseIsIgnored() {
        let messages: [SharedMessage] = [.stored(diskKey: "detail/w/j"), .written(diskKey: "list/w"), .landed(diskKey: "list/w"), .purge(workflow: "w", job: nil),
                                         .purge(workflow: "w", job: "j"), .purgeRoutes(prefix: "/v0/blocks"), .pause(seconds: 2.5)]
        for message in messages { #expect(SharedMessage(message.text) == message) }
        for nonsense in ["", "stored", "stored ", "pause", "pause x", "pause -1", "pause nan", "pause 1e400", "hello world", "purge"] {
            #expect(SharedMessage(nonsense) == nil, "\(nonsense)")
        }
    }

    /// Answers token requests as the test says, when the budget asks (not at once), like Redis.
    final class ScriptedSource: SharedTokenSource {
        var isAvailable = true
        var asked: [(SharedTokenAnswer) -> Void] = []
        var pausesShared: [Double] = []
        func takeToken(_ answer: @escaping (SharedTokenAnswer) -> Void) { asked.append(answer) }
        func sharePause(seconds: Double) { pausesShared.append(seconds) }
        func answer(_ value: SharedTokenAnswer) { asked.removeFirst()(value) }
    }

    @Test func withRedisUpEveryTokenComesFromItOneQuestionAtATimeInTheQueuesOrder() {
        let time = VirtualTime()
        let source = ScriptedSource()
        let budget = UpstreamBudget(scheduler: time, rate: 4, burst: 2, maxQueued: 10, clock: time.clock, shared: source, instances: 2)
        var granted: [String] = []
        for name in ["a", "b", "c"] {
            budget.acquire(client: name, priority: .interactive, deadline: time.now + 30, grant: { granted.append(name) }, refuse: { _ in })
        }
        #expect(granted.isEmpty, "no local token while Redis is up")
        #expect(source.asked.count == 1, "one question in flight")
        source.answer(.granted)
        #expect(granted == ["a"])
        source.answer(.wait(seconds: 0.25, paused: false))
        #expect(source.asked.isEmpty, "Redis said when: nobody asks before")
        time.advance(to: time.now + 0.25)
        source.answer(.granted)
        source.answer(.granted)
        #expect(granted == ["a", "b", "c"])
        #expect(budget.sharedGrants == 3 && budget.localGrants == 0)
    }

    @Test func aPauseInRedisPausesHereAndAPauseHereIsShared() {
        let time = VirtualTime()
        let source = ScriptedSource()
        let budget = UpstreamBudget(scheduler: time, rate: 4, burst: 2, maxQueued: 10, clock: time.clock, shared: source, instances: 2)
        var refusals: [UpstreamBudget.Refusal] = []
        budget.acquire(client: "a", priority: .interactive, deadline: time.now + 30, waitsDuringPause: false, grant: {}, refuse: { refusals.append($0) })
        source.answer(.wait(seconds: 60, paused: true))
        #expect(refusals == [.rateLimited(retryAfter: 60)], "a caller with stale data gets it at once")
        #expect(budget.pauseRemaining() == 60)
        #expect(source.pausesShared.isEmpty, "a pause learnt from Redis is not told again")
        budget.pause(seconds: 90)
        #expect(source.pausesShared == [90])
    }

    @Test func withRedisAwayAnInstanceSpendsOnlyItsShare() {
        let time = VirtualTime()
        let source = ScriptedSource()
        source.isAvailable = false
        let budget = UpstreamBudget(scheduler: time, rate: 4, burst: 2, maxQueued: 100, clock: time.clock, shared: source, instances: 2)
        var grantedAt: [Double] = []
        for _ in 0..<9 {
            budget.acquire(client: "a", priority: .interactive, deadline: time.now + 30, grant: { grantedAt.append(time.now) }, refuse: { _ in })
        }
        time.advance(to: time.now + 4)
        // Burst 2/2 = 1 at once, then 4/2 = 2 a second.
        #expect(grantedAt.count == 9)
        #expect(grantedAt.map { $0 - 1000 } == [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4])
        #expect(source.asked.isEmpty && budget.localGrants == 9)
    }

    @Test func aSlowAnswerFromRedisMakesThatCallOnTheLocalShare() {
        let time = VirtualTime()
        let source = ScriptedSource()
        let budget = UpstreamBudget(scheduler: time, rate: 4, burst: 2, maxQueued: 10, clock: time.clock, shared: source, instances: 2)
        var granted = 0
        budget.acquire(client: "a", priority: .interactive, deadline: time.now + 30, grant: { granted += 1 }, refuse: { _ in })
        source.answer(.unavailable)
        #expect(granted == 1 && budget.localGrants == 1)
    }

    @Test func theTerminalViewShowsTheSharedTierWhenOneIsConfigured() {
        let down: [String: Any] = ["shared": ["state": "down", "hits": 3, "lease_waits": 1, "budget_tokens_from_redis": 7, "redis_errors": 2]]
        #expect(StatusReport.render(down, url: "http://x").contains("shared tier  DOWN, acting alone   hits 3   lease waits 1   tokens from Redis 7   Redis errors 2"))
        #expect(!StatusReport.render(["shared": ["state": "off"]], url: "http://x").contains("shared tier"))
    }
}
