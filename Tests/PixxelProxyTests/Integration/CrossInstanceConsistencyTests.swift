import Foundation
import Synchronization
import Testing

/// Two `pixxel-proxy serve` processes sharing one Redis, in front of a scripted upstream whose
/// lists and details the test sets apart (a replica that lags on lists): what one instance has
/// shown, the other never shows older, and a job written through one is in the other's lists.
@Suite(.serialized) struct CrossInstanceConsistencyTests {
    typealias ScriptedPixxel = InvalidationFlowTests.ScriptedPixxel

    final class ScriptedPair: @unchecked Sendable {
        let redis: RedisProcess
        let pixxel: ScriptedPixxel
        let token: String
        let a: ChildProcess, portA: UInt16
        private(set) var b: ChildProcess, portB: UInt16
        let logA = LogSink(), logB = LogSink()
        private let directories = [TemporaryDirectory(), TemporaryDirectory()]
        private let clients: String, sharedEnvironment: [String: String]

        init(environment: [String: String] = [:]) throws {
            redis = try RedisProcess()
            pixxel = try ScriptedPixxel()
            clients = directories[0].path + "/clients"
            token = try ProcessTests.run(["token", "add", "ci", "--scopes", "read,write,admin", "--clients-file", clients]).stdout
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let shared = ["PIXXEL_PROXY_SHARED_REDIS_URL": redis.url, "PIXXEL_PROXY_SHARED_TIMEOUT_MS": "500",
                          "PIXXEL_PROXY_CACHE_TTL_JOB_LIST_SECONDS": "600", "PIXXEL_PROXY_CACHE_TTL_ACTIVE_JOB_SECONDS": "600"]
                .merging(environment) { $1 }
            sharedEnvironment = shared
            (a, portA) = try ProcessTests.startServe(simPort: pixxel.upstream.port, clients: clients, directory: directories[0],
                                                     extraEnvironment: shared, log: logA)
            (b, portB) = try ProcessTests.startServe(simPort: pixxel.upstream.port, clients: clients, directory: directories[1],
                                                     extraEnvironment: shared, log: logB)
            guard eventually({ self.state(self.portA) == "up" && self.state(self.portB) == "up" }) else {
                stop()
                throw RawHTTPError(description: "the instances did not join Redis: \(logA.all.joined()) \(logB.all.joined())")
            }
        }

        func get(_ port: UInt16, _ target: String, headers: [(String, String)] = []) throws -> RawResponse {
            try RawHTTPClient.request(port: port, target: target, headers: [("Authorization", token)] + headers)
        }

        func state(_ port: UInt16) -> String? {
            ((try? get(port, "/admin/stats"))?.json?["shared"] as? [String: Any])?["state"] as? String
        }

        func eventuallyUp(_ port: UInt16) -> Bool { eventually { self.state(port) == "up" } }

        func writeThroughs(_ port: UInt16) -> Int {
            ((try? get(port, "/admin/stats"))?.json?["invalidation"] as? [String: Any])?["write_throughs"] as? Int ?? -1
        }

        /// The `updated_at` of each job the list shows through `port`.
        func listed(_ port: UInt16) -> [String: String] {
            let jobs = ((try? get(port, "/v0/workflows/w/jobs"))?.json?["jobs"] as? [[String: Any]]) ?? []
            return Dictionary(jobs.compactMap { job in (job["id"] as? String).map { ($0, job["updated_at"] as? String ?? "") } }) { $1 }
        }

        /// Stops B with SIGTERM: what it stored is on its disk.
        func stopB() {
            b.terminate()
            b.waitUntilExit()
        }

        /// Jobs x and y at t0, listed through B (and so held by A too), then B stopped.
        func showListThroughBThenStopB() {
            let t0 = CrossInstanceConsistencyTests.t0
            pixxel.publish(["x", "y"], updatedAt: t0)
            #expect(listed(portB) == ["x": t0, "y": t0])
            stopB()
        }

        /// Starts B again on the same store (stopping it first if it runs) and, unless told
        /// not to, waits until it has joined Redis.
        func restartB(awaitingRedis: Bool = true) throws {
            stopB()
            (b, portB) = try ProcessTests.startServe(simPort: pixxel.upstream.port, clients: clients, directory: directories[1],
                                                     extraEnvironment: sharedEnvironment, log: logB)
            if awaitingRedis && !eventuallyUp(portB) { throw RawHTTPError(description: "B did not join Redis again") }
        }

