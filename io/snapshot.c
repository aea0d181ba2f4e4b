/*
 * The snapshot file; see snapshot.h and docs/SNAPSHOT.md (the byte layout,
 * field by field). In short, all little-endian:
 *
 *   0   8  magic "DERRDSNP"
 *   8   4  format version (1)
 *   12  4  flags (0)
 *   16  4  header length H = 68 + 24 n
 *   20  4  section count n (1..32)
 *   24  8  snapshot version
 *   32  8  created_ms
 *   40  8  raw payload length R
 *   48  8  compressed length C
 *   56  4  crc32c of the R payload bytes
 *   60  4  crc32c of the C frame bytes
 *   64  24n section table: id u32, flags u32 (0), offset u64, length u64,
 *          offsets into the raw payload, ascending, gaps < 64 zero bytes
 *   H-4 4  crc32c of header bytes 0..H-5
 *   H   C  one zstd frame, content size and content checksum on, holding
 *          the R payload bytes; the file ends with it
 *
 * The frame's CRC-32C is checked before zstd sees a byte, so a damaged file
 * is refused by a checksum, and zstd only ever parses well-formed or
 * deliberately crafted input.
 */
#include "io/snapshot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "io/buf.h"
#include "io/crc32c.h"
#include "io/fsutil.h"

#define SNAP_MAGIC "DERRDSNP"
#define SNAP_VERSION 1u
#define SNAP_FIXED 64
#define SNAP_ENTRY 24
#define SNAP_MAX_SECTIONS 32
#define SNAP_ALIGN 64
#define SNAP_MAX_RAW ((uint64_t)1 << 36) /* 64 GiB: a sanity bound, not a goal */
/* The payload may be at most 64 times the frame, plus 64 MiB: a trained
 * model's floats compress about 1.2 times, so a real snapshot is far
 * inside, while a crafted frame of zeros (zstd reaches 30,000 times) can
 * make a reader allocate at most 64 times the file it was given, plus the
 * slack, for the payload (the tables built from it: up to 7 times more,
 * docs/SNAPSHOT.md). */
#define SNAP_MAX_EXPAND 64
#define SNAP_EXPAND_SLACK ((uint64_t)1 << 26)
#define SNAP_MAX_DIM 4096
#define SNAP_MAX_ROWS INT32_MAX
#define SNAP_ZSTD_MAGIC 0xFD2FB528u

enum {
    SNAP_SEC_META = 1,
    SNAP_SEC_USERS = 2,
    SNAP_SEC_ITEMS = 3,
    SNAP_SEC_USER_EMB = 4,
    SNAP_SEC_ITEM_EMB = 5,
    SNAP_SEC_KNOWN = 5,
};

/* Embeddings are stored as the host's floats; every platform derrd builds on
 * is little-endian, and this keeps it honest. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "little-endian host expected");

/* The top-K scan is compiled for AVX2+FMA and for the baseline and picked at
 * load time, as model/simd.h does for the model's loops (io/ cannot include
 * it). In ISO C mode GCC does not contract a * b + c into an FMA, so both
 * clones compute the same sums. Not under the sanitizers: their runtime is
 * not up yet when the load-time resolver runs. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define SNAP_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define SNAP_CLONES
#endif

static const unsigned char snapshot__zeros[SNAP_ALIGN];

static uint64_t snapshot__align(uint64_t x)
{
    return (x + SNAP_ALIGN - 1) & ~(uint64_t)(SNAP_ALIGN - 1);
}

/* ---- id index: open addressing, linear probing --------------------------- */

typedef struct {
    uint32_t row1; /* row + 1; 0 = empty slot */
    uint32_t tag;  /* high bits of the hash, to skip most memcmp calls */
} snapshot__slot_t;

typedef struct {
    snapshot__slot_t *slots;
    uint64_t mask;
    uint64_t seed;
    const char *const *ids;
    const uint16_t *len;
} snapshot__index_t;

/* A seeded hash, so ids chosen to collide in one process do not collide in
 * another (ids arrive from outside). */
static uint64_t snapshot__hash(const char *s, size_t n, uint64_t seed)
{
    uint64_t h = seed ^ ((uint64_t)n * 0x9e3779b97f4a7c15ull);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ v) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, s, n);
    h = (h ^ v) * 0x94d049bb133111ebull;
    h ^= h >> 32;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 31);
}

static void snapshot__index_close(snapshot__index_t *x)
{
    free(x->slots);
    x->slots = NULL;
}

/* Indexes the non-empty ids of rows 0..n-1. Returns 0, -ENOMEM, or -EEXIST
 * with *dup = the later row of the first repeated id and *first = the
 * earlier one. */
static int snapshot__index_build(snapshot__index_t *x, const char *const *ids,
                                 const uint16_t *len, int64_t n, int64_t *first, int64_t *dup)
{
    uint64_t cap = 16;
    while (cap < (uint64_t)n * 2)
        cap *= 2;
    x->slots = calloc(cap, sizeof(*x->slots));
    if (!x->slots)
        return -ENOMEM;
    x->mask = cap - 1;
    x->ids = ids;
    x->len = len;
    if (getrandom(&x->seed, sizeof(x->seed), GRND_NONBLOCK) != (ssize_t)sizeof(x->seed))
        x->seed = 0x243f6a8885a308d3ull ^ (uint64_t)(uintptr_t)x->slots;
    for (int64_t r = 0; r < n; r++) {
        if (len[r] == 0)
            continue;
        uint64_t h = snapshot__hash(ids[r], len[r], x->seed);
        uint32_t tag = (uint32_t)(h >> 32);
        for (uint64_t s = h & x->mask;; s = (s + 1) & x->mask) {
            snapshot__slot_t *e = &x->slots[s];
            if (e->row1 == 0) {
                e->row1 = (uint32_t)(r + 1);
                e->tag = tag;
                break;
            }
            int64_t o = (int64_t)e->row1 - 1;
            if (e->tag == tag && len[o] == len[r] && memcmp(ids[o], ids[r], len[r]) == 0) {
                *first = o;
                *dup = r;
                return -EEXIST;
            }
        }
    }
    return 0;
}

static int64_t snapshot__index_find(const snapshot__index_t *x, const char *id, size_t n)
{
    if (n == 0 || n > UINT16_MAX || !x->slots)
        return -1;
    uint64_t h = snapshot__hash(id, n, x->seed);
    uint32_t tag = (uint32_t)(h >> 32);
    for (uint64_t s = h & x->mask;; s = (s + 1) & x->mask) {
        const snapshot__slot_t *e = &x->slots[s];
        if (e->row1 == 0)
            return -1;
        int64_t r = (int64_t)e->row1 - 1;
        if (e->tag == tag && x->len[r] == n && memcmp(x->ids[r], id, n) == 0)
            return r;
    }
}

