import Foundation

/// A throwaway CA and server certificates made with the openssl command for one test.
struct TLSFixtures {
    let directory = TemporaryDirectory()
    var caFile: String { directory.path + "/ca.pem" }

    init() throws {
        try run(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", directory.path + "/ca.key", "-out", caFile, "-days", "2", "-subj", "/CN=pixxel-proxy test CA"])
    }

    /// A server certificate signed by this CA for `subjectAltName` (e.g. "DNS:localhost,IP:127.0.0.1");
    /// returns (certificate, key) paths.
    func serverCertificate(named name: String, subjectAltName: String, signedByThisCA: Bool = true) throws -> (String, String) {
        let key = directory.path + "/\(name).key", csr = directory.path + "/\(name).csr", cert = directory.path + "/\(name).pem"
        let extensions = directory.file("\(name).ext", "subjectAltName=\(subjectAltName)\n")
        try run(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=\(name)"])
        if signedByThisCA {
            try run(["x509", "-req", "-in", csr, "-CA", caFile, "-CAkey", directory.path + "/ca.key", "-CAcreateserial",
                     "-out", cert, "-days", "2", "-extfile", extensions])
        } else {
            try run(["x509", "-req", "-in", csr, "-signkey", key, "-out", cert, "-days", "2", "-extfile", extensions])
        }
        return (cert, key)
    }

    private func run(_ arguments: [String]) throws {
        let (status, output) = try runProcess("/usr/bin/openssl", arguments)
        guard status == 0 else { throw RawHTTPError(description: "openssl \(arguments.first ?? "") failed: \(output)") }
    }
}
