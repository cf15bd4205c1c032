import CLibevent

/// The few primitives of OpenSSL's libcrypto the proxy needs beyond TLS (which this target
/// already links): random bytes from its CSPRNG, SHA-256, and a comparison whose time does not
/// depend on where two byte strings differ. Kept here so that no target above this one
/// reaches into the C shim.
public enum OpenSSLCrypto {
    /// `count` bytes from OpenSSL's CSPRNG; nil only if it cannot be seeded.
    public static func randomBytes(_ count: Int) -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: count)
        return pp_random_bytes(&bytes, Int32(count)) == 1 ? bytes : nil
    }

    public static func sha256(_ input: [UInt8]) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: 32)
        _ = input.withUnsafeBytes { pp_sha256($0.baseAddress, $0.count, &digest) }
        return digest
    }

    /// Whether `a` and `b` are equal, in time that depends only on their length.
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        a.count == b.count && pp_memcmp_constant_time(a, b, a.count) == 0
    }
}
