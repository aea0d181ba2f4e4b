/*
 * Tests of the student snapshot (io/snapshot.c, docs/SNAPSHOT.md): round
 * trips, the documented byte layout, publishing into a directory (latest,
 * keep N, readers concurrent with publishes), top-K against a naive
 * reference, a corrupt-file corpus (every bit flip, every truncation),
 * crafted payloads and headers that checksum correctly but must still be
 * refused, and the derrd-snap command line.
 *
 * Every test works in its own mkdtemp directory under /tmp and removes it.
 * Under AddressSanitizer the tests also run a leak check before they end,
 * since the runner's children leave with _exit().
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/buf.h"
#include "io/crc32c.h"
#include "io/fsutil.h"
#include "io/snapshot.h"
#include "model/metrics.h"
#include "model/pool.h"
#include "test.h"
#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define SNAP_TEST_LEAK_CHECK() CHECK(__lsan_do_recoverable_leak_check() == 0)
#define SNAP_TEST_ASAN 1
#else
#define SNAP_TEST_LEAK_CHECK() ((void)0)
#define SNAP_TEST_ASAN 0
#endif

/* ---- helpers ------------------------------------------------------------- */

/* Runs body in a fresh temporary directory and removes it afterwards, also
 * when body returns early from a failed REQUIRE. */
static void snap_test_in_dir(void (*body)(const char *dir))
{
    char *dir = test_tmpdir_new("snap");
    if (!dir) {
        test_fail(__FILE__, __LINE__, "mkdtemp: %s", strerror(errno));
        return;
    }
    body(dir);
    test_tmpdir_free(dir);
    SNAP_TEST_LEAK_CHECK();
}

/* Writes len bytes to path (plain, not atomic: a fixture; a fresh file, see
 * io_test_put in test_io.c). */
static int snap_test_put(const char *path, const void *data, size_t len)
{
    if (unlink(path) < 0 && errno != ENOENT)
        return -1;
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, len, f);
    int rc = fclose(f);
    return w == len && rc == 0 ? 0 : -1;
}

