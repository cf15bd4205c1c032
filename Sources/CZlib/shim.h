// zlib for gzip content coding. deflateInit2 and inflateInit2 are macros Swift cannot import.
#ifndef PIXXEL_CZLIB_SHIM_H
#define PIXXEL_CZLIB_SHIM_H
#include <string.h>
#include <zlib.h>

// A deflate stream for gzip at level 6 (zlib's default): 15 + 16 is a 32 KiB window with the
// gzip header and trailer (RFC 1952) around the deflate data. Z_OK when it is ready.
static inline int pp_gzip_stream(z_stream *stream) {
    memset(stream, 0, sizeof *stream);
    return deflateInit2(stream, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
}

// The gzip form of `length` bytes at `data` into `out` of `capacity` bytes; the bytes written,
// or -1 if it failed or did not fit.
static inline long pp_gzip(const void *data, size_t length, unsigned char *out, size_t capacity) {
    z_stream stream;
    if (pp_gzip_stream(&stream) != Z_OK) return -1;
    stream.next_in = (Bytef *)data;
    stream.avail_in = (uInt)length;
    stream.next_out = out;
    stream.avail_out = (uInt)capacity;
    int result = deflate(&stream, Z_FINISH);
    long written = (long)stream.total_out;
    deflateEnd(&stream);
    return result == Z_STREAM_END ? written : -1;
}

// At most how many bytes `pp_gzip` writes for `length` bytes: deflate's bound and the gzip
// wrapper's 18 bytes.
static inline size_t pp_gzip_bound(size_t length) {
    z_stream stream;
    if (pp_gzip_stream(&stream) != Z_OK) return length + 1024;
    size_t bound = deflateBound(&stream, (uLong)length) + 18;
    deflateEnd(&stream);
    return bound;
}

// The bytes a gzip stream at `data` decodes to, into `out` of `capacity` bytes; the bytes
// written, or -1 if the stream is not whole and valid or does not fit.
static inline long pp_gunzip(const void *data, size_t length, unsigned char *out, size_t capacity) {
    z_stream stream;
    memset(&stream, 0, sizeof stream);
    if (inflateInit2(&stream, 15 + 16) != Z_OK) return -1;
    stream.next_in = (Bytef *)data;
    stream.avail_in = (uInt)length;
    stream.next_out = out;
    stream.avail_out = (uInt)capacity;
    int result = inflate(&stream, Z_FINISH);
    long written = (long)stream.total_out;
    int whole = result == Z_STREAM_END && stream.avail_in == 0;
    inflateEnd(&stream);
    return whole ? written : -1;
}
#endif