/* ---- writing ------------------------------------------------------------- */

/* The checks a writer makes before it encodes anything (-EINVAL). */
static int snapshot__check_desc(const char *path, const snapshot_desc_t *d, int level,
                                char *err, size_t errlen)
{
    if (level < 1 || level > ZSTD_maxCLevel()) {
        snprintf(err, errlen, "%s: zstd level %d outside 1..%d", path, level, ZSTD_maxCLevel());
        return -EINVAL;
    }
    if (d->dim < 1 || d->dim > SNAP_MAX_DIM) {
        snprintf(err, errlen, "%s: dim %d outside 1..%d", path, (int)d->dim, SNAP_MAX_DIM);
        return -EINVAL;
    }
    if (d->n_users < 0 || d->n_users > SNAP_MAX_ROWS || d->n_items < 0 ||
        d->n_items > SNAP_MAX_ROWS) {
        snprintf(err, errlen, "%s: %" PRId64 " users, %" PRId64 " items: each must be in 0..%d",
                 path, d->n_users, d->n_items, SNAP_MAX_ROWS);
        return -EINVAL;
    }
    if (d->n_pos < 0 || d->n_pos > SNAPSHOT_MAX_PARTITIONS || (d->n_pos && !d->pos)) {
        snprintf(err, errlen, "%s: %d partition offsets, limit %d", path, (int)d->n_pos,
                 SNAPSHOT_MAX_PARTITIONS);
        return -EINVAL;
    }
    if (d->topic && strlen(d->topic) > UINT16_MAX) {
        snprintf(err, errlen, "%s: topic name over %d bytes", path, UINT16_MAX);
        return -EINVAL;
    }
    const struct {
        const char *what;
        int64_t n;
        const float *emb;
        const char *const *ids;
        const uint16_t *len;
    } t[2] = { { "user", d->n_users, d->user_emb, d->user_ids, d->user_id_len },
               { "item", d->n_items, d->item_emb, d->item_ids, d->item_id_len } };
    for (int k = 0; k < 2; k++) {
        if (t[k].n == 0)
            continue;
        if (!t[k].emb || !t[k].ids || !t[k].len) {
            snprintf(err, errlen, "%s: %s embeddings or ids missing", path, t[k].what);
            return -EINVAL;
        }
        for (int64_t r = 0; r < t[k].n; r++)
            if (t[k].len[r] && !t[k].ids[r]) {
                snprintf(err, errlen, "%s: %s row %" PRId64 ": NULL id of length %u", path,
                         t[k].what, r, t[k].len[r]);
                return -EINVAL;
            }
        /* Refused here rather than written for readers to refuse: serving
         * must never get NaN, and a diverged model is better not published. */
        size_t nv = (size_t)t[k].n * (size_t)d->dim;
        for (size_t v = 0; v < nv; v++)
            if (!isfinite(t[k].emb[v])) {
                snprintf(err, errlen, "%s: %s row %zu, value %zu is not finite; not writing "
                         "a diverged model", path, t[k].what, v / (size_t)d->dim,
                         v % (size_t)d->dim);
                return -EINVAL;
            }
        snapshot__index_t x = { 0 };
        int64_t first = 0, dup = 0;
        int rc = snapshot__index_build(&x, t[k].ids, t[k].len, t[k].n, &first, &dup);
        snapshot__index_close(&x);
        if (rc == -EEXIST) {
            snprintf(err, errlen, "%s: %s rows %" PRId64 " and %" PRId64 " have the same id",
                     path, t[k].what, first, dup);
            return -EINVAL;
        }
        if (rc < 0) {
            snprintf(err, errlen, "%s: out of memory", path);
            return rc;
        }
    }
    return 0;
}

/* META, USERS and ITEMS, back to back into b; their lengths into len[0..3). */
static void snapshot__encode_head(buf_t *b, const snapshot_desc_t *d, uint64_t len[3])
{
    size_t topic_len = d->topic ? strlen(d->topic) : 0;
    buf_put_u64(b, d->version);
    buf_put_u64(b, d->created_ms);
    buf_put_u64(b, d->teacher_version);
    buf_put_u64(b, d->round);
    buf_put_u32(b, (uint32_t)d->dim);
    buf_put_u32(b, (uint32_t)d->n_pos);
    buf_put_u64(b, (uint64_t)d->n_users);
    buf_put_u64(b, (uint64_t)d->n_items);
    const double q[4] = { d->quality.hr10, d->quality.ndcg10, d->quality.teacher_hr10,
                          d->quality.teacher_ndcg10 };
    for (int k = 0; k < 4; k++) {
        uint64_t bits;
        memcpy(&bits, &q[k], 8);
        buf_put_u64(b, bits);
    }
    buf_put_u64(b, (uint64_t)d->quality.eval_users);
    buf_put_str16(b, d->topic, topic_len);
    for (int32_t k = 0; k < d->n_pos; k++) {
        buf_put_u32(b, (uint32_t)d->pos[k].partition);
        buf_put_u64(b, (uint64_t)d->pos[k].offset);
    }
    len[0] = b->len;
    for (int t = 0; t < 2; t++) {
        int64_t n = t ? d->n_items : d->n_users;
        const char *const *ids = t ? d->item_ids : d->user_ids;
        const uint16_t *idl = t ? d->item_id_len : d->user_id_len;
        size_t start = b->len;
        buf_put_u64(b, (uint64_t)n);
        for (int64_t r = 0; r < n; r++)
            buf_put_str16(b, ids[r], idl[r]);
        len[1 + t] = b->len - start;
    }
}

typedef struct {
    const void *p;
    uint64_t n;
} snapshot__piece_t;

/* Compresses the payload (the concatenation of pieces) into one frame and
 * writes header + frame to path atomically; with bounded, refuses a payload
 * that expands more than readers take. */
