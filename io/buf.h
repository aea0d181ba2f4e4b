/*
 * buf: little-endian encoding into a growing byte buffer, and bounded
 * decoding out of untrusted bytes. The file formats (checkpoint, snapshot)
 * are written with buf_t and read with cursor_t, so every read is checked
 * against the end of the input in one place.
 *
 * Errors are sticky: after the first failure (out of memory, read past the
 * end) every later call is a no-op returning zero, and the owner checks
 * ->err once at the end.
 */
#ifndef DERRD_BUF_H
#define DERRD_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    unsigned char *data; /* owned; free with buf_close */
    size_t len, cap;
    int err;             /* 0 or -ENOMEM */
} buf_t;

void buf_init(buf_t *b);
void buf_close(buf_t *b);
/* Appends len bytes; returns a pointer to them inside the buffer (valid
 * until the next append) or NULL after an error. src may be NULL (zeros). */
unsigned char *buf_put(buf_t *b, const void *src, size_t len);
void buf_put_u16(buf_t *b, uint16_t v);
void buf_put_u32(buf_t *b, uint32_t v);
void buf_put_u64(buf_t *b, uint64_t v);
/* A u16 length then the bytes; -EINVAL (sticky) when len > 65535. */
void buf_put_str16(buf_t *b, const void *s, size_t len);

typedef struct {
    const unsigned char *p, *end;
    int err; /* 0 or -EBADMSG once a read went past the end */
} cursor_t;

void cursor_init(cursor_t *c, const void *data, size_t len);
/* Returns a pointer to the next len bytes and advances, or NULL (and sets
 * err) when fewer remain. */
const unsigned char *cursor_take(cursor_t *c, size_t len);
uint16_t cursor_u16(cursor_t *c);
uint32_t cursor_u32(cursor_t *c);
uint64_t cursor_u64(cursor_t *c);
/* A u16 length then the bytes; *len gets the length. */
const char *cursor_str16(cursor_t *c, size_t *len);
static inline size_t cursor_left(const cursor_t *c) { return (size_t)(c->end - c->p); }

/* A whole decimal in len untrusted bytes (not NUL-terminated), in its one
 * canonical form, as "%llu" prints it: "0", or a digit 1-9 then digits; no
 * sign, no space, no leading zero. 0 and *out = the value when it is at
 * most max; -EINVAL otherwise (*out untouched). strtoll alone takes " 7",
 * "+7" and "007", wraps "-1", and needs a NUL. */
int buf_parse_dec(const void *p, size_t len, uint64_t max, uint64_t *out);

/* Little-endian loads and stores on raw memory. */
static inline uint32_t buf_load_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t buf_load_u64(const unsigned char *p)
{
    return (uint64_t)buf_load_u32(p) | (uint64_t)buf_load_u32(p + 4) << 32;
}
static inline void buf_store_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}
static inline void buf_store_u64(unsigned char *p, uint64_t v)
{
    buf_store_u32(p, (uint32_t)v);
    buf_store_u32(p + 4, (uint32_t)(v >> 32));
}

#endif
