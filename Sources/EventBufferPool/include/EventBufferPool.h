// A pool for libevent's buffer memory: see EventBufferPool.c.
#ifndef PIXXEL_EVENT_BUFFER_POOL_H
#define PIXXEL_EVENT_BUFFER_POOL_H

#include <stddef.h>

/// Whether libevent allocates through the pool (installed before `main`).
int pp_event_buffer_pool_installed(void);

/// Blocks of `bytes` (a power of two from 512 bytes to 64 KiB) the calling thread keeps for reuse.
size_t pp_event_buffer_pool_kept(size_t bytes);

/// What libevent allocates and frees, through the pool (for tests).
void *pp_event_buffer_pool_malloc(size_t size);
void *pp_event_buffer_pool_realloc(void *pointer, size_t size);
void pp_event_buffer_pool_free(void *pointer);

#endif
