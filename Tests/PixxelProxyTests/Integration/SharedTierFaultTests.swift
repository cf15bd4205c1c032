import Foundation
import PixxelSim
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The shared tier under faults: two real instances and a real Redis of the test's own
/// (`SharedTierTests.Pair`), with refused subscriptions, purges while Redis is away, odd key
/// prefixes, pauses and marks from Redis that must be bounded, and lease timers that must stop.
@Suite(.serialized, .needs(.redisServer)) struct SharedTierFaultTests {
    typealias Pair = SharedTierTests.Pair

    static func detailTarget(_ pair: Pair, _ job: String) -> String { "/v0/workflows/\(pair.sim.workflowIDs[0])/jobs/\(job)" }

    static func firstJob(_ pair: Pair) throws -> String {
        try #require(SharedTierTests.jobs(pair).first?["id"] as? String)
    }

    /// The whole reply of one command (RedisProcess.command keeps a bulk string's first line only).
    static func rawRedis(_ redis: RedisProcess, _ arguments: [String]) throws -> String {
        let bytes = [arguments, ["QUIT"]].flatMap(RedisProcess.resp)
        return String(decoding: try RawHTTPClient.exchange(port: redis.port, bytes: bytes, timeoutSeconds: 5), as: UTF8.self)
    }

    /// `calls=` of one command in `INFO commandstats`.
    static func commandCalls(_ redis: RedisProcess, _ name: String) throws -> Int {
        let info = try rawRedis(redis, ["INFO", "commandstats"])
        guard let line = info.components(separatedBy: "\r\n").first(where: { $0.hasPrefix("cmdstat_\(name):") }),
              let calls = line.split(separator: ",").first?.split(separator: "=").last.flatMap({ Int($0) }) else { return 0 }
        return calls
    }

    // MARK: A subscriber that is refused never gives up "connecting"

    /// Redis 7 gives a new ACL user no pub/sub channel (`acl-pubsub-default resetchannels`): an
    /// operator who writes `~pixxel-proxy:* +@all` for the proxy's user gets SUBSCRIBE refused
    /// with NOPERM. hiredis then drops the subscriber's connection, `linkBroke` ignores it (the
    /// link is not up yet), the subscription's `confirmed` never runs and `connecting` stays
    /// true: no log line, no problem in /admin/stats, and no reconnection ever, even after the
    /// operator grants the channel.
    @Test func aRefusedSubscriptionIsReportedAndTheInstanceJoinsOnceTheChannelIsGranted() throws {
        let redis = try RedisProcess()
        defer { redis.stop() }
        #expect(try redis.command(["ACL", "SETUSER", "proxy", "on", ">proxy-pass", "~*", "+@all", "resetchannels"]) == "+OK")
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let directory = TemporaryDirectory()
        let clients = directory.path + "/clients"
        let token = try ProcessTests.run(["token", "add", "ci", "--scopes", "read,admin", "--clients-file", clients]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let log = LogSink()
        let (process, port) = try ProcessTests.startServe(simPort: simPort, clients: clients, directory: directory, extraEnvironment: [
            "PIXXEL_PROXY_SHARED_REDIS_URL": "redis://proxy:proxy-pass@127.0.0.1:\(redis.port)", "PIXXEL_PROXY_SHARED_TIMEOUT_MS": "500",
        ], log: log)
        defer {
            process.terminate()
            process.waitUntilExit()
        }
        func shared() -> [String: Any] {
            ((try? RawHTTPClient.request(port: port, target: "/admin/stats", headers: [("Authorization", token)]))?.json?["shared"]
                as? [String: Any]) ?? [:]
        }
        // The instance got as far as SUBSCRIBE, and Redis refused it.
        #expect(eventually { ((try? Self.rawRedis(redis, ["ACL", "LOG"])) ?? "").contains("pixxel-proxy:events") },
                "Redis logged the refused channel")
        #expect(shared()["state"] as? String == "down")
        // The operator is told, as for any other reason Redis cannot be used.
        #expect(eventually { log.all.joined().contains("Redis unreachable") || shared()["problem"] != nil },
                "a refused subscription is neither logged nor shown: \(shared())")
        // The operator grants the channel: the instance joins without a restart.
        #expect(try redis.command(["ACL", "SETUSER", "proxy", "allchannels"]) == "+OK")
        #expect(eventually { shared()["state"] as? String == "up" },
                "never reconnects after a refused SUBSCRIBE: \(shared())")
        // It still serves meanwhile (acting alone).
        #expect(try RawHTTPClient.request(port: port, target: "/v0/workflows/\(sim.workflowIDs[0])/jobs",
                                          headers: [("Authorization", token)]).status == 200)
    }

    // MARK: A workflow purge is announced before Redis has dropped its details

    /// `SharedCacheTier.purge` sends SCAN (the details are UNLINKed only when its replies come
    /// back, step by step) and publishes "purge W" at once: the other instance drops its copy
    /// on the message, and its next request finds the purged detail still in Redis, serves it
    /// and adopts it into memory again, where it outlives the purge.
    @Test func afterAWorkflowPurgeOnATheOtherInstanceDoesNotServeThePurgedDetailFromRedis() throws {
        let pair = try Pair()
        defer { pair.stop() }
        let job = try Self.firstJob(pair)
        let target = Self.detailTarget(pair, job)
        #expect(try pair.get(pair.portA, target).status == 200)
        #expect(eventually { pair.count(pair.portA, "stores") >= 1 })
        #expect(try pair.get(pair.portB, target).header("Cache-Status")?.contains("detail=shared") == true)
        // A Redis with other data in it too (other prefixes, other applications): SCAN takes many steps.
        for chunk in 0..<12 {
            #expect(try pair.redis.command(["EVAL", "for i = 1, 25000 do redis.call('SET', 'other:' .. ARGV[1] .. ':' .. i, 'x') end return 1",
                                            "0", "\(chunk)"]) == ":1")
        }
        // Both still joined (no heartbeat missed while Redis was busy): B will hear the purge.
        #expect(eventually { pair.state(pair.portA) == "up" && pair.state(pair.portB) == "up" })
        #expect(pair.count(pair.portB, "redis_disconnects") == 0)
        let callsBefore = pair.sim.stats.total
        let messagesBefore = pair.count(pair.portB, "messages_received")
        let purge = try RawHTTPClient.request(port: pair.portA, method: "POST", target: "/admin/purge?workflow_id=\(pair.sim.workflowIDs[0])",
                                              headers: [("Authorization", pair.token)])
        #expect(purge.status == 200)
        // B has the message within milliseconds; its next read of the job must not be the purged copy.
        #expect(eventually { pair.count(pair.portB, "messages_received") > messagesBefore })
        let after = try pair.get(pair.portB, target)
        #expect(after.status == 200)
        #expect(after.header("Cache-Status")?.contains("hit") == false, "B served the purged detail: \(after.header("Cache-Status") ?? "")")
        #expect(pair.sim.stats.total > callsBefore, "B went upstream after the purge")
    }

    // MARK: A key prefix with glob characters

    /// `shared.key_prefix` accepts `[`, `*`, `?` (anything but spaces), and the purge's
    /// `SCAN MATCH` escapes only the disk-key part: with `pp[1]:` the pattern matches `ppX:`
    /// keys, never the instance's own, so a workflow purge leaves every detail in Redis and
    /// the other instance serves the purged detail from there.
    @Test func aWorkflowPurgeReachesRedisWithAKeyPrefixHoldingBrackets() throws {
        let pair = try Pair(environment: ["PIXXEL_PROXY_SHARED_KEY_PREFIX": "pp[1]:"])
        defer { pair.stop() }
        let job = try Self.firstJob(pair)
        let target = Self.detailTarget(pair, job)
        let entry = "pp[1]:entry:detail/\(pair.sim.workflowIDs[0])/\(job)"
        #expect(try pair.get(pair.portA, target).status == 200)
        #expect(eventually { (try? pair.redis.command(["EXISTS", entry])) == ":1" })
        let purge = try RawHTTPClient.request(port: pair.portA, method: "POST", target: "/admin/purge?workflow_id=\(pair.sim.workflowIDs[0])",
                                              headers: [("Authorization", pair.token)])
        #expect(purge.status == 200)
        #expect(eventually { (try? pair.redis.command(["EXISTS", entry])) == ":0" }, "the purged detail stays in Redis")
        let fromB = try pair.get(pair.portB, target)
        #expect(fromB.header("Cache-Status")?.contains("detail=shared") == false, "B served the purged detail from Redis")
    }

    // MARK: The pause read from Redis is not capped

    /// A pause another instance (or anyone) put in Redis reaches this instance through the
    /// token script's answer, and `askShared` applies it with `pauseHere(seconds:)` uncapped,
    /// while the same pause by message is capped by `upstream.max_retry_after_seconds`. An
    /// instance with a longer cap (or a forged key) stops this one for hours, and the pause
    /// stays in this process after the key is gone.
    @Test func aPauseFoundInRedisIsCappedByThisInstancesMaxRetryAfter() throws {
        let pair = try Pair(environment: ["PIXXEL_PROXY_UPSTREAM_MAX_RETRY_AFTER_SECONDS": "30"])
        defer { pair.stop() }
        let job = try Self.firstJob(pair)
        let time = try pair.redis.command(["TIME"]).split(separator: "\n").map(String.init)
        let now = try #require(Int(time.first ?? ""))
        // Two hours from Redis's now, in µs, as the pause script writes it.
        #expect(try pair.redis.command(["SET", "pixxel-proxy:budget:pause", "\(now + 7200)000000"]) == "+OK")
        let answer = try pair.get(pair.portA, Self.detailTarget(pair, job))
        #expect(answer.status == 429)
        let retryAfter = Int(answer.header("Retry-After") ?? "") ?? -1
        #expect(retryAfter <= 30, "Retry-After \(retryAfter), above upstream.max_retry_after_seconds = 30")
        let budget = (try pair.get(pair.portA, "/admin/stats")).json?["budget"] as? [String: Any]
        let remaining = budget?["pause_remaining_seconds"] as? Double ?? (budget?["pause_remaining_seconds"] as? Int).map(Double.init) ?? -1
        #expect(remaining <= 30, "this instance is paused for \(remaining) s")
    }

    // MARK: An `s` from the far future poisons a job for good

    /// `s` (the newest `updated_at` a list showed) is taken in when within ±3,000 years; the
    /// instance records it in `newestListed` (`noteSuperseded`), and from then on every
    /// upstream answer for the job is "older than listed": 502 on every request, and still
    /// after the entry has been removed from Redis (only a restart clears it).
    @Test func aFarFutureSupersededMarkInRedisDoesNotMakeAJobUnanswerable() throws {
        let pair = try Pair()
        defer { pair.stop() }
        let job = try Self.firstJob(pair)
        let target = Self.detailTarget(pair, job)
        let entry = "pixxel-proxy:entry:detail/\(pair.sim.workflowIDs[0])/\(job)"
        #expect(try pair.get(pair.portA, target).status == 200)
        #expect(eventually { (try? pair.redis.command(["EXISTS", entry])) == ":1" })
        // Year ~4800: a list can never have shown that (updated_at comes from the upstream's clock).
        #expect(try pair.redis.command(["HSET", entry, "s", "90000000000"]) == ":1")
        let first = try pair.get(pair.portB, target)
        #expect(first.status == 200, "\(first.status) \(String(decoding: first.body, as: UTF8.self))")
        // The operator removes the bad entry: the job must be answerable again.
        #expect(try pair.redis.command(["DEL", entry]) == ":1")
        let second = try pair.get(pair.portB, target)
        #expect(second.status == 200, "still \(second.status) after the entry is gone: \(String(decoding: second.body, as: UTF8.self))")
    }

    // MARK: A written job announced under another workflow's key

    /// Anyone who can write to Redis can copy a job's entry under another workflow's key and
    /// announce it as written: the job must not appear in that workflow's lists. A real creation
    /// announced after it is the sync point (messages are taken in in order).
    @Test func aJobAnnouncedAsWrittenUnderAnotherWorkflowIsNotAddedToItsList() throws {
        let pair = try SharedTierTests.Pair(environment: ["PIXXEL_PROXY_CACHE_TTL_JOB_LIST_SECONDS": "600"])
        defer { pair.stop() }
        let (home, other) = (pair.sim.workflowIDs[0], pair.sim.workflowIDs[1])
        let otherList = "/v0/workflows/\(other)/jobs"
        #expect(try pair.get(pair.portB, otherList).status == 200)
        let job = try #require(SharedTierTests.jobs(pair).first?["id"] as? String)
        #expect(try pair.get(pair.portA, SharedTierTests.detailTarget(pair.sim, job)).status == 200)
        let entry = "pixxel-proxy:entry:detail/\(home)/\(job)"
        #expect(eventually { (try? pair.redis.command(["EXISTS", entry])) == ":1" })
        #expect(try pair.redis.command(["COPY", entry, "pixxel-proxy:entry:detail/\(other)/\(job)"]) == ":1")
        try pair.redis.command(["PUBLISH", "pixxel-proxy:events", "x written detail/\(other)/\(job)"])
        let id = try pair.createJob(through: pair.portA, list: otherList)
        #expect(eventually { pair.listIDs(pair.portB, otherList).contains(id) }, "the real creation reached B's list")
        #expect(!pair.listIDs(pair.portB, otherList).contains(job), "a job of \(home) was added to \(other)'s list")
    }

    // MARK: A lease timer overwritten without being cancelled

    /// `fetch(…, leased: true)` does `leaseTimers[diskKey] = holdLease(diskKey)` without
    /// cancelling a timer already there. Two leased fetches of one resource on one instance
    /// (its lease lost meanwhile: evicted, a Redis restart, a flush) leave one `holdLease`
    /// chain orphaned: it runs for ever, an EVALSHA a second, on an idle instance.
    @Test func anIdleInstanceStopsExtendingLeasesOnceItsFetchesLanded() throws {
        let pair = try Pair()
        defer { pair.stop() }
        let job = try Self.firstJob(pair)
        let target = Self.detailTarget(pair, job)
        let lease = "pixxel-proxy:lease:detail/\(pair.sim.workflowIDs[0])/\(job)"
        // The first call takes 5 s upstream: the window in which the test must see its lease
        // and delete it (a Redis read and a DEL, milliseconds each) before the second read.
        var faults = pair.sim.faults
        faults.latencyMilliseconds = 5000
        pair.sim.faults = faults
        let group = DispatchGroup()
        let statuses = Mutex<[Int]>([])
        func request(_ headers: [(String, String)]) {
            group.enter()
            Thread {
                let status = (try? pair.get(pair.portA, target, headers: headers))?.status ?? 0
                statuses.withLock { $0.append(status) }
                group.leave()
            }.start()
        }
        // A revalidating read takes the lease; the lease is lost while its call runs; a plain
        // read of the same resource (another flight) takes the lease again.
        let savesBefore = pair.count(pair.portA, "stores") + pair.count(pair.portA, "stores_refused")
        request([("Cache-Control", "no-cache")])
        #expect(eventually { (try? pair.redis.command(["EXISTS", lease])) == ":1" })
        #expect(try pair.redis.command(["DEL", lease]) == ":1")
        request([])
        #expect(eventually { pair.count(pair.portA, "leases_taken") == 2 })
        #expect(group.wait(timeout: .now() + awaitedSeconds) == .success)
        #expect(statuses.withLock { $0 } == [200, 200])
        faults.latencyMilliseconds = 0
        pair.sim.faults = faults
        // Each flight ends with two scripts, its save and then its lease release, sent after
        // its answer: the first release already empties the lease key, so the key alone does
        // not say the second flight's scripts are through. Both saves answered means both
        // releases are sent; A's heartbeat PING goes down the same connection after them, and
        // four more PINGs (two instances, one a second each) include one of A's.
        #expect(eventually { pair.count(pair.portA, "stores") + pair.count(pair.portA, "stores_refused") == savesBefore + 2 })
        #expect(eventually { (try? pair.redis.command(["EXISTS", lease])) == ":0" })
        let pingsSettling = try Self.commandCalls(pair.redis, "ping")
        #expect(eventually { ((try? Self.commandCalls(pair.redis, "ping")) ?? 0) >= pingsSettling + 4 })
        // Idle now. Both instances PING once a second: wait for several heartbeats, during
        // which an idle instance runs no script.
        let scriptsBefore = try Self.commandCalls(pair.redis, "evalsha")
        let pingsBefore = try Self.commandCalls(pair.redis, "ping")
        #expect(eventually { ((try? Self.commandCalls(pair.redis, "ping")) ?? 0) >= pingsBefore + 8 })
        let scriptsAfter = try Self.commandCalls(pair.redis, "evalsha")
        #expect(scriptsAfter == scriptsBefore, "\(scriptsAfter - scriptsBefore) lease extensions sent by an idle instance")
    }

    // MARK: A purge made while Redis is away comes back from Redis

    /// While the link is down, `sharePurge` does nothing in Redis (every command fails at
    /// once) and nothing is kept to do later: once the link is back, the purged detail is still
    /// in Redis, and the very instance that purged it takes it back in from there on its next
    /// miss (`detail=shared`), as does every other instance.
    @Test func aPurgeAnsweredWhileRedisWasUnreachableDoesNotComeBackFromRedis() throws {
        let pair = try Pair()
        defer { pair.stop() }
        let job = try Self.firstJob(pair)
        let target = Self.detailTarget(pair, job)
        let entry = "pixxel-proxy:entry:detail/\(pair.sim.workflowIDs[0])/\(job)"
        #expect(try pair.get(pair.portA, target).status == 200)
        #expect(eventually { (try? pair.redis.command(["EXISTS", entry])) == ":1" })
        // Redis stops answering for a while (a failover, a slow disk, CLIENT PAUSE): A's heartbeat finds it.
        // (Sent without a QUIT, which would itself wait out the pause.)
        #expect(try pair.redis.sendOnly(["CLIENT", "PAUSE", "5000", "ALL"]) == "+OK")
        #expect(eventually { pair.state(pair.portA) == "down" })
        let purge = try RawHTTPClient.request(port: pair.portA, method: "POST", target: "/admin/purge?workflow_id=\(pair.sim.workflowIDs[0])",
                                              headers: [("Authorization", pair.token)])
        #expect(purge.status == 200)
        #expect(purge.json?["shared_tier"] as? String == "queued", "\(purge.text) \(pair.shared(pair.portA))")
        #expect(eventually { pair.state(pair.portA) == "up" && pair.state(pair.portB) == "up" })
        // Done in Redis once the link is back (fix: the purge is kept and replayed).
        #expect(eventually { (try? pair.redis.command(["EXISTS", entry])) == ":0" })
        let callsBefore = pair.sim.stats.total
        let afterA = try pair.get(pair.portA, target)
        #expect(afterA.header("Cache-Status")?.contains("detail=shared") == false,
                "A serves the detail it purged, from Redis: \(afterA.header("Cache-Status") ?? "")")
        #expect(pair.sim.stats.total == callsBefore + 1, "A fetched it anew")
        // B gets A's new copy from Redis (one call for both), not the purged one.
        #expect(eventually { pair.count(pair.portA, "stores") >= 2 })
        let afterB = try pair.get(pair.portB, target)
        #expect(afterB.status == 200)
        #expect(pair.sim.stats.total == callsBefore + 1)
    }
}
