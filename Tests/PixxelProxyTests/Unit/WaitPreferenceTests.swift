import EventHTTP
import Testing
@testable import ProxyServer

@Suite struct WaitPreferenceTests {
    static func seconds(_ values: String...) -> Int? {
        var headers = HTTPHeaders()
        for value in values { headers.add("Prefer", value) }
        return WaitPreference.seconds(in: headers)
    }

    @Test func readsTheFirstWaitAmongOtherPreferences() {
        #expect(Self.seconds("wait=10") == 10)
        #expect(Self.seconds("respond-async, wait=5") == 5)
        #expect(Self.seconds("WAIT = \"7\"; x=y") == 7)
        #expect(Self.seconds("return=minimal", "wait=3, wait=9") == 3)
        #expect(Self.seconds("wait=0") == 0)
    }

    @Test(arguments: ["", "wait", "wait=", "wait=-1", "wait=1.5", "wait=ten", "wait=9999999999", "waiting=5", "wait=\"5"])
    func anythingElseIsNoPreference(_ value: String) {
        #expect(Self.seconds(value) == nil)
    }
}
