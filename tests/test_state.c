/*
 * Tests of the daemon's durable state, bottom up: the byte buffer and the
 * bounded cursor (io/buf.h), the checkpoint container (io/checkpoint.h)
 * with a corrupt-file corpus (every single-byte flip, every truncation,
 * trailing bytes, a crash between write and rename), and daemon/state.h:
 * applying staged batches, saving, restoring and falling back to an older
 * checkpoint, plus a seeded randomized run against a reference model; and
 * the staging queue between the loop and the trainer (order, depth, waits).
 *
 * Every test that touches files works in its own mkdtemp directory under
 * /tmp and removes it.
 */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon/staging.h"
#include "daemon/state.h"
#include "io/buf.h"
#include "io/checkpoint.h"
#include "io/fsutil.h"
#include "io/log.h"
#include "model/idmap.h"
#include "model/iset.h"
#include "model/rng.h"
#include "test.h"
#include "testutil.h"

/* ---- helpers ------------------------------------------------------------- */

static int state_test_rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Runs body in a fresh directory /tmp/derrd-test-state-XXXXXX and removes
 * the directory afterwards, also when body returns early from a REQUIRE. */
static void state_test_in_dir(void (*body)(const char *dir))
{
    char dir[] = "/tmp/derrd-test-state-XXXXXX";
    if (!mkdtemp(dir)) {
        test_fail(__FILE__, __LINE__, "mkdtemp: %s", strerror(errno));
        return;
    }
    body(dir);
    CHECK(nftw(dir, state_test_rm_cb, 16, FTW_DEPTH | FTW_PHYS) == 0);
}

/* The state code logs every checkpoint it skips; the tests provoke that on
 * purpose, so keep it out of the runner's output. */
static void state_test_quiet(void) { log_setup(LOG_LVL_ERR - 1, 0); }

/* Writes len bytes to path as a fresh file (plain, not atomic: these are
 * fixtures). Unlinking first avoids ext4's flush-on-close of a file
 * truncated in place, which makes a thousand rewrites slow. */
static int state_test_put(const char *path, const void *data, size_t len)
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

/* The whole file at path (caller frees), NULL when unreadable. */
static unsigned char *state_test_read(const char *path, size_t *len)
{
    unsigned char *data;
    char err[256];
    return fsutil_read_all(path, (size_t)1 << 30, &data, len, err, sizeof(err)) == 0 ? data
                                                                                      : NULL;
}

/* XORs the byte at off of the file at path with x. */
static int state_test_flip(const char *path, size_t off, unsigned char x)
{
    size_t len;
    unsigned char *data = state_test_read(path, &len);
    if (!data || off >= len) {
        free(data);
        return -1;
    }
    data[off] ^= x;
    int rc = state_test_put(path, data, len);
    free(data);
    return rc;
}

/* Number of entries in dir whose name contains sub. */
static int state_test_count_names(const char *dir, const char *sub)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strstr(e->d_name, sub) != NULL;
    closedir(d);
    return n;
}

/* Whether any file in dir holds the bytes needle[0..len). */
static int state_test_dir_holds(const char *dir, const void *needle, size_t len)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int found = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        size_t flen;
        unsigned char *data = state_test_read(path, &flen);
        if (data && memmem(data, flen, needle, len))
            found = 1;
        free(data);
    }
    closedir(d);
    return found;
}

/* ---- buf and cursor ------------------------------------------------------ */

TEST(buf_encodes_little_endian_and_cursor_reads_back)
{
    buf_t b;
    buf_init(&b);
    CHECK(b.data == NULL && b.len == 0 && b.err == 0);
    buf_put_u16(&b, 0x1234);
    buf_put_u32(&b, 0xdeadbeefu);
    buf_put_u64(&b, 0x0102030405060708ull);
    buf_put_str16(&b, "hi", 2);
    unsigned char *z = buf_put(&b, NULL, 3);
    unsigned char *x = buf_put(&b, "xyz", 3);
    buf_put_str16(&b, "", 0);
    REQUIRE(b.err == 0);
    static const unsigned char want[] = {
        0x34, 0x12, 0xef, 0xbe, 0xad, 0xde, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,
        0x02, 0x00, 'h', 'i', 0, 0, 0, 'x', 'y', 'z', 0x00, 0x00,
    };
    REQUIRE(b.len == sizeof(want));
    CHECK(memcmp(b.data, want, sizeof(want)) == 0);
    CHECK(z == b.data + 18);
    CHECK(x == b.data + 21);

    cursor_t c;
    cursor_init(&c, b.data, b.len);
    CHECK_EQ_INT(cursor_left(&c), sizeof(want));
    CHECK_EQ_INT(cursor_u16(&c), 0x1234);
    CHECK_EQ_INT(cursor_u32(&c), 0xdeadbeefu);
    CHECK(cursor_u64(&c) == 0x0102030405060708ull);
    size_t len = 99;
    const char *s = cursor_str16(&c, &len);
    CHECK(s && len == 2 && memcmp(s, "hi", 2) == 0);
    const unsigned char *p = cursor_take(&c, 3);
    CHECK(p && p[0] == 0 && p[1] == 0 && p[2] == 0);
    p = cursor_take(&c, 3);
    CHECK(p && memcmp(p, "xyz", 3) == 0);
    s = cursor_str16(&c, &len);
    CHECK(s != NULL && len == 0); /* an empty string is not an error */
    CHECK_EQ_INT(cursor_left(&c), 0);
    CHECK_EQ_INT(c.err, 0);
    CHECK(cursor_take(&c, 0) != NULL); /* taking nothing at the end is fine */
    CHECK_EQ_INT(c.err, 0);

    buf_close(&b);
    CHECK(b.data == NULL && b.len == 0 && b.cap == 0);
    buf_close(&b);
}

TEST(buf_load_store_helpers)
{
    unsigned char p[8];
    buf_store_u32(p, 0x89abcdefu);
    CHECK(p[0] == 0xef && p[1] == 0xcd && p[2] == 0xab && p[3] == 0x89);
    CHECK_EQ_INT(buf_load_u32(p), 0x89abcdefu);
    buf_store_u64(p, 0xfedcba9876543210ull);
    CHECK(p[0] == 0x10 && p[7] == 0xfe);
    CHECK(buf_load_u64(p) == 0xfedcba9876543210ull);
    buf_store_u64(p, UINT64_MAX);
    CHECK(buf_load_u64(p) == UINT64_MAX);
}

TEST(buf_grows_across_many_puts)
{
    buf_t b;
    buf_init(&b);
    enum { N = 100000 };
    for (uint32_t k = 0; k < N; k++)
        buf_put_u32(&b, k * 2654435761u);
    unsigned char *big = buf_put(&b, NULL, 1 << 20);
    REQUIRE(big);
    memset(big, 0xab, 1 << 20);
    buf_put_u64(&b, 42);
    REQUIRE(b.err == 0);
    CHECK_EQ_INT(b.len, 4 * N + (1 << 20) + 8);
    CHECK(b.cap >= b.len);
    cursor_t c;
    cursor_init(&c, b.data, b.len);
    int bad = 0;
    for (uint32_t k = 0; k < N; k++)
        bad += cursor_u32(&c) != k * 2654435761u;
    const unsigned char *p = cursor_take(&c, 1 << 20);
    REQUIRE(p);
    for (int k = 0; k < 1 << 20; k++)
        bad += p[k] != 0xab;
    CHECK(cursor_u64(&c) == 42);
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(c.err, 0);
    buf_close(&b);
}

TEST(buf_errors_are_sticky)
{
    buf_t b;
    buf_init(&b);
    buf_put_u32(&b, 7);
    char *big = calloc(1, 65536);
    REQUIRE(big);
    buf_put_str16(&b, big, 65536);
    CHECK_EQ_INT(b.err, -EINVAL);
    CHECK_EQ_INT(b.len, 4); /* nothing of the refused string went in */
    CHECK(buf_put(&b, "x", 1) == NULL);
    buf_put_u64(&b, 1);
    buf_put_u16(&b, 1);
    buf_put_str16(&b, "ok", 2);
    CHECK_EQ_INT(b.len, 4);
    CHECK_EQ_INT(b.err, -EINVAL);
    buf_close(&b);

    /* 65535 bytes is the largest string. */
    buf_init(&b);
    buf_put_str16(&b, big, 65535);
    CHECK_EQ_INT(b.err, 0);
    CHECK_EQ_INT(b.len, 65537);
    cursor_t c;
    cursor_init(&c, b.data, b.len);
    size_t len = 0;
    CHECK(cursor_str16(&c, &len) != NULL);
    CHECK_EQ_INT(len, 65535);
    CHECK_EQ_INT(cursor_left(&c), 0);
    buf_close(&b);
    free(big);
}

