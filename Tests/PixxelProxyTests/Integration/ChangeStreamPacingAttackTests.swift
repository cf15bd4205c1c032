import Foundation
import ProxyConfig
import ProxyServer
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Attacks on the paced backlog (936a43a): ids, pacing, duplicates.
@Suite(.serialized) struct ChangeStreamPacingAttackTests {
    typealias Documents = CacheCorrectnessTests.Documents
    static let list = ChangeStreamTests.list
    static let watch = ChangeStreamTests.watch

    static func big(_ id: String, _ updatedAt: String, size: Int = 20_000) -> String {
        #"{"id":"\#(id)","status":"running","updated_at":"\#(updatedAt)","notes":"\#(String(repeating: "x", count: size))"}"#
    }
    static func name(_ i: Int) -> String { String(format: "j%03d", i) }
    static func stamp(_ i: Int) -> String { String(format: "2026-11-10T%02d:%02d:00Z", i / 60, i % 60) }

    /// Every event read until none comes within the client's timeout.
    static func drainQuietly(_ stream: EventStreamClient) -> [EventStreamClient.Event] {
        var events: [EventStreamClient.Event] = []
        while let event = try? stream.next() { events.append(event) }
        return events
    }

    /// A job still queued in a stream's backlog changes: it is sent at its old place in the
    /// backlog, as it is now, and its new token becomes the stream's id while older jobs are still
    /// queued behind it. A reader that leaves after that event and resumes with its id (as the
    /// README says) never gets those older jobs: the resume overlap is a minute, they are days older.
    @Test func anIdNeverCoversJobsStillQueued() async throws {
        let count = 400  // about 8 MB: most of it waits in the backlog for a reader with a small window
        var jobs = (0..<count).map { Self.big(Self.name($0), Self.stamp($0)) }
        let documents = try ChangeStreamTests.documents(jobs)
        defer { documents.recorder.stop() }
        let clock = ManualClock()
        let proxy = try CacheCorrectnessTests.proxy(documents, clock: clock) { $0.watchHeartbeatSeconds = 600 }
        var received: [EventStreamClient.Event] = []
        do {
            let stream = try ChangeStreamTests.open(proxy, receiveBuffer: 4096)
            received += try stream.events(1)
            #expect(received.first?.jobID == "j000")
            // j300, still queued, changes now.
            jobs[300] = Self.big("j300", "2026-11-20T10:00:00Z")
            documents.set(Self.list, ChangeStreamTests.listBody(jobs))
            clock.advance(6)
            #expect(eventually { documents.calls(Self.list) >= 2 })
            // Up to j300's new version, wherever the stream puts it.
            while let event = try stream.next() {
                received.append(event)
                if event.jobID == "j300", (event.json?["updated_at"] as? String) == "2026-11-20T10:00:00Z" { break }
            }
            // The reader leaves here (its socket closes with `stream`).
        }
        let resumeFrom = try #require(received.last?.id)
        let unsent = Set((0..<count).map(Self.name)).subtracting(received.compactMap(\.jobID))
        // The changed job moved to the end of the backlog: every older job came before it (before
        // the fix it came at its old place, with 99 jobs still queued behind its newer id).
        #expect(unsent.isEmpty, "\(unsent.count) jobs were still to come after j300's id")
        let resumed = try EventStreamClient(port: proxy.port, target: Self.watch, headers: [("Authorization", proxy.readToken),
                                                                                            ("Last-Event-ID", resumeFrom)], timeoutSeconds: 3)
        try resumed.readHead()
        let again = Set(Self.drainQuietly(resumed).compactMap(\.jobID))
        let lost = unsent.subtracting(again)
        #expect(lost.count == 0, "resuming from \(resumeFrom) (the id the reader was given with j300) never sends \(lost.count) jobs, e.g. \(lost.sorted().prefix(3))")
        await proxy.stop()
    }

    /// The same invariant, on the stream itself: once an id is sent, no later event of the same
    /// stream may be a job older than that id minus the resume overlap (a reader resuming from
    /// the earlier id would never get it).
    @Test func idsNeverRunAheadOfTheJobsStillToCome() async throws {
        let count = 400
        var jobs = (0..<count).map { Self.big(Self.name($0), Self.stamp($0)) }
        let documents = try ChangeStreamTests.documents(jobs)
        defer { documents.recorder.stop() }
        let clock = ManualClock()
        let proxy = try CacheCorrectnessTests.proxy(documents, clock: clock) { $0.watchHeartbeatSeconds = 600 }
        let stream = try EventStreamClient(port: proxy.port, target: Self.watch, headers: [("Authorization", proxy.readToken)],
                                           receiveBuffer: 4096, timeoutSeconds: 3)
        try stream.readHead()
        var events = try stream.events(1)
        jobs[250] = Self.big("j250", "2026-11-20T10:00:00Z")
        documents.set(Self.list, ChangeStreamTests.listBody(jobs))
        clock.advance(6)
        #expect(eventually { documents.calls(Self.list) >= 2 })
        usleep(1_500_000)
        events += Self.drainQuietly(stream)
        var violations: [String] = []
        var newestID: String?
        for event in events where event.name == "job" {
            let updated = event.json?["updated_at"] as? String ?? ""
            if let newestID, newestID.hasPrefix("17") {
                // The id's microseconds against this job's updated_at.
                let idSeconds = Double(newestID.prefix { $0 != "_" })! / 1e6
                let jobSeconds = ISO8601DateFormatter().date(from: updated)!.timeIntervalSince1970
                if jobSeconds < idSeconds - 60 { violations.append("\(event.jobID ?? "?")@\(updated) after id \(newestID)") }
            }
            newestID = event.id
        }
        #expect(violations.count == 0, "\(violations.count) jobs sent after an id that covers them: \(violations.prefix(2))")
        await proxy.stop()
    }

