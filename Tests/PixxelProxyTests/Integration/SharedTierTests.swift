import Foundation
import PixxelSim
import Testing

/// Two `pixxel-proxy serve` processes over one simulator and one real Redis of the test's own:
/// the shared cache tier, coalescing across instances, one budget, invalidation, the pause,
/// and Redis dying and coming back (issue 14).
@Suite(.serialized) struct SharedTierTests {
    /// Two instances sharing a Redis. Each has its own cache directory; they share the clients file.
    final class Pair: @unchecked Sendable {
        let redis: RedisProcess
        let sim: SimServer
        let simPort: UInt16
        let token: String
        private(set) var a: ChildProcess, portA: UInt16
        let b: ChildProcess, portB: UInt16
        private let clients: String
        private let sharedEnvironment: [String: String]
        let logA = LogSink(), logB = LogSink()
        private var directories = [TemporaryDirectory(), TemporaryDirectory()]

        init(environment: [String: String] = [:], configure: (inout SimOptions) -> Void = { _ in }) throws {
            redis = try RedisProcess()
            let (sim, simPort) = try startSimulator(configure: configure)
            self.sim = sim
            self.simPort = simPort
            let clients = directories[0].path + "/clients"
            self.clients = clients
            token = try ProcessTests.run(["token", "add", "ci", "--scopes", "read,write,admin", "--clients-file", clients]).stdout
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let shared = ["PIXXEL_PROXY_SHARED_REDIS_URL": redis.url, "PIXXEL_PROXY_SHARED_TIMEOUT_MS": "500"].merging(environment) { $1 }
            sharedEnvironment = shared
            (a, portA) = try ProcessTests.startServe(simPort: simPort, clients: clients, directory: directories[0], extraEnvironment: shared,
                                                     log: logA)
            (b, portB) = try ProcessTests.startServe(simPort: simPort, clients: clients, directory: directories[1], extraEnvironment: shared,
                                                     log: logB)
            guard eventually({ state(portA) == "up" && state(portB) == "up" }) else {
                stop()
                throw RawHTTPError(description: "the instances did not join Redis: \(logA.all.joined()) \(logB.all.joined())")
            }
        }

        /// A's process ended and a new one started on an empty cache directory: it holds nothing.
        func restartAEmpty() throws {
            a.terminate()
            a.waitUntilExit()
            directories.append(TemporaryDirectory())
            (a, portA) = try ProcessTests.startServe(simPort: simPort, clients: clients, directory: directories[directories.count - 1],
                                                     extraEnvironment: sharedEnvironment, log: logA)
            guard eventually({ state(portA) == "up" }) else { throw RawHTTPError(description: "A did not join Redis again") }
        }

        /// Creates a job through `port` in the workflow of the list `target`; its id.
        func createJob(through port: UInt16, list target: String) throws -> String {
            let created = try RawHTTPClient.request(port: port, method: "POST", target: target + "?project_id=p",
                                                    headers: [("Authorization", token)])
            guard created.status == 200 || created.status == 201, let id = created.json?["id"] as? String else {
                throw RawHTTPError(description: "the job was not created: \(created.status) \(created.text)")
            }
            return id
        }

        /// The ids the list `target` shows through `port` (none when it does not answer).
        func listIDs(_ port: UInt16, _ target: String) -> [String] {
            ((try? get(port, target))?.json?["jobs"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }
        }

        func get(_ port: UInt16, _ target: String, headers: [(String, String)] = []) throws -> RawResponse {
            try RawHTTPClient.request(port: port, target: target, headers: [("Authorization", token)] + headers)
        }

        func shared(_ port: UInt16) -> [String: Any] {
            ((try? get(port, "/admin/stats"))?.json?["shared"] as? [String: Any]) ?? [:]
        }

        func state(_ port: UInt16) -> String? { shared(port)["state"] as? String }

        func count(_ port: UInt16, _ name: String) -> Int { shared(port)[name] as? Int ?? -1 }

        func stop() {
            for process in [a, b] {
                process.terminate()
                process.waitUntilExit()
            }
            sim.stop()
            redis.stop()
        }
    }