TEST(cursor_reading_past_the_end_is_sticky)
{
    static const unsigned char data[7] = { 1, 0, 0, 0, 2, 0, 0 };
    cursor_t c;
    cursor_init(&c, data, sizeof(data));
    CHECK_EQ_INT(cursor_u32(&c), 1);
    CHECK_EQ_INT(cursor_left(&c), 3);
    CHECK_EQ_INT(cursor_u32(&c), 0); /* 3 bytes left: a short read */
    CHECK_EQ_INT(c.err, -EBADMSG);
    CHECK_EQ_INT(cursor_left(&c), 3); /* the failed read did not advance */
    /* Sticky: even reads that would fit now fail and return zeros/NULL. */
    CHECK_EQ_INT(cursor_u16(&c), 0);
    CHECK(cursor_take(&c, 1) == NULL);
    CHECK(cursor_take(&c, 0) == NULL);
    CHECK(cursor_u64(&c) == 0);
    size_t len = 99;
    CHECK(cursor_str16(&c, &len) == NULL);
    CHECK_EQ_INT(len, 0);
    CHECK_EQ_INT(c.err, -EBADMSG);

    /* A string whose length prefix promises more than there is. */
    static const unsigned char str[5] = { 5, 0, 'a', 'b', 'c' };
    cursor_init(&c, str, sizeof(str));
    len = 99;
    CHECK(cursor_str16(&c, &len) == NULL);
    CHECK_EQ_INT(len, 0);
    CHECK_EQ_INT(c.err, -EBADMSG);

    /* A length prefix cut in half. */
    cursor_init(&c, str, 1);
    CHECK(cursor_str16(&c, &len) == NULL);
    CHECK_EQ_INT(c.err, -EBADMSG);

    /* A huge take neither wraps nor succeeds. */
    cursor_init(&c, data, sizeof(data));
    CHECK(cursor_take(&c, SIZE_MAX) == NULL);
    CHECK_EQ_INT(c.err, -EBADMSG);

    /* Each width at exactly the end and one past it. */
    cursor_init(&c, data, 2);
    CHECK_EQ_INT(cursor_u16(&c), 1);
    CHECK_EQ_INT(c.err, 0);
    cursor_init(&c, data, 1);
    CHECK_EQ_INT(cursor_u16(&c), 0);
    CHECK_EQ_INT(c.err, -EBADMSG);
    cursor_init(&c, data, 7);
    CHECK(cursor_u64(&c) == 0);
    CHECK_EQ_INT(c.err, -EBADMSG);
    cursor_init(&c, data, 0);
    CHECK_EQ_INT(cursor_left(&c), 0);
    CHECK_EQ_INT(cursor_u32(&c), 0);
    CHECK_EQ_INT(c.err, -EBADMSG);
}

/* ---- checkpoint: round trip ---------------------------------------------- */

/* The sample checkpoint: three non-empty sections, one of an id no reader
 * knows. */
enum { CKPT_TEST_UNKNOWN = 77, CKPT_TEST_N = 3 };

static void ckpt_test_sample(uint32_t *ids, unsigned char data[CKPT_TEST_N][64], size_t *lens)
{
    static const uint32_t id[CKPT_TEST_N] = { CKPT_META, CKPT_TEST_UNKNOWN, CKPT_OFFSETS };
    static const size_t len[CKPT_TEST_N] = { 10, 50, 24 };
    uint64_t x = 0x243f6a8885a308d3ull;
    for (int k = 0; k < CKPT_TEST_N; k++) {
        ids[k] = id[k];
        lens[k] = len[k];
        for (size_t j = 0; j < len[k]; j++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            data[k][j] = (unsigned char)x;
        }
    }
}

/* Commits the sample as checkpoint seq in dir. */
static int ckpt_test_write_sample(const char *dir, uint64_t seq, uint64_t created_ms, int keep)
{
    uint32_t ids[CKPT_TEST_N];
    unsigned char data[CKPT_TEST_N][64];
    size_t lens[CKPT_TEST_N];
    ckpt_test_sample(ids, data, lens);
    checkpoint_writer_t *w = checkpoint_writer_new();
    if (!w)
        return -ENOMEM;
    for (int k = 0; k < CKPT_TEST_N; k++) {
        buf_t *b = checkpoint_writer_section(w, ids[k]);
        if (!b) {
            checkpoint_writer_free(w);
            return -EINVAL;
        }
        buf_put(b, data[k], lens[k]);
    }
    char err[512] = "";
    int rc = checkpoint_writer_commit(w, dir, seq, created_ms, keep, err, sizeof(err));
    if (rc)
        test_fail(__FILE__, __LINE__, "commit: %s", err);
    checkpoint_writer_free(w);
    return rc;
}

static void checkpoint_round_trip_in(const char *dir)
{
    REQUIRE(ckpt_test_write_sample(dir, 42, 0x0123456789abcdefull, 3) == 0);
    char path[4096];
    checkpoint_path(dir, 42, path, sizeof(path));
    char want[4096];
    snprintf(want, sizeof(want), "%s/checkpoint-00000000000000000042.dckpt", dir);
    CHECK(strcmp(path, want) == 0);
    CHECK_EQ_INT(state_test_count_names(dir, ".tmp."), 0);

    checkpoint_t *ck = NULL;
    char err[512] = "";
    int rc = checkpoint_open(path, &ck, err, sizeof(err));
    CHECK_EQ_INT(rc, 0);
    REQUIRE(ck);
    CHECK(checkpoint_seq(ck) == 42);
    CHECK(checkpoint_created_ms(ck) == 0x0123456789abcdefull);
    uint32_t ids[CKPT_TEST_N];
    unsigned char data[CKPT_TEST_N][64];
    size_t lens[CKPT_TEST_N];
    ckpt_test_sample(ids, data, lens);
    for (int k = 0; k < CKPT_TEST_N; k++) {
        const unsigned char *p = NULL;
        size_t len = 0;
        CHECK_EQ_INT(checkpoint_section(ck, ids[k], &p, &len), 0);
        CHECK(p && len == lens[k] && memcmp(p, data[k], len) == 0);
    }
    /* Sections it does not have. */
    const unsigned char *p = (const unsigned char *)"x";
    size_t len = 5;
    CHECK_EQ_INT(checkpoint_section(ck, CKPT_USERS, &p, &len), -ENOENT);
    CHECK(p == NULL && len == 0);
    CHECK_EQ_INT(checkpoint_section(ck, 0, &p, &len), -ENOENT);
    CHECK_EQ_INT(checkpoint_section(ck, UINT32_MAX, &p, &len), -ENOENT);
    checkpoint_free(ck);
    checkpoint_free(NULL);

    /* The file is exactly header + table + crc + sections. */
    unsigned char *file = state_test_read(path, &len);
    REQUIRE(file);
    CHECK_EQ_INT(len, 32 + 24 * CKPT_TEST_N + 4 + 10 + 50 + 24);
    CHECK(memcmp(file, "DERRDCKP", 8) == 0);
    free(file);

    uint64_t *seqs = NULL;
    int n = -1;
    CHECK_EQ_INT(checkpoint_list(dir, &seqs, &n), 0);
    CHECK_EQ_INT(n, 1);
    if (n == 1)
        CHECK(seqs[0] == 42);
    free(seqs);
}

TEST(checkpoint_round_trip) { state_test_in_dir(checkpoint_round_trip_in); }

static void checkpoint_empty_and_zero_length_sections_in(const char *dir)
{
    /* No sections at all. */
    checkpoint_writer_t *w = checkpoint_writer_new();
    REQUIRE(w);
    char err[512] = "";
    CHECK_EQ_INT(checkpoint_writer_commit(w, dir, 1, 0, 0, err, sizeof(err)), 0);
    checkpoint_writer_free(w);
    char path[4096];
    checkpoint_path(dir, 1, path, sizeof(path));
    checkpoint_t *ck = NULL;
    CHECK_EQ_INT(checkpoint_open(path, &ck, err, sizeof(err)), 0);
    REQUIRE(ck);
    const unsigned char *p;
    size_t len;
    CHECK_EQ_INT(checkpoint_section(ck, CKPT_META, &p, &len), -ENOENT);
    checkpoint_free(ck);

    /* Empty sections between non-empty ones. */
    w = checkpoint_writer_new();
    REQUIRE(w);
    checkpoint_writer_section(w, 1);
    buf_put(checkpoint_writer_section(w, 2), "abc", 3);
    checkpoint_writer_section(w, 3);
    CHECK_EQ_INT(checkpoint_writer_commit(w, dir, 2, 5, 0, err, sizeof(err)), 0);
    checkpoint_writer_free(w);
    checkpoint_path(dir, 2, path, sizeof(path));
    CHECK_EQ_INT(checkpoint_open(path, &ck, err, sizeof(err)), 0);
    REQUIRE(ck);
    CHECK_EQ_INT(checkpoint_section(ck, 1, &p, &len), 0);
    CHECK_EQ_INT(len, 0);
    CHECK_EQ_INT(checkpoint_section(ck, 2, &p, &len), 0);
    CHECK(len == 3 && memcmp(p, "abc", 3) == 0);
    CHECK_EQ_INT(checkpoint_section(ck, 3, &p, &len), 0);
    CHECK_EQ_INT(len, 0);
    checkpoint_free(ck);
}

TEST(checkpoint_empty_and_zero_length_sections)
{
    state_test_in_dir(checkpoint_empty_and_zero_length_sections_in);
}

TEST(checkpoint_writer_refuses_repeated_id_and_full_table)
{
    checkpoint_writer_t *w = checkpoint_writer_new();
    REQUIRE(w);
    buf_t *b = checkpoint_writer_section(w, CKPT_META);
    CHECK(b != NULL);
    CHECK(checkpoint_writer_section(w, CKPT_META) == NULL);
    CHECK(checkpoint_writer_section(w, CKPT_USERS) != NULL);
    CHECK(checkpoint_writer_section(w, CKPT_META) == NULL);
    for (uint32_t id = 100; id < 100 + CHECKPOINT_MAX_SECTIONS - 2; id++)
        CHECK(checkpoint_writer_section(w, id) != NULL);
    CHECK(checkpoint_writer_section(w, 5000) == NULL); /* the 65th */
    checkpoint_writer_free(w);
    checkpoint_writer_free(NULL);
}

static void checkpoint_commit_reports_section_error_in(const char *dir)
{
    checkpoint_writer_t *w = checkpoint_writer_new();
    REQUIRE(w);
    buf_put_u64(checkpoint_writer_section(w, CKPT_META), 1);
    char *big = calloc(1, 70000);
    REQUIRE(big);
    buf_put_str16(checkpoint_writer_section(w, CKPT_USERS), big, 70000);
    free(big);
    char err[512] = "";
    CHECK_EQ_INT(checkpoint_writer_commit(w, dir, 1, 0, 2, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "section 2") != NULL);
    checkpoint_writer_free(w);
    CHECK_EQ_INT(state_test_count_names(dir, "checkpoint"), 0);

    /* A directory that does not exist. */
    w = checkpoint_writer_new();
    REQUIRE(w);
    char missing[4096];
    snprintf(missing, sizeof(missing), "%s/no/such/dir", dir);
    err[0] = '\0';
    CHECK(checkpoint_writer_commit(w, missing, 1, 0, 2, err, sizeof(err)) < 0);
    CHECK(err[0] != '\0');
    checkpoint_writer_free(w);
}