static uint64_t snap_test_rng(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A snapshot's contents, owned here. */
typedef struct {
    snapshot_desc_t d;
    float *ue, *ie;
    char **uid, **iid;
    uint16_t *ulen, *ilen;
    snapshot_pos_t pos[3];
} snap_test_fix_t;

static void snap_test_fix_close(snap_test_fix_t *f)
{
    for (int64_t r = 0; r < f->d.n_users; r++)
        free(f->uid[r]);
    for (int64_t r = 0; r < f->d.n_items; r++)
        free(f->iid[r]);
    free(f->ue);
    free(f->ie);
    free(f->uid);
    free(f->iid);
    free(f->ulen);
    free(f->ilen);
    memset(f, 0, sizeof(*f));
}

/* Random contents: ids "u<row>" / "i<row>" (every erase-th row without an
 * id when erase > 0), embeddings uniform in [-1, 1) or, when ints, small
 * integers (exact dot products, many ties). Returns 0 or -1. */
static int snap_test_fix_init(snap_test_fix_t *f, int64_t nu, int64_t ni, int32_t dim,
                              uint64_t seed, int erase, int ints)
{
    memset(f, 0, sizeof(*f));
    uint64_t rs = seed;
    f->ue = malloc((size_t)(nu ? nu : 1) * (size_t)dim * sizeof(float));
    f->ie = malloc((size_t)(ni ? ni : 1) * (size_t)dim * sizeof(float));
    f->uid = calloc((size_t)(nu ? nu : 1), sizeof(char *));
    f->iid = calloc((size_t)(ni ? ni : 1), sizeof(char *));
    f->ulen = calloc((size_t)(nu ? nu : 1), sizeof(uint16_t));
    f->ilen = calloc((size_t)(ni ? ni : 1), sizeof(uint16_t));
    if (!f->ue || !f->ie || !f->uid || !f->iid || !f->ulen || !f->ilen)
        return -1;
    for (int t = 0; t < 2; t++) {
        int64_t n = t ? ni : nu;
        float *e = t ? f->ie : f->ue;
        char **ids = t ? f->iid : f->uid;
        uint16_t *len = t ? f->ilen : f->ulen;
        for (int64_t k = 0; k < n * dim; k++) {
            uint64_t r = snap_test_rng(&rs);
            e[k] = ints ? (float)((int)(r % 7) - 3)
                        : (float)((double)(r >> 11) * 0x1p-53 * 2.0 - 1.0);
        }
        for (int64_t r = 0; r < n; r++) {
            if (erase > 0 && r % erase == erase - 1)
                continue;
            char b[32];
            int l = snprintf(b, sizeof(b), "%c%lld", t ? 'i' : 'u', (long long)r);
            ids[r] = strdup(b);
            if (!ids[r])
                return -1;
            len[r] = (uint16_t)l;
        }
    }
    f->pos[0] = (snapshot_pos_t){ 0, 1234 };
    f->pos[1] = (snapshot_pos_t){ 1, 0 };
    f->pos[2] = (snapshot_pos_t){ 7, INT64_MAX };
    f->d = (snapshot_desc_t){
        .version = 42 + seed,
        .created_ms = 1700000000123ull,
        .teacher_version = 7,
        .round = 99,
        .dim = dim,
        .n_users = nu,
        .n_items = ni,
        .user_emb = f->ue,
        .item_emb = f->ie,
        .user_ids = (const char *const *)f->uid,
        .user_id_len = f->ulen,
        .item_ids = (const char *const *)f->iid,
        .item_id_len = f->ilen,
        .topic = "events.v1",
        .pos = f->pos,
        .n_pos = 3,
        .quality = { 0.5, 0.25, 0.625, NAN, 1000 },
    };
    return 0;
}

/* The payload of d built from docs/SNAPSHOT.md alone (not with the
 * writer's code), and its section table. */
static void snap_test_payload(buf_t *b, const snapshot_desc_t *d, snapshot__section_t sec[5])
{
    size_t tl = d->topic ? strlen(d->topic) : 0;
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
    buf_put_u16(b, (uint16_t)tl);
    buf_put(b, d->topic, tl);
    for (int k = 0; k < d->n_pos; k++) {
        buf_put_u32(b, (uint32_t)d->pos[k].partition);
        buf_put_u64(b, (uint64_t)d->pos[k].offset);
    }
    sec[0] = (snapshot__section_t){ 1, 0, b->len };
    for (int t = 0; t < 2; t++) {
        size_t start = b->len;
        int64_t n = t ? d->n_items : d->n_users;
        buf_put_u64(b, (uint64_t)n);
        for (int64_t r = 0; r < n; r++) {
            uint16_t l = t ? d->item_id_len[r] : d->user_id_len[r];
            buf_put_u16(b, l);
            buf_put(b, t ? d->item_ids[r] : d->user_ids[r], l);
        }
        sec[1 + t] = (snapshot__section_t){ (uint32_t)(2 + t), start, b->len - start };
    }
    for (int t = 0; t < 2; t++) {
        while (b->len % 64)
            buf_put(b, NULL, 1);
        size_t start = b->len, n = (size_t)(t ? d->n_items : d->n_users) * (size_t)d->dim;
        const float *e = t ? d->item_emb : d->user_emb;
        for (size_t k = 0; k < n; k++) {
            uint32_t bits;
            memcpy(&bits, &e[k], 4);
            buf_put_u32(b, bits);
        }
        sec[3 + t] = (snapshot__section_t){ (uint32_t)(4 + t), start, b->len - start };
    }
}

/* Opens path, which must be refused with -EBADMSG and a reason holding
 * want (when not NULL). Returns 1 if so; prints what happened if not. */
static int snap_test_refused(const char *path, const char *want, const char *what)
{
    char err[1024] = "";
    snapshot_t *s = NULL;
    int rc = snapshot_open(path, &s, err, sizeof(err));
    snapshot_free(s);
    int ok = rc == -EBADMSG && s == NULL && err[0] && (!want || strstr(err, want));
    if (!ok)
        fprintf(stderr, "    [%s] rc %d, err \"%s\", wanted -EBADMSG with \"%s\"\n", what, rc,
                err, want ? want : "");
    return ok;
}

/* ---- round trip ------------------------------------------------------------ */

static void snap_test_check_same(const snapshot_desc_t *a, const snapshot_desc_t *b)
{
    CHECK(a->version == b->version);
    CHECK(a->created_ms == b->created_ms);
    CHECK(a->teacher_version == b->teacher_version);
    CHECK(a->round == b->round);
    CHECK_EQ_INT(a->dim, b->dim);
    CHECK_EQ_INT(a->n_users, b->n_users);
    CHECK_EQ_INT(a->n_items, b->n_items);
    CHECK(!strcmp(a->topic ? a->topic : "", b->topic));
    CHECK_EQ_INT(a->n_pos, b->n_pos);
    for (int k = 0; k < a->n_pos && k < b->n_pos; k++)
        CHECK(a->pos[k].partition == b->pos[k].partition && a->pos[k].offset == b->pos[k].offset);
    /* Bit for bit, NaN included. */
    CHECK(!memcmp(&a->quality.hr10, &b->quality.hr10, 8));
    CHECK(!memcmp(&a->quality.ndcg10, &b->quality.ndcg10, 8));
    CHECK(!memcmp(&a->quality.teacher_hr10, &b->quality.teacher_hr10, 8));
    CHECK(!memcmp(&a->quality.teacher_ndcg10, &b->quality.teacher_ndcg10, 8));
    CHECK(a->quality.eval_users == b->quality.eval_users);
    size_t dim = (size_t)a->dim;
    if (a->n_users)
        CHECK(!memcmp(a->user_emb, b->user_emb, (size_t)a->n_users * dim * 4));
    if (a->n_items)
        CHECK(!memcmp(a->item_emb, b->item_emb, (size_t)a->n_items * dim * 4));
    int bad = 0;
    for (int64_t r = 0; r < a->n_users; r++)
        bad += a->user_id_len[r] != b->user_id_len[r] ||
               (a->user_id_len[r] &&
                memcmp(a->user_ids[r], b->user_ids[r], a->user_id_len[r]) != 0);
    for (int64_t r = 0; r < a->n_items; r++)
        bad += a->item_id_len[r] != b->item_id_len[r] ||
               (a->item_id_len[r] &&
                memcmp(a->item_ids[r], b->item_ids[r], a->item_id_len[r]) != 0);
    CHECK_EQ_INT(bad, 0);
}

static void snap_test_round_trip(const char *dir)
{
    char path[512], err[512];
    snprintf(path, sizeof(path), "%s/a.dsnap", dir);
    snap_test_fix_t f;
    REQUIRE(snap_test_fix_init(&f, 300, 517, 20, 1, 7, 0) == 0);
    /* Values whose bits a careless copy would lose. */
    f.ue[0] = -0.0f;
    f.ue[1] = 1e-40f; /* subnormal */
    f.ue[2] = 3.4028235e38f;
    /* A long id with every byte value but NUL... */
    char *longid = malloc(65535);
    REQUIRE(longid);
    for (int k = 0; k < 65535; k++)
        longid[k] = (char)(1 + k % 255);
    free(f.iid[5]);
    f.iid[5] = longid;
    f.ilen[5] = 65535;
    int rc = snapshot_write(path, &f.d, 3, err, sizeof(err));
    CHECK_EQ_INT(rc, 0);
    snapshot_t *s = NULL;
    rc = snapshot_open(path, &s, err, sizeof(err));
    if (rc < 0)
        fprintf(stderr, "    %s\n", err);
    if (rc == 0) {
        const snapshot_desc_t *o = snapshot_desc(s);
        snap_test_check_same(&f.d, o);
        /* Every id finds its row; empty and unknown ids find nothing. */
        int bad = 0;
        for (int64_t r = 0; r < f.d.n_users; r++)
            bad += snapshot_user_row(s, f.uid[r] ? f.uid[r] : "", f.ulen[r]) !=
                   (f.ulen[r] ? r : -1);
        for (int64_t r = 0; r < f.d.n_items; r++)
            bad += snapshot_item_row(s, f.iid[r] ? f.iid[r] : "", f.ilen[r]) !=
                   (f.ilen[r] ? r : -1);
        CHECK_EQ_INT(bad, 0);
        CHECK_EQ_INT(snapshot_user_row(s, "u6", 2), -1); /* erased: 6 % 7 == 6 */
        CHECK_EQ_INT(snapshot_user_row(s, "", 0), -1);
        CHECK_EQ_INT(snapshot_user_row(s, "nobody", 6), -1);
        CHECK_EQ_INT(snapshot_user_row(s, "u1", 1), -1); /* a prefix */
        CHECK_EQ_INT(snapshot_item_row(s, "u1", 2), -1); /* another table */
        CHECK_EQ_INT(snapshot_user_row(s, "u12", 3), 12);
        CHECK_EQ_INT(snapshot_item_row(s, longid, 65535), 5);
        struct stat st;
        snapshot_size_t sz;
        snapshot_size(s, &sz);
        CHECK(stat(path, &st) == 0 && (uint64_t)st.st_size == sz.file_bytes);
        CHECK(sz.raw_bytes > sz.file_bytes / 2 && sz.raw_bytes >= (300 + 517) * 20 * 4);
    }
    snapshot_free(s);
    snap_test_fix_close(&f);
}

TEST(snapshot_round_trip)
{
    snap_test_in_dir(snap_test_round_trip);
}

static void snap_test_round_trip_empty(const char *dir)
{
    char path[512], err[512];
    snprintf(path, sizeof(path), "%s/e.dsnap", dir);
    snapshot_desc_t d = { .version = 0, .dim = 1, .quality = { NAN, NAN, NAN, NAN, 0 } };
    CHECK_EQ_INT(snapshot_write(path, &d, 1, err, sizeof(err)), 0);
    snapshot_t *s = NULL;
    CHECK_EQ_INT(snapshot_open(path, &s, err, sizeof(err)), 0);
    if (s) {
        snap_test_check_same(&d, snapshot_desc(s));
        CHECK_EQ_INT(snapshot_user_row(s, "x", 1), -1);
        CHECK_EQ_INT(snapshot_recommend(s, 0, 5, NULL, 0, NULL, NULL), -EINVAL);
    }
    snapshot_free(s);
    /* Users but no items: recommend finds nothing. */
    snap_test_fix_t f;
    REQUIRE(snap_test_fix_init(&f, 3, 0, 5, 2, 0, 0) == 0);
    f.d.n_pos = 0;
    f.d.topic = NULL;
    CHECK_EQ_INT(snapshot_write(path, &f.d, 19, err, sizeof(err)), 0);
    CHECK_EQ_INT(snapshot_open(path, &s, err, sizeof(err)), 0);
    if (s) {
        int64_t items[4];
        float scores[4];
        CHECK_EQ_INT(snapshot_recommend(s, 1, 4, NULL, 0, items, scores), 0);
        CHECK(!strcmp(snapshot_desc(s)->topic, ""));
    }
    snapshot_free(s);
    snap_test_fix_close(&f);
}

TEST(snapshot_round_trip_empty_tables)
{
    snap_test_in_dir(snap_test_round_trip_empty);
}

/* ---- the documented layout ------------------------------------------------ */

static void snap_test_layout(const char *dir)
{
    char path[512], err[512];
    snprintf(path, sizeof(path), "%s/l.dsnap", dir);
    snap_test_fix_t f;
    REQUIRE(snap_test_fix_init(&f, 11, 13, 3, 3, 4, 0) == 0);
    REQUIRE(snapshot_write(path, &f.d, 3, err, sizeof(err)) == 0);
    unsigned char *file = NULL;
    size_t len = 0;
    REQUIRE(fsutil_read_all(path, 1 << 20, &file, &len, err, sizeof(err)) == 0);
    buf_t want;
    buf_init(&want);
    snapshot__section_t sec[5];
    snap_test_payload(&want, &f.d, sec);
    REQUIRE(want.err == 0);
    /* The header, field by field. */
    REQUIRE(len > 188);
    CHECK(!memcmp(file, "DERRDSNP", 8));
    CHECK_EQ_INT(buf_load_u32(file + 8), 1);
    CHECK_EQ_INT(buf_load_u32(file + 12), 0);
    uint32_t hlen = buf_load_u32(file + 16), n = buf_load_u32(file + 20);
    CHECK_EQ_INT(n, 5);
    CHECK_EQ_INT(hlen, 68 + 24 * 5);
    CHECK(buf_load_u64(file + 24) == f.d.version);
    CHECK(buf_load_u64(file + 32) == f.d.created_ms);
    CHECK(buf_load_u64(file + 40) == want.len);
    CHECK(buf_load_u64(file + 48) == len - hlen);
    CHECK(buf_load_u32(file + 56) == crc32c_update(0, want.data, want.len));
    CHECK(buf_load_u32(file + 60) == crc32c_update(0, file + hlen, len - hlen));
    for (uint32_t k = 0; k < 5 && k < n; k++) {
        const unsigned char *e = file + 64 + 24 * k;
        CHECK(buf_load_u32(e) == sec[k].id && buf_load_u32(e + 4) == 0);
        CHECK(buf_load_u64(e + 8) == sec[k].off && buf_load_u64(e + 16) == sec[k].len);
    }
    CHECK(buf_load_u32(file + hlen - 4) == crc32c_update(0, file, hlen - 4));
    /* The zstd frame: magic, content checksum flag. */
    CHECK(buf_load_u32(file + hlen) == 0xFD2FB528u);
    CHECK(file[hlen + 4] & 0x04);
    /* The payload, byte for byte. */
    snapshot_t *s = NULL;
    CHECK_EQ_INT(snapshot_open(path, &s, err, sizeof(err)), 0);
    if (s) {
        size_t plen;
        const unsigned char *p = snapshot__payload(s, &plen);
        CHECK(plen == want.len && !memcmp(p, want.data, want.len));
    }
    snapshot_free(s);
    /* And a payload made from the doc alone is read back as the same. */
    CHECK_EQ_INT(snapshot__write_raw(path, f.d.version, f.d.created_ms, want.data, want.len,
                                     sec, 5, 3, err, sizeof(err)), 0);
    CHECK_EQ_INT(snapshot_open(path, &s, err, sizeof(err)), 0);
    if (s)
        snap_test_check_same(&f.d, snapshot_desc(s));
    snapshot_free(s);
    buf_close(&want);
    free(file);
    snap_test_fix_close(&f);
}

TEST(snapshot_matches_documented_layout)
{
    snap_test_in_dir(snap_test_layout);
}

/* A real decompression bomb: a valid snapshot plus an unknown section of
 * 128 MiB of zeros, every checksum right, in a file of a few KB. The
 * reader refuses it from the header alone; snapshot_write() would refuse
 * to write such a payload. */
static void snap_test_bomb(const char *dir)
{
    char good[512], path[512], err[512];
    snprintf(good, sizeof(good), "%s/g.dsnap", dir);
    snprintf(path, sizeof(path), "%s/bomb.dsnap", dir);
    snap_test_fix_t f;
    REQUIRE(snap_test_fix_init(&f, 4, 6, 4, 8, 0, 0) == 0);
    REQUIRE(snapshot_write(good, &f.d, 3, err, sizeof(err)) == 0);
    snapshot_t *s = NULL;
    REQUIRE(snapshot_open(good, &s, err, sizeof(err)) == 0);
    size_t plen;
    const unsigned char *p = snapshot__payload(s, &plen);
    const size_t zeros = (size_t)128 << 20;
    unsigned char *big = calloc(plen + zeros, 1);
    REQUIRE(big);
    memcpy(big, p, plen);
    unsigned char *file = NULL;
    size_t len = 0;
    REQUIRE(fsutil_read_all(good, 1 << 20, &file, &len, err, sizeof(err)) == 0);
    snapshot__section_t sec[6];
    for (int k = 0; k < 5; k++) {
        const unsigned char *e = file + 64 + 24 * k;
        sec[k] = (snapshot__section_t){ buf_load_u32(e), buf_load_u64(e + 8),
                                        buf_load_u64(e + 16) };
    }
    sec[5] = (snapshot__section_t){ 6, plen, zeros };
    CHECK_EQ_INT(snapshot__write_raw(path, f.d.version, f.d.created_ms, big, plen + zeros, sec,
                                     6, 19, err, sizeof(err)), 0);
    struct stat st;
    CHECK(stat(path, &st) == 0 && st.st_size < (1 << 20));
    printf("    %zu payload bytes in a %lld-byte file\n", plen + zeros, (long long)st.st_size);
    CHECK(snap_test_refused(path, "decompression bomb", "bomb"));
    free(big);
    free(file);
    snapshot_free(s);
    snap_test_fix_close(&f);
}

TEST(snapshot_refuses_a_decompression_bomb)
{
    snap_test_in_dir(snap_test_bomb);
}

/* ---- publish --------------------------------------------------------------- */

/* How many student-*.dsnap files dir holds, and whether version v is one. */
static int snap_test_count(const char *dir, uint64_t v, int *has_v)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    char want[64];
    snprintf(want, sizeof(want), "student-%020llu.dsnap", (unsigned long long)v);
    int n = 0;
    *has_v = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strncmp(e->d_name, "student-", 8) && strstr(e->d_name, ".dsnap") &&
            !strstr(e->d_name, ".tmp"))
            n++;
        if (!strcmp(e->d_name, want))
            *has_v = 1;
    }
    closedir(d);
    return n;
}

