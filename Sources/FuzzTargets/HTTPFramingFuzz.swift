import EventHTTP

/// Differential fuzz targets over the HTTP/1.x framing: what the parser accepts, written out
/// again in the plainest form, must parse to the same thing. A parser that reads one set of
/// bytes two ways is exactly what request smuggling needs.
public enum HTTPFramingFuzz {
    static let maxHeadBytes = 16_384
    static let maxBodyBytes = 1 << 20

    /// The request head parser.
    public static func head(_ input: [UInt8]) {
        let result = input.withUnsafeBytes { RequestParser.parseHead($0, maxHeadBytes: maxHeadBytes) }
        guard case .complete(let head, let length) = result else { return }
        precondition(length <= input.count, "the head claims more bytes than it was given")
        precondition(!(head.isChunked && head.contentLength != nil), "both framings accepted")
        precondition(head.target.hasPrefix("/") || head.target == "*", "a target that is not in origin form: \(head.target)")
        if head.minorVersion == 1 { precondition(head.headers.values("Host").count == 1, "HTTP/1.1 without exactly one Host") }
        precondition(head.headers.values("Content-Length").count <= 1, "more than one Content-Length")
        for field in head.headers {
            precondition(!field.value.utf8.contains { $0 == 0x0D || $0 == 0x0A || $0 == 0 }, "a line break or NUL in a value")
        }
        // The same head in canonical form parses to the same request.
        let canonical = serialize(head)
        let again = canonical.withUnsafeBytes { RequestParser.parseHead($0, maxHeadBytes: maxHeadBytes * 2) }
        guard case .complete(let reparsed, let reparsedLength) = again else {
            preconditionFailure("the canonical form of an accepted head is refused: \(String(decoding: canonical, as: UTF8.self))")
        }
        precondition(reparsedLength == canonical.count, "the canonical head's end moved")
        precondition(reparsed == head, "the canonical head parses to another request")
    }

    /// The chunked body decoder.
    public static func chunked(_ input: [UInt8]) {
        let result = input.withUnsafeBytes { RequestParser.decodeChunked($0, maxBodyBytes: maxBodyBytes) }
        // However the input is split into reads (the server feeds what arrives and drains what
        // was consumed), the decoder reaches the same verdict, body and length.
        let step = Int(input.first ?? 0) % 7 + 1
        let pieces = decodeIncrementally(input, step: step)
        switch result {
        case .complete(let body, let length):
            precondition(pieces.progress == .done && pieces.body == body && pieces.consumed == length,
                         "split into reads of \(step), the body decodes differently")
        case .incomplete: precondition(pieces.progress == .needMore, "split into reads of \(step): \(pieces.progress), whole: incomplete")
        case .invalid: precondition(pieces.progress == .invalid, "split into reads of \(step): \(pieces.progress), whole: invalid")
        case .tooLarge: precondition(pieces.progress == .tooLarge, "split into reads of \(step): \(pieces.progress), whole: too large")
        }
        guard case .complete(let body, let length) = result else { return }
        precondition(length <= input.count && body.count <= maxBodyBytes, "impossible decode")
        // Only the bytes it took decide the body: the same prefix alone decodes the same.
        let taken = Array(input[..<length])
        let alone = taken.withUnsafeBytes { RequestParser.decodeChunked($0, maxBodyBytes: maxBodyBytes) }
        precondition(alone == .complete(body, length: length), "the decode depends on bytes past its end")
        // A strict prefix of a complete body is never complete.
        for cut in [length - 1, length / 2, 1] where cut > 0 && cut < length {
            let prefix = Array(taken[..<cut])
            let partial = prefix.withUnsafeBytes { RequestParser.decodeChunked($0, maxBodyBytes: maxBodyBytes) }
            precondition(partial == .incomplete, "a prefix of \(length) bytes cut at \(cut) decoded as \(partial)")
        }
        // The body re-encoded as one chunk decodes to the same bytes.
        var encoded = Array(String(body.count, radix: 16).utf8) + [0x0D, 0x0A] + body + [0x0D, 0x0A]
        if body.isEmpty { encoded = [] }
        encoded += Array("0\r\n\r\n".utf8)
        let reencoded = encoded.withUnsafeBytes { RequestParser.decodeChunked($0, maxBodyBytes: maxBodyBytes) }
        precondition(reencoded == .complete(body, length: encoded.count), "the body re-encoded decodes differently")
    }

    /// Feeds `input` to a decoder `step` bytes at a time, keeping only what it did not consume.
    static func decodeIncrementally(_ input: [UInt8], step: Int) -> (progress: RequestParser.ChunkedDecoder.Progress, body: [UInt8], consumed: Int) {
        var decoder = RequestParser.ChunkedDecoder(maxBodyBytes: maxBodyBytes)
        var buffer: [UInt8] = []
        var consumed = 0
        var offset = 0
        while decoder.progress == .needMore, offset < input.count {
            let next = min(input.count, offset + step)
            buffer += input[offset..<next]
            offset = next
            let taken = buffer.withUnsafeBytes { decoder.feed($0) }
            buffer.removeFirst(taken)
            consumed += taken
        }
        return (decoder.progress, decoder.body, consumed)
    }

    /// `head` as `METHOD target HTTP/1.x`, one `name: value` line per field, CRLF throughout.
    static func serialize(_ head: RequestParser.Head) -> [UInt8] {
        var text = "\(head.methodName) \(head.target) HTTP/1.\(head.minorVersion)\r\n"
        for field in head.headers { text += "\(field.name): \(field.value)\r\n" }
        return Array((text + "\r\n").utf8)
    }

    /// What a streamed pass-through reads from the upstream: an answer's head (never a
    /// length it did not declare, no body for HEAD, never both framings), and a chunked body
    /// decoded while handed on piece by piece, which must give what decoding it whole gives,
    /// wherever the input is split.
    static func upstreamAnswer(_ input: [UInt8]) {
        input.withUnsafeBytes { bytes in
            for method in [HTTPMethod.get, .head] {
                guard case .complete(let head, let length) = ResponseParser.parseHead(bytes, maxHeadBytes: 65_536, requestMethod: method) else {
                    continue
                }
                precondition(length > 0 && length <= bytes.count, "a head longer than its input")
                if case .length(let declared) = head.framing { precondition(declared == head.declaredLength, "a length not declared") }
                if method == .head { precondition(head.framing == .none, "a body after HEAD") }
                precondition(!(head.framing == .chunked && head.declaredLength != nil), "both framings")
            }
            var whole = RequestParser.ChunkedDecoder(maxBodyBytes: 1 << 20)
            _ = whole.feed(bytes)
            var streamed = RequestParser.ChunkedDecoder(maxBodyBytes: 1 << 20)
            var pieces: [UInt8] = []
            let split = bytes.count / 2
            let consumed = streamed.feed(UnsafeRawBufferPointer(rebasing: bytes[0..<split])) { pieces += $0 }
            if streamed.progress == .needMore {
                let rest = Array(bytes[consumed...])
                rest.withUnsafeBytes { _ = streamed.feed($0) { pieces += $0 } }
            }
            precondition(streamed.progress == whole.progress, "split decoding ends differently")
            if whole.progress == .done { precondition(pieces == whole.body, "split decoding gives other bytes") }
            precondition(streamed.body.isEmpty, "a streamed body was kept")
        }
    }
}
