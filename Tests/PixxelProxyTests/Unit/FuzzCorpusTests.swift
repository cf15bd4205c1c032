import Foundation
import FuzzTargets
import Testing

/// The committed fuzz corpus, replayed as an ordinary test: every input that once found new
/// code must still pass every invariant (the fuzzer itself runs in `make fuzz`).
@Suite struct FuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fuzz/corpus").path

    @Test func theCommittedCorpusPassesEveryInvariant() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.corpus).sorted()
        #expect(files.count >= 20)
        for file in files {
            let data = try #require(FileManager.default.contents(atPath: Self.corpus + "/" + file))
            FuzzTargets.run(Array(data))
        }
    }
}
