import CLibevent

/// Bytes that libevent sends by reference: each answer holds a retain until its bytes are
/// written, so a cached body goes out with no copy and stays valid even if the cache drops it
/// meanwhile.
///
/// It wraps an array without copying it. The array's buffer is handed to libevent outside
/// `withUnsafeBytes`, which is sound here because the buffer cannot move or change while this
/// object lives: `storage` is a constant, it keeps the buffer alive, and any other holder of
/// the same array that mutates it copies first (copy on write sees this second reference).
public final class SharedBytes: @unchecked Sendable {
    private let storage: [UInt8]

    public init(_ bytes: [UInt8]) {
        storage = bytes
    }

    public var count: Int { storage.count }

    public var array: [UInt8] { storage }

    func withUnsafeBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        try storage.withUnsafeBytes(body)
    }

    /// Appends these bytes from `offset` on to `buffer` by reference; the buffer keeps them
    /// alive until sent.
    func addReference(to buffer: OpaquePointer, from offset: Int = 0) {
        guard offset < storage.count else { return }
        let retained = Unmanaged.passRetained(self).toOpaque()
        let added = storage.withUnsafeBytes { bytes in
            evbuffer_add_reference(buffer, bytes.baseAddress! + offset, bytes.count - offset, { _, _, context in
                Unmanaged<SharedBytes>.fromOpaque(context!).release()
            }, retained)
        }
        if added != 0 {
            Unmanaged<SharedBytes>.fromOpaque(retained).release()
            storage.withUnsafeBytes { _ = evbuffer_add(buffer, $0.baseAddress! + offset, $0.count - offset) }
        }
    }
}