/* The version of the snapshot at path, or UINT64_MAX (with the reason
 * printed unless quiet). */
static uint64_t snap_test_open_version_q(const char *path, int quiet)
{
    char err[512];
    snapshot_t *s = NULL;
    if (snapshot_open(path, &s, err, sizeof(err)) < 0) {
        if (!quiet)
            fprintf(stderr, "    %s\n", err);
        return UINT64_MAX;
    }
    uint64_t v = snapshot_desc(s)->version;
    snapshot_free(s);
    return v;
}

static uint64_t snap_test_open_version(const char *path)
{
    return snap_test_open_version_q(path, 0);
}

static void snap_test_publish(const char *dir0)
{
    char dir[512], err[512], latest[600], link[256];
    snprintf(dir, sizeof(dir), "%s/snaps", dir0); /* publish creates it */
    snapshot_latest_path(dir, latest, sizeof(latest));
    snap_test_fix_t f;
    REQUIRE(snap_test_fix_init(&f, 5, 9, 4, 4, 0, 0) == 0);
    CHECK(snap_test_open_version_q(dir, 1) == UINT64_MAX); /* nothing yet */
    snapshot_t *s = NULL;
    CHECK_EQ_INT(snapshot_open(dir, &s, err, sizeof(err)), -ENOENT);
    for (uint64_t v = 1; v <= 10; v++) {
        f.d.version = v;
        CHECK_EQ_INT(snapshot_publish(dir, &f.d, 3, 3, err, sizeof(err)), 0);
        CHECK(snap_test_open_version(dir) == v);
        ssize_t n = readlink(latest, link, sizeof(link) - 1);
        char want[64];
        snprintf(want, sizeof(want), "student-%020llu.dsnap", (unsigned long long)v);
        CHECK(n > 0 && (size_t)n == strlen(want) && !memcmp(link, want, (size_t)n));
        int has;
        CHECK_EQ_INT(snap_test_count(dir, v, &has), v < 3 ? (int)v : 3);
        CHECK(has);
    }
    /* Republishing an older version: latest follows it, and it survives
     * pruning although three newer files exist. */
    f.d.version = 5;
    CHECK_EQ_INT(snapshot_publish(dir, &f.d, 3, 3, err, sizeof(err)), 0);
    CHECK(snap_test_open_version(dir) == 5);
    int has;
    CHECK_EQ_INT(snap_test_count(dir, 5, &has), 4);
    CHECK(has);
    /* The next publish prunes it. */
    f.d.version = 11;
    CHECK_EQ_INT(snapshot_publish(dir, &f.d, 3, 1, err, sizeof(err)), 0);
    CHECK(snap_test_open_version(dir) == 11);
    CHECK_EQ_INT(snap_test_count(dir, 11, &has), 1);
    CHECK(has);
    /* A failed publish leaves latest as it was. */
    f.ue[3] = NAN;
    f.d.version = 12;
    CHECK_EQ_INT(snapshot_publish(dir, &f.d, 3, 1, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "not finite") != NULL);
    CHECK(snap_test_open_version(dir) == 11);
    CHECK_EQ_INT(snap_test_count(dir, 12, &has), 1);
    CHECK(!has);
    f.ue[3] = 0.5f;
    CHECK_EQ_INT(snapshot_publish(dir, &f.d, 3, 0, err, sizeof(err)), -EINVAL);
    CHECK_EQ_INT(snapshot_publish(dir, &f.d, 0, 1, err, sizeof(err)), -EINVAL);
    CHECK(snap_test_open_version(dir) == 11);
    /* Paths. */
    char p[600];
    snapshot_path("/x", 12, p, sizeof(p));
    CHECK(!strcmp(p, "/x/student-00000000000000000012.dsnap"));
    snapshot_latest_path("/x", p, sizeof(p));
    CHECK(!strcmp(p, "/x/latest"));
    snap_test_fix_close(&f);
}

