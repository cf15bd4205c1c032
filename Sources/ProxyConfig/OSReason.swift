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
            case NSFileReadInapplicableStringEncodingError: return "not UTF-8 text"
            default: break
            }
        }
        return ns.localizedDescription
    }

    /// `strerror`, lower-cased as it reads mid-sentence.
    public static func text(_ code: Int32) -> String {
        let message = String(cString: strerror(code))
        return message.prefix(1).lowercased() + message.dropFirst()
    }
}