static int snapshot__emit(const char *path, uint64_t version, uint64_t created_ms,
                          const snapshot__piece_t *piece, int npiece,
                          const snapshot__section_t *sec, int nsec, int level, int bounded,
                          char *err, size_t errlen)
{
    uint64_t raw_len = 0;
    for (int k = 0; k < npiece; k++)
        raw_len += piece[k].n;
    if (raw_len > SNAP_MAX_RAW) {
        snprintf(err, errlen, "%s: %" PRIu64 " payload bytes, over the limit of %" PRIu64, path,
                 raw_len, SNAP_MAX_RAW);
        return -EFBIG;
    }
    if (nsec < 1 || nsec > SNAP_MAX_SECTIONS) {
        snprintf(err, errlen, "%s: %d sections, expected 1..%d", path, nsec, SNAP_MAX_SECTIONS);
        return -EINVAL;
    }
    int rc = 0;
    size_t cap = ZSTD_compressBound((size_t)raw_len);
    size_t hlen = SNAP_FIXED + (size_t)nsec * SNAP_ENTRY + 4;
    unsigned char *frame = malloc(cap), *h = calloc(1, hlen);
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    if (!frame || !h || !cc) {
        rc = -ENOMEM;
        snprintf(err, errlen, "%s: out of memory for a %zu-byte frame", path, cap);
        goto done;
    }
    size_t zr = ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, level);
    if (!ZSTD_isError(zr))
        zr = ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
    if (!ZSTD_isError(zr))
        zr = ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 1);
    if (!ZSTD_isError(zr))
        zr = ZSTD_CCtx_setPledgedSrcSize(cc, raw_len);
    uint32_t raw_crc = 0;
    ZSTD_outBuffer ob = { frame, cap, 0 };
    for (int k = 0; k < npiece && !ZSTD_isError(zr); k++) {
        if (piece[k].n == 0)
            continue;
        raw_crc = crc32c_update(raw_crc, piece[k].p, (size_t)piece[k].n);
        ZSTD_inBuffer ib = { piece[k].p, (size_t)piece[k].n, 0 };
        while (ib.pos < ib.size && !ZSTD_isError(zr))
            zr = ZSTD_compressStream2(cc, &ob, &ib, ZSTD_e_continue);
    }
    while (!ZSTD_isError(zr)) {
        ZSTD_inBuffer none = { NULL, 0, 0 };
        zr = ZSTD_compressStream2(cc, &ob, &none, ZSTD_e_end);
        if (zr == 0)
            break;
        if (!ZSTD_isError(zr) && ob.pos == ob.size) { /* cannot happen with the bound */
            snprintf(err, errlen, "%s: zstd frame larger than its bound", path);
            rc = -EIO;
            goto done;
        }
    }
    if (ZSTD_isError(zr)) {
        rc = -EIO;
        snprintf(err, errlen, "%s: zstd: %s", path, ZSTD_getErrorName(zr));
        goto done;
    }
    if (bounded && raw_len > (uint64_t)ob.pos * SNAP_MAX_EXPAND + SNAP_EXPAND_SLACK) {
        /* Not a model derrd trains (their floats hardly compress): do not
         * write what every reader would refuse. */
        rc = -EINVAL;
        snprintf(err, errlen, "%s: the payload compresses %.0f times, over the %d readers take",
                 path, (double)raw_len / (double)ob.pos, SNAP_MAX_EXPAND);
        goto done;
    }
    memcpy(h, SNAP_MAGIC, 8);
    buf_store_u32(h + 8, SNAP_VERSION);
    buf_store_u32(h + 12, 0);
    buf_store_u32(h + 16, (uint32_t)hlen);
    buf_store_u32(h + 20, (uint32_t)nsec);
    buf_store_u64(h + 24, version);
    buf_store_u64(h + 32, created_ms);
    buf_store_u64(h + 40, raw_len);
    buf_store_u64(h + 48, ob.pos);
    buf_store_u32(h + 56, raw_crc);
    buf_store_u32(h + 60, crc32c_update(0, frame, ob.pos));
    for (int k = 0; k < nsec; k++) {
        unsigned char *e = h + SNAP_FIXED + (size_t)k * SNAP_ENTRY;
        buf_store_u32(e, sec[k].id);
        buf_store_u32(e + 4, 0);
        buf_store_u64(e + 8, sec[k].off);
        buf_store_u64(e + 16, sec[k].len);
    }
    buf_store_u32(h + hlen - 4, crc32c_update(0, h, hlen - 4));
    fsutil_part_t parts[2] = { { h, hlen }, { frame, ob.pos } };
    rc = fsutil_write_atomic(path, parts, 2, err, errlen);
done:
    ZSTD_freeCCtx(cc);
    free(frame);
    free(h);
    return rc;
}

int snapshot_write(const char *path, const snapshot_desc_t *d, int level, char *err,
                   size_t errlen)
{
    int rc = snapshot__check_desc(path, d, level, err, errlen);
    if (rc < 0)
        return rc;
    buf_t head;
    buf_init(&head);
    uint64_t hl[3];
    snapshot__encode_head(&head, d, hl);
    if (head.err) {
        snprintf(err, errlen, "%s: out of memory", path);
        rc = head.err;
        goto done;
    }
    /* The head (META, USERS, ITEMS), then each embedding table at a
     * multiple of 64 so a reader can map it in place. */
    snapshot__section_t sec[5];
    sec[0] = (snapshot__section_t){ SNAP_SEC_META, 0, hl[0] };
    sec[1] = (snapshot__section_t){ SNAP_SEC_USERS, hl[0], hl[1] };
    sec[2] = (snapshot__section_t){ SNAP_SEC_ITEMS, hl[0] + hl[1], hl[2] };
    sec[3] = (snapshot__section_t){ SNAP_SEC_USER_EMB, snapshot__align(head.len),
                                    (uint64_t)d->n_users * (uint64_t)d->dim * 4 };
    sec[4] = (snapshot__section_t){ SNAP_SEC_ITEM_EMB, snapshot__align(sec[3].off + sec[3].len),
                                    (uint64_t)d->n_items * (uint64_t)d->dim * 4 };
    const snapshot__piece_t piece[5] = {
        { head.data, head.len },
        { snapshot__zeros, sec[3].off - head.len },
        { d->user_emb, sec[3].len },
        { snapshot__zeros, sec[4].off - (sec[3].off + sec[3].len) },
        { d->item_emb, sec[4].len },
    };
    rc = snapshot__emit(path, d->version, d->created_ms, piece, 5, sec, 5, level, 1, err,
                        errlen);
done:
    buf_close(&head);
    return rc;
}

int snapshot__write_raw(const char *path, uint64_t version, uint64_t created_ms,
                        const void *payload, size_t len, const snapshot__section_t *sec,
                        int nsec, int level, char *err, size_t errlen)
{
    const snapshot__piece_t piece = { payload, len };
    return snapshot__emit(path, version, created_ms, &piece, 1, sec, nsec, level, 0, err,
                          errlen);
}

/* ---- the directory: versions, latest, pruning ---------------------------- */

void snapshot_path(const char *dir, uint64_t version, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/student-%020" PRIu64 ".dsnap", dir, version);
}

void snapshot_latest_path(const char *dir, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/latest", dir);
}