    /// A reader on a slow link that takes bytes steadily (one 20 KB event every 100 or 300 ms)
    /// must not be ended as "too slow" (stall = two 0.5 s heartbeats). Passes on 936a43a: kept
    /// as a guard.
    @Test(arguments: [(4096, 100_000), (nil, 100_000), (nil, 300_000)] as [(Int?, UInt32)])
    func aSlowButSteadyReaderIsNotOverflowed(_ receiveBuffer: Int?, _ pause: UInt32) async throws {
        let jobs = (0..<400).map { Self.big(Self.name($0), Self.stamp($0)) }
        let documents = try ChangeStreamTests.documents(jobs)
        defer { documents.recorder.stop() }
        let proxy = try CacheCorrectnessTests.proxy(documents) { $0.watchHeartbeatSeconds = 0.5 }
        let stream = try ChangeStreamTests.open(proxy, receiveBuffer: receiveBuffer)
        var names: [String] = []
        let started = Date()
        while Date().timeIntervalSince(started) < 8, let event = try stream.next() {
            names.append(event.name)
            if event.name == "overflow" { break }
            usleep(pause)
        }
        #expect(!names.contains("overflow"), "a reader that took \(names.count) events in \(Int(Date().timeIntervalSince(started))) s, one every \(pause / 1000) ms (receive buffer \(receiveBuffer.map(String.init) ?? "default")), was overflowed")
        await proxy.stop()
    }

    /// Slots after many ends of every kind (FIN, reset, HEAD, overflow with the reader then
    /// leaving, an upstream error): all come back, the caps admit again, and a drain ends at once.
    @Test func slotsComeBackAfterManyCyclesOfEveryKind() async throws {
        let upstream = try AttackUpstream()
        defer { upstream.recorder.stop() }
        let padding = String(repeating: "x", count: 400_000)
        let bigJobs = (0..<12).map { #"{"id":"j\#($0)","status":"running","updated_at":"2026-11-20T10:00:00Z","notes":"\#(padding)"}"# }
        upstream.set(Self.list, ChangeStreamTests.listBody(bigJobs))
        let proxy = try upstream.proxy {
            $0.watchMaxStreams = 2
            $0.watchMaxStreamsPerClient = 2
            $0.watchHeartbeatSeconds = 0.2
        }
        for round in 0..<6 {
            // FIN after the first event.
            let fin = try ChangeStreamTests.open(proxy)
            _ = try fin.events(1)
            fin.finishSending()
            // Reset while the backlog is pending.
            do {
                let reset = try ChangeStreamTests.open(proxy, receiveBuffer: 4096)
                var linger = linger(l_onoff: 1, l_linger: 0)
                setsockopt(reset.fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
            }
            #expect(eventually { proxy.server.changeStreamSlots == 0 }, "round \(round): \(proxy.server.changeStreamSlots) slots after FIN and reset")
            // HEAD.
            let head = try proxy.request("HEAD", Self.watch, token: proxy.readToken)
            #expect(head.status == 200)
            // Overflow: a reader that reads nothing, then leaves.
            do {
                let stalled = try ChangeStreamTests.open(proxy, receiveBuffer: 4096)
                #expect(eventually { proxy.server.changeStreamCount == 0 }, "round \(round): never overflowed")
                _ = stalled
            }
            // An upstream error.
            upstream.set("/v0/workflows/e/jobs", #"{"error":{"code":"x","message":"x","details":null}}"#, status: 500)
            let failed = try ChangeStreamTests.open(proxy, "/v0/workflows/e/jobs?watch=1")
            #expect(failed.status != 200)
            #expect(eventually { proxy.server.changeStreamSlots == 0 }, "round \(round): \(proxy.server.changeStreamSlots) slots held")
        }
        let a = try ChangeStreamTests.open(proxy), b = try ChangeStreamTests.open(proxy)
        #expect(a.status == 200 && b.status == 200, "\(a.status) \(b.status)")
        await proxy.stop()
    }
}
