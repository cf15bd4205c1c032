import EventHTTP
import Foundation

/// The bytes of a simulated download: generated on the fly from a resource's seed (no files),
/// the same bytes every time, so that a test can check any range it got. A byte's value
/// depends on its offset through a table whose length is a prime (65,521), so an answer
/// shifted by any multiple of a power of two is caught.
public struct SimPayload: Sendable {
    public static let period = 65_521
    public let size: Int
    let seed: UInt64
    let table: [UInt8]

    public init(size: Int, seed: UInt64) {
        self.size = size
        self.seed = seed
        table = Self.table(seed: seed)
    }

    /// The table of one period, twice over plus a piece, so that any slice up to a period long
    /// is contiguous from any starting point.
    static func table(seed: UInt64) -> [UInt8] {
        var generator = SeededGenerator(seed: seed)
        let once = (0..<period).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        return once + once
    }

    /// The bytes `range` holds (tests use it to check what came back).
    public func bytes(_ range: Range<Int>) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(range.count)
        var offset = range.lowerBound
        while offset < range.upperBound {
            let start = offset % Self.period
            let count = min(range.upperBound - offset, Self.period)
            out += table[start..<(start + count)]
            offset += count
        }
        return out
    }
}

/// One `Range` request header against a body of `size` bytes (RFC 9110, 14): a single
/// `bytes=` range is honoured; several ranges, or anything unreadable, are ignored (the whole
/// body, as the RFC allows); a range that starts past the end is unsatisfiable (416).
public enum SimByteRange: Equatable, Sendable {
    case whole
    case partial(Range<Int>)
    case unsatisfiable

    public static func parse(_ header: String?, size: Int) -> SimByteRange {
        guard let header, header.hasPrefix("bytes="), !header.contains(",") else { return .whole }
        let spec = header.dropFirst(6).trimmingCharacters(in: .whitespaces)
        let parts = spec.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { return .whole }
        if parts[0].isEmpty {
            // The last N bytes.
            guard let suffix = Int(parts[1]), suffix > 0 else { return .unsatisfiable }
            return size == 0 ? .unsatisfiable : .partial(max(0, size - suffix)..<size)
        }
        guard let first = Int(parts[0]), first >= 0 else { return .whole }
        guard first < size else { return .unsatisfiable }
        if parts[1].isEmpty { return .partial(first..<size) }
        guard let last = Int(parts[1]), last >= first else { return .whole }
        // `last` may be anything up to Int.max: compared, never incremented past the size.
        return .partial(first..<(last >= size ? size : last + 1))
    }
}

/// Writes a payload's bytes to a streamed answer as the client reads them, a piece at a time,
/// and breaks the connection after `breakAfter` bytes when asked (a fault).
final class SimPayloadWriter {
    private let stream: ResponseStream
    private let table: [UInt8]
    private var offset: Int
    private let end: Int
    private let breakAt: Int?
    private var ended: ((_ broken: Bool) -> Void)?
    private static let piece = 64 << 10

    init(stream: ResponseStream, payload: SimPayload, range: Range<Int>, breakAfter: Int?, ended: @escaping (_ broken: Bool) -> Void) {
        self.stream = stream
        self.ended = ended
        table = payload.table
        offset = range.lowerBound
        end = range.upperBound
        // A break point at or past the range's end never comes (and cannot overflow).
        breakAt = breakAfter.flatMap { $0 < range.count ? range.lowerBound + $0 : nil }
    }

    /// Writes while the client's buffer has room; keeps itself alive through `onDrain` until done.
    func run() {
        stream.onDrain = { [self] in run() }
        while stream.wantsMore, !stream.isFinished {
            if let breakAt, offset >= breakAt { return finish(broken: true) }
            guard offset < end else { return finish(broken: false) }
            let start = offset % SimPayload.period
            var count = min(Self.piece, end - offset, SimPayload.period)
            if let breakAt { count = min(count, breakAt - offset) }
            stream.write(Array(table[start..<(start + count)]))
            offset += count
        }
    }

    private func finish(broken: Bool) {
        stream.onDrain = nil
        if broken { stream.abort() } else { stream.finish() }
        ended?(broken)
        ended = nil
    }
}