        func stop() {
            for process in [a, b] {
                process.terminate()
                process.waitUntilExit()
            }
            pixxel.upstream.stop()
            redis.stop()
        }
    }

    static let t0 = "2026-11-20T10:00:00Z", t5 = "2026-11-20T10:00:05Z", t7 = "2026-11-20T10:00:07Z"

    /// Found by the two-instance soak: a detail shown through B, newer than the lists of a
    /// lagging replica, and a list A fetched afterwards from that replica. A showed the job
    /// older than B had (it did not take in a detail it did not hold), and B kept its whole
    /// older list rather than take A's, so B's clients did not see the job A's list had news of.
    @Test(.needs(.redisServer)) func aJobShownThroughOneInstanceIsNeverOlderInTheOthersList() throws {
        let pair = try ScriptedPair()
        defer { pair.stop() }
        pair.pixxel.publish(["x", "y"], updatedAt: Self.t0)
        #expect(pair.listed(pair.portB) == ["x": Self.t0, "y": Self.t0])
        #expect(pair.listed(pair.portA) == ["x": Self.t0, "y": Self.t0], "A holds the list too (from the shared tier)")

        // y moves on; the upstream's lists lag behind its details.
        pair.pixxel.state.withLock { $0.detailUpdatedAt["y"] = Self.t7 }
        let detail = try pair.get(pair.portB, "/v0/workflows/w/jobs/y")
        #expect(detail.json?["updated_at"] as? String == Self.t7)
        // A learns of it through Redis: its list shows y as B's client saw it.
        #expect(eventually { pair.listed(pair.portA)["y"] == Self.t7 })

        // x moves on too; A asks the upstream for the list, which still shows y at t0.
        pair.pixxel.state.withLock { $0.listUpdatedAt["x"] = Self.t5; $0.detailUpdatedAt["x"] = Self.t5 }
        let refetched = try pair.get(pair.portA, "/v0/workflows/w/jobs", headers: [("Cache-Control", "no-cache")])
        let jobs = (refetched.json?["jobs"] as? [[String: Any]]) ?? []
        let shown = Dictionary(jobs.compactMap { job in (job["id"] as? String).map { ($0, job["updated_at"] as? String ?? "") } }) { $1 }
        #expect(shown == ["x": Self.t5, "y": Self.t7], "A's refetched list took y back")
        // B takes A's list in: x's news, with y as newest.
        #expect(eventually { pair.listed(pair.portB) == ["x": Self.t5, "y": Self.t7] }, "\(pair.listed(pair.portB))")
        #expect(pair.pixxel.calls("GET /v0/workflows/w/jobs ") == 2, "B did not fetch the list itself")
    }

    /// Found by the two-instance soak (a job created through A missing from 13 of B's lists
    /// for 6 s): B's list fetch went upstream before the POST and landed after A had written
    /// the job through, but before A's messages reached B. B added the job from A's message
    /// about it, then took in the copy of its own list that Redis held, which lacked the job,
    /// and judged "crossed the creation" by that copy's confirmation time, after the POST.
    @Test(.needs(.redisServer)) func aJobWrittenThroughOneInstanceIsInTheOthersListFetchedAcrossTheCreation() throws {
        // Redis is paused below for a moment: the instances wait for it rather than act alone.
        let pair = try ScriptedPair(environment: ["PIXXEL_PROXY_SHARED_TIMEOUT_MS": "20000"])
        defer { pair.stop() }
        pair.pixxel.publish(["x"], updatedAt: Self.t0)
        #expect(pair.listed(pair.portB) == ["x": Self.t0])

        // B refetches the list; the upstream holds it, with the jobs as they were.
        let listGate = DispatchSemaphore(value: 0)
        pair.pixxel.listGate.withLock { $0 = listGate }
        let portA = pair.portA, portB = pair.portB, token = pair.token
        let crossing = BackgroundCall {
            try RawHTTPClient.request(port: portB, target: "/v0/workflows/w/jobs", headers: [("Authorization", token), ("Cache-Control", "no-cache")])
        }
        #expect(eventually { pair.pixxel.calls("GET /v0/workflows/w/jobs ") == 2 })
        // A's POST reaches the upstream, which creates the job and holds the answer.
        let postGate = DispatchSemaphore(value: 0)
        pair.pixxel.postGate.withLock { $0 = postGate }
        let created = BackgroundCall {
            try RawHTTPClient.request(port: portA, method: "POST", target: "/v0/workflows/w/jobs?project_id=p", headers: [("Authorization", token)])
        }
        #expect(eventually { pair.pixxel.calls("POST ") == 1 })

        // Redis hangs: A writes the job through; the message, and so the POST's answer, wait.
        pair.redis.pause()
        postGate.signal()
        #expect(eventually { pair.writeThroughs(pair.portA) == 1 })
        // B's list lands before the message.
        listGate.signal()
        #expect(try crossing.value().status == 200)
        pair.redis.resume()
        #expect(try created.value().status == 200)

        #expect(eventually { pair.listed(pair.portB)["new"] != nil }, "B's list lacks the job A created")
        #expect(pair.pixxel.calls("GET /v0/workflows/w/jobs ") == 2, "without another list fetch")
    }

