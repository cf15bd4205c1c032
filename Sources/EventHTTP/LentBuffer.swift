/// A byte buffer kept from one use to the next and lent out for each: taken, it is uniquely
/// held, so appending to it neither copies nor allocates once it has grown; given back, it
/// keeps its capacity for the next (up to `maxKeptCapacity`, so one huge use does not pin its
/// memory). A nested use while it is out simply starts a buffer of its own.
public struct LentBuffer {
    private var kept: [UInt8] = []
    private let maxKeptCapacity: Int

    public init(maxKeptCapacity: Int = 64 << 10) {
        self.maxKeptCapacity = maxKeptCapacity
    }

    public mutating func take() -> [UInt8] {
        var buffer: [UInt8] = []
        swap(&buffer, &kept)
        buffer.removeAll(keepingCapacity: true)
        return buffer
    }

    public mutating func giveBack(_ buffer: [UInt8]) {
        if buffer.capacity <= maxKeptCapacity { kept = buffer }
    }
}
