// libevent's memory, through a small pool: the blocks of its buffer chains (which it sizes in
// powers of two, from 1 KiB on 64-bit systems; those up to 64 KiB) are kept per thread and
// reused, up to 256 KiB of each size per thread, rather than freed after every request. Other
// sizes pass through to malloc.
//
// Why: a chain freed while the loop is storing cache entries leaves a hole in the heap that the
// next entries are carved from, and what is left of it (a 2 KiB chain less a 1.2 KiB entry) fits
// nothing a cache keeps: 5.6 MB of free heap between 100k cached job details, 6% of their
// bytes, as long as they live. Kept, the chains are reused by the next request and the entries
// are laid next to each other. Installed from a constructor, before `main`, because every block
// libevent frees must have come from the same allocator (and so what libevent hands a caller to
// free, such as evbuffer_readln's line, goes back through pp_event_buffer_pool_free, not free).
#include "EventBufferPool.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { smallest_shift = 10, size_classes = 7, kept_bytes_per_class = 256 << 10 };

// Before each block: its usable capacity, and while kept, the next kept block of its size.
typedef struct block_header {
    size_t capacity;
    struct block_header *next;
} block_header;

_Static_assert(sizeof(block_header) == 16, "the header keeps the 16-byte alignment malloc gives");

// Set in `capacity` while a block is kept: freeing it again is a double free, which malloc would
// have stopped, and which kept blocks would otherwise turn into two live chains sharing memory.
static const size_t kept_mark = (size_t)1 << (sizeof(size_t) * 8 - 1);

typedef struct thread_pool {
    block_header *kept[size_classes];
    size_t count[size_classes];
} thread_pool;

static pthread_key_t pool_key;
static int installed;
static atomic_size_t released_at_thread_exit;
static __thread thread_pool pool;
static __thread int pool_registered;

static size_t class_bytes(int class) { return (size_t)1 << (smallest_shift + class); }

// The pool's size class of a block of exactly `bytes`; -1 for a size it does not keep.
static int size_class(size_t bytes) {
    if (bytes < class_bytes(0) || bytes > class_bytes(size_classes - 1) || (bytes & (bytes - 1)) != 0) return -1;
    return __builtin_ctzl(bytes) - smallest_shift;
}

// A thread's kept blocks go with it (the key's destructor runs at its exit). Registered again by
// a block freed after this (by another destructor), so that it runs again for that one.
static void release_thread_pool(void *unused) {
    (void)unused;
    pool_registered = 0;
    for (int class = 0; class < size_classes; class++) {
        while (pool.kept[class]) {
            block_header *block = pool.kept[class];
            pool.kept[class] = block->next;
            free(block);
            atomic_fetch_add(&released_at_thread_exit, 1);
        }
        pool.count[class] = 0;
    }
}

void *pp_event_buffer_pool_malloc(size_t size) {
    int class = size_class(size);
    if (class >= 0 && pool.kept[class]) {
        block_header *block = pool.kept[class];
        pool.kept[class] = block->next;
        pool.count[class]--;
        block->capacity &= ~kept_mark;
        block->next = NULL;
        return block + 1;
    }
    if (size >= kept_mark - sizeof(block_header)) return NULL;
    block_header *block = malloc(sizeof(block_header) + size);
    if (!block) return NULL;
    block->capacity = size;
    block->next = NULL;
    return block + 1;
}

void pp_event_buffer_pool_free(void *pointer) {
    if (!pointer) return;
    block_header *block = (block_header *)pointer - 1;
    if (block->capacity & kept_mark) {
        fputs("pixxel-proxy: double free of a libevent buffer block\n", stderr);
        abort();
    }
    int class = size_class(block->capacity);
    if (class >= 0 && pool.count[class] < kept_bytes_per_class / class_bytes(class)) {
        if (!pool_registered) {
            pool_registered = 1;
            pthread_setspecific(pool_key, &pool);
        }
        block->capacity |= kept_mark;
        block->next = pool.kept[class];
        pool.kept[class] = block;
        pool.count[class]++;
        return;
    }
    free(block);
}

void *pp_event_buffer_pool_realloc(void *pointer, size_t size) {
    if (!pointer) return pp_event_buffer_pool_malloc(size);
    block_header *block = (block_header *)pointer - 1;
    if (size <= block->capacity && size > 0) return pointer;
    void *grown = pp_event_buffer_pool_malloc(size);
    if (!grown) return NULL;
    memcpy(grown, pointer, block->capacity < size ? block->capacity : size);
    pp_event_buffer_pool_free(pointer);
    return grown;
}

__attribute__((constructor)) static void install_event_buffer_pool(void) {
    if (pthread_key_create(&pool_key, release_thread_pool) != 0) return;
    event_set_mem_functions(pp_event_buffer_pool_malloc, pp_event_buffer_pool_realloc, pp_event_buffer_pool_free);
    installed = 1;
}

int pp_event_buffer_pool_installed(void) { return installed; }

size_t pp_event_buffer_pool_kept(size_t bytes) {
    int class = size_class(bytes);
    return class >= 0 ? pool.count[class] : 0;
}

size_t pp_event_buffer_pool_released_at_thread_exit(void) { return atomic_load(&released_at_thread_exit); }
