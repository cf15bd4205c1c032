import Testing
import JobCache

@Suite struct JobListQueryTests {
    @Test func noQueryMeansNoFilter() {
        #expect(JobListQuery.parse(nil) == .success(.filtered(JobListFilters())))
        #expect(JobListQuery.parse("") == .success(.filtered(JobListFilters())))
    }

    @Test func parsesAllFourFilters() throws {
        let query = try JobListQuery.parse("id=j%201&status=RUNNING&created_by=user+7&created_on=2026-11-20").get()
        #expect(query == .filtered(JobListFilters(id: "j 1", status: "running", createdBy: "user 7",
                                                  createdOn: CalendarDate(year: 2026, month: 11, day: 20))))
    }

    @Test(arguments: [
        ("2026-11-20T23:59:59Z", "2026-11-20"), ("2026-11-20T00:00:00+05:30", "2026-11-20"),
        ("2026-11-20T10:15:30.123456-08:00", "2026-11-20"), ("2026-11-20 10:15", "2026-11-20"),
        ("2024-02-29", "2024-02-29"), ("2026-11-20T10:15:30+0530", "2026-11-20"),
        // ISO 8601 basic format: the date, and timestamps whose date part is used as written.
        ("20261123", "2026-11-23"), ("20261123T050000Z", "2026-11-23"), ("20261123T0500", "2026-11-23"),
        ("20261123T235959.5-0800", "2026-11-23"), ("20240229T120000+05", "2024-02-29"),
    ])
    func createdOnTakesADateOrATimestamp(_ value: String, _ expected: String) throws {
        guard case .filtered(let filters) = try JobListQuery.parse("created_on=\(value.replacingOccurrences(of: "+", with: "%2B").replacingOccurrences(of: " ", with: "%20"))").get() else {
            Issue.record("not a filter")
            return
        }
        #expect(filters.createdOn?.description == expected)
    }

    @Test(arguments: [
        "status=running&status=failed", "id=", "created_on=2026-13-01", "created_on=2025-02-29", "created_on=yesterday",
        "created_on=2026-11-20T25:00:00Z", "created_on=2026-11-20T10:00:00+99:00", "id=%zz", "created_by=%0a",
        // Basic format: a bad day, a bad hour, formats mixed, a separator other than T, a short date.
        "created_on=20250229", "created_on=20261123T2500Z", "created_on=20261123T05:00:00Z", "created_on=2026-11-23T050000Z",
        "created_on=20261123%2005:00", "created_on=2026112", "created_on=20261123T05", "created_on=20261123T0500X",
    ])
    func refusesInvalidOrRepeatedFilters(_ query: String) {
        guard case .failure = JobListQuery.parse(query) else {
            Issue.record("accepted \(query)")
            return
        }
    }

    @Test func anyOtherParameterMeansPassThrough() {
        #expect(JobListQuery.parse("status=running&page=2") == .success(.passThrough))
        #expect(JobListQuery.parse("limit=5") == .success(.passThrough))
    }
}
