import Foundation
import Testing
@testable import ProxyServer

@Suite struct AuthTests {
    let token = "pxp_test-token"
    var clients: [ClientRecord] {
        [ClientRecord(name: "ci", scopes: [.read], tokenHash: Token.sha256(token)),
         ClientRecord(name: "ops", scopes: [.read, .write, .admin], tokenHash: Token.sha256("other"))]
    }

    @Test func acceptsTheTokenWithOrWithoutBearer() {
        let auth = Authenticator(clients: clients, allowAnonymous: false)
        #expect(auth.authenticate(authorization: token) == .client(name: "ci", scopes: [.read]))
        #expect(auth.authenticate(authorization: "Bearer \(token)") == .client(name: "ci", scopes: [.read]))
        #expect(auth.authenticate(authorization: "bearer  \(token)") == .client(name: "ci", scopes: [.read]))
    }

    @Test func rejectsMissingAndUnknownTokens() {
        let auth = Authenticator(clients: clients, allowAnonymous: false)
        #expect(auth.authenticate(authorization: nil) == .rejected)
        #expect(auth.authenticate(authorization: "nope") == .unknownToken, "a token given, told apart from none")
        #expect(auth.authenticate(authorization: "Bearer ") == .unknownToken)
        #expect(auth.authenticate(authorization: token + "x") == .unknownToken)
        #expect(Caller.unknownToken.isRejected && Caller.rejected.isRejected && Caller.unknownToken.logName != Caller.rejected.logName)
    }

    @Test func anonymousOnlyWithoutAToken() {
        let auth = Authenticator(clients: clients, allowAnonymous: true)
        #expect(auth.authenticate(authorization: nil) == .anonymous)
        #expect(auth.authenticate(authorization: "wrong") == .unknownToken)
        #expect(!Caller.anonymous.scopes.contains(.admin))
    }

    @Test func parsesTheClientsFile() throws {
        let hash = String(repeating: "ab", count: 32)
        let records = try ClientsFile.parse("# team\nci read sha256:\(hash)\n\nops read,write,admin sha256:\(hash.uppercased())  # on call\n").get()
        #expect(records.map(\.name) == ["ci", "ops"])
        #expect(records[1].scopes == [.read, .write, .admin])
        #expect(records[0].tokenHash == Array(repeating: 0xAB, count: 32))
    }

    /// A clients file saved with a byte order mark (Windows editors) is read as without one.
    @Test func aByteOrderMarkIsNoPartOfTheFirstName() throws {
        let hash = String(repeating: "ab", count: 32)
        let records = try ClientsFile.parse("\u{FEFF}ci read sha256:\(hash)\r\n").get()
        #expect(records.map(\.name) == ["ci"])
    }

    @Test(arguments: [
        "ci read", "ci read sha256:abc", "ci fly sha256:" + String(repeating: "0", count: 64),
        "c/i read sha256:" + String(repeating: "0", count: 64), "ci read md5:" + String(repeating: "0", count: 64),
        "ci read sha256:" + String(repeating: "0", count: 64) + "\nci write sha256:" + String(repeating: "1", count: 64),
    ])
    func refusesBrokenLinesWithTheLineNumber(_ text: String) {
        guard case .failure(let invalid) = ClientsFile.parse(text) else {
            Issue.record("accepted \(text)")
            return
        }
        #expect(invalid.line >= 1)
    }

    @Test func tokenAddAppendsAHashNeverTheToken() throws {
        let directory = TemporaryDirectory()
        let path = directory.path + "/clients"
        let token = try ClientsFileWriter.add(name: "ci", scopesText: "read,write", path: path)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(!text.contains(token))
        let records = try ClientsFile.parse(text).get()
        #expect(records == [ClientRecord(name: "ci", scopes: [.read, .write], tokenHash: Token.sha256(token))])
        #expect(throws: ClientsFileWriter.Failure.self) { try ClientsFileWriter.add(name: "ci", scopesText: "read", path: path) }
        #expect(throws: ClientsFileWriter.Failure.self) { try ClientsFileWriter.add(name: "x", scopesText: "root", path: path) }
        #expect(Token.generate() != Token.generate())
    }
}
