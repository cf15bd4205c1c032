import Testing
@testable import JobCache
@testable import ResponseCache

@Suite struct CompactIDTests {
    @Test(arguments: ["3f0c2a1e-9b7d-4c5e-8f60-1a2b3c4d5e6f", "00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff"])
    func aLowerCaseUUIDIsHeldInlineAndGivesBackItsText(_ text: String) {
        let id = CompactID(text)
        #expect(id.isInline)
        #expect(id.text == text)
        #expect(id == CompactID(String(text.utf8.map { Character(UnicodeScalar($0)) })))
    }

    @Test(arguments: [
        "3F0C2A1E-9B7D-4C5E-8F60-1A2B3C4D5E6F",   // upper case: another job upstream, kept as sent
        "3f0c2a1e-9b7d-4c5e-8f60-1a2b3c4d5e6",    // 35 bytes
        "3f0c2a1e-9b7d-4c5e-8f60-1a2b3c4d5e6f0",  // 37 bytes
        "3f0c2a1e_9b7d-4c5e-8f60-1a2b3c4d5e6f",   // a separator out of place
        "3f0c2a1e-9b7d-4c5e-8f60-1a2b3c4d5e6g",   // not hex
        "3f0c2a1e9b7d-4c5e-8f60-1a2b3c4d5e6f-",   // dashes moved
        "job one", "a", "", "é",
    ])
    func anyOtherIdIsHeldAsTextUnchanged(_ text: String) {
        let id = CompactID(text)
        #expect(!id.isInline)
        #expect(Array(id.text.utf8) == Array(text.utf8))
    }

    @Test func idsAreEqualExactlyWhenTheirBytesAre() {
        let uuid = "3f0c2a1e-9b7d-4c5e-8f60-1a2b3c4d5e6f"
        #expect(CompactID(uuid) != CompactID(uuid.uppercased()))
        #expect(CompactID(uuid) != CompactID("3f0c2a1e-9b7d-4c5e-8f60-1a2b3c4d5e6e"))
        // Canonically equivalent, different bytes: two jobs, as upstream has them.
        let composed = CompactID("caf\u{E9}"), decomposed = CompactID("cafe\u{301}")
        #expect(composed != decomposed)
        var set: Set<CompactID> = [composed, decomposed, CompactID(uuid), CompactID(uuid)]
        #expect(set.count == 3)
        set.remove(CompactID(String(uuid)))
        #expect(set.count == 2)
    }

    @Test func aDetailKeyFromADocumentIdMatchesTheKeyARequestNames() {
        let uuid = "3f0c2a1e-9b7d-4c5e-8f60-1a2b3c4d5e6f"
        #expect(CacheKey.detail(workflow: "w", jobID: CompactID(uuid)) == CacheKey.detail(workflowID: "w", jobID: uuid))
        #expect(CacheKey.detail(workflow: "w", jobID: CompactID("a b/c")) == CacheKey.detail(workflowID: "w", jobID: "a b/c"))
        #expect(CacheKey.detail(workflowID: "w", jobID: "a b/c").job == "a%20b%2Fc")
        #expect(CacheKey.detail(workflowID: "w", jobID: uuid).diskKey == "detail/w/\(uuid)")
        #expect(CacheKey.detail(workflowID: "w", jobID: uuid) != CacheKey.detail(workflowID: "w", jobID: uuid.uppercased()))
    }
}
