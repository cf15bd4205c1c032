import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The operating system's reason for a failed file operation, in the words `strerror` uses
/// ("permission denied"), not a Foundation error domain and code: what a person reading a
/// startup or CLI error can act on.
public enum OSReason {
    public static func of(_ error: any Error) -> String {
        let ns = error as NSError
        if ns.domain == NSPOSIXErrorDomain { return text(Int32(ns.code)) }
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return text(Int32(underlying.code))
        }
        if ns.domain == NSCocoaErrorDomain {
            switch ns.code {
            case NSFileNoSuchFileError, NSFileReadNoSuchFileError: return text(ENOENT)
            case NSFileReadNoPermissionError, NSFileWriteNoPermissionError: return text(EACCES)
            case NSFileWriteOutOfSpaceError: return text(ENOSPC)
            case NSFileWriteVolumeReadOnlyError: return text(EROFS)
            // 259 is what a UTF-8 read of a file with a Latin-1 byte gives (found by review).
            case NSFileReadInapplicableStringEncodingError, NSFileReadCorruptFileError: return "not UTF-8 text"
            case NSFileReadTooLargeError: return "too large to read"
            default: break
            }
        }
        // Never a Foundation domain and code: the error's own words, else a plain "unreadable".
        return ns.domain == NSCocoaErrorDomain ? "cannot be read (error \(ns.code))" : ns.localizedDescription
    }

    /// Why `path` cannot be read, asked of the OS afresh: FileManager's nil says nothing, and
    /// errno after it may be stale (found by review: "cannot read DIR (success)").
    public static func unreadable(_ path: String) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { return text(errno) }
        defer { close(fd) }
        var info = stat()
        if fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFDIR { return "is a directory" }
        var byte: UInt8 = 0
        if read(fd, &byte, 1) < 0 { return text(errno) }
        return "cannot be read"
    }

    /// `strerror`, lower-cased as it reads mid-sentence.
    public static func text(_ code: Int32) -> String {
        let message = String(cString: strerror(code))
        return message.prefix(1).lowercased() + message.dropFirst()
    }
}
