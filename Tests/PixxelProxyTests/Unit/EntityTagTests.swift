import EventHTTP
import Testing

@Suite struct EntityTagTests {
    static let tag = EntityTag(value: 0x0123_4567_89ab_cdef)

    @Test func isTheFirst64BitsOfTheBodysSHA256InLowerCaseHex() {
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        #expect(EntityTag(of: Array("abc".utf8)).quoted == #""ba7816bf8f01cfea""#)
        #expect(EntityTag(of: Array("abc".utf8)) == EntityTag(of: Array("abc".utf8)))
        #expect(EntityTag(of: Array("abc".utf8)) != EntityTag(of: Array("abd".utf8)))
        #expect(Self.tag.quoted == #""0123456789abcdef""#)
    }

    @Test(arguments: [
        #""0123456789abcdef""#,
        #"W/"0123456789abcdef""#,
        #""other", "0123456789abcdef""#,
        #""a,b",W/"0123456789abcdef"  "#,
        "*",
        " * ",
    ])
    func ifNoneMatchNamingTheTagMatches(_ value: String) {
        #expect(Self.tag.isMatched(byIfNoneMatch: value))
    }

    @Test(arguments: [
        "", "0123456789abcdef", #""0123456789ABCDEF""#, #""0123456789abcde""#, #""0123456789abcdef0""#,
        #"w/"0123456789abcdef""#, #""0123456789abcdef"#, #"junk, "0123456789abcdef""#, #""x"junk, "0123456789abcdef""#,
        #"*, "0123456789abcdef""#, "\"0123456789abcdef\u{7F}\"", "\"a b\", \"0123456789abcdef\"",
        #""nope", *"#, #""nope" W/"0123456789abcdef""#, #""0123456789abcdef"x"#, "\"0123456789abcdef\"\"",
    ])
    func anythingElseDoesNot(_ value: String) {
        #expect(!Self.tag.isMatched(byIfNoneMatch: value))
    }
}
