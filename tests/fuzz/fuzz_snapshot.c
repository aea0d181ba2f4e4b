/*
 * fuzz_snapshot: io/snapshot.h's reader on crafted files (a snapshot comes
 * from a directory or over HTTP, and a reader must refuse anything that does
 * not verify). Two kinds of input:
 *
 *   - starting with the magic "DERRDSNP": a whole file, opened from memory
 *     as it is, and again with its header and frame CRC-32Cs made right, so
 *     the fuzzer gets past the checksums to the header fields, the section
 *     table and zstd;
 *   - anything else: a payload recipe, written with valid checksums and a
 *     valid zstd frame by snapshot__write_raw() into a scratch file and
 *     opened by path, so the fuzzer works on what the checksums protect (the
 *     metadata, id tables and embeddings). The recipe:
 *         u8 n (sections: 1 + n % 32)
 *         n x { u32 id, u32 length, u8 pad }    little-endian
 *         the section bodies, back to back
 *     pad: bit 6 set = pad to the next multiple of 64, else (pad & 63) bytes;
 *     bit 7 set = padding bytes 0xff instead of zero. A body is cut short
 *     where the input ends. The header's version and created_ms are taken
 *     from the first section's first 16 bytes (META's version fields).
 *
 * Of a snapshot that opens, it checks what snapshot.h promises: dim, counts
 * and offsets in range, embeddings inside the payload and finite, every
 * non-empty id found again at its own row (so ids are unique), and
 * snapshot_recommend's top-K equal to a naive ranking of the same scores
 * (the same 8-lane sums, so scores compare exactly), with its argument
 * checks. Of one that does not: -EBADMSG / -ENOMEM, a reason, no snapshot.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/buf.h"
#include "io/crc32c.h"
#include "io/snapshot.h"
#include "tests/fuzz/fuzzutil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAGIC "DERRDSNP"

/* snapshot.c's sum: eight running sums in a fixed order. */
static float fuzz_snapshot_dot(const float *a, const float *b, int32_t d)
{
    float acc[8] = { 0.0f };
    for (int32_t k = 0; k < d; k++)
        acc[k & 7] += a[k] * b[k];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

typedef struct {
    int64_t row;
    float score;
} fuzz_cand_t;

static int fuzz_cand_cmp(const void *pa, const void *pb)
{
    const fuzz_cand_t *a = pa, *b = pb;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    return a->row < b->row ? -1 : a->row > b->row;
}

static void fuzz_snapshot_check_recommend(const snapshot_t *s)
{
    const snapshot_desc_t *d = snapshot_desc(s);
    int64_t items[16];
    float scores[16];
    FUZZ_CHECK(snapshot_recommend(s, -1, 1, NULL, 0, items, scores) == -EINVAL);
    FUZZ_CHECK(snapshot_recommend(s, d->n_users, 1, NULL, 0, items, scores) == -EINVAL);
    int64_t u = -1;
    for (int64_t r = 0; r < d->n_users && u < 0; r++) {
        if (d->user_id_len[r])
            u = r;
        else
            FUZZ_CHECK(snapshot_recommend(s, r, 1, NULL, 0, items, scores) == -EINVAL);
    }
    if (u < 0)
        return;
    FUZZ_CHECK(snapshot_recommend(s, u, -1, NULL, 0, items, scores) == -EINVAL);
    FUZZ_CHECK(snapshot_recommend(s, u, 0, NULL, 0, NULL, NULL) == 0);

    /* Exclude row 0 and two rows out of range (ignored). */
    const int64_t ex[3] = { d->n_items + 3, 0, -1 };
    int k = (int)(d->n_items < 8 ? d->n_items : 8) + 1;
    int n = snapshot_recommend(s, u, k, ex, 3, items, scores);

    /* The naive ranking. */
    fuzz_cand_t *cand = malloc((size_t)(d->n_items ? d->n_items : 1) * sizeof(*cand));
    FUZZ_CHECK(cand != NULL);
    int64_t nc = 0;
    int has_nan = 0;
    const float *pu = d->user_emb + u * d->dim;
    for (int64_t i = 1; i < d->n_items; i++) {
        if (!d->item_id_len[i])
            continue;
        float sc = fuzz_snapshot_dot(pu, d->item_emb + i * d->dim, d->dim);
        has_nan |= isnan(sc);
        cand[nc++] = (fuzz_cand_t){ i, sc };
    }
    FUZZ_CHECK(n == (nc < k ? (int)nc : k));
    for (int j = 0; j < n; j++) {
        FUZZ_CHECK(items[j] >= 1 && items[j] < d->n_items && d->item_id_len[items[j]]);
        for (int l = 0; l < j; l++)
            FUZZ_CHECK(items[l] != items[j]);
        float ref = fuzz_snapshot_dot(pu, d->item_emb + items[j] * d->dim, d->dim);
        FUZZ_CHECK(scores[j] == ref || (isnan(scores[j]) && isnan(ref)));
    }
    if (!has_nan) { /* a NaN score has no rank */
        qsort(cand, (size_t)nc, sizeof(*cand), fuzz_cand_cmp);
        for (int j = 0; j < n; j++)
            FUZZ_CHECK(items[j] == cand[j].row && scores[j] == cand[j].score);
    }
    free(cand);
}

/* What every snapshot that opens must satisfy. */
static void fuzz_snapshot_check(const snapshot_t *s)
{
    const snapshot_desc_t *d = snapshot_desc(s);
    FUZZ_CHECK(d->dim >= 1 && d->dim <= 4096);
    FUZZ_CHECK(d->n_users >= 0 && d->n_users <= INT32_MAX);
    FUZZ_CHECK(d->n_items >= 0 && d->n_items <= INT32_MAX);
    FUZZ_CHECK(d->n_pos >= 0 && d->n_pos <= SNAPSHOT_MAX_PARTITIONS);
    FUZZ_CHECK(d->n_pos == 0 || d->pos != NULL);
    FUZZ_CHECK(d->topic != NULL);
    FUZZ_CHECK(strlen(d->topic) <= UINT16_MAX);
    if (d->n_pos) { /* every offset readable (ASan) */
        snapshot_pos_t *pos = malloc((size_t)d->n_pos * sizeof(*pos));
        FUZZ_CHECK(pos != NULL);
        memcpy(pos, d->pos, (size_t)d->n_pos * sizeof(*pos));
        free(pos);
    }

    size_t plen;
    const unsigned char *p = snapshot__payload(s, &plen);
    snapshot_size_t sz;
    snapshot_size(s, &sz);
    FUZZ_CHECK(sz.raw_bytes == plen);
    const struct {
        int64_t n;
        const float *emb;
        const char *const *ids;
        const uint16_t *len;
        int64_t (*row)(const snapshot_t *, const char *, size_t);
    } t[2] = { { d->n_users, d->user_emb, d->user_ids, d->user_id_len, snapshot_user_row },
               { d->n_items, d->item_emb, d->item_ids, d->item_id_len, snapshot_item_row } };
    for (int k = 0; k < 2; k++) {
        const unsigned char *e = (const unsigned char *)t[k].emb;
        uint64_t bytes = (uint64_t)t[k].n * (uint64_t)d->dim * 4;
        FUZZ_CHECK(e >= p && e <= p + plen && bytes <= (uint64_t)(p + plen - e));
        FUZZ_CHECK((uintptr_t)e % sizeof(float) == 0);
        for (uint64_t v = 0; v < bytes / 4; v++)
            FUZZ_CHECK(isfinite(t[k].emb[v]));
        FUZZ_CHECK(t[k].row(s, "", 0) == -1);
        for (int64_t r = 0; r < t[k].n; r++) {
            size_t len = t[k].len[r];
            if (!len)
                continue;
            const unsigned char *id = (const unsigned char *)t[k].ids[r];
            FUZZ_CHECK(id >= p && id + len <= p + plen);
            FUZZ_CHECK(t[k].row(s, t[k].ids[r], len) == r);
        }
    }
    fuzz_snapshot_check_recommend(s);
}

/* Opens a file held in memory and checks the outcome. */
static void fuzz_snapshot_open_mem(const unsigned char *f, size_t len)
{
    snapshot_t *s = (snapshot_t *)&s; /* must come back NULL on failure */
    char err[512];
    err[0] = '\0';
    int rc = snapshot_open_mem("fuzz.dsnap", f, len, &s, err, sizeof(err));
    if (rc < 0) {
        FUZZ_CHECK(rc == -EBADMSG || rc == -ENOMEM);
        FUZZ_CHECK(s == NULL);
        FUZZ_CHECK(strncmp(err, "fuzz.dsnap: ", 12) == 0);
        return;
    }
    FUZZ_CHECK(rc == 0 && s != NULL);
    const snapshot_desc_t *d = snapshot_desc(s);
    FUZZ_CHECK(d->version == buf_load_u64(f + 24) && d->created_ms == buf_load_u64(f + 32));
    snapshot_size_t sz;
    snapshot_size(s, &sz);
    FUZZ_CHECK(sz.file_bytes == len);
    fuzz_snapshot_check(s);
    snapshot_free(s);
}

/* Little-endian reads that give 0 past the end of the input. */
typedef struct {
    const uint8_t *p;
    size_t n, at;
} fuzz_in_t;

static uint32_t fuzz_in_byte(fuzz_in_t *in)
{
    return in->at < in->n ? in->p[in->at++] : 0;
}

static uint32_t fuzz_in_u32(fuzz_in_t *in)
{
    uint32_t v = 0;
    for (int k = 0; k < 4; k++)
        v |= fuzz_in_byte(in) << (8 * k);
    return v;
}

static void fuzz_snapshot_recipe(const uint8_t *data, size_t size)
{
    fuzz_in_t in = { data, size, 0 };
    int nsec = 1 + (int)(fuzz_in_byte(&in) % 32);
    snapshot__section_t sec[32];
    uint32_t want[32], pad[32];
    for (int k = 0; k < nsec; k++) {
        sec[k].id = fuzz_in_u32(&in);
        want[k] = fuzz_in_u32(&in);
        pad[k] = fuzz_in_byte(&in);
    }
    unsigned char *payload = malloc(size + 32 * 64 + 1);
    FUZZ_CHECK(payload != NULL);
    size_t off = 0;
    for (int k = 0; k < nsec; k++) {
        size_t gap = pad[k] & 0x40 ? (64 - off % 64) % 64 : pad[k] & 0x3f;
        memset(payload + off, pad[k] & 0x80 ? 0xff : 0, gap);
        off += gap;
        size_t len = size - in.at < want[k] ? size - in.at : want[k];
        memcpy(payload + off, data + in.at, len);
        in.at += len;
        sec[k].off = off;
        sec[k].len = len;
        off += len;
    }
    uint64_t version = 0, created = 0;
    if (sec[0].len >= 16) {
        version = buf_load_u64(payload + sec[0].off);
        created = buf_load_u64(payload + sec[0].off + 8);
    }
    char path[512], err[512];
    snprintf(path, sizeof(path), "%s/recipe.dsnap", fuzz_scratch_dir());
    int rc = snapshot__write_raw(path, version, created, payload, off, sec, nsec, 1, err,
                                 sizeof(err));
    if (rc)
        fprintf(stderr, "snapshot__write_raw: %s\n", err);
    FUZZ_CHECK(rc == 0);
    snapshot_t *s = NULL;
    err[0] = '\0';
    rc = snapshot_open(path, &s, err, sizeof(err));
    if (rc < 0) {
        FUZZ_CHECK(rc == -EBADMSG || rc == -ENOMEM);
        FUZZ_CHECK(s == NULL && strncmp(err, path, strlen(path)) == 0);
    } else {
        FUZZ_CHECK(rc == 0 && s != NULL);
        size_t plen;
        const unsigned char *p = snapshot__payload(s, &plen);
        FUZZ_CHECK(plen == off && memcmp(p, payload, off) == 0);
        fuzz_snapshot_check(s);
        snapshot_free(s);
    }
    free(payload);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 8 || memcmp(data, FUZZ_MAGIC, 8) != 0) {
        fuzz_snapshot_recipe(data, size);
        return 0;
    }
    fuzz_snapshot_open_mem(data, size);
    /* Again with the CRCs of the header and the frame made right. */
    if (size < 68)
        return 0;
    uint32_t hlen = buf_load_u32(data + 16);
    if (hlen < 68 || hlen > size)
        return 0;
    unsigned char *f = malloc(size);
    FUZZ_CHECK(f != NULL);
    memcpy(f, data, size);
    buf_store_u32(f + 60, crc32c_update(0, f + hlen, size - hlen));
    buf_store_u32(f + hlen - 4, crc32c_update(0, f, hlen - 4));
    if (memcmp(f, data, size) != 0)
        fuzz_snapshot_open_mem(f, size);
    free(f);
    return 0;
}
