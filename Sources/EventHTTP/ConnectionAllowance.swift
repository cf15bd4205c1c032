/// How many connections to one origin may be open at once, shared by the `HTTPClient` (calls
/// whose answers are read whole) and the `StreamingClient` (transfers streamed through) to it.
/// Streamed transfers may hold all but one, so that a few long downloads never leave the
/// cached routes without a connection. Loop thread only.
public final class ConnectionAllowance {
    public let maxConnections: Int

    var buffered = 0 {
        didSet { if buffered < oldValue { bufferedFreed?() } }
    }
    var streamed = 0 {
        didSet { if streamed < oldValue { streamedFreed?() } }
    }
    /// Told when a connection of the other kind closes.
    var bufferedFreed: (() -> Void)?
    var streamedFreed: (() -> Void)?
    /// Told when a buffered connection goes back to the idle pool (it may be closed for a transfer).
    var bufferedIdled: (() -> Void)?

    public init(maxConnections: Int) {
        self.maxConnections = max(1, maxConnections)
    }

    public var open: Int { buffered + streamed }

    var canOpenBuffered: Bool { open < maxConnections }

    var canOpenStreamed: Bool { streamed < max(1, maxConnections - 1) && open < maxConnections }

    /// Whether a connection is always left for buffered calls (there is more than one): if not,
    /// a transfer's connection, when it ends, goes to waiting buffered calls first.
    var keepsOneForBuffered: Bool { maxConnections > 1 }

    /// Whether a streamed transfer could open a connection once idle ones of the other kind close.
    var streamedHasRoom: Bool { streamed < max(1, maxConnections - 1) }
}
