// A pool for libevent's buffer memory: see EventBufferPool.c.
#ifndef PIXXEL_EVENT_BUFFER_POOL_H
#define PIXXEL_EVENT_BUFFER_POOL_H

#include <stddef.h>

/// Whether libevent allocates through the pool (installed before `main`). Memory libevent hands
/// to its caller to free (evbuffer_readln, evhttp_decode_uri, evhttp_encode_uri and the like)
/// must then be freed with `pp_event_buffer_pool_free`: `free` aborts on it.
int pp_event_buffer_pool_installed(void);

/// Blocks of `bytes` (a power of two from 1 KiB to 64 KiB) the calling thread keeps for reuse.
size_t pp_event_buffer_pool_kept(size_t bytes);

/// Blocks freed by threads' exits since the process started.
size_t pp_event_buffer_pool_released_at_thread_exit(void);

/// What libevent allocates and frees, through the pool (for tests, and for what libevent hands
/// its caller to free). Freeing a block twice aborts, as malloc's free does.
void *pp_event_buffer_pool_malloc(size_t size);
void *pp_event_buffer_pool_realloc(void *pointer, size_t size);
void pp_event_buffer_pool_free(void *pointer);

#endif