TEST(checkpoint_commit_reports_section_error)
{
    state_test_in_dir(checkpoint_commit_reports_section_error_in);
}

/* ---- checkpoint: the corrupt-file corpus --------------------------------- */

/* Opens path and requires -EBADMSG with a reason and no checkpoint; the
 * reason must contain want when want is not NULL. Returns 1 when so. */
static int ckpt_test_refused(const char *path, const char *want, const char *what, size_t at)
{
    checkpoint_t *ck = (checkpoint_t *)1;
    char err[512] = "";
    int rc = checkpoint_open(path, &ck, err, sizeof(err));
    if (rc == -EBADMSG && ck == NULL && err[0] && (!want || strstr(err, want)))
        return 1;
    test_fail(__FILE__, __LINE__, "%s at %zu: rc %d, reason \"%s\" (want \"%s\")", what, at,
              rc, err, want ? want : "");
    if (rc == 0)
        checkpoint_free(ck);
    return 0;
}

static void checkpoint_every_byte_flip_in(const char *dir)
{
    REQUIRE(ckpt_test_write_sample(dir, 7, 1234, 0) == 0);
    char path[4096], bad[4096];
    checkpoint_path(dir, 7, path, sizeof(path));
    snprintf(bad, sizeof(bad), "%s/corrupt", dir);
    size_t len;
    unsigned char *good = state_test_read(path, &len);
    REQUIRE(good);
    REQUIRE(len > 100);
    rng_t rng;
    rng_init_stream(&rng, 5, RNG_TEST, 0xc4, 0);
    int refused = 0, tried = 0;
    for (size_t at = 0; at < len; at++) {
        unsigned char xs[4] = { 0x01, 0x80, 0xff, (unsigned char)(1 + rng_below(&rng, 255)) };
        for (int k = 0; k < 4; k++) {
            good[at] ^= xs[k];
            REQUIRE(state_test_put(bad, good, len) == 0);
            good[at] ^= xs[k];
            refused += ckpt_test_refused(bad, NULL, "flip", at);
            tried++;
        }
    }
    CHECK_EQ_INT(refused, tried);
    /* The untouched bytes still open. */
    REQUIRE(state_test_put(bad, good, len) == 0);
    checkpoint_t *ck = NULL;
    char err[512];
    CHECK_EQ_INT(checkpoint_open(bad, &ck, err, sizeof(err)), 0);
    checkpoint_free(ck);
    free(good);
}

TEST(checkpoint_every_byte_flip_is_rejected) { state_test_in_dir(checkpoint_every_byte_flip_in); }

static void checkpoint_every_truncation_in(const char *dir)
{
    REQUIRE(ckpt_test_write_sample(dir, 7, 1234, 0) == 0);
    char path[4096], bad[4096];
    checkpoint_path(dir, 7, path, sizeof(path));
    snprintf(bad, sizeof(bad), "%s/torn", dir);
    size_t len;
    unsigned char *good = state_test_read(path, &len);
    REQUIRE(good);
    int refused = 0;
    for (size_t cut = 0; cut < len; cut++) {
        REQUIRE(state_test_put(bad, good, cut) == 0);
        refused += ckpt_test_refused(bad, "truncated", "truncation", cut);
    }
    CHECK_EQ_INT(refused, (int)len);
    /* Explicitly at each boundary: inside the fixed header, at the end of
     * the fixed header, at the end of the header (table and crc), and at
     * the end of each section but the last. */
    size_t hlen = 32 + 24 * CKPT_TEST_N + 4;
    size_t cuts[] = { 8, 32, hlen - 4, hlen, hlen + 10, hlen + 10 + 50 };
    const char *why[] = { "truncated header", "truncated header", "truncated section table",
                          "outside the file", "outside the file", "outside the file" };
    for (size_t k = 0; k < sizeof(cuts) / sizeof(cuts[0]); k++) {
        REQUIRE(cuts[k] < len);
        REQUIRE(state_test_put(bad, good, cuts[k]) == 0);
        ckpt_test_refused(bad, why[k], "boundary", cuts[k]);
    }
    free(good);
}

TEST(checkpoint_every_truncation_is_rejected) { state_test_in_dir(checkpoint_every_truncation_in); }

static void checkpoint_trailing_bytes_in(const char *dir)
{
    REQUIRE(ckpt_test_write_sample(dir, 7, 1234, 0) == 0);
    char path[4096], bad[4096];
    checkpoint_path(dir, 7, path, sizeof(path));
    snprintf(bad, sizeof(bad), "%s/long", dir);
    size_t len;
    unsigned char *good = state_test_read(path, &len);
    REQUIRE(good);
    unsigned char *more = calloc(1, len + 4096);
    REQUIRE(more);
    memcpy(more, good, len);
    size_t extra[] = { 1, 2, 8, 4096 };
    for (size_t k = 0; k < sizeof(extra) / sizeof(extra[0]); k++) {
        REQUIRE(state_test_put(bad, more, len + extra[k]) == 0);
        ckpt_test_refused(bad, "after the last section", "extra", extra[k]);
    }
    /* Two good checkpoints back to back are not one. */
    memcpy(more + len, good, len);
    REQUIRE(state_test_put(bad, more, 2 * len) == 0);
    ckpt_test_refused(bad, "after the last section", "doubled", len);
    free(more);
    free(good);
}

TEST(checkpoint_trailing_bytes_are_rejected) { state_test_in_dir(checkpoint_trailing_bytes_in); }

static void checkpoint_bad_magic_version_count_in(const char *dir)
{
    REQUIRE(ckpt_test_write_sample(dir, 7, 1234, 0) == 0);
    char path[4096], bad[4096];
    checkpoint_path(dir, 7, path, sizeof(path));
    snprintf(bad, sizeof(bad), "%s/bad", dir);
    size_t len;
    unsigned char *good = state_test_read(path, &len);
    REQUIRE(good);

    /* Another file type altogether. */
    unsigned char *f = malloc(len);
    REQUIRE(f);
    memcpy(f, good, len);
    memcpy(f, "DERRDEMB", 8);
    REQUIRE(state_test_put(bad, f, len) == 0);
    ckpt_test_refused(bad, "magic", "magic", 0);
    memset(f, 0, len);
    REQUIRE(state_test_put(bad, f, len) == 0);
    ckpt_test_refused(bad, "magic", "zeros", 0);

    /* A newer format: the reason names both versions. */
    memcpy(f, good, len);
    buf_store_u32(f + 8, 2);
    REQUIRE(state_test_put(bad, f, len) == 0);
    ckpt_test_refused(bad, "version 2", "version", 8);
    ckpt_test_refused(bad, "reads 1", "version", 8);
    buf_store_u32(f + 8, 0);
    REQUIRE(state_test_put(bad, f, len) == 0);
    ckpt_test_refused(bad, "version 0", "version", 8);

    /* A section count over the limit. */
    memcpy(f, good, len);
    buf_store_u32(f + 12, CHECKPOINT_MAX_SECTIONS + 1);
    REQUIRE(state_test_put(bad, f, len) == 0);
    ckpt_test_refused(bad, "sections", "count", 12);
    buf_store_u32(f + 12, UINT32_MAX);
    REQUIRE(state_test_put(bad, f, len) == 0);
    ckpt_test_refused(bad, "sections", "count", 12);

    /* The reason starts with the path, so a log line says which file. */
    ckpt_test_refused(bad, bad, "path", 0);

    /* A missing file and a directory are not corrupt checkpoints. */
    checkpoint_t *ck = (checkpoint_t *)1;
    char err[512] = "";
    snprintf(bad, sizeof(bad), "%s/absent", dir);
    CHECK_EQ_INT(checkpoint_open(bad, &ck, err, sizeof(err)), -ENOENT);
    CHECK(ck == NULL);
    CHECK(err[0] != '\0');
    ck = (checkpoint_t *)1;
    CHECK(checkpoint_open(dir, &ck, err, sizeof(err)) < 0);
    CHECK(ck == NULL);
    free(f);
    free(good);
}

TEST(checkpoint_bad_magic_version_and_count)
{
    state_test_in_dir(checkpoint_bad_magic_version_count_in);
}

/* ---- checkpoint: the directory ------------------------------------------- */

static void ckpt_test_touch(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    CHECK(state_test_put(path, "junk", 4) == 0);
}

static void checkpoint_list_in(const char *dir)
{
    uint64_t *seqs = (uint64_t *)1;
    int n = -1;
    CHECK_EQ_INT(checkpoint_list(dir, &seqs, &n), 0);
    CHECK_EQ_INT(n, 0);
    free(seqs);

    const uint64_t made[] = { 5, 100, 3, 42 };
    for (int k = 0; k < 4; k++)
        REQUIRE(ckpt_test_write_sample(dir, made[k], 0, 0) == 0);
    ckpt_test_touch(dir, "checkpoint-18446744073709551615.dckpt"); /* UINT64_MAX: listed */
    static const char *ignored[] = {
        "checkpoint-99999999999999999999.dckpt", /* over 2^64 */
        "checkpoint-123.dckpt",
        "checkpoint-0000000000000000000x.dckpt",
        "checkpoint--0000000000000000011.dckpt",
        "checkpoint-00000000000000000007.dckpt.tmp.abcdef",
        "checkpoint-00000000000000000008.dckptx",
        "checkpoint-00000000000000000010.DCKPT",
        "checkpoint-000000000000000000012.dckpt",
        "xcheckpoint-00000000000000000009.dckpt",
        "snapshot-00000000000000000013.dsnap",
        "notes.txt",
    };
    for (size_t k = 0; k < sizeof(ignored) / sizeof(ignored[0]); k++)
        ckpt_test_touch(dir, ignored[k]);

    CHECK_EQ_INT(checkpoint_list(dir, &seqs, &n), 0);
    const uint64_t want[] = { UINT64_MAX, 100, 42, 5, 3 };
    CHECK_EQ_INT(n, 5);
    for (int k = 0; k < n && k < 5; k++)
        CHECK(seqs[k] == want[k]);
    free(seqs);

    /* A missing directory is an empty list. */
    char missing[4096];
    snprintf(missing, sizeof(missing), "%s/missing", dir);
    seqs = (uint64_t *)1;
    n = -1;
    CHECK_EQ_INT(checkpoint_list(missing, &seqs, &n), 0);
    CHECK(seqs == NULL);
    CHECK_EQ_INT(n, 0);
}