/* Parses "student-<20 digits>.dsnap"; returns 1 and the version on a match. */
static int snapshot__name_version(const char *name, uint64_t *version)
{
    return fsutil_name_number(name, "student-", ".dsnap", version);
}

/* The version dir/latest names: 0, -ENOENT (no link) or -EBADMSG. */
static int snapshot__latest_version(const char *dir, uint64_t *version)
{
    char path[4096], target[256];
    snapshot_latest_path(dir, path, sizeof(path));
    ssize_t n = readlink(path, target, sizeof(target) - 1);
    if (n < 0)
        return errno == EINVAL ? -EBADMSG : -ENOENT;
    target[n] = 0;
    return snapshot__name_version(target, version) ? 0 : -EBADMSG;
}

int snapshot_latest(const char *dir, uint64_t *version, uint64_t *mtime_ms)
{
    int rc = snapshot__latest_version(dir, version);
    if (rc < 0)
        return rc;
    char path[4096];
    struct stat sb;
    snapshot_latest_path(dir, path, sizeof(path));
    if (stat(path, &sb) < 0)
        return -ENOENT;
    *mtime_ms = (uint64_t)sb.st_mtim.tv_sec * 1000 + (uint64_t)sb.st_mtim.tv_nsec / 1000000;
    return 0;
}

int snapshot_sweep_temp(const char *dir)
{
    DIR *dp = opendir(dir);
    if (!dp)
        return 0;
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(dp))) {
        /* fsutil_write_atomic's "<name>.tmp.XXXXXX" and the latest link's
         * "latest.tmp.<pid>.<n>": what a crash mid-publish leaves. */
        uint64_t v;
        const char *t = strstr(e->d_name, ".tmp.");
        if (!t)
            continue;
        char base[256];
        size_t n = (size_t)(t - e->d_name);
        if (n >= sizeof(base))
            continue;
        memcpy(base, e->d_name, n);
        base[n] = 0;
        if (strcmp(base, "latest") != 0 && !snapshot__name_version(base, &v))
            continue;
        removed += unlinkat(dirfd(dp), e->d_name, 0) == 0;
    }
    closedir(dp);
    return removed;
}

static int snapshot__fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 && errno != EINVAL ? -errno : 0;
    close(fd);
    return rc;
}

/* Deletes the student-*.dsnap files of dir beyond the `keep` newest, never
 * `version` (just published) nor the one latest points to now (another
 * publisher may have moved it). A failed delete is left for next time. */
static void snapshot__prune(const char *dir, uint64_t version, int keep)
{
    char path[4096];
    uint64_t pinned = version, pinned2 = 0;
    int has_pinned2 = snapshot__latest_version(dir, &pinned2) == 0;
    DIR *dp = opendir(dir);
    if (!dp)
        return;
    uint64_t *v = NULL;
    size_t count = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(dp))) {
        uint64_t ver;
        if (!snapshot__name_version(e->d_name, &ver))
            continue;
        if (count == cap) {
            cap = cap ? cap * 2 : 16;
            uint64_t *nv = realloc(v, cap * sizeof(*v));
            if (!nv)
                break;
            v = nv;
        }
        v[count++] = ver;
    }
    closedir(dp);
    if (count > 1)
        qsort(v, count, sizeof(*v), fsutil_cmp_u64_desc);
    for (size_t k = (size_t)keep; k < count; k++) {
        if (v[k] == pinned || (has_pinned2 && v[k] == pinned2))
            continue;
        snapshot_path(dir, v[k], path, sizeof(path));
        unlink(path);
    }
    free(v);
}

int snapshot_publish(const char *dir, const snapshot_desc_t *desc, int level, int keep,
                     char *err, size_t errlen)
{
    static atomic_uint counter;
    if (keep < 1) {
        snprintf(err, errlen, "%s: keep %d: at least the latest snapshot must stay", dir, keep);
        return -EINVAL;
    }
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        int e = errno;
        snprintf(err, errlen, "%s: mkdir: %s", dir, strerror(e));
        return -e;
    }
    char path[4096], latest[4096], tmp[4200];
    snapshot_path(dir, desc->version, path, sizeof(path));
    int rc = snapshot_write(path, desc, level, err, errlen);
    if (rc < 0)
        return rc;
    /* The pointer: a relative symlink made under a fresh name, then renamed
     * over `latest`, so a reader resolves the old target or the new one. */
    const char *name = strrchr(path, '/') + 1;
    snapshot_latest_path(dir, latest, sizeof(latest));
    for (int attempt = 0;; attempt++) {
        snprintf(tmp, sizeof(tmp), "%s.tmp.%ld.%u", latest, (long)getpid(),
                 atomic_fetch_add(&counter, 1u));
        if (symlink(name, tmp) == 0)
            break;
        if (errno != EEXIST || attempt == 100) {
            int e = errno;
            snprintf(err, errlen, "%s: symlink: %s", tmp, strerror(e));
            return -e;
        }
    }
    if (rename(tmp, latest) < 0) {
        int e = errno;
        snprintf(err, errlen, "rename %s over %s: %s", tmp, latest, strerror(e));
        unlink(tmp);
        return -e;
    }
    rc = snapshot__fsync_dir(dir);
    if (rc < 0) {
        snprintf(err, errlen, "%s: latest replaced, but fsync of the directory failed: %s", dir,
                 strerror(-rc));
        return rc;
    }
    snapshot__prune(dir, desc->version, keep);
    return 0;
}

/* ---- reading ------------------------------------------------------------- */

struct snapshot {
    snapshot_desc_t desc;
    unsigned char *raw;  /* the payload; ids and embeddings point into it */
    const char **user_ids, **item_ids;
    uint16_t *user_id_len, *item_id_len;
    char *topic;
    snapshot_pos_t *pos;
    snapshot__index_t users, items;
    snapshot_size_t size;
};

void snapshot_free(snapshot_t *s)
{
    if (!s)
        return;
    snapshot__index_close(&s->users);
    snapshot__index_close(&s->items);
    free(s->raw);
    free(s->user_ids);
    free(s->item_ids);
    free(s->user_id_len);
    free(s->item_id_len);
    free(s->topic);
    free(s->pos);
    free(s);
}

const snapshot_desc_t *snapshot_desc(const snapshot_t *s) { return &s->desc; }

const unsigned char *snapshot__payload(const snapshot_t *s, size_t *len)
{
    *len = (size_t)s->size.raw_bytes;
    return s->raw;
}

void snapshot_size(const snapshot_t *s, snapshot_size_t *out) { *out = s->size; }

int64_t snapshot_user_row(const snapshot_t *s, const char *id, size_t len)
{
    return snapshot__index_find(&s->users, id, len);
}

int64_t snapshot_item_row(const snapshot_t *s, const char *id, size_t len)
{
    return snapshot__index_find(&s->items, id, len);
}

