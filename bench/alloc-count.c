// A counting allocator for `make bench`: LD_PRELOADed into the server measured, it counts calls
// to the allocation functions (and frees) and, on signal RTMIN+7 (which neither the proxy nor
// nginx uses: nginx takes SIGUSR2 for its binary upgrade), appends one line "allocations frees" to the file named by ALLOC_COUNT_FILE. The bench
// reads the counters before and after a counted wrk run and divides by the requests answered.
//
// It forwards to glibc's own entry points (__libc_malloc and friends), so it needs no dlsym at
// start-up, and counts with relaxed atomics, so the event loop's thread pays a few nanoseconds.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static unsigned long allocations, frees;

static void count(unsigned long *counter) { __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED); }

void *malloc(size_t size) { count(&allocations); return __libc_malloc(size); }
void *calloc(size_t n, size_t size) { count(&allocations); return __libc_calloc(n, size); }
void *realloc(void *p, size_t size) { count(&allocations); return __libc_realloc(p, size); }
void free(void *p) { if (p) count(&frees); __libc_free(p); }
void *memalign(size_t alignment, size_t size) { count(&allocations); return __libc_memalign(alignment, size); }
void *aligned_alloc(size_t alignment, size_t size) { count(&allocations); return __libc_memalign(alignment, size); }
int posix_memalign(void **out, size_t alignment, size_t size) {
    count(&allocations);
    void *p = __libc_memalign(alignment, size);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}

// Decimal digits of `value` at the end of `buffer`; returns where they start.
static char *digits(char *end, unsigned long value) {
    do { *--end = (char)('0' + value % 10); value /= 10; } while (value);
    return end;
}

// Async-signal-safe: open, write and close only.
static void report(int signal) {
    (void)signal;
    const char *path = getenv("ALLOC_COUNT_FILE");
    if (!path) return;
    char line[64];
    char *end = line + sizeof line;
    *--end = '\n';
    end = digits(end, __atomic_load_n(&frees, __ATOMIC_RELAXED));
    *--end = ' ';
    end = digits(end, __atomic_load_n(&allocations, __ATOMIC_RELAXED));
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return;
    ssize_t ignored = write(fd, end, (size_t)(line + sizeof line - end));
    (void)ignored;
    close(fd);
}

__attribute__((constructor)) static void install(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = report;
    action.sa_flags = SA_RESTART;
    sigaction(SIGRTMIN + 7, &action, NULL);
}
