import CLibevent

/// Bytes that an object holds unchanged for as long as it lives, which libevent sends by
/// reference: each answer holds a retain of the object until its bytes are written, so a cached
/// body goes out with no copy and stays valid even if the cache drops it meanwhile.
///
/// The bytes are handed out as an address, valid for as long as their holder lives, which is
/// sound because they cannot move or change meanwhile: they must be a constant of the object (an
/// array in a `let`, whose buffer the object keeps alive, or the object's own tail storage,
/// written once when it is made), and any other holder of the same array that mutates it copies
/// first (copy on write sees this reference). An address and not a method taking a closure:
/// through the existential, a closure's context was allocated on every answer.
public protocol HeldBytes: AnyObject {
    /// The bytes, valid while this object lives.
    var heldBuffer: UnsafeRawBufferPointer { get }
}

extension HeldBytes {
    public var count: Int { heldBuffer.count }

    /// A copy of the bytes (for tests, compression and storage; answers send them by reference).
    public var heldBytes: [UInt8] { withExtendedLifetime(self) { Array(heldBuffer) } }

    /// Appends these bytes from `offset` on to `buffer` by reference; the buffer keeps them
    /// alive until sent.
    func addReference(to buffer: OpaquePointer, from offset: Int = 0) {
        let bytes = heldBuffer
        guard offset < bytes.count, let base = bytes.baseAddress else { return }
        let retained = Unmanaged.passRetained(self as AnyObject).toOpaque()
        let added = evbuffer_add_reference(buffer, base + offset, bytes.count - offset, { _, _, context in
            Unmanaged<AnyObject>.fromOpaque(context!).release()
        }, retained)
        if added != 0 {
            Unmanaged<AnyObject>.fromOpaque(retained).release()
            _ = withExtendedLifetime(self) { evbuffer_add(buffer, base + offset, bytes.count - offset) }
        }
    }
}

/// An array held for sending by reference (see `HeldBytes`), wrapped without copying it.
public final class SharedBytes: HeldBytes, @unchecked Sendable {
    private let storage: [UInt8]

    public init(_ bytes: [UInt8]) {
        storage = bytes
    }

    public var heldBuffer: UnsafeRawBufferPointer { storage.withUnsafeBytes { $0 } }
}
