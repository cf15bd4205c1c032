import CLibevent

/// The request methods the server knows by name (an extension method reaches the handler
/// with `knownMethod == nil`) and the client can send.
public enum HTTPMethod: String, Sendable, CaseIterable {
    case get = "GET", head = "HEAD", post = "POST", put = "PUT", delete = "DELETE"
    case options = "OPTIONS", patch = "PATCH", trace = "TRACE", connect = "CONNECT"

    var libeventType: evhttp_cmd_type {
        switch self {
        case .get: EVHTTP_REQ_GET
        case .head: EVHTTP_REQ_HEAD
        case .post: EVHTTP_REQ_POST
        case .put: EVHTTP_REQ_PUT
        case .delete: EVHTTP_REQ_DELETE
        case .options: EVHTTP_REQ_OPTIONS
        case .patch: EVHTTP_REQ_PATCH
        case .trace: EVHTTP_REQ_TRACE
        case .connect: EVHTTP_REQ_CONNECT
        }
    }

    /// Whether a request with this method may be repeated without changing anything upstream.
    public var isIdempotentRead: Bool { self == .get || self == .head }
}

/// An ordered list of header fields; names compare case-insensitively.
public struct HTTPHeaders: Sendable, Equatable, Sequence {
    public private(set) var fields: [(name: String, value: String)]

    public init(_ fields: [(name: String, value: String)] = []) {
        self.fields = fields
    }

    public static func == (lhs: HTTPHeaders, rhs: HTTPHeaders) -> Bool {
        lhs.fields.elementsEqual(rhs.fields) { $0.name == $1.name && $0.value == $1.value }
    }

    /// The first value of `name`, if present.
    public subscript(name: String) -> String? {
        fields.first { $0.name.caseInsensitiveEquals(name) }?.value
    }

    /// Every value of `name`, in order.
    public func values(_ name: String) -> [String] {
        fields.filter { $0.name.caseInsensitiveEquals(name) }.map(\.value)
    }

    public mutating func add(_ name: String, _ value: String) {
        fields.append((name, value))
    }

    /// Replaces every field called `name` with one field.
    public mutating func set(_ name: String, _ value: String) {
        remove(name)
        fields.append((name, value))
    }

    public mutating func remove(_ name: String) {
        fields.removeAll { $0.name.caseInsensitiveEquals(name) }
    }

    public func makeIterator() -> IndexingIterator<[(name: String, value: String)]> {
        fields.makeIterator()
    }

    /// The fields as `Name: value\r\n` lines, less the framing fields a server writes itself
    /// (`Content-Length`, `Transfer-Encoding`, `Connection`) and any named in `omitting`
    /// (lowercase); `hasDate` tells whether a `Date` field is among them.
    public func wireLines(omitting: Set<String> = []) -> (lines: [UInt8], hasDate: Bool) {
        var lines: [UInt8] = []
        lines.reserveCapacity(256)
        var hasDate = false
        for field in fields {
            if field.name.caseInsensitiveEquals("content-length") || field.name.caseInsensitiveEquals("transfer-encoding")
                || field.name.caseInsensitiveEquals("connection") { continue }
            if !omitting.isEmpty, omitting.contains(field.name.lowercased()) { continue }
            if field.name.caseInsensitiveEquals("date") { hasDate = true }
            lines += field.name.utf8
            lines += [UInt8(ascii: ":"), UInt8(ascii: " ")]
            lines += field.value.utf8
            lines += [UInt8(ascii: "\r"), UInt8(ascii: "\n")]
        }
        return (lines, hasDate)
    }

    /// Reads a libevent header list (an upstream's answer). A field whose name is not a token,
    /// or whose value is not valid UTF-8 or holds a control byte, is dropped: passed on, it
    /// would be rewritten (U+FFFD) or reach the client as bytes no server should send.
    init(keyvalq: UnsafeMutablePointer<evkeyvalq>?) {
        var fields: [(name: String, value: String)] = []
        var entry = keyvalq?.pointee.tqh_first
        while let current = entry {
            if let key = current.pointee.key, let value = current.pointee.value,
               let name = String(validatingCString: key), !name.isEmpty, name.utf8.allSatisfy(RequestParser.isTokenByte),
               let text = String(validatingCString: value), text.utf8.allSatisfy(RequestParser.isFieldValueByte) {
                fields.append((name, text))
            }
            entry = current.pointee.next.tqe_next
        }
        self.fields = fields
    }

    /// Appends these fields to a libevent header list.
    func write(to keyvalq: UnsafeMutablePointer<evkeyvalq>?) {
        for field in fields {
            evhttp_add_header(keyvalq, field.name, field.value)
        }
    }
}

extension String {
    /// ASCII case-insensitive equality, enough for header names.
    public func caseInsensitiveEquals(_ other: String) -> Bool {
        let lhs = utf8, rhs = other.utf8
        guard lhs.count == rhs.count else { return false }
        return zip(lhs, rhs).allSatisfy { a, b in
            a == b || (a | 0x20 == b | 0x20 && (a | 0x20) >= 0x61 && (a | 0x20) <= 0x7A)
        }
    }
}

/// Header fields that describe one connection rather than the message (RFC 9110, 7.6.1):
/// a proxy never forwards them.
public let hopByHopHeaderNames: Set<String> = [
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade", "content-length", "host",
]

/// Copies an evbuffer's bytes out.
func bytes(of buffer: OpaquePointer?) -> [UInt8] {
    guard let buffer else { return [] }
    let length = evbuffer_get_length(buffer)
    guard length > 0 else { return [] }
    return [UInt8](unsafeUninitializedCapacity: length) { storage, count in
        count = Int(evbuffer_copyout(buffer, storage.baseAddress, length))
    }
}