    /// Found by the two-instance soak: B, restarted, answered from its disk before it had
    /// joined Redis, and so showed a job older than A had shown it while B was down. An
    /// instance now takes connections only once its first attempt to join Redis has ended,
    /// and learns from Redis what is newer than a list it takes from a tier.
    @Test(.needs(.redisServer)) func aRestartedInstanceJoinsRedisBeforeItAnswersFromItsDisk() throws {
        // Redis is paused while B starts: a long timeout keeps B waiting for it.
        let pair = try ScriptedPair(environment: ["PIXXEL_PROXY_SHARED_TIMEOUT_MS": "20000"])
        defer { pair.stop() }
        // B goes down with the list on its disk; meanwhile y moves on, and A shows it.
        pair.showListThroughBThenStopB()
        pair.pixxel.state.withLock { $0.detailUpdatedAt["y"] = Self.t7 }
        #expect(try pair.get(pair.portA, "/v0/workflows/w/jobs/y").json?["updated_at"] as? String == Self.t7)

        // B comes back while Redis does not answer, and a client asks it for the list.
        pair.redis.pause()
        try pair.restartB(awaitingRedis: false)
        let fd = try RawHTTPClient.connect(port: pair.portB, timeoutSeconds: 60)
        defer { close(fd) }
        RawHTTPClient.send(Array("GET /v0/workflows/w/jobs HTTP/1.1\r\nHost: b\r\nAuthorization: \(pair.token)\r\nConnection: close\r\n\r\n".utf8), to: fd)
        // While Redis stays silent (within the join bound, 40 s here) B answers nothing: a
        // second is ample for a B that answers from its disk at once to show it.
        var waiting = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        #expect(poll(&waiting, 1, 1000) == 0, "B answered before it had joined Redis")
        pair.redis.resume()
        let answer = try RawHTTPClient.parse(RawHTTPClient.readUntilClosed(fd, timeoutSeconds: 60))
        let jobs = (answer.json?["jobs"] as? [[String: Any]]) ?? []
        let shown = Dictionary(jobs.compactMap { job in (job["id"] as? String).map { ($0, job["updated_at"] as? String ?? "") } }) { $1 }
        #expect(shown["y"] == Self.t7, "B showed y as its disk had it: \(shown), \(answer.header("Cache-Status") ?? "")")
    }

    /// Found by the two-instance soak (example 2): on an upstream failure B served its own
    /// stale list, older than the one A had put in Redis. Here B's copy is the one its disk
    /// kept over a restart, and the request a revalidation (which looks past Redis); A's newer
    /// copy in Redis is as stale (lists are never fresh here).
    @Test(.needs(.redisServer)) func onAnUpstreamFailureTheNewerStaleCopyInRedisIsServedNotTheInstancesOwn() throws {
        let pair = try ScriptedPair(environment: ["PIXXEL_PROXY_CACHE_TTL_JOB_LIST_SECONDS": "0"])
        defer { pair.stop() }
        pair.pixxel.publish(["x", "y"], updatedAt: Self.t0)
        #expect(pair.listed(pair.portB) == ["x": Self.t0, "y": Self.t0])

        // B goes down with the list on its disk; y moves on, and A's list shows it.
        pair.stopB()
        pair.pixxel.publish(["x", "y"], updatedAt: Self.t7)
        let refetched = try pair.get(pair.portA, "/v0/workflows/w/jobs", headers: [("Cache-Control", "no-cache")])
        #expect((refetched.json?["jobs"] as? [[String: Any]])?.map { $0["updated_at"] as? String } == [Self.t7, Self.t7])

        // The upstream fails every list; B comes back and is asked for it.
        pair.pixxel.state.withLock { $0.listStatus = 503 }
        try pair.restartB()
        // A revalidation: it goes past the shared tier to the upstream, which fails.
        let answer = try pair.get(pair.portB, "/v0/workflows/w/jobs", headers: [("Cache-Control", "no-cache")])
        #expect(answer.status == 200)
        #expect(answer.header("Cache-Status")?.contains("fwd-status=503") == true, "\(answer.header("Cache-Status") ?? "")")
        let jobs = (answer.json?["jobs"] as? [[String: Any]]) ?? []
        #expect(jobs.map { $0["updated_at"] as? String } == [Self.t7, Self.t7], "B served its own older copy")
    }