TEST(checkpoint_list_newest_first_ignores_other_names) { state_test_in_dir(checkpoint_list_in); }

static void ckpt_test_expect_list(const char *dir, const uint64_t *want, int n_want, int line)
{
    uint64_t *seqs = NULL;
    int n = -1;
    int ok = checkpoint_list(dir, &seqs, &n) == 0 && n == n_want;
    for (int k = 0; ok && k < n; k++)
        ok = seqs[k] == want[k];
    if (!ok)
        test_fail(__FILE__, line, "checkpoint list: %d entries, first %" PRIu64 "; want %d",
                  n, n > 0 ? seqs[0] : 0, n_want);
    free(seqs);
}

static void checkpoint_keep_in(const char *dir)
{
    ckpt_test_touch(dir, "notes.txt");
    for (uint64_t s = 1; s <= 6; s++) {
        REQUIRE(ckpt_test_write_sample(dir, s, s, 3) == 0);
        uint64_t want[3];
        int n = 0;
        for (uint64_t t = s; t >= 1 && n < 3; t--)
            want[n++] = t;
        ckpt_test_expect_list(dir, want, n, __LINE__);
    }
    /* Each kept file is intact. */
    for (uint64_t s = 4; s <= 6; s++) {
        char path[4096], err[512];
        checkpoint_path(dir, s, path, sizeof(path));
        checkpoint_t *ck = NULL;
        CHECK_EQ_INT(checkpoint_open(path, &ck, err, sizeof(err)), 0);
        if (ck)
            CHECK(checkpoint_seq(ck) == s && checkpoint_created_ms(ck) == s);
        checkpoint_free(ck);
    }
    REQUIRE(ckpt_test_write_sample(dir, 7, 0, 1) == 0);
    ckpt_test_expect_list(dir, (const uint64_t[]){ 7 }, 1, __LINE__);
    REQUIRE(ckpt_test_write_sample(dir, 8, 0, 0) == 0); /* keep 0: delete nothing */
    ckpt_test_expect_list(dir, (const uint64_t[]){ 8, 7 }, 2, __LINE__);
    REQUIRE(ckpt_test_write_sample(dir, 9, 0, 2) == 0);
    ckpt_test_expect_list(dir, (const uint64_t[]){ 9, 8 }, 2, __LINE__);
    CHECK_EQ_INT(state_test_count_names(dir, "notes.txt"), 1);
    CHECK_EQ_INT(state_test_count_names(dir, ".tmp."), 0);
}

TEST(checkpoint_commit_keeps_the_newest) { state_test_in_dir(checkpoint_keep_in); }

static void checkpoint_sweep_temp_in(const char *dir)
{
    static const char *temps[] = {
        "checkpoint-00000000000000000001.dckpt.tmp.ABC123",
        "checkpoint-00000000000000000002.dckpt.tmp.x",
    };
    static const char *keep[] = {
        "checkpoint-00000000000000000001.dckpt",
        "other.dckpt.tmp.ABCDEF",
        "snapshot-00000000000000000001.dsnap.tmp.ABCDEF",
        "checkpoint-notes.txt",
        "checkpoint-00000000000000000003.dckpt.bak",
    };
    for (int k = 0; k < 2; k++)
        ckpt_test_touch(dir, temps[k]);
    for (int k = 0; k < 5; k++)
        ckpt_test_touch(dir, keep[k]);
    CHECK_EQ_INT(checkpoint_sweep_temp(dir), 2);
    for (int k = 0; k < 2; k++)
        CHECK_EQ_INT(state_test_count_names(dir, temps[k]), 0);
    for (int k = 0; k < 5; k++)
        CHECK_EQ_INT(state_test_count_names(dir, keep[k]), 1);
    CHECK_EQ_INT(checkpoint_sweep_temp(dir), 0);

    char missing[4096];
    snprintf(missing, sizeof(missing), "%s/missing", dir);
    CHECK_EQ_INT(checkpoint_sweep_temp(missing), 0);
}

TEST(checkpoint_sweep_temp_removes_only_temp_files) { state_test_in_dir(checkpoint_sweep_temp_in); }

/* A crash between writing and renaming leaves a temp file (torn, or
 * complete but never renamed) next to the older good checkpoint: the list
 * shows only the good one, which opens, and the sweep removes the temps. */
static void checkpoint_crash_before_rename_in(const char *dir)
{
    REQUIRE(ckpt_test_write_sample(dir, 1, 11, 2) == 0);
    /* seq 2: complete but never renamed */
    REQUIRE(ckpt_test_write_sample(dir, 2, 22, 0) == 0);
    char p2[4096], t2[4096 + 32], t3[4096 + 32];
    checkpoint_path(dir, 2, p2, sizeof(p2));
    snprintf(t2, sizeof(t2), "%s.tmp.Q7rT1z", p2);
    REQUIRE(rename(p2, t2) == 0);
    /* seq 3: only half written */
    REQUIRE(ckpt_test_write_sample(dir, 3, 33, 0) == 0);
    char p3[4096];
    checkpoint_path(dir, 3, p3, sizeof(p3));
    size_t len;
    unsigned char *full = state_test_read(p3, &len);
    REQUIRE(full);
    snprintf(t3, sizeof(t3), "%s.tmp.a0B9xY", p3);
    REQUIRE(state_test_put(t3, full, len / 2) == 0);
    free(full);
    REQUIRE(unlink(p3) == 0);

    ckpt_test_expect_list(dir, (const uint64_t[]){ 1 }, 1, __LINE__);
    char p1[4096], err[512];
    checkpoint_path(dir, 1, p1, sizeof(p1));
    checkpoint_t *ck = NULL;
    CHECK_EQ_INT(checkpoint_open(p1, &ck, err, sizeof(err)), 0);
    if (ck)
        CHECK(checkpoint_seq(ck) == 1 && checkpoint_created_ms(ck) == 11);
    checkpoint_free(ck);

    CHECK_EQ_INT(checkpoint_sweep_temp(dir), 2);
    CHECK_EQ_INT(state_test_count_names(dir, ".tmp."), 0);
    CHECK_EQ_INT(state_test_count_names(dir, "checkpoint-"), 1);
}

TEST(checkpoint_crash_before_rename_keeps_older)
{
    state_test_in_dir(checkpoint_crash_before_rename_in);
}

/* ---- state --------------------------------------------------------------- */

#define STATE_TEST_TOPIC "events"

/* Appends an event with NUL-terminated ids (NULL = none). */
static void state_test_add(staging_batch_t *b, staged_op_t op, int32_t part, int64_t off,
                           const char *user, const char *item)
{
    int rc = staging_batch_add(b, op, part, off, user, user ? strlen(user) : 0, item,
                               item ? strlen(item) : 0);
    if (rc)
        test_fail(__FILE__, __LINE__, "staging_batch_add: %d", rc);
}

/* The state's dump as a malloc'd string (NULL on failure). */
static char *state_test_dump(const state_t *st)
{
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    if (!f)
        return NULL;
    int rc = state_dump(st, f);
    fclose(f);
    if (rc) {
        free(text);
        return NULL;
    }
    return text;
}

/* Whether st dumps exactly want. */
static int state_test_dump_is(const state_t *st, const char *want, int line)
{
    char *got = state_test_dump(st);
    int ok = got && strcmp(got, want) == 0;
    if (!ok)
        test_fail(__FILE__, line, "dump:\n%s\nwant:\n%s", got ? got : "(failed)", want);
    free(got);
    return ok;
}

/* The first batch of the hand-written tests. */
static staging_batch_t *state_test_batch_a(void)
{
    staging_batch_t *b = staging_batch_new();
    if (!b)
        return NULL;
    state_test_add(b, STAGED_ADD, 0, 10, "u1", "i1");
    state_test_add(b, STAGED_ADD, 0, 11, "u1", "i2");
    state_test_add(b, STAGED_ADD, 1, 5, "u2", "i1");
    state_test_add(b, STAGED_ADD, 0, 12, "u1", "i1"); /* duplicate */
    state_test_add(b, STAGED_SKIP, 2, 7, NULL, NULL);
    state_test_add(b, STAGED_FORGET, 1, 6, "nobody", NULL); /* unknown user */
    state_test_add(b, STAGED_ADD, 0, 9, "u3", "i3"); /* replayed, older offset */
    return b;
}

static const char *state_test_dump_a = "u1\ti1\nu1\ti2\nu2\ti1\nu3\ti3\n";

static void state_test_check_a(const state_t *st, int line)
{
    if (!(st->applied == 4 && st->duplicates == 1 && st->skipped == 1 && st->forgotten == 1))
        test_fail(__FILE__, line, "counters %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64,
                  st->applied, st->duplicates, st->skipped, st->forgotten);
    if (!(state_position(st, 0) == 13 && state_position(st, 1) == 7 &&
          state_position(st, 2) == 8 && state_position(st, 3) == -1 &&
          state_position(st, -1) == -1))
        test_fail(__FILE__, line, "positions %" PRId64 " %" PRId64 " %" PRId64,
                  state_position(st, 0), state_position(st, 1), state_position(st, 2));
    state_test_dump_is(st, state_test_dump_a, line);
    if (!(idmap_count(st->users) == 3 && idmap_count(st->items) == 3 &&
          iset_count(st->inter) == 4))
        test_fail(__FILE__, line, "sizes");
}