#define SNAP_BAD(...)                                                          \
    do {                                                                       \
        snprintf(err, errlen, __VA_ARGS__);                                    \
        rc = -EBADMSG;                                                         \
        goto fail;                                                             \
    } while (0)

#define SNAP_NOMEM()                                                           \
    do {                                                                       \
        snprintf(err, errlen, "%s: out of memory", path);                      \
        rc = -ENOMEM;                                                          \
        goto fail;                                                             \
    } while (0)

typedef struct {
    uint64_t off, len;
    int present;
} snapshot__sec_t;

/* Decompresses the frame into s->raw (exactly raw_len bytes). The buffer
 * starts at what a plausible compression ratio allows and grows only as
 * output really arrives, so a crafted header claiming a huge payload costs
 * no huge allocation. */
static int snapshot__inflate(snapshot_t *s, const char *path, const unsigned char *frame,
                             size_t clen, uint64_t raw_len, char *err, size_t errlen)
{
    int rc = 0;
    ZSTD_DCtx *dc = NULL;
    if (clen < 6 || buf_load_u32(frame) != SNAP_ZSTD_MAGIC)
        SNAP_BAD("%s: payload is not a zstd frame", path);
    /* Frame header descriptor, bit 2: Content_Checksum_flag (RFC 8878). */
    if (!(frame[4] & 0x04))
        SNAP_BAD("%s: zstd frame has no content checksum", path);
    unsigned long long fcs = ZSTD_getFrameContentSize(frame, clen);
    if (fcs == ZSTD_CONTENTSIZE_UNKNOWN || fcs == ZSTD_CONTENTSIZE_ERROR)
        SNAP_BAD("%s: zstd frame header without a content size", path);
    if (fcs != raw_len)
        SNAP_BAD("%s: zstd frame holds %llu bytes, header says %" PRIu64, path, fcs, raw_len);
    size_t fsz = ZSTD_findFrameCompressedSize(frame, clen);
    if (ZSTD_isError(fsz))
        SNAP_BAD("%s: zstd: %s", path, ZSTD_getErrorName(fsz));
    if (fsz != clen)
        SNAP_BAD("%s: %zu bytes after the zstd frame", path, clen - fsz);
    uint64_t cap = (uint64_t)clen * 16 + ((uint64_t)1 << 20);
    if (cap > raw_len)
        cap = raw_len;
    s->raw = malloc(cap ? (size_t)cap : 1);
    dc = ZSTD_createDCtx();
    if (!s->raw || !dc)
        SNAP_NOMEM();
    ZSTD_inBuffer ib = { frame, clen, 0 };
    ZSTD_outBuffer ob = { s->raw, (size_t)cap, 0 };
    for (;;) {
        size_t in0 = ib.pos, out0 = ob.pos;
        size_t zr = ZSTD_decompressStream(dc, &ob, &ib);
        if (ZSTD_isError(zr)) {
            if (ZSTD_getErrorCode(zr) == ZSTD_error_checksum_wrong)
                SNAP_BAD("%s: zstd frame checksum mismatch", path);
            SNAP_BAD("%s: zstd: %s", path, ZSTD_getErrorName(zr));
        }
        if (zr == 0)
            break;
        if (ob.pos == ob.size && cap < raw_len) {
            cap = cap * 2 < raw_len ? cap * 2 : raw_len;
            unsigned char *p = realloc(s->raw, (size_t)cap);
            if (!p)
                SNAP_NOMEM();
            s->raw = p;
            ob.dst = p;
            ob.size = (size_t)cap;
        } else if (ib.pos == in0 && ob.pos == out0) {
            SNAP_BAD("%s: zstd frame ends early or holds more than %" PRIu64 " bytes", path,
                     raw_len);
        }
    }
    if (ob.pos != raw_len || ib.pos != clen)
        SNAP_BAD("%s: zstd frame gave %zu bytes from %zu, header says %" PRIu64 " from %zu",
                 path, ob.pos, ib.pos, raw_len, clen);
fail:
    ZSTD_freeDCtx(dc);
    return rc;
}

/* Parses an id table section into ids/len (n rows). */
static int snapshot__parse_ids(const char *path, const char *what, const unsigned char *p,
                               uint64_t slen, int64_t n, const char ***ids, uint16_t **len,
                               char *err, size_t errlen)
{
    int rc = 0;
    cursor_t c;
    cursor_init(&c, p, (size_t)slen);
    uint64_t count = cursor_u64(&c);
    if (c.err)
        SNAP_BAD("%s: %s id table truncated", path, what);
    if (count != (uint64_t)n)
        SNAP_BAD("%s: %s id table has %" PRIu64 " rows, metadata says %" PRId64, path, what,
                 count, n);
    /* Each row takes at least its 2-byte length: refuse before allocating. */
    if ((uint64_t)n > cursor_left(&c) / 2)
        SNAP_BAD("%s: %" PRId64 " %s ids cannot fit in %zu bytes", path, n, what,
                 cursor_left(&c));
    *ids = malloc((size_t)(n ? n : 1) * sizeof(**ids));
    *len = malloc((size_t)(n ? n : 1) * sizeof(**len));
    if (!*ids || !*len)
        SNAP_NOMEM();
    for (int64_t r = 0; r < n; r++) {
        size_t l;
        const char *id = cursor_str16(&c, &l);
        if (c.err)
            SNAP_BAD("%s: %s id table truncated at row %" PRId64, path, what, r);
        (*ids)[r] = id;
        (*len)[r] = (uint16_t)l;
    }
    if (cursor_left(&c))
        SNAP_BAD("%s: %zu bytes after the %s id table", path, cursor_left(&c), what);
fail:
    return rc;
}

static int snapshot__check_finite(const char *path, const char *what, const float *v,
                                  int64_t n, int32_t dim, char *err, size_t errlen)
{
    size_t nv = (size_t)n * (size_t)dim;
    for (size_t k = 0; k < nv; k++)
        if (!isfinite(v[k])) {
            snprintf(err, errlen, "%s: %s row %zu, value %zu is not finite", path, what,
                     k / (size_t)dim, k % (size_t)dim);
            return -EBADMSG;
        }
    return 0;
}

