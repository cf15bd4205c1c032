import Foundation
import Testing
import JobCache

@Suite struct DiskStoreTests {
    func record(_ key: String, workflow: String = "w", job: String? = nil, size: Int = 100, storedAt: Double = 1000,
                updatedAt: Double? = nil) -> DiskRecord {
        DiskRecord(key: key, kind: job == nil ? .list : .detail, workflowID: workflow, jobID: job,
                   body: Array(repeating: UInt8(ascii: "x"), count: size), headers: ["Content-Type:application/json"],
                   storedAt: storedAt, lifetime: 10, updatedAt: updatedAt)
    }

    func load(_ store: DiskStore, _ key: String) async -> DiskRecord? {
        await withCheckedContinuation { continuation in store.load(key) { continuation.resume(returning: $0) } }
    }

    func statistics(_ store: DiskStore) async -> (Int, Int) {
        await withCheckedContinuation { continuation in store.statistics { continuation.resume(returning: ($0, $1)) } }
    }

    @Test func savesAndLoadsRecordsAcrossReopening() async throws {
        let directory = TemporaryDirectory()
        do {
            let store = try DiskStore(directory: directory.path, budgetBytes: 1 << 20)
            store.save(record("job w j1", job: "j1"))
            store.flush()
        }
        let reopened = try DiskStore(directory: directory.path, budgetBytes: 1 << 20)
        #expect(await load(reopened, "job w j1") == record("job w j1", job: "j1"))
        #expect(await load(reopened, "job w nope") == nil)
    }

    @Test func anOlderUpdatedAtNeverReplacesANewerOne() async throws {
        let directory = TemporaryDirectory()
        let store = try DiskStore(directory: directory.path, budgetBytes: 1 << 20)
        store.save(record("k", job: "k", size: 10, storedAt: 1000, updatedAt: 2000))
        store.save(record("k", job: "k", size: 20, storedAt: 3000, updatedAt: 1500))  // answered later, but older
        store.flush()
        #expect(await load(store, "k")?.body.count == 10)
        store.save(record("k", job: "k", size: 30, storedAt: 4000, updatedAt: 2000))  // same version: replaces
        store.flush()
        #expect(await load(store, "k")?.body.count == 30)
    }

    @Test func listSightingsRenewInvalidateAndCatchVanishedJobs() async throws {
        let directory = TemporaryDirectory()
        let store = try DiskStore(directory: directory.path, budgetBytes: 1 << 20)
        store.save(record("job w same", job: "same", updatedAt: 100))
        store.save(record("job w newer", job: "newer", updatedAt: 100))
        store.save(record("job w older", job: "older", updatedAt: 100))
        store.save(record("job w gone", job: "gone", updatedAt: 100))
        store.applyListSightings(workflowID: "w", sightings: ["same": 100, "newer": 200, "older": 50], now: 5000)
        store.flush()
        #expect(await load(store, "job w same")?.validatedAt == 5000)
        #expect(await load(store, "job w same")?.invalidated == false)
        #expect(await load(store, "job w newer")?.invalidated == true)
        #expect(await load(store, "job w older")?.invalidated == false)
        #expect(await load(store, "job w older")?.validatedAt == 1000)
        #expect(await load(store, "job w gone")?.invalidated == true)
    }

    @Test func staysWithinItsBudgetEvictingLeastRecentlyUsed() async throws {
        let directory = TemporaryDirectory()
        let store = try DiskStore(directory: directory.path, budgetBytes: 10_000)
        for index in 0..<100 { store.save(record("job w j\(index)", job: "j\(index)", size: 500)) }
        store.flush()
        let (entries, bytes) = await statistics(store)
        #expect(bytes <= 10_000)
        #expect(entries > 0 && entries < 100)
        #expect(await load(store, "job w j99") != nil, "the newest survive")
        #expect(await load(store, "job w j0") == nil, "the oldest go first")
    }

    @Test func purgesAWorkflowOrOneJob() async throws {
        let directory = TemporaryDirectory()
        let store = try DiskStore(directory: directory.path, budgetBytes: 1 << 20)
        store.save(record("list a", workflow: "a"))
        store.save(record("job a 1", workflow: "a", job: "1"))
        store.save(record("job a 2", workflow: "a", job: "2"))
        store.save(record("list b", workflow: "b"))
        let one = await withCheckedContinuation { c in store.purge(workflowID: "a", jobID: "1") { c.resume(returning: $0) } }
        #expect(one == 1)
        let rest = await withCheckedContinuation { c in store.purge(workflowID: "a", jobID: nil) { c.resume(returning: $0) } }
        #expect(rest == 2)
        #expect(await statistics(store).0 == 1)
    }
}
