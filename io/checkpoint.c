/*
 * The checkpoint container; see checkpoint.h and docs/CHECKPOINT.md.
 *
 *   0   8  magic "DERRDCKP"
 *   8   4  format version (1)
 *   12  4  section count n (<= 64)
 *   16  8  sequence number
 *   24  8  creation time, unix ms
 *   32  24*n section table: id u32, crc32c u32, offset u64, length u64
 *   ..  4  crc32c of every header byte before it
 *   then the sections back to back, in table order; the file ends exactly
 *   where the last one does.
 */
#include "io/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/crc32c.h"
#include "io/fsutil.h"

#define CKPT_MAGIC "DERRDCKP"
#define CKPT_VERSION 1
#define CKPT_FIXED 32
#define CKPT_ENTRY 24
#define CKPT_MAX_FILE ((size_t)1 << 40)

typedef struct {
    uint32_t id;
    buf_t buf;
} checkpoint_part_t;

struct checkpoint_writer {
    checkpoint_part_t parts[CHECKPOINT_MAX_SECTIONS];
    int n;
};

checkpoint_writer_t *checkpoint_writer_new(void)
{
    return calloc(1, sizeof(checkpoint_writer_t));
}

void checkpoint_writer_free(checkpoint_writer_t *w)
{
    if (!w)
        return;
    for (int k = 0; k < w->n; k++)
        buf_close(&w->parts[k].buf);
    free(w);
}

buf_t *checkpoint_writer_section(checkpoint_writer_t *w, uint32_t id)
{
    if (w->n == CHECKPOINT_MAX_SECTIONS)
        return NULL;
    for (int k = 0; k < w->n; k++)
        if (w->parts[k].id == id)
            return NULL;
    checkpoint_part_t *p = &w->parts[w->n++];
    p->id = id;
    buf_init(&p->buf);
    return &p->buf;
}

void checkpoint_path(const char *dir, uint64_t seq, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/checkpoint-%020" PRIu64 ".dckpt", dir, seq);
}

/* Parses "checkpoint-<20 digits>.dckpt"; returns 1 and the seq on a match. */
static int checkpoint__name_seq(const char *name, uint64_t *seq)
{
    return fsutil_name_number(name, "checkpoint-", ".dckpt", seq);
}


int checkpoint_list(const char *dir, uint64_t **seqs, int *n)
{
    *seqs = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : -errno;
    uint64_t *v = NULL;
    int count = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        uint64_t seq;
        if (!checkpoint__name_seq(e->d_name, &seq))
            continue;
        if (count == cap) {
            cap = cap ? cap * 2 : 8;
            uint64_t *nv = realloc(v, (size_t)cap * sizeof(*v));
            if (!nv) {
                free(v);
                closedir(d);
                return -ENOMEM;
            }
            v = nv;
        }
        v[count++] = seq;
    }
    closedir(d);
    if (count > 1) /* qsort must not get NULL, which an empty dir leaves in v */
        qsort(v, (size_t)count, sizeof(*v), fsutil_cmp_u64_desc);
    *seqs = v;
    *n = count;
    return 0;
}

int checkpoint_sweep_temp(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        /* fsutil_write_atomic's temp names: <final name>.tmp.XXXXXX */
        const char *t = strstr(e->d_name, ".dckpt.tmp.");
        if (!t || strncmp(e->d_name, "checkpoint-", 11) != 0)
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        removed += unlink(path) == 0;
    }
    closedir(d);
    return removed;
}

int checkpoint_writer_commit(checkpoint_writer_t *w, const char *dir, uint64_t seq,
                             uint64_t created_ms, int keep, char *err, size_t errlen)
{
    for (int k = 0; k < w->n; k++)
        if (w->parts[k].buf.err) {
            snprintf(err, errlen, "checkpoint section %u: %s", w->parts[k].id,
                     strerror(-w->parts[k].buf.err));
            return w->parts[k].buf.err;
        }
    size_t hlen = CKPT_FIXED + (size_t)w->n * CKPT_ENTRY + 4;
    unsigned char *h = calloc(1, hlen);
    fsutil_part_t *parts = calloc((size_t)w->n + 1, sizeof(*parts));
    if (!h || !parts) {
        free(h);
        free(parts);
        snprintf(err, errlen, "checkpoint: out of memory");
        return -ENOMEM;
    }
    memcpy(h, CKPT_MAGIC, 8);
    buf_store_u32(h + 8, CKPT_VERSION);
    buf_store_u32(h + 12, (uint32_t)w->n);
    buf_store_u64(h + 16, seq);
    buf_store_u64(h + 24, created_ms);
    uint64_t off = hlen;
    for (int k = 0; k < w->n; k++) {
        const buf_t *b = &w->parts[k].buf;
        unsigned char *e = h + CKPT_FIXED + (size_t)k * CKPT_ENTRY;
        buf_store_u32(e, w->parts[k].id);
        buf_store_u32(e + 4, crc32c_update(0, b->data, b->len));
        buf_store_u64(e + 8, off);
        buf_store_u64(e + 16, b->len);
        off += b->len;
        parts[k + 1] = (fsutil_part_t){ b->data, b->len };
    }
    buf_store_u32(h + hlen - 4, crc32c_update(0, h, hlen - 4));
    parts[0] = (fsutil_part_t){ h, hlen };

    char path[4096];
    checkpoint_path(dir, seq, path, sizeof(path));
    int rc = fsutil_write_atomic(path, parts, w->n + 1, err, errlen);
    free(h);
    free(parts);
    if (rc < 0)
        return rc;

    uint64_t *seqs;
    int n;
    if (keep > 0 && checkpoint_list(dir, &seqs, &n) == 0) {
        for (int k = keep; k < n; k++) {
            if (seqs[k] >= seq)
                continue;
            checkpoint_path(dir, seqs[k], path, sizeof(path));
            unlink(path);
        }
        free(seqs);
    }
    return 0;
}

