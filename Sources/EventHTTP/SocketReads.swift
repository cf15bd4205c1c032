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
func readAvailable(_ bufferEvent: OpaquePointer, upTo limit: Int) {
    let fd = bufferevent_getfd(bufferEvent)
    guard fd >= 0, let input = bufferevent_get_input(bufferEvent) else { return }
    // A bufferevent keeps its input's end frozen except while it reads itself; so does this.
    evbuffer_unfreeze(input, 0)
    defer { evbuffer_freeze(input, 0) }
    while true {
        let room = limit - evbuffer_get_length(input)
        guard room > 0 else { return }
        var vector = iovec()  // `evbuffer_iovec` is a macro for it
        guard evbuffer_reserve_space(input, room, &vector, 1) >= 1 else { return }
        let received = recv(fd, vector.iov_base, min(vector.iov_len, room), 0)
        guard received > 0 else {
            // 0 (the end), EAGAIN or an error: libevent's next read reports it.
            _ = evbuffer_commit_space(input, nil, 0)
            return
        }
        vector.iov_len = received
        _ = evbuffer_commit_space(input, &vector, 1)
    }
}