TEST(state_apply_counts_positions_and_dump)
{
    state_t st;
    REQUIRE(state_init(&st, STATE_TEST_TOPIC) == 0);
    CHECK(strcmp(st.topic, STATE_TEST_TOPIC) == 0);
    CHECK_EQ_INT(st.dirty, 0);
    CHECK_EQ_INT(state_position(&st, 0), -1);
    CHECK(state_test_dump_is(&st, "", __LINE__));
    staging_batch_t *b = state_test_batch_a();
    REQUIRE(b);
    CHECK_EQ_INT(b->n, 7);
    CHECK_EQ_INT(state_apply(&st, b), 0);
    staging_batch_free(b);
    CHECK_EQ_INT(st.dirty, 1);
    CHECK(st.seq == 0);
    state_test_check_a(&st, __LINE__);
    int64_t u1 = idmap_find(st.users, "u1", 2), i2 = idmap_find(st.items, "i2", 2);
    CHECK(u1 >= 0 && i2 >= 0 && iset_has(st.inter, u1, i2));

    /* Many partitions arriving out of order stay sorted and findable. */
    b = staging_batch_new();
    REQUIRE(b);
    for (int p = 40; p >= 3; p--)
        state_test_add(b, STAGED_SKIP, p * 7 % 41, 1000 + p, NULL, NULL);
    CHECK_EQ_INT(state_apply(&st, b), 0);
    staging_batch_free(b);
    for (int p = 40; p >= 3; p--)
        CHECK_EQ_INT(state_position(&st, p * 7 % 41), 1000 + p + 1);
    CHECK_EQ_INT(state_position(&st, 0), 13);
    CHECK(st.skipped == 1 + 38);

    /* An empty batch changes nothing. */
    b = staging_batch_new();
    REQUIRE(b);
    st.dirty = 0;
    CHECK_EQ_INT(state_apply(&st, b), 0);
    CHECK_EQ_INT(st.dirty, 0);
    staging_batch_free(b);
    state_close(&st);
    state_close(&st); /* zeroed by the first close */
}

static void state_save_load_round_trip_in(const char *dir)
{
    state_t st, back;
    REQUIRE(state_init(&st, STATE_TEST_TOPIC) == 0);
    staging_batch_t *b = state_test_batch_a();
    REQUIRE(b);
    CHECK_EQ_INT(state_apply(&st, b), 0);
    staging_batch_free(b);
    char err[512] = "";
    CHECK_EQ_INT(state_save(&st, dir, 2, NULL, NULL, err, sizeof(err)), 0);
    CHECK(st.seq == 1);
    CHECK_EQ_INT(st.dirty, 0);
    CHECK_EQ_INT(state_test_count_names(dir, "checkpoint-00000000000000000001.dckpt"), 1);

    REQUIRE(state_init(&back, STATE_TEST_TOPIC) == 0);
    CHECK_EQ_INT(state_load(&back, dir, NULL, NULL, err, sizeof(err)), 1);
    CHECK(back.seq == 1);
    CHECK_EQ_INT(back.dirty, 0);
    state_test_check_a(&back, __LINE__);
    CHECK_EQ_INT(idmap_rows(back.users), idmap_rows(st.users));
    CHECK_EQ_INT(idmap_rows(back.items), idmap_rows(st.items));
    /* Rows keep their meaning across the restart. */
    CHECK_EQ_INT(idmap_find(back.users, "u2", 2), idmap_find(st.users, "u2", 2));
    CHECK_EQ_INT(idmap_find(back.items, "i3", 2), idmap_find(st.items, "i3", 2));

    /* Continue on the restored state: replaying batch A is all duplicates
     * and skips (the offsets it covers are already applied, but the state
     * itself does not filter; the consumer starts at the positions). */
    b = staging_batch_new();
    REQUIRE(b);
    state_test_add(b, STAGED_ADD, 0, 13, "u1", "i1");
    state_test_add(b, STAGED_ADD, 0, 14, "u4", "i1");
    state_test_add(b, STAGED_ADD, 3, 0, "u2", "i4");
    CHECK_EQ_INT(state_apply(&back, b), 0);
    staging_batch_free(b);
    CHECK(back.applied == 6 && back.duplicates == 2);
    CHECK_EQ_INT(state_position(&back, 0), 15);
    CHECK_EQ_INT(state_position(&back, 3), 1);
    CHECK_EQ_INT(state_save(&back, dir, 2, NULL, NULL, err, sizeof(err)), 0);
    CHECK(back.seq == 2);

    /* A third state loads seq 2; saving an unchanged state still advances
     * the sequence. */
    state_t third;
    REQUIRE(state_init(&third, STATE_TEST_TOPIC) == 0);
    CHECK_EQ_INT(state_load(&third, dir, NULL, NULL, err, sizeof(err)), 1);
    CHECK(third.seq == 2);
    CHECK(state_test_dump_is(&third, "u1\ti1\nu1\ti2\nu2\ti1\nu2\ti4\nu3\ti3\nu4\ti1\n",
                             __LINE__));
    CHECK(third.applied == 6 && third.duplicates == 2 && third.skipped == 1 &&
          third.forgotten == 1);
    CHECK_EQ_INT(state_position(&third, 1), 7);
    CHECK_EQ_INT(state_position(&third, 2), 8);
    CHECK_EQ_INT(state_save(&third, dir, 2, NULL, NULL, err, sizeof(err)), 0);
    CHECK(third.seq == 3);
    ckpt_test_expect_list(dir, (const uint64_t[]){ 3, 2 }, 2, __LINE__);

    /* Loading over a state that already holds data replaces it. */
    CHECK_EQ_INT(state_load(&st, dir, NULL, NULL, err, sizeof(err)), 1);
    CHECK(st.seq == 3);
    CHECK_EQ_INT(iset_count(st.inter), 6);
    state_close(&st);
    state_close(&back);
    state_close(&third);
}

TEST(state_save_load_round_trip) { state_test_in_dir(state_save_load_round_trip_in); }

static void state_forget_erases_user_in(const char *dir)
{
    static const char secret[] = "alice-SECRET-7f3a";
    state_t st;
    REQUIRE(state_init(&st, STATE_TEST_TOPIC) == 0);
    staging_batch_t *b = staging_batch_new();
    REQUIRE(b);
    state_test_add(b, STAGED_ADD, 0, 0, secret, "i1");
    state_test_add(b, STAGED_ADD, 0, 1, "bob", "i1");
    state_test_add(b, STAGED_ADD, 0, 2, secret, "i2");
    CHECK_EQ_INT(state_apply(&st, b), 0);
    staging_batch_free(b);
    char err[512] = "";
    CHECK_EQ_INT(state_save(&st, dir, 1, NULL, NULL, err, sizeof(err)), 0);
    /* The id is in the checkpoint, so the search below can find it. */
    CHECK_EQ_INT(state_test_dir_holds(dir, secret, strlen(secret)), 1);
    int64_t row = idmap_find(st.users, secret, strlen(secret));
    CHECK_EQ_INT(row, 0);

    b = staging_batch_new();
    REQUIRE(b);
    state_test_add(b, STAGED_FORGET, 0, 3, secret, NULL);
    CHECK_EQ_INT(state_apply(&st, b), 0);
    staging_batch_free(b);
    CHECK(st.forgotten == 1);
    CHECK_EQ_INT(idmap_find(st.users, secret, strlen(secret)), -1);
    size_t len;
    CHECK(idmap_key(st.users, row, &len) == NULL);
    int32_t n = -1;
    CHECK(iset_items(st.inter, row, &n) == NULL && n == 0);
    CHECK_EQ_INT(iset_count(st.inter), 1);
    CHECK(state_test_dump_is(&st, "bob\ti1\n", __LINE__));
    CHECK_EQ_INT(state_position(&st, 0), 4);

    CHECK_EQ_INT(state_save(&st, dir, 1, NULL, NULL, err, sizeof(err)), 0);
    ckpt_test_expect_list(dir, (const uint64_t[]){ 2 }, 1, __LINE__);
    /* Nowhere in the directory, not even a part of it. */
    CHECK_EQ_INT(state_test_dir_holds(dir, secret, strlen(secret)), 0);
    CHECK_EQ_INT(state_test_dir_holds(dir, "SECRET", 6), 0);
    CHECK_EQ_INT(state_test_dir_holds(dir, "bob", 3), 1);

    /* Restored: the row stays a hole, the user is unknown, and returning
     * gives a new row. */
    state_t back;
    REQUIRE(state_init(&back, STATE_TEST_TOPIC) == 0);
    CHECK_EQ_INT(state_load(&back, dir, NULL, NULL, err, sizeof(err)), 1);
    CHECK_EQ_INT(idmap_rows(back.users), 2);
    CHECK_EQ_INT(idmap_count(back.users), 1);
    CHECK(idmap_key(back.users, row, &len) == NULL);
    CHECK_EQ_INT(idmap_find(back.users, secret, strlen(secret)), -1);
    CHECK_EQ_INT(idmap_find(back.users, "bob", 3), 1);
    CHECK(back.forgotten == 1 && back.applied == 3);
    CHECK(state_test_dump_is(&back, "bob\ti1\n", __LINE__));
    b = staging_batch_new();
    REQUIRE(b);
    state_test_add(b, STAGED_ADD, 0, 4, secret, "i2");
    CHECK_EQ_INT(state_apply(&back, b), 0);
    staging_batch_free(b);
    CHECK_EQ_INT(idmap_find(back.users, secret, strlen(secret)), 2);
    CHECK(state_test_dump_is(&back, "bob\ti1\nalice-SECRET-7f3a\ti2\n", __LINE__));
    state_close(&back);
    state_close(&st);
}

TEST(state_forget_erases_user_from_checkpoint) { state_test_in_dir(state_forget_erases_user_in); }

/* Saves state A (seq 1) and A + more (seq 2) with keep 2, damages seq 2 in
 * way `kind`, and expects state_load to fall back to seq 1. */
