@testable import EventHTTP
import Testing

/// A connection takes its last parsed head again only for the very same bytes.
@Suite struct RepeatedHeadTests {
    static let head = Array("GET /v0/workflows/w/jobs/a HTTP/1.1\r\nHost: p\r\nAuthorization: Bearer t1\r\n\r\n".utf8)

    static func remembered() throws -> RepeatedHead {
        var memo = RepeatedHead()
        let parsed = head.withUnsafeBytes { RequestParser.parseHead($0, maxHeadBytes: 16_384) }
        guard case .complete(let parsedHead, let length) = parsed else { throw ParseFailed() }
        head.withUnsafeBytes { memo.remember(parsedHead, parsedFrom: $0, length: length) }
        return memo
    }

    struct ParseFailed: Error {}

    @Test func theSameBytesGiveTheSameHeadWhateverFollowsThem() throws {
        let memo = try Self.remembered()
        let again = Self.head + Array("GET /next".utf8)
        let match = again.withUnsafeBytes { memo.match($0) }
        #expect(match?.head.target == "/v0/workflows/w/jobs/a")
        #expect(match?.head.headers["Authorization"] == "Bearer t1")
        #expect(match?.length == Self.head.count)
    }

    @Test func oneDifferentByteAnywhereIsNoMatch() throws {
        let memo = try Self.remembered()
        for index in Self.head.indices {
            var changed = Self.head
            changed[index] = changed[index] == UInt8(ascii: "x") ? UInt8(ascii: "y") : UInt8(ascii: "x")
            #expect(changed.withUnsafeBytes { memo.match($0) } == nil, "byte \(index) changed")
        }
    }

    @Test func aHeadNotAllHereIsNoMatch() throws {
        let memo = try Self.remembered()
        let cut = Array(Self.head.dropLast())
        #expect(cut.withUnsafeBytes { memo.match($0) } == nil)
        #expect([UInt8]().withUnsafeBytes { memo.match($0) } == nil)
    }

    @Test func aLongHeadIsNotKeptAndForgetsTheOneBefore() throws {
        var memo = try Self.remembered()
        let long = Array("GET / HTTP/1.1\r\nHost: p\r\nX-Padding: \(String(repeating: "a", count: RepeatedHead.maxBytes))\r\n\r\n".utf8)
        guard case .complete(let parsed, let length) = long.withUnsafeBytes({ RequestParser.parseHead($0, maxHeadBytes: 16_384) }) else {
            throw ParseFailed()
        }
        long.withUnsafeBytes { memo.remember(parsed, parsedFrom: $0, length: length) }
        #expect(long.withUnsafeBytes { memo.match($0) } == nil)
        #expect(Self.head.withUnsafeBytes { memo.match($0) } == nil)
    }
}