TEST(snapshot_publish_latest_and_keep)
{
    snap_test_in_dir(snap_test_publish);
}

/* latest names a file that is gone for good (deleted by hand, a partial
 * restore): ENOENT, but the message must name the missing target, not
 * claim that latest itself does not exist. */
static void snap_test_dangling_latest(const char *dir)
{
    char err[512] = "", path[600];
    snap_test_fix_t f;
    REQUIRE(snap_test_fix_init(&f, 3, 4, 2, 1, 0, 0) == 0);
    f.d.version = 3;
    REQUIRE(snapshot_publish(dir, &f.d, 3, 1, err, sizeof(err)) == 0);
    snapshot_path(dir, 3, path, sizeof(path));
    REQUIRE(unlink(path) == 0);
    snapshot_t *s = NULL;
    CHECK_EQ_INT(snapshot_open(dir, &s, err, sizeof(err)), -ENOENT);
    CHECK(s == NULL);
    if (!strstr(err, "student-00000000000000000003.dsnap"))
        test_fail(__FILE__, __LINE__, "err \"%s\" does not name the missing target", err);
    snap_test_fix_close(&f);
}

TEST(snapshot_open_dangling_latest)
{
    snap_test_in_dir(snap_test_dangling_latest);
}

/* A publisher thread publishing 200 versions (keep 1, so the file latest
 * pointed to a moment ago is deleted right after each switch) while this
 * thread opens the directory in a loop: every open succeeds with a complete
 * snapshot, or fails with ENOENT before the first publish. */
typedef struct {
    const char *dir;
    snap_test_fix_t *f;
    atomic_int published; /* versions done */
    atomic_int failed;
} snap_test_race_t;

static void *snap_test_publisher(void *arg)
{
    snap_test_race_t *r = arg;
    char err[512];
    for (int v = 1; v <= 200; v++) {
        r->f->d.version = (uint64_t)v;
        /* Every value of version v is v: a torn read would show. */
        for (int64_t k = 0; k < r->f->d.n_items * r->f->d.dim; k++)
            r->f->ie[k] = (float)v;
        if (snapshot_publish(r->dir, &r->f->d, 1, 1, err, sizeof(err)) < 0) {
            fprintf(stderr, "    publish %d: %s\n", v, err);
            atomic_store(&r->failed, 1);
        }
        atomic_store(&r->published, v);
    }
    return NULL;
}

static void snap_test_race(const char *dir)
{
    snap_test_fix_t f;
    REQUIRE(snap_test_fix_init(&f, 50, 300, 8, 5, 0, 0) == 0);
    snap_test_race_t r = { .dir = dir, .f = &f };
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, snap_test_publisher, &r) == 0);
    int opens = 0, enoent = 0, bad = 0;
    uint64_t last = 0;
    char err[512];
    for (;;) {
        int before = atomic_load(&r.published);
        snapshot_t *s = NULL;
        int rc = snapshot_open(dir, &s, err, sizeof(err));
        if (rc == 0) {
            const snapshot_desc_t *d = snapshot_desc(s);
            int torn = d->version < last || d->version < (uint64_t)before;
            for (int64_t k = 0; k < d->n_items * d->dim; k++)
                torn |= d->item_emb[k] != (float)d->version;
            if (torn && bad++ < 3)
                fprintf(stderr, "    opened version %llu after %llu (published %d): torn\n",
                        (unsigned long long)d->version, (unsigned long long)last, before);
            last = d->version;
            opens++;
        } else if (rc == -ENOENT && before == 0 && last == 0) {
            enoent++;
        } else if (bad++ < 3) {
            fprintf(stderr, "    open failed with %d after %d publishes: %s\n", rc, before, err);
        }
        snapshot_free(s);
        if (before == 200)
            break;
    }
    pthread_join(th, NULL);
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(atomic_load(&r.failed), 0);
    CHECK(last == 200);
    CHECK(opens > 0);
    fprintf(stderr, "    %d opens, %d ENOENT before the first publish\n", opens, enoent);
    int has;
    CHECK_EQ_INT(snap_test_count(dir, 200, &has), 1);
    CHECK(has);
    snap_test_fix_close(&f);
}

TEST_SLOW(snapshot_latest_concurrent_with_publishes, 300)
{
    snap_test_in_dir(snap_test_race);
}

/* ---- top-K ----------------------------------------------------------------- */

/* The dot product in model/vec.h's order: the reference for scores. */
static float snap_test_dot(const float *a, const float *b, int32_t d)
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

/* Naive top-k: score every item, then pick the best k one by one (higher
 * score, then lower row), skipping excluded and id-less items. */
static int snap_test_topk_naive(const snapshot_desc_t *d, int64_t u, int k, const int64_t *ex,
                                int n_ex, int64_t *items, float *scores)
{
    int64_t n = d->n_items;
    float *sc = malloc((size_t)(n ? n : 1) * sizeof(float));
    unsigned char *taken = calloc((size_t)(n ? n : 1), 1);
    if (!sc || !taken) {
        free(sc);
        free(taken);
        return -1;
    }
    for (int64_t i = 0; i < n; i++) {
        sc[i] = snap_test_dot(d->user_emb + u * d->dim, d->item_emb + i * d->dim, d->dim);
        taken[i] = d->item_id_len[i] == 0;
        for (int e = 0; e < n_ex; e++)
            taken[i] |= ex[e] == i;
    }
    int got = 0;
    for (; got < k; got++) {
        int64_t best = -1;
        for (int64_t i = 0; i < n; i++)
            if (!taken[i] && (best < 0 || sc[i] > sc[best]))
                best = i;
        if (best < 0)
            break;
        taken[best] = 1;
        items[got] = best;
        scores[got] = sc[best];
    }
    free(sc);
    free(taken);
    return got;
}