static void state_test_fallback(const char *dir, int kind)
{
    state_t st;
    REQUIRE(state_init(&st, STATE_TEST_TOPIC) == 0);
    staging_batch_t *b = state_test_batch_a();
    REQUIRE(b);
    CHECK_EQ_INT(state_apply(&st, b), 0);
    staging_batch_free(b);
    char err[512] = "";
    REQUIRE(state_save(&st, dir, 2, NULL, NULL, err, sizeof(err)) == 0);
    b = staging_batch_new();
    REQUIRE(b);
    state_test_add(b, STAGED_ADD, 0, 20, "late", "i9");
    CHECK_EQ_INT(state_apply(&st, b), 0);
    staging_batch_free(b);
    REQUIRE(state_save(&st, dir, 2, NULL, NULL, err, sizeof(err)) == 0);
    state_close(&st);

    char p2[4096];
    checkpoint_path(dir, 2, p2, sizeof(p2));
    size_t len;
    unsigned char *data = state_test_read(p2, &len);
    REQUIRE(data);
    switch (kind) {
    case 0: /* a flipped byte in the last section */
        data[len - 3] ^= 0x20;
        REQUIRE(state_test_put(p2, data, len) == 0);
        break;
    case 1: /* a flipped byte in the header */
        data[17] ^= 0x01;
        REQUIRE(state_test_put(p2, data, len) == 0);
        break;
    case 2: /* torn */
        REQUIRE(state_test_put(p2, data, len - 1) == 0);
        break;
    case 3: /* empty */
        REQUIRE(state_test_put(p2, data, 0) == 0);
        break;
    default: /* not a file */
        REQUIRE(unlink(p2) == 0);
        REQUIRE(mkdir(p2, 0755) == 0);
        break;
    }
    free(data);

    state_t back;
    REQUIRE(state_init(&back, STATE_TEST_TOPIC) == 0);
    CHECK_EQ_INT(state_load(&back, dir, NULL, NULL, err, sizeof(err)), 1);
    CHECK(back.seq == 1);
    state_test_check_a(&back, __LINE__);
    CHECK_EQ_INT(idmap_find(back.users, "late", 4), -1);

    /* The next save replaces the damaged seq 2 (for the directory case,
     * rename over a directory fails: the save reports it). */
    int rc = state_save(&back, dir, 2, NULL, NULL, err, sizeof(err));
    if (kind < 4) {
        CHECK_EQ_INT(rc, 0);
        state_t again;
        REQUIRE(state_init(&again, STATE_TEST_TOPIC) == 0);
        CHECK_EQ_INT(state_load(&again, dir, NULL, NULL, err, sizeof(err)), 1);
        CHECK(again.seq == 2);
        state_test_check_a(&again, __LINE__);
        state_close(&again);
    } else {
        CHECK(rc < 0);
        CHECK(err[0] != '\0');
    }
    state_close(&back);
}

static void state_fallback_flip_in(const char *dir) { state_test_fallback(dir, 0); }
static void state_fallback_header_in(const char *dir) { state_test_fallback(dir, 1); }
static void state_fallback_torn_in(const char *dir) { state_test_fallback(dir, 2); }
static void state_fallback_empty_in(const char *dir) { state_test_fallback(dir, 3); }
static void state_fallback_dir_in(const char *dir) { state_test_fallback(dir, 4); }

TEST(state_load_falls_back_past_corrupt_newest)
{
    state_test_quiet();
    state_test_in_dir(state_fallback_flip_in);
    state_test_in_dir(state_fallback_header_in);
    state_test_in_dir(state_fallback_torn_in);
    state_test_in_dir(state_fallback_empty_in);
    state_test_in_dir(state_fallback_dir_in);
}

static void state_all_corrupt_in(const char *dir)
{
    state_t st;
    REQUIRE(state_init(&st, STATE_TEST_TOPIC) == 0);
    staging_batch_t *b = state_test_batch_a();
    REQUIRE(b);
    CHECK_EQ_INT(state_apply(&st, b), 0);
    staging_batch_free(b);
    char err[512] = "";
    REQUIRE(state_save(&st, dir, 2, NULL, NULL, err, sizeof(err)) == 0);
    REQUIRE(state_save(&st, dir, 2, NULL, NULL, err, sizeof(err)) == 0);
    state_close(&st);
    for (uint64_t s = 1; s <= 2; s++) {
        char path[4096];
        checkpoint_path(dir, s, path, sizeof(path));
        REQUIRE(state_test_flip(path, 40 + s, 0x04) == 0);
    }
    REQUIRE(state_init(&st, STATE_TEST_TOPIC) == 0);
    err[0] = '\0';
    int rc = state_load(&st, dir, NULL, NULL, err, sizeof(err));
    CHECK(rc < 0);
    CHECK_EQ_INT(rc, -EBADMSG);
    CHECK(strstr(err, "no usable checkpoint") != NULL);
    CHECK(strstr(err, "checksum") != NULL);
    /* st is still the empty state it was. */
    CHECK(st.seq == 0 && st.applied == 0);
    CHECK_EQ_INT(iset_count(st.inter), 0);
    CHECK_EQ_INT(idmap_rows(st.users), 0);
    CHECK(st.topic && strcmp(st.topic, STATE_TEST_TOPIC) == 0);
    state_close(&st);
}

TEST(state_load_fails_when_every_checkpoint_is_corrupt)
{
    state_test_quiet();
    state_test_in_dir(state_all_corrupt_in);
}

static void state_empty_dir_in(const char *dir)
{
    state_t st;
    REQUIRE(state_init(&st, STATE_TEST_TOPIC) == 0);
    char err[512] = "";
    ckpt_test_touch(dir, "notes.txt");
    CHECK_EQ_INT(state_load(&st, dir, NULL, NULL, err, sizeof(err)), 0);
    CHECK(st.seq == 0);
    CHECK_EQ_INT(idmap_rows(st.users), 0);
    char missing[4096];
    snprintf(missing, sizeof(missing), "%s/missing", dir);
    CHECK_EQ_INT(state_load(&st, missing, NULL, NULL, err, sizeof(err)), 0);
    /* Saving into a missing directory fails and leaves the state as is. */
    staging_batch_t *b = state_test_batch_a();
    REQUIRE(b);
    CHECK_EQ_INT(state_apply(&st, b), 0);
    staging_batch_free(b);
    err[0] = '\0';
    CHECK(state_save(&st, missing, 2, NULL, NULL, err, sizeof(err)) < 0);
    CHECK(err[0] != '\0');
    CHECK(st.seq == 0);
    CHECK_EQ_INT(st.dirty, 1);
    state_close(&st);
}

TEST(state_load_empty_or_missing_dir) { state_test_in_dir(state_empty_dir_in); }

static void state_other_topic_in(const char *dir)
{
    state_t st;
    REQUIRE(state_init(&st, STATE_TEST_TOPIC) == 0);
    staging_batch_t *b = state_test_batch_a();
    REQUIRE(b);
    CHECK_EQ_INT(state_apply(&st, b), 0);
    staging_batch_free(b);
    char err[512] = "";
    REQUIRE(state_save(&st, dir, 2, NULL, NULL, err, sizeof(err)) == 0);
    state_close(&st);

    const char *others[] = { "clicks", "event", "eventsx", "" };
    for (int k = 0; k < 4; k++) {
        REQUIRE(state_init(&st, others[k]) == 0);
        err[0] = '\0';
        CHECK(state_load(&st, dir, NULL, NULL, err, sizeof(err)) < 0);
        CHECK(strstr(err, "topic") != NULL);
        CHECK(strstr(err, "\"" STATE_TEST_TOPIC "\"") != NULL);
        char quoted[64];
        snprintf(quoted, sizeof(quoted), "\"%s\"", others[k]);
        CHECK(strstr(err, quoted) != NULL);
        CHECK_EQ_INT(iset_count(st.inter), 0);
        CHECK(st.seq == 0);
        state_close(&st);
    }
}

TEST(state_load_refuses_another_topic)
{
    state_test_quiet();
    state_test_in_dir(state_other_topic_in);
}

static void state_crash_temp_in(const char *dir)
{
    state_t st;
    REQUIRE(state_init(&st, STATE_TEST_TOPIC) == 0);
    staging_batch_t *b = state_test_batch_a();
    REQUIRE(b);
    CHECK_EQ_INT(state_apply(&st, b), 0);
    staging_batch_free(b);
    char err[512] = "";
    REQUIRE(state_save(&st, dir, 2, NULL, NULL, err, sizeof(err)) == 0);
    b = staging_batch_new();
    REQUIRE(b);
    state_test_add(b, STAGED_ADD, 0, 20, "late", "i9");
    CHECK_EQ_INT(state_apply(&st, b), 0);
    staging_batch_free(b);
    REQUIRE(state_save(&st, dir, 2, NULL, NULL, err, sizeof(err)) == 0);
    state_close(&st);

    /* seq 2 was written but the crash came before its rename; a later
     * attempt at seq 3 was torn halfway. */
    char p2[4096], tmp[4096 + 32];
    checkpoint_path(dir, 2, p2, sizeof(p2));
    size_t len;
    unsigned char *data = state_test_read(p2, &len);
    REQUIRE(data);
    snprintf(tmp, sizeof(tmp), "%s.tmp.Zq81Lm", p2);
    REQUIRE(rename(p2, tmp) == 0);
    checkpoint_path(dir, 3, tmp, sizeof(tmp));
    strcat(tmp, ".tmp.w0W0w0");
    REQUIRE(state_test_put(tmp, data, len / 2) == 0);
    free(data);
    CHECK_EQ_INT(state_test_count_names(dir, ".tmp."), 2);

    REQUIRE(state_init(&st, STATE_TEST_TOPIC) == 0);
    CHECK_EQ_INT(state_load(&st, dir, NULL, NULL, err, sizeof(err)), 1);
    CHECK(st.seq == 1);
    state_test_check_a(&st, __LINE__);
    CHECK_EQ_INT(state_test_count_names(dir, ".tmp."), 0);
    CHECK_EQ_INT(state_test_count_names(dir, "checkpoint-"), 1);
    state_close(&st);
}

