import CLibevent

#if canImport(Glibc)
import Glibc
#endif

/// Reads what a plain socket bufferevent's socket holds, up to `limit` bytes in its input, in
/// large reads. libevent 2.1's `evbuffer_read` takes at most 4,096 bytes per call and a
/// bufferevent reads once per loop iteration, so a stream relayed through it moves 4 KiB per
/// iteration (two `epoll_ctl`s and an `epoll_wait` each): a third of nginx's throughput on a
/// download. Called from the read callback, after libevent's own read; the end of the stream
/// is left for libevent to see (the socket stays readable at EOF), and the input buffer's
/// watermark callback still suspends reading when it is full. Not for TLS bufferevents.
/// Returns false when the socket failed (a reset, which the kernel reports once: the caller
/// must treat it as libevent would treat a read error).
@discardableResult
func readAvailable(_ bufferEvent: OpaquePointer, upTo limit: Int) -> Bool {
    let fd = bufferevent_getfd(bufferEvent)
    guard fd >= 0, let input = bufferevent_get_input(bufferEvent) else { return true }
    // A bufferevent keeps its input's end frozen except while it reads itself; so does this.
    evbuffer_unfreeze(input, 0)
    defer { evbuffer_freeze(input, 0) }
    while true {
        let room = limit - evbuffer_get_length(input)
        guard room > 0 else { return true }
        var vector = iovec()  // `evbuffer_iovec` is a macro for it
        guard evbuffer_reserve_space(input, room, &vector, 1) >= 1 else { return true }
        let received = recv(fd, vector.iov_base, min(vector.iov_len, room), 0)
        guard received > 0 else {
            let failed = received < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR
            // 0 (the end) or EAGAIN: libevent's next read sees it. An error is reported once:
            // it is the caller's to act on.
            _ = evbuffer_commit_space(input, nil, 0)
            return !failed
        }
        vector.iov_len = received
        _ = evbuffer_commit_space(input, &vector, 1)
    }
}
