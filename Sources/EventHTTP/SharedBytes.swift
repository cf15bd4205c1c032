import CLibevent

/// Bytes that an object holds unchanged for as long as it lives, which libevent sends by
/// reference: each answer holds a retain of the object until its bytes are written, so a cached
/// body goes out with no copy and stays valid even if the cache drops it meanwhile.
///
/// The array's buffer is handed to libevent outside `withUnsafeBytes`, which is sound because
/// the buffer cannot move or change while its holder lives: `heldBytes` must be a constant of
/// the object (a `let`, or computed from `let`s), which keeps the buffer alive, and any other
/// holder of the same array that mutates it copies first (copy on write sees this reference).
public protocol HeldBytes: AnyObject {
    var heldBytes: [UInt8] { get }
}

extension HeldBytes {
    public var count: Int { heldBytes.count }

    /// Appends these bytes from `offset` on to `buffer` by reference; the buffer keeps them
    /// alive until sent.
    func addReference(to buffer: OpaquePointer, from offset: Int = 0) {
        let storage = heldBytes
        guard offset < storage.count else { return }
        let retained = Unmanaged.passRetained(self as AnyObject).toOpaque()
        let added = storage.withUnsafeBytes { bytes in
            evbuffer_add_reference(buffer, bytes.baseAddress! + offset, bytes.count - offset, { _, _, context in
                Unmanaged<AnyObject>.fromOpaque(context!).release()
            }, retained)
        }
        if added != 0 {
            Unmanaged<AnyObject>.fromOpaque(retained).release()
            storage.withUnsafeBytes { _ = evbuffer_add(buffer, $0.baseAddress! + offset, $0.count - offset) }
        }
    }
}

/// An array held for sending by reference (see `HeldBytes`), wrapped without copying it.
public final class SharedBytes: HeldBytes, @unchecked Sendable {
    private let storage: [UInt8]

    public init(_ bytes: [UInt8]) {
        storage = bytes
    }

    public var heldBytes: [UInt8] { storage }
}
