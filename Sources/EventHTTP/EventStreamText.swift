/// Server-Sent Events as written on the wire (the `text/event-stream` format of the HTML
/// standard): `event:`, `id:` and `data:` lines, a blank line ending each event, `:` comments.
public enum EventStreamText {
    /// One event. `data` may span lines (a pretty-printed JSON object): each line becomes a
    /// `data:` line of its own (CR, LF and CRLF all end a line in this format), which a reader
    /// joins again with LF. An empty `data` still gets its `data:` line: a browser's EventSource
    /// drops an event without one.
    public static func event(_ name: String, id: String?, data: ArraySlice<UInt8>, into out: inout [UInt8]) {
        out += "event: ".utf8
        out += name.utf8
        out.append(lf)
        if let id {
            out += "id: ".utf8
            out += id.utf8
            out.append(lf)
        }
        // Whole runs between line ends are appended at once (a byte at a time through a generic
        // collection, a 3.8 MB list took 270 ms of the loop to open a stream on; found by review).
        data.withUnsafeBufferPointer { bytes in
            var start = 0
            while true {
                var end = start
                while end < bytes.count, bytes[end] != lf, bytes[end] != cr { end += 1 }
                out += dataPrefix
                out += UnsafeBufferPointer(rebasing: bytes[start..<end])
                out.append(lf)
                guard end < bytes.count else { break }
                // CRLF is one line end.
                start = bytes[end] == cr && end + 1 < bytes.count && bytes[end + 1] == lf ? end + 2 : end + 1
            }
        }
        out.append(lf)
    }

    public static func event(_ name: String, id: String?, data: [UInt8], into out: inout [UInt8]) {
        event(name, id: id, data: data[...], into: &out)
    }

    public static func event(_ name: String, id: String?, data: String, into out: inout [UInt8]) {
        event(name, id: id, data: Array(data.utf8), into: &out)
    }

    private static let dataPrefix = Array("data: ".utf8)

    /// A comment line (readers ignore it; it keeps the connection and the proxies in between awake).
    public static func comment(_ text: String, into out: inout [UInt8]) {
        out += ": ".utf8
        out += text.utf8.filter { $0 != cr && $0 != lf }
        out += [lf, lf]
    }

    private static let lf = UInt8(ascii: "\n")
    private static let cr = UInt8(ascii: "\r")
}