/* Decodes the verified payload's sections into s. */
static int snapshot__parse(snapshot_t *s, const char *path, const snapshot__sec_t *sec,
                           uint64_t hdr_version, uint64_t hdr_created, char *err,
                           size_t errlen)
{
    int rc = 0;
    snapshot_desc_t *d = &s->desc;
    const unsigned char *raw = s->raw;
    cursor_t c;
    cursor_init(&c, raw + sec[SNAP_SEC_META].off, (size_t)sec[SNAP_SEC_META].len);
    d->version = cursor_u64(&c);
    d->created_ms = cursor_u64(&c);
    d->teacher_version = cursor_u64(&c);
    d->round = cursor_u64(&c);
    uint32_t dim = cursor_u32(&c), n_pos = cursor_u32(&c);
    uint64_t n_users = cursor_u64(&c), n_items = cursor_u64(&c);
    double q[4];
    for (int k = 0; k < 4; k++) {
        uint64_t bits = cursor_u64(&c);
        memcpy(&q[k], &bits, 8);
    }
    d->quality = (snapshot_quality_t){ q[0], q[1], q[2], q[3], (int64_t)cursor_u64(&c) };
    size_t topic_len;
    const char *topic = cursor_str16(&c, &topic_len);
    if (c.err)
        SNAP_BAD("%s: metadata truncated", path);
    if (d->version != hdr_version || d->created_ms != hdr_created)
        SNAP_BAD("%s: metadata version/created_ms differ from the header's", path);
    if (dim < 1 || dim > SNAP_MAX_DIM)
        SNAP_BAD("%s: dim %u outside 1..%d", path, dim, SNAP_MAX_DIM);
    if (n_pos > SNAPSHOT_MAX_PARTITIONS)
        SNAP_BAD("%s: %u partition offsets, limit %d", path, n_pos, SNAPSHOT_MAX_PARTITIONS);
    if (n_users > SNAP_MAX_ROWS || n_items > SNAP_MAX_ROWS)
        SNAP_BAD("%s: %" PRIu64 " users, %" PRIu64 " items: limit %d each", path, n_users,
                 n_items, SNAP_MAX_ROWS);
    if (memchr(topic, 0, topic_len))
        SNAP_BAD("%s: topic name holds a NUL byte", path);
    if (cursor_left(&c) != (size_t)n_pos * 12)
        SNAP_BAD("%s: metadata has %zu bytes for %u partition offsets (12 each)", path,
                 cursor_left(&c), n_pos);
    d->dim = (int32_t)dim;
    d->n_users = (int64_t)n_users;
    d->n_items = (int64_t)n_items;
    d->n_pos = (int32_t)n_pos;
    s->topic = malloc(topic_len + 1);
    s->pos = malloc((n_pos ? n_pos : 1) * sizeof(*s->pos));
    if (!s->topic || !s->pos)
        SNAP_NOMEM();
    memcpy(s->topic, topic, topic_len);
    s->topic[topic_len] = 0;
    for (uint32_t k = 0; k < n_pos; k++) {
        s->pos[k].partition = (int32_t)cursor_u32(&c);
        s->pos[k].offset = (int64_t)cursor_u64(&c);
    }
    d->topic = s->topic;
    d->pos = s->pos;

    /* Counts against section lengths before any allocation they size. */
    if (sec[SNAP_SEC_USER_EMB].len != n_users * dim * 4 ||
        sec[SNAP_SEC_ITEM_EMB].len != n_items * dim * 4)
        SNAP_BAD("%s: embedding sections of %" PRIu64 " and %" PRIu64 " bytes; %" PRIu64
                 " users and %" PRIu64 " items of dim %u need %" PRIu64 " and %" PRIu64, path,
                 sec[SNAP_SEC_USER_EMB].len, sec[SNAP_SEC_ITEM_EMB].len, n_users, n_items, dim,
                 n_users * dim * 4, n_items * dim * 4);
    rc = snapshot__parse_ids(path, "user", raw + sec[SNAP_SEC_USERS].off,
                             sec[SNAP_SEC_USERS].len, d->n_users, &s->user_ids, &s->user_id_len,
                             err, errlen);
    if (rc < 0)
        goto fail;
    rc = snapshot__parse_ids(path, "item", raw + sec[SNAP_SEC_ITEMS].off,
                             sec[SNAP_SEC_ITEMS].len, d->n_items, &s->item_ids, &s->item_id_len,
                             err, errlen);
    if (rc < 0)
        goto fail;
    d->user_ids = s->user_ids;
    d->user_id_len = s->user_id_len;
    d->item_ids = s->item_ids;
    d->item_id_len = s->item_id_len;
    d->user_emb = (const float *)(const void *)(raw + sec[SNAP_SEC_USER_EMB].off);
    d->item_emb = (const float *)(const void *)(raw + sec[SNAP_SEC_ITEM_EMB].off);
    rc = snapshot__check_finite(path, "user", d->user_emb, d->n_users, d->dim, err, errlen);
    if (rc == 0)
        rc = snapshot__check_finite(path, "item", d->item_emb, d->n_items, d->dim, err, errlen);
    if (rc < 0)
        goto fail;

    int64_t first = 0, dup = 0;
    const char *what = "user";
    rc = snapshot__index_build(&s->users, d->user_ids, d->user_id_len, d->n_users, &first,
                               &dup);
    if (rc == 0) {
        what = "item";
        rc = snapshot__index_build(&s->items, d->item_ids, d->item_id_len, d->n_items, &first,
                                   &dup);
    }
    if (rc == -EEXIST)
        SNAP_BAD("%s: %s rows %" PRId64 " and %" PRId64 " have the same id", path, what, first,
                 dup);
    if (rc < 0)
        SNAP_NOMEM();
fail:
    return rc;
}

/* Verifies the file bytes f[0..flen) and opens them; path is what messages
 * call them. When owned is not NULL it is f, malloc'd, and is freed as soon
 * as the payload is inflated (the payload is all that is needed after
 * that), so a large file and its parsed tables never coexist. */
