// C shim for pixxel-proxy: libevent 2.1 and OpenSSL headers, plus small inline helpers for
// what Swift cannot call directly (function-like macros) or should not spell out itself.
#ifndef PIXXEL_CLIBEVENT_SHIM_H
#define PIXXEL_CLIBEVENT_SHIM_H

#include <sys/types.h>
#include <sys/select.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/dns.h>
#include <event2/listener.h>
#include <event2/util.h>

#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <string.h>

/// SNI: `SSL_set_tlsext_host_name` is a macro.
static inline int pp_ssl_set_sni(SSL *ssl, const char *host) {
    return (int)SSL_set_tlsext_host_name(ssl, host);
}

/// `SSL_CTX_set_min_proto_version` is a macro.
static inline int pp_ssl_ctx_require_tls12(SSL_CTX *ctx) {
    return (int)SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
}

/// Hostname (or IP literal) verification for the peer certificate of `ssl`.
static inline int pp_ssl_verify_peer_name(SSL *ssl, const char *host, int is_ip_literal) {
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (is_ip_literal) {
        return X509_VERIFY_PARAM_set1_ip_asc(param, host);
    }
    return SSL_set1_host(ssl, host);
}

/// SHA-256 of a byte range into `out` (32 bytes). Returns 1 on success.
static inline int pp_sha256(const void *data, size_t length, unsigned char *out) {
    unsigned int out_length = 0;
    return EVP_Digest(data, length, out, &out_length, EVP_sha256(), NULL);
}

/// Cryptographically secure random bytes. Returns 1 on success.
static inline int pp_random_bytes(unsigned char *out, int length) {
    return RAND_bytes(out, length);
}

/// Constant-time comparison of two equal-length byte ranges: 0 when equal.
static inline int pp_memcmp_constant_time(const void *a, const void *b, size_t length) {
    return CRYPTO_memcmp(a, b, length);
}

#endif
