import Foundation
import Synchronization
import Testing
@testable import JobCache

/// "Never older": no answer shows a job older than a version the proxy has already shown or
/// learned, whichever way it learned it and whichever path the answer takes.
@Suite struct NeverOlderTests {
    typealias ScriptedPixxel = InvalidationFlowTests.ScriptedPixxel

    static func updatedAt(of id: String, in response: RawResponse) -> String? {
        (response.json?["jobs"] as? [[String: Any]])?.first { $0["id"] as? String == id }?["updated_at"] as? String
    }

    /// Found by the two-instance soak on one instance: a list refresh requested before a newer
    /// detail landed was stored after it, and the list took the job back to the version the
    /// detail had replaced (`hit; ttl=-4` showing 15:48:30 after 15:48:32 was shown).
    @Test func aListRequestedBeforeANewerDetailLandedDoesNotTakeTheJobBack() async throws {
        let pixxel = try ScriptedPixxel()
        defer { pixxel.upstream.stop() }
        pixxel.publish(["a", "b"], updatedAt: "2026-11-20T10:00:00Z")
        let clock = ManualClock()
        let proxy = try ScriptedHarness.start(pixxel, clock)
        _ = try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken)
        clock.advance(6)

        // The list's refetch goes upstream and is held there with the jobs as they were.
        let gate = DispatchSemaphore(value: 0)
        pixxel.listGate.withLock { $0 = gate }
        let port = proxy.port, token = proxy.readToken
        let crossing = BackgroundCall { try RawHTTPClient.request(port: port, target: "/v0/workflows/w/jobs", headers: [("Authorization", token)]) }
        #expect(eventually { pixxel.calls("GET /v0/workflows/w/jobs ") == 2 })

        // Meanwhile a newer version of a is fetched and shown.
        pixxel.state.withLock { $0.detailUpdatedAt["a"] = "2026-11-20T10:00:07Z"; $0.listUpdatedAt["a"] = "2026-11-20T10:00:07Z" }
        let detail = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        #expect(detail.json?["updated_at"] as? String == "2026-11-20T10:00:07Z")

        // The refetch lands with the older a.
        pixxel.listGate.withLock { $0 = nil }
        gate.signal()
        let landed = try crossing.value()
        #expect(landed.status == 200)
        #expect(Self.updatedAt(of: "a", in: landed) == "2026-11-20T10:00:07Z", "a went back to the version its detail replaced")
        #expect(Self.updatedAt(of: "b", in: landed) == "2026-11-20T10:00:00Z")
        let hit = try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken)
        #expect(hit.header("Cache-Status")?.contains("hit") == true)
        #expect(Self.updatedAt(of: "a", in: hit) == "2026-11-20T10:00:07Z")
        let again = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        #expect(again.json?["updated_at"] as? String == "2026-11-20T10:00:07Z")
        #expect(again.header("Cache-Status")?.contains("hit") == true, "the detail is still the newest and still fresh")
        await proxy.stop()
    }

    /// Found by the kill -9 soak: a detail superseded on disk, answered after a restart with the
    /// upstream failing, said `fwd=miss` (memory held nothing), which hid why nothing cached
    /// was served. Refused or refetched, a superseded detail says `detail=superseded`.
    @Test(arguments: [false, true])
    func aSupersededDetailThatCannotBeRefetchedSaysSo(restarted: Bool) async throws {
        let documents = try CacheCorrectnessTests.Documents()
        defer { documents.recorder.stop() }
        let directory = TemporaryDirectory()
        documents.set("/v0/workflows/w/jobs/a", CacheCorrectnessTests.Documents.job("a", "2026-11-20T10:00:00Z"))
        documents.set("/v0/workflows/w/jobs", #"{"jobs":[\#(CacheCorrectnessTests.Documents.job("a", "2026-11-20T10:05:00Z"))]}"#)
        var proxy = try CacheCorrectnessTests.proxy(documents, directory: directory.path) { $0.staleIfErrorSeconds = 86_400 }
        #expect(try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken).status == 200)
        #expect(try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken).status == 200)
        if restarted {
            await proxy.stop()
            proxy = try CacheCorrectnessTests.proxy(documents, directory: directory.path) { $0.staleIfErrorSeconds = 86_400 }
        }
        documents.fail(true)
        let answer = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        #expect(answer.status == 503, "the superseded copy is not served, not even stale")
        let status = answer.header("Cache-Status") ?? ""
        #expect(status.contains("fwd=stale") && status.contains("detail=superseded"), "\(status)")
        // Refetched once the upstream is back: why it went upstream is said too.
        documents.fail(false)
        documents.set("/v0/workflows/w/jobs/a", CacheCorrectnessTests.Documents.job("a", "2026-11-20T10:05:00Z"))
        let refetched = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        #expect(refetched.json?["updated_at"] as? String == "2026-11-20T10:05:00Z")
        #expect(refetched.header("Cache-Status") == "pixxel-proxy; fwd=stale; fwd-status=200; detail=superseded; stored")
        await proxy.stop()
    }

    /// Found by the kill -9 soak: a detail fetched 36 ms before the kill reached the disk, the
    /// list it had patched in memory did not; after the restart, with the upstream failing, the
    /// list from disk showed the job 6 s older than the detail had, for 10 s.
    @Test func aListReadFromDiskIsPatchedFromANewerDetailTheDiskHolds() async throws {
        let documents = try CacheCorrectnessTests.Documents()
        defer { documents.recorder.stop() }
        let directory = TemporaryDirectory()
        documents.set("/v0/workflows/w/jobs", #"{"jobs":[\#(CacheCorrectnessTests.Documents.job("a", "2026-11-20T10:00:00Z")),\#(CacheCorrectnessTests.Documents.job("b", "2026-11-20T10:00:00Z"))]}"#)
        var proxy = try CacheCorrectnessTests.proxy(documents, directory: directory.path) { $0.staleIfErrorSeconds = 86_400 }
        #expect(try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken).status == 200)
        await proxy.stop()

        // What a crash leaves: the newer detail's row written, the list's patch not.
        let newer = Array(CacheCorrectnessTests.Documents.job("a", "2026-11-20T10:00:07Z").utf8)
        let now = Date().timeIntervalSince1970
        let store = try DiskStore(directory: directory.path, budgetBytes: 64 << 20)
        store.save(DiskRecord(key: "detail/w/a", kind: .detail, workflowID: "w", jobID: "a", body: newer,
                              headers: ["Content-Type:application/json"], storedAt: now, lifetime: 10,
                              updatedAt: Timestamp.parse("2026-11-20T10:00:07Z"), validatedAt: now))
        store.flush()

        documents.fail(true)
        proxy = try CacheCorrectnessTests.proxy(documents, directory: directory.path) { $0.staleIfErrorSeconds = 86_400 }
        let list = try proxy.get("/v0/workflows/w/jobs", token: proxy.readToken)
        #expect(list.status == 200, "\(list.text)")
        #expect(Self.updatedAt(of: "a", in: list) == "2026-11-20T10:00:07Z", "the list took a back to before its detail")
        #expect(Self.updatedAt(of: "b", in: list) == "2026-11-20T10:00:00Z")
        let detail = try proxy.get("/v0/workflows/w/jobs/a", token: proxy.readToken)
        #expect(detail.json?["updated_at"] as? String == "2026-11-20T10:00:07Z")
        await proxy.stop()
    }
}
