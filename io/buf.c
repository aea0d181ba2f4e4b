/* Growing buffer and bounded cursor; see buf.h. */
#include "io/buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void buf_init(buf_t *b) { *b = (buf_t){ 0 }; }

void buf_close(buf_t *b)
{
    free(b->data);
    *b = (buf_t){ 0 };
}

unsigned char *buf_put(buf_t *b, const void *src, size_t len)
{
    if (b->err)
        return NULL;
    if (len > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < len) {
            if (cap > SIZE_MAX / 2) {
                b->err = -ENOMEM;
                return NULL;
            }
            cap *= 2;
        }
        unsigned char *data = realloc(b->data, cap);
        if (!data) {
            b->err = -ENOMEM;
            return NULL;
        }
        b->data = data;
        b->cap = cap;
    }
    unsigned char *at = b->data + b->len;
    if (src)
        memcpy(at, src, len);
    else
        memset(at, 0, len);
    b->len += len;
    return at;
}

void buf_put_u16(buf_t *b, uint16_t v)
{
    unsigned char p[2] = { (unsigned char)v, (unsigned char)(v >> 8) };
    buf_put(b, p, 2);
}

void buf_put_u32(buf_t *b, uint32_t v)
{
    unsigned char p[4];
    buf_store_u32(p, v);
    buf_put(b, p, 4);
}

void buf_put_u64(buf_t *b, uint64_t v)
{
    unsigned char p[8];
    buf_store_u64(p, v);
    buf_put(b, p, 8);
}

void buf_put_str16(buf_t *b, const void *s, size_t len)
{
    if (len > UINT16_MAX) {
        if (!b->err)
            b->err = -EINVAL;
        return;
    }
    buf_put_u16(b, (uint16_t)len);
    buf_put(b, s, len);
}

void cursor_init(cursor_t *c, const void *data, size_t len)
{
    c->p = data;
    c->end = c->p + len;
    c->err = 0;
}

const unsigned char *cursor_take(cursor_t *c, size_t len)
{
    if (c->err || len > (size_t)(c->end - c->p)) {
        c->err = -EBADMSG;
        return NULL;
    }
    const unsigned char *at = c->p;
    c->p += len;
    return at;
}

uint16_t cursor_u16(cursor_t *c)
{
    const unsigned char *p = cursor_take(c, 2);
    return p ? (uint16_t)(p[0] | p[1] << 8) : 0;
}

uint32_t cursor_u32(cursor_t *c)
{
    const unsigned char *p = cursor_take(c, 4);
    return p ? buf_load_u32(p) : 0;
}

uint64_t cursor_u64(cursor_t *c)
{
    const unsigned char *p = cursor_take(c, 8);
    return p ? buf_load_u64(p) : 0;
}

const char *cursor_str16(cursor_t *c, size_t *len)
{
    size_t n = cursor_u16(c);
    const unsigned char *p = cursor_take(c, n);
    *len = p ? n : 0;
    return (const char *)p;
}

int buf_parse_dec(const void *p, size_t len, uint64_t max, uint64_t *out)
{
    const unsigned char *s = p;
    if (len == 0 || (s[0] == '0' && len > 1))
        return -EINVAL;
    uint64_t v = 0;
    for (size_t k = 0; k < len; k++) {
        if (s[k] < '0' || s[k] > '9')
            return -EINVAL;
        unsigned d = (unsigned)(s[k] - '0');
        if (d > max || v > (max - d) / 10) /* v * 10 + d > max, without overflow */
            return -EINVAL;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}
