// C shim for pixxel-proxy's shared tier: hiredis's asynchronous API and its libevent adapter
// (header-only), plus helpers for what Swift should not spell out itself.
#ifndef PIXXEL_CHIREDIS_SHIM_H
#define PIXXEL_CHIREDIS_SHIM_H

#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libevent.h>

/// Connects to `ip`:`port` without blocking (the address must be numeric: hiredis would resolve
/// a host name with a blocking getaddrinfo) and attaches the context to `base`. NULL when out
/// of memory; otherwise the caller checks `err`.
static inline redisAsyncContext *pp_redis_connect(const char *ip, int port, struct event_base *base) {
    redisAsyncContext *context = redisAsyncConnect(ip, port);
    if (context == NULL || context->err) {
        return context;
    }
    if (redisLibeventAttach(context, base) != REDIS_OK) {
        context->err = REDIS_ERR_OTHER;
    }
    return context;
}

/// The reply's `i`th element (arrays only).
static inline redisReply *pp_redis_element(redisReply *reply, size_t i) {
    return reply->element[i];
}

#endif