static void snap_test_recommend(const char *dir)
{
    char path[512], err[512];
    snprintf(path, sizeof(path), "%s/r.dsnap", dir);
    uint64_t rs = 77;
    int bad = 0, cases = 0;
    const int32_t dims[] = { 1, 3, 4, 5, 7, 8, 12, 16, 20, 23, 64 };
    for (int t = 0; t < 22; t++) {
        int32_t dim = dims[t % 11];
        int ints = t % 2; /* integer values: exact sums and many ties */
        int64_t ni = 1 + (int64_t)(snap_test_rng(&rs) % 400);
        snap_test_fix_t f;
        REQUIRE(snap_test_fix_init(&f, 9, ni, dim, (uint64_t)t, 0, ints) == 0);
        for (int64_t i = 0; i < ni; i += 5) { /* id-less items */
            free(f.iid[i]);
            f.iid[i] = NULL;
            f.ilen[i] = 0;
        }
        if (snapshot_write(path, &f.d, 1, err, sizeof(err)) < 0) {
            test_fail(__FILE__, __LINE__, "%s", err);
            snap_test_fix_close(&f);
            return;
        }
        snapshot_t *s = NULL;
        if (snapshot_open(path, &s, err, sizeof(err)) < 0) {
            test_fail(__FILE__, __LINE__, "%s", err);
            snap_test_fix_close(&f);
            return;
        }
        const snapshot_desc_t *d = snapshot_desc(s);
        for (int q = 0; q < 12; q++) {
            int64_t u = (int64_t)(snap_test_rng(&rs) % 9);
            int k = q == 0 ? (int)ni + 10 : (int)(snap_test_rng(&rs) % 30);
            int n_ex = q % 3 == 0 ? 0 : (int)(snap_test_rng(&rs) % 300);
            int64_t ex[300];
            for (int e = 0; e < n_ex; e++) /* some out of range, some twice */
                ex[e] = (int64_t)(snap_test_rng(&rs) % (uint64_t)(ni + 5)) - 2;
            int64_t it[512], ir[512];
            float sc[512], sr[512];
            int got = snapshot_recommend(s, u, k, ex, n_ex, it, sc);
            int want = snap_test_topk_naive(d, u, k, ex, n_ex, ir, sr);
            int same = got == want;
            for (int r = 0; same && r < got; r++)
                same = it[r] == ir[r] && sc[r] == sr[r];
            cases++;
            if (!same && bad++ < 3)
                fprintf(stderr, "    dim %d, %lld items, k %d, %d excluded: %d found, naive %d\n",
                        dim, (long long)ni, k, n_ex, got, want);
        }
        snapshot_free(s);
        snap_test_fix_close(&f);
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(cases, 22 * 12);
}

TEST(snapshot_recommend_matches_naive)
{
    snap_test_in_dir(snap_test_recommend);
}

static void snap_test_recommend_args(const char *dir)
{
    char path[512], err[512];
    snprintf(path, sizeof(path), "%s/r.dsnap", dir);
    snap_test_fix_t f;
    REQUIRE(snap_test_fix_init(&f, 4, 6, 2, 9, 2, 1) == 0); /* users 1 and 3 erased */
    /* All items tie: the lower rows win. */
    for (int k = 0; k < 12; k++)
        f.ie[k] = 1.0f;
    REQUIRE(snapshot_write(path, &f.d, 3, err, sizeof(err)) == 0);
    snapshot_t *s = NULL;
    REQUIRE(snapshot_open(path, &s, err, sizeof(err)) == 0);
    int64_t it[8];
    float sc[8];
    CHECK_EQ_INT(snapshot_recommend(s, -1, 3, NULL, 0, it, sc), -EINVAL);
    CHECK_EQ_INT(snapshot_recommend(s, 4, 3, NULL, 0, it, sc), -EINVAL);
    CHECK_EQ_INT(snapshot_recommend(s, 1, 3, NULL, 0, it, sc), -EINVAL); /* erased */
    CHECK_EQ_INT(snapshot_recommend(s, 0, -1, NULL, 0, it, sc), -EINVAL);
    CHECK_EQ_INT(snapshot_recommend(s, 0, 0, NULL, 0, NULL, NULL), 0);
    /* Items 1, 3, 5 have no id (erase 2). */
    const int64_t ex[] = { 2 };
    CHECK_EQ_INT(snapshot_recommend(s, 0, 8, ex, 1, it, sc), 2);
    CHECK(it[0] == 0 && it[1] == 4 && sc[0] == sc[1]);
    CHECK_EQ_INT(snapshot_recommend(s, 2, 1, NULL, 0, it, sc), 1);
    CHECK(it[0] == 0);
    snapshot_free(s);
    snap_test_fix_close(&f);
}

TEST(snapshot_recommend_arguments_and_ties)
{
    snap_test_in_dir(snap_test_recommend_args);
}

/* ---- corrupt files --------------------------------------------------------- */

static void snap_test_corrupt(const char *dir)
{
    char good[512], bad[512], err[512];
    snprintf(good, sizeof(good), "%s/good.dsnap", dir);
    snprintf(bad, sizeof(bad), "%s/bad.dsnap", dir);
    snap_test_fix_t f;
    REQUIRE(snap_test_fix_init(&f, 3, 4, 3, 6, 3, 0) == 0);
    REQUIRE(snapshot_write(good, &f.d, 3, err, sizeof(err)) == 0);
    unsigned char *buf = NULL;
    size_t len = 0;
    REQUIRE(fsutil_read_all(good, 1 << 20, &buf, &len, err, sizeof(err)) == 0);
    int failures = 0;
    for (size_t pos = 0; pos < len; pos++)
        for (int bit = 0; bit < 8; bit++) {
            buf[pos] ^= (unsigned char)(1u << bit);
            char what[64];
            snprintf(what, sizeof(what), "bit %d of byte %zu of %zu", bit, pos, len);
            if (snap_test_put(bad, buf, len) < 0 || !snap_test_refused(bad, bad, what))
                if (failures++ < 5)
                    test_fail(__FILE__, __LINE__, "%s flipped: not refused", what);
            buf[pos] ^= (unsigned char)(1u << bit);
        }
    for (size_t cut = 0; cut < len; cut++) {
        char what[64];
        snprintf(what, sizeof(what), "truncated to %zu of %zu", cut, len);
        if (snap_test_put(bad, buf, cut) < 0 || !snap_test_refused(bad, NULL, what))
            if (failures++ < 10)
                test_fail(__FILE__, __LINE__, "%s: not refused", what);
    }
    unsigned char *longer = malloc(len + 1);
    REQUIRE(longer);
    memcpy(longer, buf, len);
    longer[len] = 0;
    CHECK(snap_test_put(bad, longer, len + 1) == 0);
    CHECK(snap_test_refused(bad, "truncated?", "one byte more"));
    free(longer);
    CHECK_EQ_INT(failures, 0);
    CHECK(snap_test_open_version(good) == f.d.version);
    free(buf);
    snap_test_fix_close(&f);
}

TEST(snapshot_corrupt_every_bit_and_truncation)
{
    snap_test_in_dir(snap_test_corrupt);
}

/* ---- crafted payloads: checksums right, contents wrong ------------------ */

static void snap_test_put32(buf_t *b, size_t at, uint32_t v) { buf_store_u32(b->data + at, v); }
static void snap_test_put64(buf_t *b, size_t at, uint64_t v) { buf_store_u64(b->data + at, v); }

/* Keeps the address-space limit near what the process uses, so a huge
 * allocation fails (and the test with it) instead of passing unnoticed.
 * Not under ASan, whose shadow memory needs the address space. */
static void snap_test_limit_memory(void)
{
    if (SNAP_TEST_ASAN)
        return;
    test_cap_address_space((size_t)512 << 20, NULL);
}

static void snap_test_crafted(const char *dir)
{
    char path[512], err[512];
    snprintf(path, sizeof(path), "%s/c.dsnap", dir);
    snap_test_limit_memory();
    snap_test_fix_t f;
    REQUIRE(snap_test_fix_init(&f, 4, 6, 4, 7, 0, 0) == 0);
    buf_t clean;
    buf_init(&clean);
    snapshot__section_t sec0[5];
    snap_test_payload(&clean, &f.d, sec0);
    REQUIRE(clean.err == 0);
    const size_t meta = sec0[0].off, users = sec0[1].off;
    const size_t ue = sec0[3].off, ie = sec0[4].off;
    const size_t usr_first_id = users + 8; /* u16 len of row 0 */
    enum { N_CASE = 24 };
    for (int c = 0; c < N_CASE; c++) {
        buf_t b;
        buf_init(&b);
        buf_put(&b, clean.data, clean.len);
        REQUIRE(b.err == 0);
        snapshot__section_t sec[8];
        memcpy(sec, sec0, sizeof(sec0));
        int nsec = 5;
        uint64_t hv = f.d.version;
        const char *want = NULL;
        float nan = NAN, inf = INFINITY;
        switch (c) {
        case 0: want = NULL; break; /* the clean payload reads */
        case 1: snap_test_put32(&b, meta + 32, 0); want = "dim 0 outside"; break;
        case 2: snap_test_put32(&b, meta + 32, 4097); want = "dim 4097 outside"; break;
        case 3: snap_test_put32(&b, meta + 36, SNAPSHOT_MAX_PARTITIONS + 1);
            want = "partition offsets, limit"; break;
        case 4: snap_test_put64(&b, meta + 40, INT32_MAX); want = "embedding sections"; break;
        case 5: snap_test_put64(&b, meta + 48, 1ull << 40); want = "limit"; break;
        case 6: snap_test_put64(&b, meta + 40, UINT64_MAX); want = "limit"; break;
        case 7: snap_test_put64(&b, users, 1ull << 40); want = "id table has"; break;
        case 8: hv = f.d.version + 1; want = "differ from the header"; break;
        case 9: memcpy(b.data + ue + 4, &nan, 4); want = "user row 0, value 1 is not finite"; break;
        case 10: memcpy(b.data + ie + 4 * 4 * 5 + 12, &inf, 4);
            want = "item row 5, value 3 is not finite"; break;
        case 11: /* user 1's id becomes user 0's ("u0" and "u1" have one length) */
            b.data[usr_first_id + 4 + 2 + 1] = '0'; want = "user rows 0 and 1 have the same id";
            break;
        case 12: b.data[ue - 1] = 1; want = "non-zero padding"; break;
        case 13: snap_test_put64(&b, meta + 48, 5); want = "embedding sections"; break;
        case 14: nsec = 4; b.len = sec[3].off + sec[3].len; want = "section 5 missing"; break;
        case 15: /* an unknown section after the last: skipped */
            buf_put(&b, "xyz", 3);
            sec[5] = (snapshot__section_t){ 77, clean.len, 3 };
            nsec = 6;
            want = NULL;
            break;
        case 16: /* misaligned (or, when that makes the gap too long, padding) */
            sec[3].off += 4;
            sec[3].len -= 4;
            want = sec[3].off - (sec[2].off + sec[2].len) < 64 ? "not at a multiple of 64"
                                                                : "padding";
            break;
        case 17: sec[0].len -= 12; sec[1].off -= 12; sec[1].len += 12;
            want = "metadata has"; break;
        case 18: b.data[meta + 98 + 2] = 0; want = "NUL"; break;
        case 19: sec[1].len += 1; sec[2].off += 1; sec[2].len -= 1;
            want = "1 bytes after the user id table"; break;
        case 20: sec[0].len = 90; sec[1].off = 90; sec[1].len = sec0[1].off + sec0[1].len - 90;
            want = "metadata truncated"; break;
        case 21: sec[2].id = 2; want = "appears twice"; break;
        case 22: sec[1].off += 70; sec[1].len -= 70; want = "padding"; break;
        case 23: { /* Huge counts that fit the embedding section: 200k users of
                    * dim 1 with 8 bytes of ids. Refused by the id table size,
                    * before a pointer per user is allocated. */
            buf_t g;
            buf_init(&g);
            buf_put(&g, clean.data, meta + 32);
            buf_put_u32(&g, 1);
            buf_put(&g, clean.data + meta + 36, 4);
            buf_put_u64(&g, 200000);
            buf_put_u64(&g, 0);
            buf_put(&g, clean.data + meta + 56, sec0[0].len - 56);
            size_t u0 = g.len;
            buf_put_u64(&g, 200000);
            size_t i0 = g.len;
            buf_put_u64(&g, 0);
            while (g.len % 64)
                buf_put(&g, NULL, 1);
            size_t e0 = g.len;
            buf_put(&g, NULL, 200000 * 4);
            REQUIRE(g.err == 0);
            sec[1] = (snapshot__section_t){ 2, u0, 8 };
            sec[2] = (snapshot__section_t){ 3, i0, 8 };
            sec[3] = (snapshot__section_t){ 4, e0, 200000 * 4 };
            sec[4] = (snapshot__section_t){ 5, g.len, 0 };
            buf_close(&b);
            b = g;
            want = "200000 user ids cannot fit in 0 bytes";
            break;
        }
        }
        int rc = snapshot__write_raw(path, hv, f.d.created_ms, b.data, b.len, sec, nsec, 3, err,
                                     sizeof(err));
        CHECK_EQ_INT(rc, 0);
        char what[32];
        snprintf(what, sizeof(what), "case %d", c);
        if (c == 0 || c == 15) {
            uint64_t v = snap_test_open_version(path);
            if (v != f.d.version)
                test_fail(__FILE__, __LINE__, "case %d: not read back", c);
        } else if (!snap_test_refused(path, want, what)) {
            test_fail(__FILE__, __LINE__, "case %d: not refused as wanted", c);
        }
        buf_close(&b);
    }
    buf_close(&clean);
    snap_test_fix_close(&f);
}

TEST(snapshot_refuses_crafted_payloads)
{
    snap_test_in_dir(snap_test_crafted);
}

/* Sets the u32/u64 at header offset at, and the header CRC again. */
static void snap_test_patch_header(unsigned char *file, size_t at, uint64_t v, int wide)
{
    uint32_t hlen = buf_load_u32(file + 16);
    if (wide)
        buf_store_u64(file + at, v);
    else
        buf_store_u32(file + at, (uint32_t)v);
    if (hlen >= 68 && hlen < 4096)
        buf_store_u32(file + hlen - 4, crc32c_update(0, file, hlen - 4));
}

static void snap_test_headers(const char *dir)
{
    char good[512], path[512], err[512];
    snprintf(good, sizeof(good), "%s/g.dsnap", dir);
    snprintf(path, sizeof(path), "%s/h.dsnap", dir);
    snap_test_limit_memory();
    snap_test_fix_t f;
    REQUIRE(snap_test_fix_init(&f, 4, 6, 4, 8, 0, 0) == 0);
    REQUIRE(snapshot_write(good, &f.d, 3, err, sizeof(err)) == 0);
    unsigned char *file = NULL;
    size_t len = 0;
    REQUIRE(fsutil_read_all(good, 1 << 20, &file, &len, err, sizeof(err)) == 0);
    const uint32_t hlen = 68 + 5 * 24;
    const uint64_t raw = buf_load_u64(file + 40);
    const size_t last = 64 + 4 * 24; /* ITEM_EMB's table entry */
    const uint64_t last_off = buf_load_u64(file + last + 8);
    unsigned char *b = malloc(len);
    REQUIRE(b);
    for (int c = 0; c < 12; c++) {
        memcpy(b, file, len);
        const char *want = NULL;
        switch (c) {
        case 0: snap_test_patch_header(b, 8, 2, 0); want = "format version 2"; break;
        case 1: snap_test_patch_header(b, 12, 1, 0); want = "unknown flags"; break;
        case 2: snap_test_patch_header(b, 16, hlen + 24, 0); want = "header length"; break;
        case 3: snap_test_patch_header(b, 20, 0, 0); want = "0 sections"; break;
        case 4: snap_test_patch_header(b, 20, 33, 0); want = "33 sections"; break;
        case 5: snap_test_patch_header(b, 40, 1ull << 37, 1); want = "over the limit"; break;
        case 6: snap_test_patch_header(b, 40, raw + 1, 1); want = "sections end at"; break;
        case 7: /* A 32 MiB payload, consistent with the table and within the
                 * expansion bound: refused on the frame's own content size,
                 * before any allocation. */
            snap_test_patch_header(b, 40, 1ull << 25, 1);
            snap_test_patch_header(b, last + 16, (1ull << 25) - last_off, 1);
            want = "zstd frame holds";
            break;
        case 11: /* A 32 GiB payload from a frame of a few hundred bytes. */
            snap_test_patch_header(b, 40, 1ull << 35, 1);
            snap_test_patch_header(b, last + 16, (1ull << 35) - last_off, 1);
            want = "decompression bomb";
            break;
        case 8: snap_test_patch_header(b, 48, len - hlen - 1, 1); want = "truncated?"; break;
        case 9: snap_test_patch_header(b, 64 + 4, 1, 0); want = "section 1: unknown flags";
            break;
        case 10: /* The frame without its content checksum, CRCs made right. */
            b[hlen + 4] &= (unsigned char)~0x04;
            buf_store_u32(b + 60, crc32c_update(0, b + hlen, len - hlen));
            snap_test_patch_header(b, 60, buf_load_u32(b + 60), 0);
            want = "no content checksum";
            break;
        }
        char what[32];
        snprintf(what, sizeof(what), "header case %d", c);
        CHECK(snap_test_put(path, b, len) == 0);
        if (!snap_test_refused(path, want, what))
            test_fail(__FILE__, __LINE__, "header case %d: not refused as wanted", c);
    }
    /* Not a snapshot at all, and a directory without latest. */
    CHECK(snap_test_put(path, "DERRDCKP", 8) == 0);
    CHECK(snap_test_refused(path, "truncated header", "short"));
    memcpy(b, file, len);
    memcpy(b, "DERRDEMB", 8);
    CHECK(snap_test_put(path, b, len) == 0);
    CHECK(snap_test_refused(path, "bad magic", "magic"));
    snapshot_t *s = NULL;
    CHECK_EQ_INT(snapshot_open(dir, &s, err, sizeof(err)), -ENOENT);
    snprintf(path, sizeof(path), "%s/none.dsnap", dir);
    CHECK_EQ_INT(snapshot_open(path, &s, err, sizeof(err)), -ENOENT);
    CHECK(s == NULL);
    free(b);
    free(file);
    snap_test_fix_close(&f);
}

TEST(snapshot_refuses_crafted_headers)
{
    snap_test_in_dir(snap_test_headers);
}

static void snap_test_writer_refuses(const char *dir)
{
    char path[512], err[512];
    snprintf(path, sizeof(path), "%s/w.dsnap", dir);
    snap_test_fix_t f;
    REQUIRE(snap_test_fix_init(&f, 4, 6, 4, 10, 0, 0) == 0);
    snapshot_desc_t d;
    for (int k = 0; k < 10; k++) {
        d = f.d;
        int level = 3;
        const char *want = NULL;
        switch (k) {
        case 0: f.ue[5] = NAN; want = "user row 1, value 1 is not finite"; break;
        case 1: f.ie[23] = -INFINITY; want = "item row 5, value 3 is not finite"; break;
        case 2: f.iid[4][1] = '2'; want = "item rows 2 and 4 have the same id"; break;
        case 3: d.dim = 0; want = "dim 0"; break;
        case 4: d.dim = 4097; want = "dim 4097"; break;
        case 5: d.n_pos = SNAPSHOT_MAX_PARTITIONS + 1; want = "partition offsets"; break;
        case 6: d.n_users = -1; want = "users"; break;
        case 7: level = 0; want = "zstd level 0"; break;
        case 8: level = 23; want = "zstd level 23"; break;
        case 9: d.user_emb = NULL; want = "missing"; break;
        }
        err[0] = 0;
        int rc = snapshot_write(path, &d, level, err, sizeof(err));
        if (rc != -EINVAL || !strstr(err, want))
            test_fail(__FILE__, __LINE__, "writer case %d: rc %d, err \"%s\", wanted \"%s\"",
                      k, rc, err, want);
        struct stat st;
        CHECK(stat(path, &st) < 0 && errno == ENOENT); /* nothing written */
        /* Undo. */
        f.ue[5] = 0.25f;
        f.ie[23] = 0.25f;
        f.iid[4][1] = '4';
    }
    /* Empty ids may repeat: they are erased rows. */
    free(f.uid[1]);
    free(f.uid[2]);
    f.uid[1] = f.uid[2] = NULL;
    f.ulen[1] = f.ulen[2] = 0;
    CHECK_EQ_INT(snapshot_write(path, &f.d, 3, err, sizeof(err)), 0);
    CHECK(snap_test_open_version(path) == f.d.version);
    snap_test_fix_close(&f);
}

TEST(snapshot_writer_refuses_bad_input)
{
    snap_test_in_dir(snap_test_writer_refuses);
}

/* A payload that compresses thousands of times over: the reader's buffer,
 * sized for a plausible ratio at first, has to grow. */
static void snap_test_compressible(const char *dir)
{
    char path[512], err[512];
    snprintf(path, sizeof(path), "%s/z.dsnap", dir);
    snap_test_fix_t f;
    REQUIRE(snap_test_fix_init(&f, 2, 65536, 64, 11, 1, 0) == 0); /* no ids at all */
    memset(f.ie, 0, 65536 * 64 * sizeof(float));
    f.ie[65535 * 64 + 63] = 2.0f;
    REQUIRE(snapshot_write(path, &f.d, 3, err, sizeof(err)) == 0);
    snapshot_t *s = NULL;
    CHECK_EQ_INT(snapshot_open(path, &s, err, sizeof(err)), 0);
    if (s) {
        snapshot_size_t sz;
        snapshot_size(s, &sz);
        CHECK(sz.raw_bytes > 16 * sz.file_bytes + (1u << 20));
        CHECK(snapshot_desc(s)->item_emb[65535 * 64 + 63] == 2.0f);
        fprintf(stderr, "    %llu raw bytes in a %llu-byte file\n",
                (unsigned long long)sz.raw_bytes, (unsigned long long)sz.file_bytes);
    }
    snapshot_free(s);
    snap_test_fix_close(&f);
}

TEST(snapshot_highly_compressible_payload)
{
    snap_test_in_dir(snap_test_compressible);
}

/* ---- derrd-snap ------------------------------------------------------------ */

static int snap_test_put_text(const char *dir, const char *name, const char *text)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return snap_test_put(path, text, strlen(text));
}