    /// Jobs of the simulator's first workflow, read from the simulator itself (not through a
    /// proxy, which would make the read a list sighting).
    static func jobs(_ pair: Pair) throws -> [[String: Any]] {
        let answer = try RawHTTPClient.request(port: pair.simPort, target: "/v0/workflows/\(pair.sim.workflowIDs[0])/jobs",
                                               headers: [("Authorization", ProxyHarness.apiKey)])
        return answer.json?["jobs"] as? [[String: Any]] ?? []
    }

    static func detailTarget(_ sim: SimServer, _ job: String) -> String { "/v0/workflows/\(sim.workflowIDs[0])/jobs/\(job)" }

    @Test(.needs(.redisServer)) func aDetailFetchedThroughAIsAHitOnBWithNoUpstreamCall() throws {
        let pair = try Pair()
        defer { pair.stop() }
        let job = try #require(Self.jobs(pair).first?["id"] as? String)
        let callsBefore = pair.sim.stats.total
        let first = try pair.get(pair.portA, Self.detailTarget(pair.sim, job))
        #expect(first.status == 200)
        #expect(first.header("Cache-Status")?.contains("fwd=miss") == true)
        // A's store reaches Redis just after its answer; B finds it there.
        #expect(eventually { pair.count(pair.portA, "stores") >= 1 })
        let second = try pair.get(pair.portB, Self.detailTarget(pair.sim, job))
        #expect(second.status == 200)
        #expect(second.header("Cache-Status")?.contains("hit") == true && second.header("Cache-Status")?.contains("detail=shared") == true,
                "\(second.header("Cache-Status") ?? "")")
        #expect(second.body == first.body, "the same bytes")
        #expect(pair.sim.stats.total == callsBefore + 1, "one upstream call for both instances")
        // B keeps it in memory: the next read is a plain hit.
        #expect(try pair.get(pair.portB, Self.detailTarget(pair.sim, job)).header("Cache-Status")?.hasPrefix("pixxel-proxy; hit") == true)
    }

    @Test(.needs(.redisServer)) func fortyConcurrentMissesSpreadOverBothInstancesCostOneUpstreamCall() throws {
        let pair = try Pair { $0.faults.latencyMilliseconds = 400 }
        defer { pair.stop() }
        let job = try #require(Self.jobs(pair).first?["id"] as? String)
        let callsBefore = pair.sim.stats.total
        let target = Self.detailTarget(pair.sim, job)
        let answers = concurrently(40) { index in try? pair.get(index % 2 == 0 ? pair.portA : pair.portB, target) }
        #expect(answers.allSatisfy { $0?.status == 200 })
        #expect(Set(answers.compactMap { $0?.body }).count == 1, "every client got the same job")
        #expect(pair.sim.stats.total == callsBefore + 1, "\(pair.sim.stats.total - callsBefore) upstream calls")
        #expect(pair.count(pair.portA, "lease_waits") + pair.count(pair.portB, "lease_waits") >= 1)
    }

    @Test(.needs(.redisServer)) func aBudgetSharedByBothInstancesHoldsUnderLoad() throws {
        let pair = try Pair(environment: ["PIXXEL_PROXY_UPSTREAM_REQUESTS_PER_SECOND": "4", "PIXXEL_PROXY_UPSTREAM_BURST": "2"])
        defer { pair.stop() }
        let jobs = try Self.jobs(pair).compactMap { $0["id"] as? String }.prefix(16)
        #expect(jobs.count == 16)
        let arrivalsBefore = pair.sim.stats.arrivals.count
        let answers = concurrently(jobs.count) { index in
            try? pair.get(index % 2 == 0 ? pair.portA : pair.portB, Self.detailTarget(pair.sim, jobs[jobs.index(jobs.startIndex, offsetBy: index)]))
        }
        #expect(answers.allSatisfy { $0?.status == 200 }, "\(answers.map { $0?.status ?? 0 })")
        let arrivals = Array(pair.sim.stats.arrivals.dropFirst(arrivalsBefore))
        #expect(arrivals.count == jobs.count)
        // In every window, the calls of both instances together fit one bucket of 4/s + 2. The
        // instances are other processes, so the times are arrivals at the simulator, each late
        // by its own delivery: windows get 0.9 of a token's time (0.225 s) of slack, which
        // forgives that much jitter and still catches one call too many (a whole 0.25 s over).
        let violations = budgetWindowViolations(arrivals, rate: 4, burst: 2, slackSeconds: 0.9 / 4)
        #expect(violations.isEmpty, "\(violations.prefix(5))")
        #expect(pair.count(pair.portA, "budget_tokens_from_redis") + pair.count(pair.portB, "budget_tokens_from_redis") == jobs.count)
    }

