import CLibevent

#if canImport(Glibc)
import Glibc
#endif

/// Immutable bytes in a block of their own, which libevent can send by reference: each answer
/// holds a retain until its bytes are written, so a cached body goes out with no copy and stays
/// valid even if the cache drops it meanwhile.
public final class SharedBytes: @unchecked Sendable {
    public let count: Int
    private let base: UnsafeMutableRawPointer

    public init(_ bytes: some Collection<UInt8>) {
        count = bytes.count
        base = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1), alignment: 16)
        let buffer = UnsafeMutableRawBufferPointer(start: base, count: count)
        buffer.copyBytes(from: bytes)
    }

    deinit {
        base.deallocate()
    }

    public func withUnsafeBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        try body(UnsafeRawBufferPointer(start: base, count: count))
    }

    /// A copy as an array (for the paths that are not hot).
    public var array: [UInt8] { withUnsafeBytes { Array($0) } }

    /// Appends these bytes to `buffer` by reference; the buffer keeps them alive until sent.
    func addReference(to buffer: OpaquePointer) {
        guard count > 0 else { return }
        let retained = Unmanaged.passRetained(self).toOpaque()
        let added = evbuffer_add_reference(buffer, base, count, { _, _, context in
            Unmanaged<SharedBytes>.fromOpaque(context!).release()
        }, retained)
        if added != 0 {
            Unmanaged<SharedBytes>.fromOpaque(retained).release()
            _ = evbuffer_add(buffer, base, count)
        }
    }
}