    /// Found by the two-instance soak: Redis was killed, A showed a job newer while both acted
    /// alone, and Redis came back empty; B went on showing the job older, as nothing in Redis
    /// told it otherwise. Back with Redis, an instance shares the lists it holds.
    @Test(.needs(.redisServer)) func whatOneInstanceShowedWhileRedisWasAwayReachesTheOtherWhenItComesBackEmpty() throws {
        let pair = try ScriptedPair()
        defer { pair.stop() }
        pair.pixxel.publish(["x"], updatedAt: Self.t0)
        #expect(pair.listed(pair.portB) == ["x": Self.t0])
        #expect(pair.listed(pair.portA) == ["x": Self.t0], "A holds the list too (from the shared tier)")

        pair.redis.kill()
        #expect(eventually { pair.state(pair.portA) != "up" && pair.state(pair.portB) != "up" })
        // Alone, A refetches the list: x has moved on.
        pair.pixxel.publish(["x"], updatedAt: Self.t5)
        let refetched = try pair.get(pair.portA, "/v0/workflows/w/jobs", headers: [("Cache-Control", "no-cache")])
        #expect((refetched.json?["jobs"] as? [[String: Any]])?.first?["updated_at"] as? String == Self.t5)

        try pair.redis.start()
        #expect(pair.eventuallyUp(pair.portA) && pair.eventuallyUp(pair.portB))
        #expect(eventually { pair.listed(pair.portB) == ["x": Self.t5] }, "B still shows x as before: \(pair.listed(pair.portB))")
        #expect(pair.pixxel.calls("GET /v0/workflows/w/jobs ") == 2, "B did not fetch the list itself")
    }

    /// Found by review: B's own stale list, from its disk, was served on an upstream failure
    /// although Redis held a newer detail of one of its jobs; Redis held no list to compare
    /// with (it had come back empty).
    @Test(.needs(.redisServer)) func onAnUpstreamFailureAStaleListLearnsTheNewerDetailsRedisHolds() throws {
        let pair = try ScriptedPair(environment: ["PIXXEL_PROXY_CACHE_TTL_JOB_LIST_SECONDS": "0"])
        defer { pair.stop() }
        pair.showListThroughBThenStopB()

        // Redis comes back empty; y moves on, and A shows its detail (Redis then holds it).
        pair.redis.kill()
        try pair.redis.start()
        #expect(pair.eventuallyUp(pair.portA))
        pair.pixxel.state.withLock { $0.detailUpdatedAt["y"] = Self.t7 }
        #expect(try pair.get(pair.portA, "/v0/workflows/w/jobs/y").json?["updated_at"] as? String == Self.t7)

        pair.pixxel.state.withLock { $0.listStatus = 503 }
        try pair.restartB()
        let answer = try pair.get(pair.portB, "/v0/workflows/w/jobs")
        let shown = Dictionary(((answer.json?["jobs"] as? [[String: Any]]) ?? []).compactMap { job in
            (job["id"] as? String).map { ($0, job["updated_at"] as? String ?? "") }
        }) { $1 }
        #expect(answer.status == 200 && shown == ["x": Self.t0, "y": Self.t7], "\(answer.status) \(shown) \(answer.header("Cache-Status") ?? "")")
    }