static int snapshot__open_bytes(const char *path, const unsigned char *f, size_t flen,
                                unsigned char *owned, snapshot_t **out, char *err,
                                size_t errlen)
{
    int rc = 0;
    snapshot_t *s = calloc(1, sizeof(*s));
    if (!s)
        SNAP_NOMEM();

    /* Header. */
    if (flen < SNAP_FIXED + 4)
        SNAP_BAD("%s: truncated header (%zu bytes)", path, flen);
    if (memcmp(f, SNAP_MAGIC, 8) != 0)
        SNAP_BAD("%s: not a derrd snapshot (bad magic)", path);
    uint32_t version = buf_load_u32(f + 8), flags = buf_load_u32(f + 12);
    uint32_t hlen = buf_load_u32(f + 16), nsec = buf_load_u32(f + 20);
    if (version != SNAP_VERSION)
        SNAP_BAD("%s: format version %u, this build reads %u", path, version, SNAP_VERSION);
    if (nsec < 1 || nsec > SNAP_MAX_SECTIONS)
        SNAP_BAD("%s: %u sections, expected 1..%d", path, nsec, SNAP_MAX_SECTIONS);
    if (hlen != SNAP_FIXED + nsec * SNAP_ENTRY + 4)
        SNAP_BAD("%s: header length %u does not match %u sections", path, hlen, nsec);
    if (flen < hlen)
        SNAP_BAD("%s: truncated header (%zu bytes of %u)", path, flen, hlen);
    if (crc32c_update(0, f, hlen - 4) != buf_load_u32(f + hlen - 4))
        SNAP_BAD("%s: header checksum mismatch", path);
    if (flags != 0)
        SNAP_BAD("%s: unknown flags 0x%x", path, flags);
    uint64_t hdr_version = buf_load_u64(f + 24), hdr_created = buf_load_u64(f + 32);
    uint64_t raw_len = buf_load_u64(f + 40), clen = buf_load_u64(f + 48);
    if (clen != flen - hlen)
        SNAP_BAD("%s: %zu bytes after the header, header says %" PRIu64 " (truncated?)", path,
                 flen - hlen, clen);
    if (raw_len > SNAP_MAX_RAW)
        SNAP_BAD("%s: payload of %" PRIu64 " bytes, over the limit of %" PRIu64, path, raw_len,
                 SNAP_MAX_RAW);
    if (raw_len > clen * SNAP_MAX_EXPAND + SNAP_EXPAND_SLACK)
        SNAP_BAD("%s: payload of %" PRIu64 " bytes from a %" PRIu64 "-byte frame, over %d times "
                 "it plus 64 MiB (a decompression bomb?)", path, raw_len, clen,
                 SNAP_MAX_EXPAND);
    if (crc32c_update(0, f + hlen, (size_t)clen) != buf_load_u32(f + 60))
        SNAP_BAD("%s: compressed payload checksum mismatch", path);

    /* Section table, against the payload length, before anything is
     * decompressed. */
    snapshot__sec_t sec[SNAP_SEC_KNOWN + 1];
    memset(sec, 0, sizeof(sec));
    uint64_t end = 0, gap_at[SNAP_MAX_SECTIONS], gap_len[SNAP_MAX_SECTIONS];
    for (uint32_t k = 0; k < nsec; k++) {
        const unsigned char *e = f + SNAP_FIXED + (size_t)k * SNAP_ENTRY;
        uint32_t id = buf_load_u32(e), sflags = buf_load_u32(e + 4);
        uint64_t off = buf_load_u64(e + 8), slen = buf_load_u64(e + 16);
        if (sflags != 0)
            SNAP_BAD("%s: section %u: unknown flags 0x%x", path, id, sflags);
        if (off < end || off - end >= SNAP_ALIGN || (k == 0 && off != 0))
            SNAP_BAD("%s: section %u at %" PRIu64 ": sections must follow each other with "
                     "under %d bytes of padding", path, id, off, SNAP_ALIGN);
        if (off > raw_len || slen > raw_len - off)
            SNAP_BAD("%s: section %u: bytes %" PRIu64 "+%" PRIu64 " outside the %" PRIu64
                     "-byte payload", path, id, off, slen, raw_len);
        gap_at[k] = end;
        gap_len[k] = off - end;
        if (id >= 1 && id <= SNAP_SEC_KNOWN) {
            if (sec[id].present)
                SNAP_BAD("%s: section %u appears twice", path, id);
            sec[id] = (snapshot__sec_t){ off, slen, 1 };
        }
        end = off + slen;
    }
    if (end != raw_len)
        SNAP_BAD("%s: sections end at %" PRIu64 ", payload is %" PRIu64 " bytes", path, end,
                 raw_len);
    for (int id = 1; id <= SNAP_SEC_KNOWN; id++)
        if (!sec[id].present)
            SNAP_BAD("%s: section %d missing", path, id);
    if (sec[SNAP_SEC_USER_EMB].off % SNAP_ALIGN || sec[SNAP_SEC_ITEM_EMB].off % SNAP_ALIGN)
        SNAP_BAD("%s: embedding section not at a multiple of %d", path, SNAP_ALIGN);

    uint32_t raw_crc = buf_load_u32(f + 56);
    rc = snapshot__inflate(s, path, f + hlen, (size_t)clen, raw_len, err, errlen);
    if (rc < 0)
        goto fail;
    s->size = (snapshot_size_t){ flen, raw_len };
    free(owned); /* f with it, when owned */
    owned = NULL;
    f = NULL;
    const unsigned char *raw = s->raw;
    if (crc32c_update(0, raw, (size_t)raw_len) != raw_crc)
        SNAP_BAD("%s: payload checksum mismatch", path);
    for (uint32_t k = 0; k < nsec; k++)
        if (gap_len[k] && memcmp(raw + gap_at[k], snapshot__zeros, (size_t)gap_len[k]) != 0)
            SNAP_BAD("%s: non-zero padding at payload byte %" PRIu64, path, gap_at[k]);
    rc = snapshot__parse(s, path, sec, hdr_version, hdr_created, err, errlen);
    if (rc < 0)
        goto fail;
    *out = s;
    return 0;
fail:
    free(owned);
    snapshot_free(s);
    return rc;
}

static int snapshot__open_file(const char *path, snapshot_t **out, char *err, size_t errlen)
{
    unsigned char *f = NULL;
    size_t flen = 0;
    int rc = fsutil_read_all(path, SNAP_MAX_RAW + ((size_t)1 << 30), &f, &flen, err, errlen);
    if (rc < 0)
        return rc;
    return snapshot__open_bytes(path, f, flen, f, out, err, errlen);
}

int snapshot_open_mem(const char *name, const void *data, size_t len, snapshot_t **out,
                      char *err, size_t errlen)
{
    *out = NULL;
    return snapshot__open_bytes(name, data, len, NULL, out, err, errlen);
}

int snapshot_open(const char *path, snapshot_t **out, char *err, size_t errlen)
{
    *out = NULL;
    struct stat st;
    if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode))
        return snapshot__open_file(path, out, err, errlen);
    char latest[4096];
    snapshot_latest_path(path, latest, sizeof(latest));
    /* Between resolving `latest` and opening its target, a publisher may
     * have moved `latest` on and pruned the old target: resolve again. Only
     * a missing `latest` itself is a real ENOENT. */
    int rc = 0;
    for (int attempt = 0; attempt < 100; attempt++) {
        rc = snapshot__open_file(latest, out, err, errlen);
        if (rc != -ENOENT || lstat(latest, &st) < 0)
            return rc;
    }
    /* latest is there but still names a missing file: say which. */
    char target[256];
    ssize_t n = readlink(latest, target, sizeof(target) - 1);
    if (n >= 0) {
        target[n] = 0;
        snprintf(err, errlen, "%s names %s, which does not exist", latest, target);
    }
    return rc;
}