typedef struct {
    uint32_t id;
    const unsigned char *data;
    size_t len;
} checkpoint_view_t;

struct checkpoint {
    unsigned char *file;
    uint64_t seq, created_ms;
    int n;
    checkpoint_view_t sections[CHECKPOINT_MAX_SECTIONS];
};

void checkpoint_free(checkpoint_t *ck)
{
    if (!ck)
        return;
    free(ck->file);
    free(ck);
}

#define CKPT_BAD(...)                                                          \
    do {                                                                       \
        snprintf(err, errlen, __VA_ARGS__);                                    \
        rc = -EBADMSG;                                                         \
        goto fail;                                                             \
    } while (0)

/* Verifies file[0..len), which ck takes over (sections point into it), and
 * returns ck through *out; path is what messages call it. */
static int checkpoint__open_owned(const char *path, unsigned char *file, size_t len,
                                  checkpoint_t **out, char *err, size_t errlen)
{
    int rc = 0;
    *out = NULL;
    checkpoint_t *ck = calloc(1, sizeof(*ck));
    if (!ck) {
        free(file);
        snprintf(err, errlen, "%s: out of memory", path);
        return -ENOMEM;
    }
    ck->file = file;
    const unsigned char *f = ck->file;
    if (len < CKPT_FIXED + 4)
        CKPT_BAD("%s: truncated header (%zu bytes)", path, len);
    if (memcmp(f, CKPT_MAGIC, 8) != 0)
        CKPT_BAD("%s: not a derrd checkpoint (bad magic)", path);
    uint32_t version = buf_load_u32(f + 8), n = buf_load_u32(f + 12);
    if (version != CKPT_VERSION)
        CKPT_BAD("%s: format version %u, this build reads %u", path, version, CKPT_VERSION);
    if (n > CHECKPOINT_MAX_SECTIONS)
        CKPT_BAD("%s: %u sections, limit %d", path, n, CHECKPOINT_MAX_SECTIONS);
    size_t hlen = CKPT_FIXED + (size_t)n * CKPT_ENTRY + 4;
    if (len < hlen)
        CKPT_BAD("%s: truncated section table", path);
    if (crc32c_update(0, f, hlen - 4) != buf_load_u32(f + hlen - 4))
        CKPT_BAD("%s: header checksum mismatch", path);
    ck->seq = buf_load_u64(f + 16);
    ck->created_ms = buf_load_u64(f + 24);
    uint64_t expect = hlen;
    for (uint32_t k = 0; k < n; k++) {
        const unsigned char *e = f + CKPT_FIXED + (size_t)k * CKPT_ENTRY;
        uint32_t id = buf_load_u32(e), crc = buf_load_u32(e + 4);
        uint64_t off = buf_load_u64(e + 8), slen = buf_load_u64(e + 16);
        if (off != expect || slen > len || off > len - slen)
            CKPT_BAD("%s: section %u: bytes %" PRIu64 "+%" PRIu64 " outside the file "
                     "(%zu bytes; truncated?)", path, id, off, slen, len);
        for (uint32_t j = 0; j < k; j++)
            if (ck->sections[j].id == id)
                CKPT_BAD("%s: section %u appears twice", path, id);
        if (crc32c_update(0, f + off, slen) != crc)
            CKPT_BAD("%s: section %u: checksum mismatch", path, id);
        ck->sections[k] = (checkpoint_view_t){ id, f + off, slen };
        expect = off + slen;
    }
    if (expect != len)
        CKPT_BAD("%s: %zu bytes after the last section", path, (size_t)(len - expect));
    ck->n = (int)n;
    *out = ck;
    return 0;
fail:
    checkpoint_free(ck);
    return rc;
}

int checkpoint_open(const char *path, checkpoint_t **out, char *err, size_t errlen)
{
    *out = NULL;
    unsigned char *file = NULL;
    size_t len = 0;
    int rc = fsutil_read_all(path, CKPT_MAX_FILE, &file, &len, err, errlen);
    if (rc < 0)
        return rc;
    return checkpoint__open_owned(path, file, len, out, err, errlen);
}

int checkpoint_open_mem(const char *name, const void *data, size_t len, checkpoint_t **out,
                        char *err, size_t errlen)
{
    *out = NULL;
    unsigned char *file = malloc(len ? len : 1);
    if (!file) {
        snprintf(err, errlen, "%s: out of memory", name);
        return -ENOMEM;
    }
    if (len)
        memcpy(file, data, len);
    return checkpoint__open_owned(name, file, len, out, err, errlen);
}

uint64_t checkpoint_seq(const checkpoint_t *ck) { return ck->seq; }
uint64_t checkpoint_created_ms(const checkpoint_t *ck) { return ck->created_ms; }

int checkpoint_section(const checkpoint_t *ck, uint32_t id, const unsigned char **data,
                       size_t *len)
{
    for (int k = 0; k < ck->n; k++)
        if (ck->sections[k].id == id) {
            *data = ck->sections[k].data;
            *len = ck->sections[k].len;
            return 0;
        }
    *data = NULL;
    *len = 0;
    return -ENOENT;
}