TEST(state_load_after_crash_sweeps_temp_files)
{
    state_test_quiet();
    state_test_in_dir(state_crash_temp_in);
}

/*
 * Checkpoints whose container verifies but whose contents do not make a
 * state: each must be refused with a reason. Variant 0 is the valid base
 * (users u0, u1; items i0, i1; u0: i0 i1, u1: i1; partition 0 at 10).
 */
enum { STATE_CRAFT_VARIANTS = 22 };

static int state_test_craft(const char *dir, int v)
{
    checkpoint_writer_t *w = checkpoint_writer_new();
    if (!w)
        return -ENOMEM;
    buf_t *b;
    if (v != 1) {
        b = checkpoint_writer_section(w, CKPT_META);
        int n = v == 2 ? 3 : 4; /* 2: truncated meta */
        for (int k = 0; k < n; k++)
            buf_put_u64(b, (uint64_t)k + 1);
    }
    b = checkpoint_writer_section(w, CKPT_USERS);
    if (v == 3) { /* more rows than fit */
        buf_put_u64(b, 1000);
        buf_put_str16(b, "u0", 2);
    } else if (v == 4) { /* a repeated id */
        buf_put_u64(b, 2);
        buf_put_str16(b, "u0", 2);
        buf_put_str16(b, "u0", 2);
    } else if (v == 20) { /* an id no event could carry: it would break dump lines */
        buf_put_u64(b, 2);
        buf_put_str16(b, "u0", 2);
        buf_put_str16(b, "u\n1", 3);
    } else if (v == 17) { /* a row running past the section */
        buf_put_u64(b, 2);
        buf_put_str16(b, "u0", 2);
        buf_put_u16(b, 40);
        buf_put(b, "u1", 2);
    } else {
        buf_put_u64(b, 2);
        buf_put_str16(b, "u0", 2);
        buf_put_str16(b, "u1", 2);
        if (v == 5) /* trailing bytes */
            buf_put_u16(b, 0);
    }
    if (v != 14) {
        b = checkpoint_writer_section(w, CKPT_ITEMS);
        buf_put_u64(b, 2);
        buf_put_str16(b, "i0", 2);
        if (v == 21) /* 21: item row 1, which has pairs, without an id */
            buf_put_u16(b, 0);
        else
            buf_put_str16(b, "i1", 2);
    }
    if (v != 18) {
        b = checkpoint_writer_section(w, CKPT_INTERACTIONS);
        buf_put_u64(b, v == 9 ? 3 : 2);             /* 9: more users than ids */
        buf_put_u64(b, v == 8 ? 4 : 3);             /* 8: wrong total */
        buf_put_u32(b, v == 15 ? 1000 : 2);         /* 15: count past the end */
        buf_put_u32(b, 0);
        buf_put_u32(b, v == 7 ? 0 : 1);             /* 7: an item twice */
        buf_put_u32(b, 1);
        buf_put_u32(b, v == 6 ? 5 : 1);             /* 6: an item row without id */
        if (v == 9)
            buf_put_u32(b, 0);
        if (v == 16) /* trailing bytes */
            buf_put_u32(b, 0);
    }
    if (v != 13) {
        b = checkpoint_writer_section(w, CKPT_OFFSETS);
        buf_put_str16(b, STATE_TEST_TOPIC, strlen(STATE_TEST_TOPIC));
        buf_put_u32(b, v == 19 ? 2 : 1); /* 19: more entries than bytes */
        buf_put_u32(b, v == 11 ? 0x80000000u : 0);
        buf_put_u64(b, v == 12 ? (uint64_t)INT64_MAX + 1 : 10);
        if (v == 10)
            buf_put(b, "x", 1);
    }
    /* A section no reader knows is skipped. */
    buf_put(checkpoint_writer_section(w, CKPT_MODELS + 3), "model bytes", 11);
    char err[512] = "";
    int rc = checkpoint_writer_commit(w, dir, 1, 0, 0, err, sizeof(err));
    if (rc)
        test_fail(__FILE__, __LINE__, "commit: %s", err);
    checkpoint_writer_free(w);
    return rc;
}

static void state_load_rejects_bad_contents_in(const char *dir)
{
    char path[4096];
    checkpoint_path(dir, 1, path, sizeof(path));
    for (int v = 0; v < STATE_CRAFT_VARIANTS; v++) {
        REQUIRE(state_test_craft(dir, v) == 0);
        state_t st;
        REQUIRE(state_init(&st, STATE_TEST_TOPIC) == 0);
        char err[512] = "";
        int rc = state_load(&st, dir, NULL, NULL, err, sizeof(err));
        if (v == 0) {
            CHECK_EQ_INT(rc, 1);
            CHECK(st.seq == 1);
            CHECK(st.applied == 1 && st.duplicates == 2 && st.forgotten == 3 &&
                  st.skipped == 4);
            CHECK(state_test_dump_is(&st, "u0\ti0\nu0\ti1\nu1\ti1\n", __LINE__));
            CHECK_EQ_INT(state_position(&st, 0), 10);
        } else {
            if (rc != -EBADMSG || !err[0])
                test_fail(__FILE__, __LINE__, "variant %d: rc %d (%s)", v, rc, err);
            CHECK(st.seq == 0);
            CHECK_EQ_INT(iset_count(st.inter), 0);
            CHECK_EQ_INT(idmap_rows(st.users), 0);
        }
        state_close(&st);
        REQUIRE(unlink(path) == 0);
    }
}

TEST(state_load_rejects_inconsistent_sections)
{
    state_test_quiet();
    state_test_in_dir(state_load_rejects_bad_contents_in);
}

/* A stream every write to fails, as on a full disk (no /dev/full needed). */
static ssize_t state_test_full_write(void *cookie, const char *buf, size_t n)
{
    (void)cookie, (void)buf, (void)n;
    errno = ENOSPC;
    return -1;
}

TEST(state_dump_reports_write_errors)
{
    FILE *f = fopencookie(NULL, "w", (cookie_io_functions_t){ .write = state_test_full_write });
    REQUIRE(f);
    state_t st;
    REQUIRE(state_init(&st, STATE_TEST_TOPIC) == 0);
    staging_batch_t *b = state_test_batch_a();
    REQUIRE(b);
    CHECK_EQ_INT(state_apply(&st, b), 0);
    staging_batch_free(b);
    CHECK_EQ_INT(state_dump(&st, f), -EIO);
    fclose(f);
    state_close(&st);
}

/* ---- state: against a reference ------------------------------------------ */

/*
 * The reference: users by name index with their current row, rows with
 * their name index (-1 after a forget) and items in order of arrival; item
 * rows in order of first appearance; counters and positions.
 */
enum { REF_USERS = 300, REF_ITEMS = 400, REF_PARTS = 4, REF_MAXROWS = 4096 };

typedef struct {
    int32_t user_row[REF_USERS]; /* -1 = unknown */
    int32_t row_user[REF_MAXROWS];
    int32_t *row_items[REF_MAXROWS];
    int32_t row_n[REF_MAXROWS], row_cap[REF_MAXROWS];
    int32_t n_rows;
    int32_t item_name[REF_ITEMS]; /* item row -> name index */
    int32_t item_row[REF_ITEMS];  /* name index -> row, -1 = unknown */
    int32_t n_items;
    uint64_t applied, duplicates, forgotten, skipped;
    int64_t pos[REF_PARTS];
} state_ref_t;

static void state_ref_add(state_ref_t *r, int user, int item)
{
    if (r->user_row[user] < 0) {
        r->user_row[user] = r->n_rows;
        r->row_user[r->n_rows++] = user;
    }
    if (r->item_row[item] < 0) {
        r->item_row[item] = r->n_items;
        r->item_name[r->n_items++] = item;
    }
    int32_t u = r->user_row[user], i = r->item_row[item];
    for (int k = 0; k < r->row_n[u]; k++)
        if (r->row_items[u][k] == i) {
            r->duplicates++;
            return;
        }
    if (r->row_n[u] == r->row_cap[u]) {
        r->row_cap[u] = r->row_cap[u] ? 2 * r->row_cap[u] : 8;
        r->row_items[u] = realloc(r->row_items[u], (size_t)r->row_cap[u] * sizeof(int32_t));
        if (!r->row_items[u])
            abort();
    }
    r->row_items[u][r->row_n[u]++] = i;
    r->applied++;
}

static void state_ref_forget(state_ref_t *r, int user)
{
    int32_t u = r->user_row[user];
    if (u >= 0) {
        r->row_user[u] = -1;
        r->row_n[u] = 0;
        r->user_row[user] = -1;
    }
    r->forgotten++;
}

/* The dump the reference expects (malloc'd). */
static char *state_ref_dump(const state_ref_t *r)
{
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    if (!f)
        return NULL;
    for (int32_t u = 0; u < r->n_rows; u++)
        for (int k = 0; r->row_user[u] >= 0 && k < r->row_n[u]; k++)
            fprintf(f, "user-%d\titem-%d\n", r->row_user[u], r->item_name[r->row_items[u][k]]);
    fclose(f);
    return text;
}

/* Compares st with the reference; returns 1 when they agree. */
static int state_ref_check(const state_t *st, const state_ref_t *r, int step)
{
    int ok = st->applied == r->applied && st->duplicates == r->duplicates &&
             st->forgotten == r->forgotten && st->skipped == r->skipped;
    for (int p = 0; p < REF_PARTS; p++)
        ok = ok && state_position(st, p) == r->pos[p];
    ok = ok && state_position(st, REF_PARTS) == -1;
    ok = ok && idmap_rows(st->users) == r->n_rows && idmap_rows(st->items) == r->n_items;
    char *want = state_ref_dump(r), *got = state_test_dump(st);
    ok = ok && want && got && strcmp(want, got) == 0;
    if (!ok)
        test_fail(__FILE__, __LINE__, "step %d: state and reference differ "
                  "(applied %" PRIu64 "/%" PRIu64 ", dup %" PRIu64 "/%" PRIu64 ", rows %"
                  PRId64 "/%d)", step, st->applied, r->applied, st->duplicates,
                  r->duplicates, idmap_rows(st->users), r->n_rows);
    free(want);
    free(got);
    return ok;
}