/* ---- top-K --------------------------------------------------------------- */

/* The same sum as model/vec.h's vec_dot (eight running sums in a fixed
 * order), so a snapshot scores exactly as the model it was taken from. */
static inline float snapshot__dot(const float *a, const float *b, int32_t d)
{
    float acc[8] = { 0.0f };
    int32_t k = 0;
    for (; k + 8 <= d; k += 8)
        for (int l = 0; l < 8; l++)
            acc[l] += a[k + l] * b[k + l];
    for (; k < d; k++)
        acc[k & 7] += a[k] * b[k];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* a ranks below b: lower score, or the same score and a higher row. */
static inline int snapshot__worse(float sa, int64_t ra, float sb, int64_t rb)
{
    return sa < sb || (sa == sb && ra > rb);
}

/* Restores the heap (worst entry at the root) below position at. */
static void snapshot__sift_down(int64_t *items, float *scores, int n, int at)
{
    for (;;) {
        int w = at, l = 2 * at + 1, r = l + 1;
        if (l < n && snapshot__worse(scores[l], items[l], scores[w], items[w]))
            w = l;
        if (r < n && snapshot__worse(scores[r], items[r], scores[w], items[w]))
            w = r;
        if (w == at)
            return;
        float ts = scores[w];
        int64_t ti = items[w];
        scores[w] = scores[at];
        items[w] = items[at];
        scores[at] = ts;
        items[at] = ti;
        at = w;
    }
}

static int snapshot__excluded(const int64_t *ex, int n, int64_t row)
{
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (ex[mid] < row)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && ex[lo] == row;
}

static int snapshot__cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* snapshot__dot in GCC vector extensions (SSE pairs on the baseline, one
 * AVX register in the x86-64-v3 clone), the eight running sums in one
 * vector. The tail (the last dim % 8 values) is one more full step: the
 * user's tail ut is zero-padded and the item's is read on into the next
 * row, whose finite values contribute 0 * x = 0. Adding a zero leaves a sum
 * as it was (up to the sign of a zero), so scores equal snapshot__dot's. */
typedef float snapshot__v8 __attribute__((vector_size(32)));
typedef float snapshot__v4 __attribute__((vector_size(16)));

static inline float snapshot__dot_padded(const float *a, const float *b, int32_t full,
                                         const float *ut, int tail)
{
    snapshot__v8 acc = { 0.0f }, x, y;
    for (int32_t k = 0; k < full; k += 8) {
        memcpy(&x, a + k, sizeof(x));
        memcpy(&y, b + k, sizeof(y));
        acc += x * y;
    }
    if (tail) {
        memcpy(&x, ut, sizeof(x));
        memcpy(&y, b + full, sizeof(y));
        acc += x * y;
    }
    snapshot__v4 lo = { acc[0], acc[1], acc[2], acc[3] }, hi = { acc[4], acc[5], acc[6], acc[7] };
    snapshot__v4 h = lo + hi;
    return (h[0] + h[1]) + (h[2] + h[3]);
}

/* One pass over the item rows with a k-entry heap in items/scores. Rows
 * come in increasing order, so a later row with the score of the heap's
 * worst never displaces it: ties go to the lower row. */
SNAP_CLONES static int snapshot__scan(const float *pu, const float *ie, int64_t n_items,
                                      int32_t dim, const uint16_t *idlen, const int64_t *ex,
                                      int n_ex, int k, int64_t *items, float *scores)
{
    int32_t full = dim & ~7, tail = dim - full;
    float ut[8] = { 0.0f };
    for (int32_t l = 0; l < tail; l++)
        ut[l] = pu[full + l];
    /* The padded read of row i ends 8 - tail values into row i + 1: every
     * row but the last, when dim >= 8 - tail. */
    int64_t fast_end = tail == 0 ? n_items : 8 - tail <= dim ? n_items - 1 : 0;
    int n = 0;
    for (int64_t i = 0; i < n_items; i++) {
        const float *row = ie + i * dim;
        float sc = i < fast_end ? snapshot__dot_padded(pu, row, full, ut, tail)
                                : snapshot__dot(pu, row, dim);
        if (n == k && !(sc > scores[0]))
            continue;
        if (idlen[i] == 0 || (n_ex && snapshot__excluded(ex, n_ex, i)))
            continue;
        if (n < k) {
            int at = n++;
            while (at > 0) { /* sift up */
                int up = (at - 1) / 2;
                if (!snapshot__worse(sc, i, scores[up], items[up]))
                    break;
                scores[at] = scores[up];
                items[at] = items[up];
                at = up;
            }
            scores[at] = sc;
            items[at] = i;
        } else {
            scores[0] = sc;
            items[0] = i;
            snapshot__sift_down(items, scores, n, 0);
        }
    }
    return n;
}

int snapshot_recommend(const snapshot_t *s, int64_t u, int k, const int64_t *exclude,
                       int n_exclude, int64_t *items, float *scores)
{
    const snapshot_desc_t *d = &s->desc;
    if (u < 0 || u >= d->n_users || d->user_id_len[u] == 0 || k < 0 || n_exclude < 0 ||
        (n_exclude && !exclude) || (k && (!items || !scores)))
        return -EINVAL;
    if (k == 0)
        return 0;
    if ((int64_t)k > d->n_items)
        k = (int)d->n_items;
    /* A sorted copy of the exclusions, searched only for rows that would
     * enter the heap. */
    int64_t stack_ex[256], *ex = NULL;
    if (n_exclude) {
        ex = n_exclude <= (int)(sizeof(stack_ex) / sizeof(stack_ex[0]))
                 ? stack_ex
                 : malloc((size_t)n_exclude * sizeof(*ex));
        if (!ex)
            return -ENOMEM;
        memcpy(ex, exclude, (size_t)n_exclude * sizeof(*ex));
        qsort(ex, (size_t)n_exclude, sizeof(*ex), snapshot__cmp_i64);
    }
    int n = snapshot__scan(d->user_emb + u * d->dim, d->item_emb, d->n_items, d->dim,
                           d->item_id_len, ex, n_exclude, k, items, scores);
    if (ex && ex != stack_ex)
        free(ex);
    /* Heap to best-first: move the worst to the end, one by one. */
    for (int m = n - 1; m > 0; m--) {
        float ts = scores[0];
        int64_t ti = items[0];
        scores[0] = scores[m];
        items[0] = items[m];
        scores[m] = ts;
        items[m] = ti;
        snapshot__sift_down(items, scores, m, 0);
    }
    return n;
}
