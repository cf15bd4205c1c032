import CHiredis

/// A Redis reply, copied out of hiredis's memory (which is freed when its callback returns).
public enum RedisValue: Equatable, Sendable {
    case string([UInt8])
    case status(String)
    case integer(Int)
    case array([RedisValue])
    case null
    case error(String)

    /// Copies `reply` (nested arrays included, to a bounded depth: Redis never nests deeper
    /// than a few levels, and a deeper reply is not one of ours).
    init(_ reply: UnsafeMutablePointer<redisReply>, depth: Int = 0) {
        let value = reply.pointee
        switch value.type {
        case REDIS_REPLY_STRING:
            self = .string(Self.bytes(value.str, value.len))
        case REDIS_REPLY_STATUS:
            self = .status(String(decoding: Self.bytes(value.str, value.len), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            self = .error(String(decoding: Self.bytes(value.str, value.len), as: UTF8.self))
        case REDIS_REPLY_INTEGER:
            self = .integer(Int(value.integer))
        case REDIS_REPLY_ARRAY where depth < 8:
            var elements: [RedisValue] = []
            elements.reserveCapacity(Int(value.elements))
            for index in 0..<Int(value.elements) {
                guard let element = pp_redis_element(reply, index) else { elements.append(.null); continue }
                elements.append(RedisValue(element, depth: depth + 1))
            }
            self = .array(elements)
        default:
            self = .null
        }
    }

    private static func bytes(_ pointer: UnsafeMutablePointer<CChar>?, _ length: Int) -> [UInt8] {
        guard let pointer, length > 0 else { return [] }
        return pointer.withMemoryRebound(to: UInt8.self, capacity: length) { Array(UnsafeBufferPointer(start: $0, count: length)) }
    }

    /// A string or status reply as text.
    public var text: String? {
        switch self {
        case .string(let bytes): String(decoding: bytes, as: UTF8.self)
        case .status(let text): text
        default: nil
        }
    }

    /// An integer reply, or a string reply holding a whole number (Lua numbers come back as
    /// integers, stored values as strings).
    public var integer: Int? {
        switch self {
        case .integer(let value): value
        case .string: text.flatMap { Int($0) }
        default: nil
        }
    }

    public var elements: [RedisValue] {
        if case .array(let elements) = self { return elements }
        return []
    }
}

/// Why a command got no reply.
public enum RedisFailure: Error, Equatable, Sendable {
    /// No reply within the command's time (`shared.timeout_ms`).
    case timedOut
    /// The connection is not up (never was, broke, or is being replaced).
    case unavailable
    /// Redis answered with an error.
    case replied(String)
}
