@testable import JobCache
@testable import ProxyServer
@testable import ResponseCache
import Testing

extension ProxyHarness {
    /// Caches `workflow`'s list, caps the store at the pages it has (SQLite's max_page_count),
    /// then asks for five of its jobs, served from memory while their writes fail with
    /// SQLITE_FULL, the error a full file system gives.
    func fillTheStoreAsAFullDiskWould(workflow: String) throws {
        let list = try #require(try get("/v0/workflows/\(workflow)/jobs", token: readToken).json?["jobs"] as? [[String: Any]])
        let disk = try #require(server.cache.disk)
        disk.flush()
        disk.limitPages(1)
        for job in list.prefix(5) {
            #expect(try get("/v0/workflows/\(workflow)/jobs/\(job["id"] as? String ?? "")", token: readToken).status == 200,
                    "served from memory meanwhile")
        }
        disk.flush()
    }
}