    @Test(.needs(.redisServer)) func aListThroughAThatInvalidatesADetailStopsBFromServingIt() throws {
        let pair = try Pair(environment: ["PIXXEL_PROXY_CACHE_TTL_ACTIVE_JOB_SECONDS": "600"]) {
            $0.pendingSeconds = 0
            $0.runningSeconds = 10_000
            $0.progressStepSeconds = 5
        }
        defer { pair.stop() }
        let running = try Self.jobs(pair).first { ($0["status"] as? String)?.lowercased() == "running" }
        let job = try #require(running?["id"] as? String)
        let target = Self.detailTarget(pair.sim, job)
        let old = try pair.get(pair.portB, target)
        #expect(old.status == 200)
        let oldUpdatedAt = old.json?["updated_at"] as? String
        #expect(try pair.get(pair.portB, target).header("Cache-Status")?.hasPrefix("pixxel-proxy; hit") == true)
        // The job moves on upstream; A's list shows it newer.
        pair.sim.advanceClock(by: 60)
        let list = try pair.get(pair.portA, "/v0/workflows/\(pair.sim.workflowIDs[0])/jobs")
        let listed = (list.json?["jobs"] as? [[String: Any]])?.first { $0["id"] as? String == job }?["updated_at"] as? String
        #expect(listed != nil && listed != oldUpdatedAt)
        // B stops serving its copy (the message reaches it within milliseconds) and fetches the job anew.
        #expect(eventually {
            let answer = try? pair.get(pair.portB, target)
            return answer?.status == 200 && answer?.json?["updated_at"] as? String == listed
        })
        #expect(pair.count(pair.portB, "invalidations_received") >= 1)
    }

    @Test(.needs(.redisServer)) func aJobCreatedThroughAIsInTheListBHolds() throws {
        let pair = try Pair(environment: ["PIXXEL_PROXY_CACHE_TTL_JOB_LIST_SECONDS": "600"])
        defer { pair.stop() }
        let target = "/v0/workflows/\(pair.sim.workflowIDs[0])/jobs"
        #expect(try pair.get(pair.portB, target).status == 200)
        #expect(try pair.get(pair.portB, target).header("Cache-Status")?.hasPrefix("pixxel-proxy; hit") == true)
        let id = try pair.createJob(through: pair.portA, list: target)
        let callsAfterPost = pair.sim.stats.total
        // B's cached list gets the job from A's write-through, without an upstream call.
        #expect(eventually { pair.listIDs(pair.portB, target).contains(id) })
        #expect(pair.sim.stats.total == callsAfterPost)
    }

    /// The creating instance need not hold the list: A, started after B cached it, has never
    /// seen it, and the job still reaches B's list without an upstream call.
    @Test(.needs(.redisServer)) func aJobCreatedThroughAnInstanceThatNeverHeldTheListIsInTheListTheOtherHolds() throws {
        let pair = try Pair(environment: ["PIXXEL_PROXY_CACHE_TTL_JOB_LIST_SECONDS": "600"])
        defer { pair.stop() }
        let target = "/v0/workflows/\(pair.sim.workflowIDs[0])/jobs"
        #expect(try pair.get(pair.portB, target).status == 200)
        try pair.restartAEmpty()
        #expect(try pair.get(pair.portB, target).header("Cache-Status")?.hasPrefix("pixxel-proxy; hit") == true)
        let id = try pair.createJob(through: pair.portA, list: target)
        let callsAfterPost = pair.sim.stats.total
        #expect(eventually { pair.listIDs(pair.portB, target).contains(id) })
        #expect(pair.sim.stats.total == callsAfterPost)
    }

    @Test(.needs(.redisServer)) func aRetryAfterSeenByAPausesB() throws {
        let pair = try Pair(environment: ["PIXXEL_PROXY_UPSTREAM_TIMEOUT_SECONDS": "5"])
        defer { pair.stop() }
        let jobs = try Self.jobs(pair).compactMap { $0["id"] as? String }
        try #require(jobs.count >= 2)
        // From now on the upstream answers 429 with Retry-After: 60.
        var faults = pair.sim.faults
        faults.rateLimitRate = 1
        faults.retryAfterSeconds = 60
        pair.sim.faults = faults
        let callsBefore = pair.sim.stats.total
        let first = try pair.get(pair.portA, Self.detailTarget(pair.sim, jobs[0]))
        #expect(first.status == 429)
        #expect(pair.sim.stats.total == callsBefore + 1)
        // B has not called the upstream yet; its first call would be refused too. It makes none.
        let second = try pair.get(pair.portB, Self.detailTarget(pair.sim, jobs[1]))
        #expect(second.status == 429)
        #expect(Int(second.header("Retry-After") ?? "") ?? 0 > 50, "the remaining pause: \(second.header("Retry-After") ?? "none")")
        #expect(pair.sim.stats.total == callsBefore + 1, "B made no upstream call during A's pause")
    }

    @Test(.needs(.redisServer)) func aLeaderThatDiesLetsItsLeaseExpireAndOneWaiterTakesOver() throws {
        let pair = try Pair()
        defer { pair.stop() }
        let job = try #require(Self.jobs(pair).first?["id"] as? String)
        let diskKey = "detail/\(pair.sim.workflowIDs[0])/\(job)"
        // An instance took the lease and died before fetching: nobody will announce anything.
        #expect(try pair.redis.command(["SET", "pixxel-proxy:lease:\(diskKey)", "dead-instance", "PX", "1500"]) == "+OK")
        let callsBefore = pair.sim.stats.total
        let answers = concurrently(6) { index in try? pair.get(index % 2 == 0 ? pair.portA : pair.portB, Self.detailTarget(pair.sim, job)) }
        #expect(answers.allSatisfy { $0?.status == 200 })
        #expect(pair.sim.stats.total == callsBefore + 1, "one waiter took over, the others got its answer")
        #expect(pair.count(pair.portA, "lease_takeovers") + pair.count(pair.portB, "lease_takeovers") == 1)
    }

    @Test(.needs(.redisServer)) func aClientAskingForRevalidationNeverGetsAnAnswerFetchedBeforeItAsked() throws {
        let pair = try Pair()
        defer { pair.stop() }
        let job = try #require(Self.jobs(pair).first?["id"] as? String)
        let target = Self.detailTarget(pair.sim, job)
        #expect(try pair.get(pair.portA, target).status == 200)
        #expect(eventually { pair.count(pair.portA, "stores") >= 1 })
        // Another instance holds the lease (and died): B waits, finds only the answer Redis had
        // before it asked, and must not take it.
        #expect(try pair.redis.command(["SET", "pixxel-proxy:lease:detail/\(pair.sim.workflowIDs[0])/\(job)", "dead-instance", "PX", "800"]) == "+OK")
        let callsBefore = pair.sim.stats.total
        let answer = try pair.get(pair.portB, target, headers: [("Cache-Control", "no-cache")])
        #expect(answer.status == 200)
        #expect(answer.header("Cache-Status")?.contains("fwd=request") == true, "\(answer.header("Cache-Status") ?? "")")
        #expect(pair.sim.stats.total == callsBefore + 1, "revalidated upstream")
    }

    @Test(.needs(.redisServer)) func redisKilledMidLoadLeavesBothServingOnTheirShareAndTheyRejoinWhenItIsBack() throws {
        let pair = try Pair(environment: ["PIXXEL_PROXY_UPSTREAM_REQUESTS_PER_SECOND": "4", "PIXXEL_PROXY_UPSTREAM_BURST": "2",
                                          "PIXXEL_PROXY_SHARED_INSTANCES": "2"])
        defer { pair.stop() }
        let jobs = try Self.jobs(pair).compactMap { $0["id"] as? String }
        try #require(jobs.count >= 14)
        #expect(try pair.get(pair.portA, Self.detailTarget(pair.sim, jobs[0])).status == 200)
        pair.redis.kill()
        #expect(eventually { pair.state(pair.portA) == "down" && pair.state(pair.portB) == "down" })
        // Both keep answering: what they hold, and new misses on their own share of the budget.
        #expect(try pair.get(pair.portA, Self.detailTarget(pair.sim, jobs[0])).status == 200)
        let arrivalsBefore = pair.sim.stats.arrivals.count
        let answers = concurrently(8) { index in try? pair.get(pair.portA, Self.detailTarget(pair.sim, jobs[1 + index])) }
        #expect(answers.allSatisfy { $0?.status == 200 }, "\(answers.map { $0?.status ?? 0 })")
        // A alone spends at most its share: 4/2 = 2 calls a second, a burst of 2/2 = 1.
        let arrivals = Array(pair.sim.stats.arrivals.dropFirst(arrivalsBefore))
        #expect(arrivals.count == 8)
        // Arrival times at the simulator: 0.9 of a token's time (0.45 s at 2/s) of slack for
        // delivery, still short of the whole token one call too many would take.
        let violations = budgetWindowViolations(arrivals, rate: 2, burst: 1, slackSeconds: 0.9 / 2)
        #expect(violations.isEmpty, "\(violations.prefix(5))")
        #expect(try pair.get(pair.portB, Self.detailTarget(pair.sim, jobs[12])).status == 200)
        // Said once in the log, not once per request.
        #expect(pair.logA.all.joined().components(separatedBy: "Redis unreachable").count - 1 == 1)
        // Redis back on its port: both rejoin without a restart, and share again.
        try pair.redis.start()
        #expect(eventually { pair.state(pair.portA) == "up" && pair.state(pair.portB) == "up" })
        #expect(try pair.get(pair.portA, Self.detailTarget(pair.sim, jobs[13])).status == 200)
        #expect(eventually { pair.count(pair.portA, "stores") >= 1 })
        #expect(try pair.get(pair.portB, Self.detailTarget(pair.sim, jobs[13])).header("Cache-Status")?.contains("detail=shared") == true)
    }

    @Test(.needs(.redisServer)) func whatRedisHoldsCannotCrashOrMisleadAnInstance() throws {
        let pair = try Pair()
        defer { pair.stop() }
        let jobs = try Self.jobs(pair).compactMap { $0["id"] as? String }
        try #require(jobs.count >= 3)
        let workflow = pair.sim.workflowIDs[0]
        // Garbage payloads, absurd instants, a key of the wrong type, a bogus message.
        try pair.redis.command(["HSET", "pixxel-proxy:entry:detail/\(workflow)/\(jobs[0])", "u", "x", "v", "1e308", "d", "PXS1\u{1}garbage"])
        try pair.redis.command(["HSET", "pixxel-proxy:entry:detail/\(workflow)/\(jobs[1])", "u", "", "v", "nan", "d", ""])
        try pair.redis.command(["SET", "pixxel-proxy:entry:detail/\(workflow)/\(jobs[2])", "not a hash"])
        try pair.redis.command(["SET", "pixxel-proxy:budget:tat", "not a number"])
        try pair.redis.command(["PUBLISH", "pixxel-proxy:events", "x stored detail/\(workflow)/\(jobs[0])"])
        try pair.redis.command(["PUBLISH", "pixxel-proxy:events", "x pause 1e400"])
        try pair.redis.command(["PUBLISH", "pixxel-proxy:events", "x purge"])
        for job in jobs.prefix(3) {
            let answer = try pair.get(pair.portA, Self.detailTarget(pair.sim, job))
            #expect(answer.status == 200)
            #expect(answer.json?["id"] as? String == job)
        }
        #expect(pair.state(pair.portA) == "up")
    }

    @Test func checkConfigShowsTheRedisURLWithThePasswordRedactedAndFindsTheCredential() throws {
        let directory = TemporaryDirectory()
        let clients = directory.path + "/clients"
        _ = try ProcessTests.run(["token", "add", "ci", "--scopes", "read", "--clients-file", clients])
        let inURL = try ProcessTests.run(["check-config"], environment: [
            "PIXXEL_PROXY_AUTH_CLIENTS_FILE": clients, "PIXXEL_PROXY_SHARED_REDIS_URL": "redis://:hunter2-secret@127.0.0.1:6390/3",
        ])
        #expect(inURL.status == 0, "\(inURL.stderr)")
        #expect(inURL.stdout.contains("shared.redis_url: redis://:<redacted>@127.0.0.1:6390/3 (password from shared.redis_url)"))
        #expect(!(inURL.stdout + inURL.stderr).contains("hunter2"))
        let credentials = directory.path + "/credentials"
        try FileManager.default.createDirectory(atPath: credentials, withIntermediateDirectories: true)
        _ = directory.file("credentials/redis_password", "from-systemd-credential\n")
        let fromCredential = try ProcessTests.run(["check-config"], environment: [
            "PIXXEL_PROXY_AUTH_CLIENTS_FILE": clients, "PIXXEL_PROXY_SHARED_REDIS_URL": "redis://127.0.0.1:6390", "CREDENTIALS_DIRECTORY": credentials,
        ])
        #expect(fromCredential.status == 0, "\(fromCredential.stderr)")
        #expect(fromCredential.stdout.contains("redis://:<redacted>@127.0.0.1:6390/0 (password from credential redis_password)"))
        #expect(!fromCredential.stdout.contains("from-systemd-credential"))
        let bad = try ProcessTests.run(["check-config"], environment: [
            "PIXXEL_PROXY_AUTH_CLIENTS_FILE": clients, "PIXXEL_PROXY_SHARED_REDIS_URL": "redis://:hunter2-secret@127.0.0.1:99999",
        ])
        #expect(bad.status == 78 && bad.stderr.contains("shared.redis_url") && !bad.stderr.contains("hunter2"))
    }

    @Test(.needs(.redisServer)) func aPasswordProtectedRedisIsJoinedAndAWrongPasswordLeavesTheInstanceServingAlone() throws {
        let redis = try RedisProcess(arguments: ["--requirepass", "right-password"])
        defer { redis.stop() }
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let directory = TemporaryDirectory()
        let clients = directory.path + "/clients"
        let token = try ProcessTests.run(["token", "add", "ci", "--scopes", "read,admin", "--clients-file", clients]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        for (password, state) in [("right-password", "up"), ("wrong-password", "down")] {
            let log = LogSink()
            let (process, port) = try ProcessTests.startServe(simPort: simPort, clients: clients, directory: directory, extraEnvironment: [
                "PIXXEL_PROXY_SHARED_REDIS_URL": "redis://:\(password)@127.0.0.1:\(redis.port)",
            ], log: log)
            defer {
                process.terminate()
                process.waitUntilExit()
            }
            func shared() -> [String: Any]? {
                (try? RawHTTPClient.request(port: port, target: "/admin/stats", headers: [("Authorization", token)]))?.json?["shared"] as? [String: Any]
            }
            #expect(eventually { shared()?["state"] as? String == state && (state == "up" || shared()?["problem"] != nil) })
            let answer = try RawHTTPClient.request(port: port, target: "/v0/workflows/\(sim.workflowIDs[0])/jobs", headers: [("Authorization", token)])
            #expect(answer.status == 200)
            #expect(!log.all.joined().contains(password), "no password in the log")
        }
    }
}
