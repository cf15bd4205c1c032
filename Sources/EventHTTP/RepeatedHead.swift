#if canImport(Glibc)
import Glibc
#endif

/// The head a connection's client sent last, with its bytes. A client that polls on a kept-alive
/// connection (a tool waiting for a job to finish) sends the same head again and again, and a
/// head is a function of its bytes alone: the same bytes take the parsed head again, with no
/// parse and no allocation (its strings are shared, never changed).
struct RepeatedHead {
    /// A longer head is not kept: a poller's is a few hundred bytes, and this is per connection.
    static let maxBytes = 1024

    private var bytes: [UInt8] = []
    private var head: RequestParser.Head?

    /// The last head and its length, when `input` starts with its bytes.
    func match(_ input: UnsafeRawBufferPointer) -> (head: RequestParser.Head, length: Int)? {
        guard let head, input.count >= bytes.count, let start = input.baseAddress else { return nil }
        let same = bytes.withUnsafeBytes { memcmp($0.baseAddress!, start, $0.count) == 0 }
        return same ? (head, bytes.count) : nil
    }

    /// Keeps `head`, parsed from the first `length` bytes of `input`.
    mutating func remember(_ head: RequestParser.Head, parsedFrom input: UnsafeRawBufferPointer, length: Int) {
        bytes.removeAll(keepingCapacity: true)
        guard length <= Self.maxBytes, length <= input.count else {
            self.head = nil
            return
        }
        bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: input[0..<length]))
        self.head = head
    }
}