    /// Found by review: a list of more than 10,000 jobs learnt nothing of the jobs past the
    /// first 10,000 asked (and, with one Redis command per job, its commands timed out).
    @Test(.needs(.redisServer)) func aListOfManyThousandJobsLearnsANewerVersionOfAnyOfThem() throws {
        let pair = try ScriptedPair()
        defer { pair.stop() }
        let ids = (0..<12_000).map { String(format: "j%05d", $0) }
        pair.pixxel.publish(ids, updatedAt: Self.t0)
        #expect(pair.listed(pair.portB).count == 12_000)
        pair.stopB()
        // Every job moves on, and A shows each detail: Redis holds them all newer.
        pair.pixxel.state.withLock { state in for id in ids { state.detailUpdatedAt[id] = Self.t7 } }
        // Thirty of them, spread over the list (the old bound left a random sixth unasked).
        let sample = stride(from: 7, to: 12_000, by: 400).map { ids[$0] }
        for id in sample {
            #expect(try pair.get(pair.portA, "/v0/workflows/w/jobs/\(id)").json?["updated_at"] as? String == Self.t7)
        }
        try pair.restartB()
        let shown = pair.listed(pair.portB)
        #expect(sample.filter { shown[$0] != Self.t7 } == [])
    }

    /// Found by review: an entry forged in Redis under one job's key, holding another job's
    /// newer document, was taken in by a list's learning step without the store's checks: the
    /// list showed the other job twice, and the detail answered the wrong job.
    @Test(.needs(.redisServer)) func aForgedRedisEntryHoldingAnotherJobIsNotLearntByAList() throws {
        let pair = try ScriptedPair()
        defer { pair.stop() }
        pair.showListThroughBThenStopB()
        pair.pixxel.state.withLock { $0.detailUpdatedAt["y"] = Self.t7 }
        #expect(try pair.get(pair.portA, "/v0/workflows/w/jobs/y").json?["updated_at"] as? String == Self.t7)
        // y's newer entry, copied under x's key.
        #expect(try pair.redis.command(["COPY", "pixxel-proxy:entry:detail/w/y", "pixxel-proxy:entry:detail/w/x", "REPLACE"]) == ":1")

        try pair.restartB()
        let ids = ((try pair.get(pair.portB, "/v0/workflows/w/jobs").json?["jobs"] as? [[String: Any]]) ?? []).map { $0["id"] as? String }
        #expect(ids.sorted { ($0 ?? "") < ($1 ?? "") } == ["x", "y"])
        #expect(try pair.get(pair.portB, "/v0/workflows/w/jobs/x").json?["id"] as? String == "x")
    }

    /// Found by review: one supersession mark forged in Redis, a day ahead, made a whole list
    /// answer 502 for as long as the process ran (the job, completed, never catches up).
    @Test(.needs(.redisServer)) func aSupersessionMarkFromTheFutureInRedisIsNotBelieved() throws {
        let pair = try ScriptedPair()
        defer { pair.stop() }
        pair.showListThroughBThenStopB()
        #expect(try pair.get(pair.portA, "/v0/workflows/w/jobs/y").json?["updated_at"] as? String == Self.t0)
        let ahead = String(Date().timeIntervalSince1970 + 20 * 3600)
        #expect(try pair.redis.command(["HSET", "pixxel-proxy:entry:detail/w/y", "s", ahead]) == ":1")

        try pair.restartB()
        let list = try pair.get(pair.portB, "/v0/workflows/w/jobs")
        #expect(list.status == 200, "\(list.status) \(list.header("Cache-Status") ?? "")")
    }

    /// Found by the second review: one key of another type under the prefix (a string where an
    /// entry's hash belongs) failed the whole batch of a list's learning, and every batch after.
    @Test(.needs(.redisServer)) func aKeyOfTheWrongTypeInRedisDoesNotStopAListLearningTheRest() throws {
        let pair = try ScriptedPair()
        defer { pair.stop() }
        pair.showListThroughBThenStopB()
        pair.pixxel.state.withLock { $0.detailUpdatedAt["y"] = Self.t7 }
        #expect(try pair.get(pair.portA, "/v0/workflows/w/jobs/y").json?["updated_at"] as? String == Self.t7)
        #expect(try pair.redis.command(["SET", "pixxel-proxy:entry:detail/w/x", "junk"]) == "+OK")

        try pair.restartB()
        #expect(pair.listed(pair.portB)["y"] == Self.t7)
    }
}