static void state_random_in(const char *dir)
{
    enum { BATCHES = 150 };
    rng_t rng;
    rng_init_stream(&rng, 6, RNG_TEST, 0x57a7e, 0);
    state_ref_t *r = calloc(1, sizeof(*r));
    REQUIRE(r);
    for (int k = 0; k < REF_USERS; k++)
        r->user_row[k] = -1;
    for (int k = 0; k < REF_ITEMS; k++)
        r->item_row[k] = -1;
    for (int p = 0; p < REF_PARTS; p++)
        r->pos[p] = -1;
    int64_t next_off[REF_PARTS] = { 0 };

    state_t st;
    REQUIRE(state_init(&st, STATE_TEST_TOPIC) == 0);
    int saves = 0, loads = 0, bad = 0;
    uint64_t seq = 0;
    for (int batch = 0; batch < BATCHES && !bad; batch++) {
        staging_batch_t *b = staging_batch_new();
        REQUIRE(b);
        int n = 1 + (int)rng_below(&rng, 300);
        for (int k = 0; k < n; k++) {
            int32_t p = (int32_t)rng_below(&rng, REF_PARTS);
            int64_t off = next_off[p];
            next_off[p] += 1 + rng_below(&rng, 3); /* compacted topics leave gaps */
            if (rng_below(&rng, 20) == 0 && off > 5)
                off -= 1 + rng_below(&rng, 5); /* a replayed event */
            if (off + 1 > r->pos[p])
                r->pos[p] = off + 1;
            /* Heavy users and items make duplicates common. */
            int user = (int)(rng_below(&rng, 3) ? rng_below(&rng, 40) : rng_below(&rng, REF_USERS));
            int item = (int)(rng_below(&rng, 2) ? rng_below(&rng, 30) : rng_below(&rng, REF_ITEMS));
            char uname[32], iname[32];
            snprintf(uname, sizeof(uname), "user-%d", user);
            snprintf(iname, sizeof(iname), "item-%d", item);
            uint32_t what = rng_below(&rng, 100);
            if (what < 88) {
                state_test_add(b, STAGED_ADD, p, off, uname, iname);
                state_ref_add(r, user, item);
            } else if (what < 92) {
                state_test_add(b, STAGED_FORGET, p, off, uname, NULL);
                state_ref_forget(r, user);
            } else {
                state_test_add(b, STAGED_SKIP, p, off, NULL, NULL);
                r->skipped++;
            }
        }
        REQUIRE(r->n_rows < REF_MAXROWS);
        CHECK_EQ_INT(state_apply(&st, b), 0);
        staging_batch_free(b);
        bad += !state_ref_check(&st, r, batch);

        if (rng_below(&rng, 4) == 0) {
            char err[512] = "";
            int rc = state_save(&st, dir, 2, NULL, NULL, err, sizeof(err));
            if (rc)
                test_fail(__FILE__, __LINE__, "save: %s", err);
            seq++;
            saves++;
            bad += st.seq != seq;
            if (rng_below(&rng, 2) == 0) {
                state_t back;
                REQUIRE(state_init(&back, STATE_TEST_TOPIC) == 0);
                rc = state_load(&back, dir, NULL, NULL, err, sizeof(err));
                if (rc != 1)
                    test_fail(__FILE__, __LINE__, "load: %d %s", rc, err);
                bad += back.seq != seq;
                state_close(&st);
                st = back;
                loads++;
                bad += !state_ref_check(&st, r, batch);
            }
        }
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(saves >= 10 && loads >= 5);
    CHECK(r->forgotten > 0 && r->duplicates > 0 && r->skipped > 0);
    CHECK(state_test_count_names(dir, "checkpoint-") <= 2);
    state_close(&st);
    for (int k = 0; k < REF_MAXROWS; k++)
        free(r->row_items[k]);
    free(r);
}

TEST(state_random_batches_against_reference) { state_test_in_dir(state_random_in); }

/* ---- the staging queue ---------------------------------------------------- */

static staging_batch_t *state_test_batch_of(int n, int64_t off0)
{
    staging_batch_t *b = staging_batch_new();
    for (int k = 0; b && k < n; k++) {
        char u[16];
        int ul = snprintf(u, sizeof(u), "u%d", k);
        if (staging_batch_add(b, STAGED_ADD, 0, off0 + k, u, (size_t)ul, "i", 1) < 0) {
            staging_batch_free(b);
            return NULL;
        }
    }
    return b;
}

/* Batches come out whole, oldest first, all at once; depth counts events. */
TEST(staging_queue_order_and_depth)
{
    staging_t *s = staging_new();
    REQUIRE(s);
    CHECK(staging_take(s, 0) == NULL);
    staging_batch_t *in[3] = { state_test_batch_of(2, 0), state_test_batch_of(3, 2),
                               state_test_batch_of(1, 5) };
    REQUIRE(in[0] && in[1] && in[2]);
    for (int k = 0; k < 3; k++)
        staging_push(s, in[k]);
    CHECK_EQ_INT(staging_depth(s), 6);
    staging_batch_t *list = staging_take(s, 0);
    CHECK_EQ_INT(staging_depth(s), 0);
    int k = 0;
    while (list) {
        staging_batch_t *b = list;
        list = b->next;
        if (k < 3)
            CHECK(b == in[k]);
        k++;
        staging_batch_free(b);
    }
    CHECK_EQ_INT(k, 3);
    CHECK(staging_take(s, 0) == NULL);
    /* Freeing the queue frees what it still holds (the leak check sees). */
    staging_push(s, state_test_batch_of(4, 6));
    staging_free(s);
}

typedef struct {
    staging_t *s;
    staging_batch_t *got;
    double waited;
} state_test_taker_t;

static void *state_test_taker(void *arg)
{
    state_test_taker_t *t = arg;
    double t0 = test_now();
    t->got = staging_take(t->s, 30000);
    t->waited = test_now() - t0;
    return NULL;
}

/* A take waits for its timeout when nothing comes, and returns as soon as a
 * batch is pushed or the queue is woken, not at the end of its timeout. */
TEST(staging_take_waits_until_a_push_or_a_wake)
{
    staging_t *s = staging_new();
    REQUIRE(s);
    double t0 = test_now();
    CHECK(staging_take(s, 150) == NULL);
    CHECK(test_now() - t0 >= 0.14);
    struct timespec pause = { 0, 100 * 1000 * 1000 };
    for (int round = 0; round < 2; round++) {
        state_test_taker_t t = { s, NULL, 0.0 };
        pthread_t th;
        REQUIRE(pthread_create(&th, NULL, state_test_taker, &t) == 0);
        nanosleep(&pause, NULL);
        staging_batch_t *b = NULL;
        if (round == 0)
            staging_push(s, b = state_test_batch_of(1, 0));
        else
            staging_wake(s);
        pthread_join(th, NULL);
        CHECK(t.got == b);
        /* Well before the 30 s timeout: woken, not timed out. */
        CHECK(t.waited < 15.0);
        staging_batch_free(t.got);
    }
    staging_free(s);
}

/* buf_parse_dec: the canonical decimal and nothing else, bounded by max. */
static int parse_dec(const char *s, uint64_t max, uint64_t *out)
{
    return buf_parse_dec(s, strlen(s), max, out);
}

TEST(buf_parse_dec_takes_only_canonical_decimals)
{
    uint64_t v = 1;
    CHECK(parse_dec("0", UINT64_MAX, &v) == 0 && v == 0);
    CHECK(parse_dec("7", UINT64_MAX, &v) == 0 && v == 7);
    CHECK(parse_dec("1234567", UINT64_MAX, &v) == 0 && v == 1234567);
    CHECK(parse_dec("18446744073709551615", UINT64_MAX, &v) == 0 && v == UINT64_MAX);
    CHECK(parse_dec("9223372036854775807", INT64_MAX, &v) == 0 && v == INT64_MAX);
    CHECK(parse_dec("2147483647", INT32_MAX, &v) == 0 && v == INT32_MAX);
    CHECK(parse_dec("3", 3, &v) == 0 && v == 3);
    CHECK(parse_dec("0", 0, &v) == 0 && v == 0);

    static const char *const bad[] = {
        "", " 7", "7 ", "+7", "-7", "-0", "07", "00", "0x7", "7a", "1e3", "1.0", "\t1",
        "18446744073709551616", /* 2^64: wraps an unchecked u64 to 0 */
        "99999999999999999999999",
    };
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        v = 42;
        if (parse_dec(bad[k], UINT64_MAX, &v) != -EINVAL || v != 42)
            test_fail(__FILE__, __LINE__, "'%s' was taken (%llu)", bad[k], (unsigned long long)v);
    }
    /* the bound: max itself passes, max + 1 does not, whatever its digits */
    v = 42;
    CHECK(parse_dec("9223372036854775808", INT64_MAX, &v) == -EINVAL && v == 42);
    CHECK(parse_dec("2147483648", INT32_MAX, &v) == -EINVAL && v == 42);
    CHECK(parse_dec("4", 3, &v) == -EINVAL);
    CHECK(parse_dec("10", 9, &v) == -EINVAL);
    CHECK(parse_dec("9", 9, &v) == 0 && v == 9);
    CHECK(parse_dec("1", 0, &v) == -EINVAL);
    /* not NUL-terminated: exactly len bytes are read */
    CHECK(buf_parse_dec("123456", 3, UINT64_MAX, &v) == 0 && v == 123);
    static const char nul[] = { '1', '\0', '2' };
    CHECK(buf_parse_dec(nul, sizeof(nul), UINT64_MAX, &v) == -EINVAL);
}
