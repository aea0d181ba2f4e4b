/* Embedding table file; see embfile.h and docs/EMBFILE.md. */
#include "embfile.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crc32c.h"
#include "fsutil.h"

#define EMBFILE_MAGIC "DERRDEMB"
#define EMBFILE_VERSION 1u
#define EMBFILE_HEADER 40
#define EMBFILE_MAX_BYTES (1ULL << 36) /* 64 GiB: a sanity bound, not a goal */
#define EMBFILE_MAX_DIM 65536

static void embfile__put32(unsigned char *p, uint32_t v)
{
    for (int k = 0; k < 4; k++)
        p[k] = (unsigned char)(v >> (8 * k));
}

static void embfile__put64(unsigned char *p, uint64_t v)
{
    for (int k = 0; k < 8; k++)
        p[k] = (unsigned char)(v >> (8 * k));
}

static uint32_t embfile__get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint64_t embfile__get64(const unsigned char *p)
{
    return (uint64_t)embfile__get32(p) | (uint64_t)embfile__get32(p + 4) << 32;
}

int embfile_write(const char *path, uint32_t dim, uint32_t n_users,
                  uint32_t n_items, const float *rows, char *err, size_t errlen)
{
    uint64_t count = ((uint64_t)n_users + n_items) * dim;
    uint64_t bytes = count * 4;
    if (dim == 0 || dim > EMBFILE_MAX_DIM || bytes > EMBFILE_MAX_BYTES) {
        snprintf(err, errlen, "%s: bad table size (dim %u, %u users, %u items)", path, dim,
                 n_users, n_items);
        return -EINVAL;
    }
    for (uint64_t k = 0; k < count; k++)
        if (!isfinite(rows[k])) {
            snprintf(err, errlen, "%s: value %llu is not finite; not writing a diverged model",
                     path, (unsigned long long)k);
            return -EINVAL;
        }
    /* float32 little-endian: the host is, on every platform derrd builds on;
     * the static check below keeps it honest. */
    _Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "little-endian host expected");
    unsigned char h[EMBFILE_HEADER];
    memset(h, 0, sizeof(h));
    memcpy(h, EMBFILE_MAGIC, 8);
    embfile__put32(h + 8, EMBFILE_VERSION);
    embfile__put32(h + 12, dim);
    embfile__put32(h + 16, n_users);
    embfile__put32(h + 20, n_items);
    embfile__put64(h + 24, bytes);
    embfile__put32(h + 32, crc32c_update(0, rows, (size_t)bytes));
    embfile__put32(h + 36, crc32c_update(0, h, 36));
    fsutil_part_t parts[2] = { { h, sizeof(h) }, { rows, (size_t)bytes } };
    return fsutil_write_atomic(path, parts, 2, err, errlen);
}

int embfile_read(const char *path, embfile_t *out, char *err, size_t errlen)
{
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc = fsutil_read_all(path, EMBFILE_MAX_BYTES + EMBFILE_HEADER, &buf, &len, err, errlen);
    if (rc < 0)
        return rc;
    rc = -EBADMSG;
    if (len < EMBFILE_HEADER) {
        snprintf(err, errlen, "%s: truncated header (%zu bytes of %d)", path, len,
                 EMBFILE_HEADER);
        goto done;
    }
    if (memcmp(buf, EMBFILE_MAGIC, 8) != 0) {
        snprintf(err, errlen, "%s: not a derrd embedding file (bad magic)", path);
        goto done;
    }
    if (crc32c_update(0, buf, 36) != embfile__get32(buf + 36)) {
        snprintf(err, errlen, "%s: header checksum mismatch", path);
        goto done;
    }
    uint32_t version = embfile__get32(buf + 8);
    if (version != EMBFILE_VERSION) {
        snprintf(err, errlen, "%s: format version %u, this build reads %u", path, version,
                 EMBFILE_VERSION);
        goto done;
    }
    uint32_t dim = embfile__get32(buf + 12), nu = embfile__get32(buf + 16);
    uint32_t ni = embfile__get32(buf + 20);
    uint64_t bytes = embfile__get64(buf + 24);
    if (dim == 0 || dim > EMBFILE_MAX_DIM || bytes != ((uint64_t)nu + ni) * dim * 4) {
        snprintf(err, errlen, "%s: inconsistent sizes (dim %u, %u users, %u items, %llu bytes)",
                 path, dim, nu, ni, (unsigned long long)bytes);
        goto done;
    }
    if (len - EMBFILE_HEADER != bytes) {
        snprintf(err, errlen, "%s: %zu payload bytes, header says %llu (truncated?)", path,
                 len - EMBFILE_HEADER, (unsigned long long)bytes);
        goto done;
    }
    if (crc32c_update(0, buf + EMBFILE_HEADER, (size_t)bytes) != embfile__get32(buf + 32)) {
        snprintf(err, errlen, "%s: payload checksum mismatch", path);
        goto done;
    }
    float *rows = malloc(bytes ? (size_t)bytes : 1);
    if (!rows) {
        rc = -ENOMEM;
        snprintf(err, errlen, "%s: out of memory", path);
        goto done;
    }
    memcpy(rows, buf + EMBFILE_HEADER, (size_t)bytes);
    for (uint64_t k = 0; k < bytes / 4; k++)
        if (!isfinite(rows[k])) {
            snprintf(err, errlen, "%s: value %llu is not finite", path, (unsigned long long)k);
            free(rows);
            goto done;
        }
    out->dim = dim;
    out->n_users = nu;
    out->n_items = ni;
    out->rows = rows;
    rc = 0;
done:
    free(buf);
    return rc;
}