static int snap_test_exists(const char *dir, const char *name)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

/* What a crash mid-publish leaves is swept; nothing else is. */
static void snap_test_sweep_body(const char *dir)
{
    static const char *const temps[] = { "student-00000000000000000007.dsnap.tmp.Ab12Cd",
                                         "latest.tmp.1234.5" };
    static const char *const keep[] = { "student-00000000000000000007.dsnap", "notes.tmp.x",
                                        "student-7.dsnap.tmp.x", "checkpoint.tmp.1" };
    for (size_t k = 0; k < 2; k++)
        REQUIRE(snap_test_put_text(dir, temps[k], "torn") == 0);
    for (size_t k = 0; k < 4; k++)
        REQUIRE(snap_test_put_text(dir, keep[k], "keep") == 0);
    CHECK_EQ_INT(snapshot_sweep_temp(dir), 2);
    for (size_t k = 0; k < 2; k++)
        CHECK(!snap_test_exists(dir, temps[k]));
    for (size_t k = 0; k < 4; k++)
        CHECK(snap_test_exists(dir, keep[k]));
    CHECK_EQ_INT(snapshot_sweep_temp(dir), 0);
}

TEST(snapshot_sweep_temp_files) { snap_test_in_dir(snap_test_sweep_body); }


static void snap_test_cli_body(const char *dir)
{
    char path[512], err[512];
    snprintf(path, sizeof(path), "%s/c.dsnap", dir);
    /* A dataset of 8 users and 12 items; snapshot ids are the decimal ids,
     * user 5 erased (no row in the eval), item 11 without a row. */
    snap_test_fix_t f;
    REQUIRE(snap_test_fix_init(&f, 8, 11, 3, 12, 0, 0) == 0);
    for (int t = 0; t < 2; t++)
        for (int64_t r = 0; r < (t ? 11 : 8); r++) {
            char **ids = t ? f.iid : f.uid;
            uint16_t *len = t ? f.ilen : f.ulen;
            /* Row r holds id (r + 3) mod n: the eval must re-index. */
            char b[16];
            snprintf(b, sizeof(b), "%lld", (long long)((r + 3) % (t ? 11 : 8)));
            free(ids[r]);
            ids[r] = strdup(b);
            REQUIRE(ids[r]);
            len[r] = (uint16_t)strlen(b);
        }
    free(f.uid[2]); /* id 5 */
    f.uid[2] = NULL;
    f.ulen[2] = 0;
    REQUIRE(snapshot_write(path, &f.d, 3, err, sizeof(err)) == 0);
    char data[600];
    snprintf(data, sizeof(data), "%s/data", dir);
    REQUIRE(mkdir(data, 0755) == 0);
    buf_t tr, va, te, ca;
    buf_init(&tr);
    buf_init(&va);
    buf_init(&te);
    buf_init(&ca);
    int32_t valid[8], test[8], cands[8 * 5];
    uint64_t rs = 5;
    for (int u = 0; u < 8; u++) {
        char line[128];
        snprintf(line, sizeof(line), "%d\t%d\n%d\t%d\n", u, u, u, (u + 1) % 12);
        buf_put(&tr, line, strlen(line));
        valid[u] = (u + 2) % 12;
        test[u] = (u + 3) % 12;
        snprintf(line, sizeof(line), "%d\t%d\n", u, valid[u]);
        buf_put(&va, line, strlen(line));
        snprintf(line, sizeof(line), "%d\t%d\n", u, test[u]);
        buf_put(&te, line, strlen(line));
        int l = snprintf(line, sizeof(line), "%d", u);
        for (int c = 0; c < 5; c++) {
            cands[u * 5 + c] = c == 4 ? 11 : (int32_t)(snap_test_rng(&rs) % 11);
            l += snprintf(line + l, sizeof(line) - (size_t)l, "\t%d", cands[u * 5 + c]);
        }
        snprintf(line + l, sizeof(line) - (size_t)l, "\n");
        buf_put(&ca, line, strlen(line));
    }
    buf_put(&tr, "", 1);
    buf_put(&va, "", 1);
    buf_put(&te, "", 1);
    buf_put(&ca, "", 1);
    REQUIRE(!tr.err && !va.err && !te.err && !ca.err);
    CHECK(snap_test_put_text(data, "train.tsv", (char *)tr.data) == 0);
    CHECK(snap_test_put_text(data, "valid.tsv", (char *)va.data) == 0);
    CHECK(snap_test_put_text(data, "test.tsv", (char *)te.data) == 0);
    CHECK(snap_test_put_text(data, "candidates.tsv", (char *)ca.data) == 0);
    buf_close(&tr);
    buf_close(&va);
    buf_close(&te);
    buf_close(&ca);

    test_run_t r;
    TEST_RUN_TOOL(&r, dir, "derrd-snap", "verify", path);
    CHECK_EQ_INT(r.status, 0);
    CHECK(!strncmp(r.out, "ok: ", 4) && strstr(r.out, "8 users, 11 items"));
    test_run_close(&r);
    TEST_RUN_TOOL(&r, dir, "derrd-snap", "info", path, "--json");
    CHECK_EQ_INT(r.status, 0);
    CHECK(test_json_num(r.out, "version") == (double)f.d.version);
    CHECK(test_json_num(r.out, "n_items") == 11.0);
    CHECK(strstr(r.out, "\"topic\": \"events.v1\"") && strstr(r.out, "\"teacher_ndcg10\": null"));
    CHECK(strstr(r.out, "{\"partition\": 7, \"offset\": 9223372036854775807}"));
    test_run_close(&r);
    TEST_RUN_TOOL(&r, dir, "derrd-snap", "info", path);
    CHECK_EQ_INT(r.status, 0);
    CHECK(strstr(r.out, "users            8 (1 erased)") != NULL);
    test_run_close(&r);

    /* recommend: the library's answer, printed. */
    snapshot_t *s = NULL;
    REQUIRE(snapshot_open(path, &s, err, sizeof(err)) == 0);
    int64_t it[3];
    float sc[3];
    int64_t u = snapshot_user_row(s, "4", 1);
    const int64_t ex[] = { snapshot_item_row(s, "7", 1) };
    CHECK_EQ_INT(snapshot_recommend(s, u, 3, ex, 1, it, sc), 3);
    char want[256];
    int wl = 0;
    for (int k = 0; k < 3; k++)
        wl += snprintf(want + wl, sizeof(want) - (size_t)wl, "%d\t%.*s\t%.9g\n", k + 1,
                       (int)snapshot_desc(s)->item_id_len[it[k]],
                       snapshot_desc(s)->item_ids[it[k]], (double)sc[k]);
    TEST_RUN_TOOL(&r, dir, "derrd-snap", "recommend", dir, "--user", "4", "-k", "3", "--exclude", "7,nope");
    CHECK_EQ_INT(r.status, 1); /* dir has no latest */
    test_run_close(&r);
    TEST_RUN_TOOL(&r, dir, "derrd-snap", "recommend", path, "--user", "4", "-k", "3", "--exclude", "7,nope");
    CHECK_EQ_INT(r.status, 0);
    CHECK(!strcmp(r.out, want));
    CHECK(strstr(r.err, "unknown item 'nope'") != NULL);
    test_run_close(&r);
    TEST_RUN_TOOL(&r, dir, "derrd-snap", "recommend", path, "--user", "5");
    CHECK_EQ_INT(r.status, 1);
    CHECK(strstr(r.err, "unknown user '5'") != NULL);
    test_run_close(&r);

    /* eval: the same numbers as metrics_eval on the model re-indexed by
     * hand. */
    mf_t mf;
    REQUIRE(mf_init(&mf, 8, 12, 3) == 0);
    for (int64_t row = 0; row < 8; row++)
        if (row != 2)
            memcpy(mf.ue + ((row + 3) % 8) * 3, f.ue + row * 3, 12);
    for (int64_t row = 0; row < 11; row++)
        memcpy(mf.ie + ((row + 3) % 11) * 3, f.ie + row * 3, 12);
    test[5] = -1;
    loo_split_t split = { 8, 5, test, cands };
    pool_t *pool = pool_new(1);
    metrics_t m;
    REQUIRE(pool && metrics_eval(&mf, &split, pool, &m) == 0);
    pool_free(pool);
    mf_close(&mf);
    TEST_RUN_TOOL(&r, dir, "derrd-snap", "eval", path, "--data", data, "--json", "--threads", "2");
    CHECK_EQ_INT(r.status, 0);
    const char *t = strstr(r.out, "\"test\": {");
    CHECK(t != NULL);
    if (t) {
        CHECK_NEAR(test_json_num(t, "HR@5"), m.hr[0], 1e-6);
        CHECK_NEAR(test_json_num(t, "NDCG@10"), m.ndcg[1], 1e-6);
        CHECK_NEAR(test_json_num(t, "MRR@20"), m.mrr[2], 1e-6);
    }
    CHECK(test_json_num(r.out, "test_users") == 7.0);
    CHECK(test_json_num(r.out, "test_users_without_row") == 1.0);
    test_run_close(&r);

    /* Refusals and usage. */
    unsigned char *file = NULL;
    size_t len = 0;
    REQUIRE(fsutil_read_all(path, 1 << 20, &file, &len, err, sizeof(err)) == 0);
    file[len - 1] ^= 1;
    CHECK(snap_test_put(path, file, len) == 0);
    free(file);
    TEST_RUN_TOOL(&r, dir, "derrd-snap", "verify", path);
    CHECK_EQ_INT(r.status, 1);
    CHECK(strstr(r.err, "checksum mismatch") != NULL && r.out[0] == 0);
    test_run_close(&r);
    const char *const usage[][4] = {
        { "verify", NULL },      { "frobnicate", path, NULL },
        { "info", path, "--x" }, { "recommend", path, NULL },
        { "eval", path, NULL },  { "recommend", path, "-k" },
    };
    for (int k = 0; k < 6; k++) {
        test_run_tool(&r, dir, "derrd-snap", usage[k]);
        if (r.status != 2)
            test_fail(__FILE__, __LINE__, "usage case %d: exit %d, stderr %s", k, r.status,
                      r.err);
        test_run_close(&r);
    }
    const char *const helps[] = { "verify", "info", "recommend", "eval" };
    for (int k = 0; k < 4; k++) {
        TEST_RUN_TOOL(&r, dir, "derrd-snap", helps[k], "--help");
        CHECK(r.status == 0 && strstr(r.out, "usage: derrd-snap"));
        test_run_close(&r);
    }
    TEST_RUN_TOOL(&r, dir, "derrd-snap", "--help");
    CHECK(r.status == 0 && strstr(r.out, "recommend"));
    test_run_close(&r);
    snapshot_free(s);
    snap_test_fix_close(&f);
}

TEST_SLOW(snapshot_cli, 120)
{
    snap_test_in_dir(snap_test_cli_body);
}
