/// Server-Sent Events as written on the wire (the `text/event-stream` format of the HTML
/// standard): `event:`, `id:` and `data:` lines, a blank line ending each event, `:` comments.
public enum EventStreamText {
    /// One event. `data` may span lines (a pretty-printed JSON object): each line becomes a
    /// `data:` line of its own (CR, LF and CRLF all end a line in this format), which a reader
    /// joins again with LF. An empty `data` still gets its `data:` line: a browser's EventSource
    /// drops an event without one.
    public static func event(_ name: String, id: String?, data: some Collection<UInt8>, into out: inout [UInt8]) {
        out += "event: ".utf8
        out += name.utf8
        out.append(lf)
        if let id {
            out += "id: ".utf8
            out += id.utf8
            out.append(lf)
        }
        var lineStart = true
        var afterCR = false
        for byte in data {
            if byte == lf && afterCR {
                afterCR = false
                continue
            }
            afterCR = byte == cr
            if lineStart {
                out += "data: ".utf8
                lineStart = false
            }
            if byte == cr || byte == lf {
                out.append(lf)
                lineStart = true
            } else {
                out.append(byte)
            }
        }
        if lineStart { out += "data: ".utf8 }
        out += [lf, lf]
    }

    /// A comment line (readers ignore it; it keeps the connection and the proxies in between awake).
    public static func comment(_ text: String, into out: inout [UInt8]) {
        out += ": ".utf8
        out += text.utf8.filter { $0 != cr && $0 != lf }
        out += [lf, lf]
    }

    private static let lf = UInt8(ascii: "\n")
    private static let cr = UInt8(ascii: "\r")
}
