/*
 * Tests of the io/ layer: crc32c, the leave-one-out dataset reader, the
 * embedding-table file (including a corrupt-file corpus: every single-bit
 * flip and every truncation), and crash-safe file replacement.
 *
 * Every test works in its own mkdtemp directory under /tmp and removes it.
 * Under AddressSanitizer the tests that feed corrupt input also run a leak
 * check before they end, since the runner's children leave with _exit()
 * and LeakSanitizer would otherwise never look.
 */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/crc32c.h"
#include "io/dataset.h"
#include "io/embfile.h"
#include "io/fsutil.h"
#include "io/proc.h"
#include "test.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define IO_TEST_LEAK_CHECK() CHECK(__lsan_do_recoverable_leak_check() == 0)
#else
#define IO_TEST_LEAK_CHECK() ((void)0)
#endif

/* ---- helpers ------------------------------------------------------------- */

/* A fresh directory /tmp/derrd-test-io-XXXXXX; caller frees and removes. */
static char *io_test_dir_new(void)
{
    char *dir = strdup("/tmp/derrd-test-io-XXXXXX");
    if (dir && !mkdtemp(dir)) {
        free(dir);
        dir = NULL;
    }
    return dir;
}

static int io_test_rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Removes dir and everything under it, and frees the name. Accepts NULL. */
static void io_test_dir_free(char *dir)
{
    if (!dir)
        return;
    CHECK(nftw(dir, io_test_rm_cb, 16, FTW_DEPTH | FTW_PHYS) == 0);
    free(dir);
}

/* Runs body in a fresh temporary directory and removes the directory
 * afterwards, also when body returns early from a failed REQUIRE. */
static void io_test_in_dir(void (*body)(const char *dir))
{
    char *dir = io_test_dir_new();
    if (!dir) {
        test_fail(__FILE__, __LINE__, "mkdtemp: %s", strerror(errno));
        return;
    }
    body(dir);
    io_test_dir_free(dir);
}

static void io_test_path(char *out, size_t len, const char *dir, const char *name)
{
    snprintf(out, len, "%s/%s", dir, name);
}

/* Writes len bytes to dir/name (plain, not atomic: these are fixtures).
 * A fresh file rather than a truncated one: ext4 flushes a file truncated
 * and rewritten in place on close (auto_da_alloc), which made the
 * thousand rewrites of the corruption test take seconds. */
static int io_test_put(const char *dir, const char *name, const void *data, size_t len)
{
    char path[512];
    io_test_path(path, sizeof(path), dir, name);
    if (unlink(path) < 0 && errno != ENOENT)
        return -1;
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, len, f);
    int rc = fclose(f);
    return w == len && rc == 0 ? 0 : -1;
}

static int io_test_puts(const char *dir, const char *name, const char *text)
{
    return io_test_put(dir, name, text, strlen(text));
}

/* Number of entries in dir whose name contains sub. */
static int io_test_count_names(const char *dir, const char *sub)
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

/* ---- crc32c -------------------------------------------------------------- */

/* Bit-at-a-time CRC-32C, straight from the definition (reflected polynomial
 * 0x82F63B78, init and final xor 0xFFFFFFFF): the reference for the
 * slicing-by-8 implementation. */
static uint32_t io_test_crc32c_naive(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    uint32_t crc = 0xffffffffu;
    for (size_t k = 0; k < len; k++) {
        crc ^= p[k];
        for (int b = 0; b < 8; b++)
            crc = crc & 1 ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
    }
    return ~crc;
}

TEST(io_crc32c_check_value)
{
    CHECK_EQ_INT(crc32c_update(0, "123456789", 9), 0xE3069283u);
    CHECK_EQ_INT(io_test_crc32c_naive("123456789", 9), 0xE3069283u);
    CHECK_EQ_INT(crc32c_update(0, "", 0), 0);
    CHECK_EQ_INT(crc32c_update(0, NULL, 0), 0);
    /* RFC 3720 (iSCSI) B.4 test vectors: 32 bytes of zeros, of 0xff, and
     * the ascending bytes 0..31. */
    unsigned char v[32];
    memset(v, 0, sizeof(v));
    CHECK_EQ_INT(crc32c_update(0, v, 32), 0x8A9136AAu);
    memset(v, 0xff, sizeof(v));
    CHECK_EQ_INT(crc32c_update(0, v, 32), 0x62A8AB43u);
    for (int k = 0; k < 32; k++)
        v[k] = (unsigned char)k;
    CHECK_EQ_INT(crc32c_update(0, v, 32), 0x46DD794Eu);
}

TEST(io_crc32c_incremental_equals_one_shot)
{
    enum { N = 1000 };
    unsigned char buf[N];
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int k = 0; k < N; k++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        buf[k] = (unsigned char)x;
    }
    /* Every length and every alignment against the bitwise reference,
     * over the 8-byte and the 1-byte paths. */
    for (size_t off = 0; off < 8; off++)
        for (size_t len = 0; len + off <= 80; len++)
            CHECK_EQ_INT(crc32c_update(0, buf + off, len), io_test_crc32c_naive(buf + off, len));
    uint32_t one = crc32c_update(0, buf, N);
    CHECK_EQ_INT(one, io_test_crc32c_naive(buf, N));
    /* Every split point, and a many-piece split with odd piece lengths. */
    for (size_t cut = 0; cut <= N; cut++)
        CHECK_EQ_INT(crc32c_update(crc32c_update(0, buf, cut), buf + cut, N - cut), one);
    uint32_t crc = 0;
    size_t at = 0;
    for (size_t piece = 1; at < N; piece = piece % 13 + 1) {
        size_t n = piece < N - at ? piece : N - at;
        crc = crc32c_update(crc, buf + at, n);
        at += n;
    }
    CHECK_EQ_INT(crc, one);
    buf[500] ^= 0x10;
    CHECK(crc32c_update(0, buf, N) != one);
}

/* ---- dataset: good input ------------------------------------------------- */

/*
 * users 0..3, items 0..7; user 2 has no held-out item and no candidates
 * line; user 3 appears only in candidates.tsv (it still counts); item 7
 * appears only in candidates.tsv (it still counts).
 */
static const char *io_test_train = "0\t1\n0\t2\n1\t0\n1\t3\n2\t4\n";
static const char *io_test_valid = "0\t3\n1\t5\n";
static const char *io_test_test = "0\t4\n";
static const char *io_test_cands = "0\t5\t6\t7\n1\t2\t6\t7\n3\t1\t2\t3\n";

/* Rewrites text with each "\n" as "\r\n" (crlf) and/or without the final
 * newline (chop). Returns a malloc'd string. */
static char *io_test_variant(const char *text, int crlf, int chop)
{
    size_t n = strlen(text);
    char *out = malloc(2 * n + 1), *o = out;
    if (!out)
        return NULL;
    for (size_t k = 0; k < n; k++) {
        if (text[k] == '\n' && chop && k + 1 == n)
            break;
        if (text[k] == '\n' && crlf)
            *o++ = '\r';
        *o++ = text[k];
    }
    *o = 0;
    return out;
}

static int io_test_write_dataset(const char *dir, const char *train, const char *valid,
                                 const char *test, const char *cands, int crlf, int chop)
{
    const char *names[4] = { "train.tsv", "valid.tsv", "test.tsv", "candidates.tsv" };
    const char *texts[4] = { train, valid, test, cands };
    for (int f = 0; f < 4; f++) {
        if (!texts[f])
            continue;
        char *t = io_test_variant(texts[f], crlf, chop);
        int rc = t ? io_test_puts(dir, names[f], t) : -1;
        free(t);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static void io_test_check_good_dataset(const char *dir, int crlf, int chop)
{
    REQUIRE(io_test_write_dataset(dir, io_test_train, io_test_valid, io_test_test,
                                  io_test_cands, crlf, chop) == 0);
    dataset_t ds;
    char err[512] = "";
    int rc = dataset_load(&ds, dir, err, sizeof(err));
    if (rc != 0)
        test_fail(__FILE__, __LINE__, "dataset_load (crlf %d, chop %d): %d %s", crlf, chop,
                  rc, err);
    REQUIRE(rc == 0);
    CHECK_EQ_INT(ds.n_users, 4);
    CHECK_EQ_INT(ds.n_items, 8);
    CHECK_EQ_INT(ds.n_train, 5);
    const int32_t tu[5] = { 0, 0, 1, 1, 2 }, ti[5] = { 1, 2, 0, 3, 4 };
    for (int k = 0; k < 5 && ds.n_train == 5; k++) {
        CHECK_EQ_INT(ds.train_u[k], tu[k]);
        CHECK_EQ_INT(ds.train_i[k], ti[k]);
    }
    const int32_t va[4] = { 3, 5, -1, -1 }, te[4] = { 4, -1, -1, -1 };
    CHECK_EQ_INT(ds.n_cands, 3);
    const int32_t ca[4][3] = { { 5, 6, 7 }, { 2, 6, 7 }, { -1, -1, -1 }, { 1, 2, 3 } };
    if (ds.n_users == 4 && ds.n_cands == 3)
        for (int u = 0; u < 4; u++) {
            CHECK_EQ_INT(ds.valid[u], va[u]);
            CHECK_EQ_INT(ds.test[u], te[u]);
            for (int c = 0; c < 3; c++)
                CHECK_EQ_INT(ds.cands[u * 3 + c], ca[u][c]);
        }
    CHECK_EQ_INT(dataset_check_items(&ds, dir, err, sizeof(err)), 0);
    dataset_close(&ds);
    CHECK(ds.train_u == NULL && ds.cands == NULL && ds.n_users == 0);
    dataset_close(&ds); /* twice is harmless after close zeroes it */
}

TEST(io_dataset_load_good)
{
    char *dir = io_test_dir_new();
    REQUIRE(dir);
    io_test_check_good_dataset(dir, 0, 0);
    io_test_dir_free(dir);
}

TEST(io_dataset_load_crlf_and_no_final_newline)
{
    for (int crlf = 0; crlf < 2; crlf++)
        for (int chop = 0; chop < 2; chop++) {
            char *dir = io_test_dir_new();
            REQUIRE(dir);
            io_test_check_good_dataset(dir, crlf, chop);
            io_test_dir_free(dir);
        }
}

static void io_dataset_load_largest_id_in(const char *dir)
{
    /* DATASET_MAX_ID - 1 is the largest id accepted (as an item: a user id
     * that large would allocate its per-user arrays). */
    REQUIRE(io_test_write_dataset(dir, "0\t99999999\n0\t0\n", "0\t1\n", "0\t2\n",
                                  "0\t3\t4\n", 0, 0) == 0);
    dataset_t ds;
    char err[512] = "";
    int rc = dataset_load(&ds, dir, err, sizeof(err));
    CHECK_EQ_INT(rc, 0);
    if (rc == 0) {
        CHECK_EQ_INT(ds.n_items, DATASET_MAX_ID);
        CHECK_EQ_INT(ds.n_users, 1);
        CHECK_EQ_INT(ds.n_cands, 2);
        CHECK_EQ_INT(ds.valid[0], 1);
        CHECK_EQ_INT(ds.test[0], 2);
        /* loaded, but no table may be sized by such items (derrd-train) */
        CHECK_EQ_INT(dataset_check_items(&ds, dir, err, sizeof(err)), -EBADMSG);
        CHECK(strstr(err, "item ids must be dense") != NULL && strstr(err, dir) == err);
        dataset_close(&ds);
    }
    /* Sparse users (within their own bound) do not widen the items' one:
     * it counts the ids read, not the tables sized by the largest user. */
    REQUIRE(io_test_write_dataset(dir, "349524\t60000000\n0\t0\n", "0\t1\n", "0\t2\n",
                                  "0\t3\n", 0, 0) == 0);
    rc = dataset_load(&ds, dir, err, sizeof(err));
    CHECK_EQ_INT(rc, 0);
    if (rc == 0) {
        CHECK_EQ_INT(ds.n_ids, 10);
        CHECK_EQ_INT(dataset_check_items(&ds, dir, err, sizeof(err)), -EBADMSG);
        dataset_close(&ds);
    }
}

TEST(io_dataset_load_largest_id)
{
    io_test_in_dir(io_dataset_load_largest_id_in);
}

/* ---- dataset: bad input -------------------------------------------------- */

typedef struct {
    const char *what;
    const char *train, *valid, *test, *cands; /* NULL: the good fixture */
    int crlf;
    int rc;
    const char *where;  /* "file:line:" the message must contain */
    const char *reason; /* and this */
} io_test_bad_t;

static const io_test_bad_t io_test_bad[] = {
    { "non-numeric id", "0\t1\n0\tabc\n", 0, 0, 0, 0, -EBADMSG, "/train.tsv:2:",
      "expected a non-negative integer" },
    { "negative id", "0\t1\n0\t2\n-1\t2\n", 0, 0, 0, 0, -EBADMSG, "/train.tsv:3:",
      "expected a non-negative integer" },
    { "id out of range", "0\t1\n0\t100000000\n", 0, 0, 0, 0, -EBADMSG, "/train.tsv:2:",
      "id out of range" },
    { "user id out of range", 0, "0\t3\n123456789012345678901234567890\t5\n", 0, 0, 0, -EBADMSG,
      "/valid.tsv:2:", "id out of range" },
    { "one column", "0\t1\n0\n", 0, 0, 0, 0, -EBADMSG, "/train.tsv:2:",
      "1 fields, expected 2" },
    { "empty field after a tab", "0\t1\n0\t\n", 0, 0, 0, 0, -EBADMSG, "/train.tsv:2:",
      "missing field" },
    { "three columns", "0\t1\n0\t2\t3\n", 0, 0, 0, 0, -EBADMSG, "/train.tsv:2:",
      "3 fields, expected 2" },
    { "three columns in test.tsv", 0, 0, "0\t4\t5\n", 0, 0, -EBADMSG, "/test.tsv:1:",
      "3 fields, expected 2" },
    { "space instead of a tab", "0\t1\n0 2\n", 0, 0, 0, 0, -EBADMSG, "/train.tsv:2:",
      "expected a tab or the end of the line" },
    { "empty line in the middle", "0\t1\n0\t2\n\n1\t0\n", 0, 0, 0, 0, -EBADMSG,
      "/train.tsv:3:", "missing field" },
    { "empty line in the middle, CRLF", "0\t1\n0\t2\n\n1\t0\n", 0, 0, 0, 1, -EBADMSG,
      "/train.tsv:3:", "expected a non-negative integer" },
    { "bad line 4 of a CRLF file", "0\t1\n0\t2\n1\t0\n1\tx\n", 0, 0, 0, 1, -EBADMSG,
      "/train.tsv:4:", "expected a non-negative integer" },
    { "candidates lines of different lengths", 0, 0, 0, "0\t5\t6\t7\n1\t2\t6\n", 0, -EBADMSG,
      "/candidates.tsv:2:", "3 fields, expected 4" },
    { "a candidates line with no candidate", 0, 0, 0, "0\n", 0, -EBADMSG,
      "/candidates.tsv:1:", "1 fields, expected 2" },
    { "two lines for a user in valid.tsv", 0, "0\t3\n1\t5\n0\t6\n", 0, 0, 0, -EBADMSG,
      "/valid.tsv:3:", "user 0 has a second held-out item" },
    { "two lines for a user in test.tsv", 0, 0, "0\t4\n0\t4\n", 0, 0, -EBADMSG,
      "/test.tsv:2:", "user 0 has a second held-out item" },
    { "two candidates lines for a user", 0, 0, 0, "0\t5\t6\t7\n1\t2\t6\t7\n0\t5\t6\t7\n", 0,
      -EBADMSG, "/candidates.tsv:3:", "user 0 has a second line" },
    /* The line named is the held-out item's. */
    { "held-out item, no candidates line", 0, 0, 0, "0\t5\t6\t7\n", 0, -EBADMSG,
      "/valid.tsv:2:", "user 1 has a held-out item but no line in candidates.tsv" },
    { "held-out items, empty candidates.tsv", 0, 0, 0, "", 0, -EBADMSG, "/valid.tsv:1:",
      "user 0 has a held-out item but no line in candidates.tsv" },
    { "empty valid.tsv", 0, "", 0, 0, 0, -EBADMSG, "/valid.tsv", "no held-out items" },
    { "empty train.tsv", "", 0, 0, 0, 0, -EBADMSG, "/train.tsv", "no interactions" },
};

TEST(io_dataset_load_bad_inputs)
{
    for (size_t k = 0; k < sizeof(io_test_bad) / sizeof(io_test_bad[0]); k++) {
        const io_test_bad_t *b = &io_test_bad[k];
        char *dir = io_test_dir_new();
        REQUIRE(dir);
        int w = io_test_write_dataset(dir, b->train ? b->train : io_test_train,
                                      b->valid ? b->valid : io_test_valid,
                                      b->test ? b->test : io_test_test,
                                      b->cands ? b->cands : io_test_cands, b->crlf, 0);
        CHECK(w == 0);
        dataset_t ds;
        memset(&ds, 0x5a, sizeof(ds));
        char err[512] = "";
        int rc = dataset_load(&ds, dir, err, sizeof(err));
        int ok = rc == b->rc && strstr(err, dir) && strstr(err, b->where) &&
                 strstr(err, b->reason);
        if (!ok)
            test_fail(__FILE__, __LINE__, "%s: rc %d (want %d), err \"%s\" (want \"%s\" and "
                      "\"%s\")", b->what, rc, b->rc, err, b->where, b->reason);
        /* A failed load leaves nothing to free. */
        CHECK(ds.train_u == NULL && ds.valid == NULL && ds.cands == NULL);
        if (rc == 0)
            dataset_close(&ds);
        io_test_dir_free(dir);
    }
    IO_TEST_LEAK_CHECK();
}

TEST(io_dataset_load_missing_files)
{
    const char *names[4] = { "train.tsv", "valid.tsv", "test.tsv", "candidates.tsv" };
    for (int f = 0; f < 4; f++) {
        char *dir = io_test_dir_new();
        REQUIRE(dir);
        CHECK(io_test_write_dataset(dir, io_test_train, io_test_valid, io_test_test,
                                    io_test_cands, 0, 0) == 0);
        char path[512];
        io_test_path(path, sizeof(path), dir, names[f]);
        CHECK(unlink(path) == 0);
        dataset_t ds;
        char err[512] = "";
        int rc = dataset_load(&ds, dir, err, sizeof(err));
        CHECK_EQ_INT(rc, -ENOENT);
        if (!strstr(err, path) || !strstr(err, "No such file"))
            test_fail(__FILE__, __LINE__, "missing %s: err \"%s\"", names[f], err);
        io_test_dir_free(dir);
    }
    dataset_t ds;
    char err[512] = "";
    CHECK_EQ_INT(dataset_load(&ds, "/nonexistent-derrd-dir", err, sizeof(err)), -ENOENT);
    CHECK(strstr(err, "/nonexistent-derrd-dir/train.tsv") != NULL);
    IO_TEST_LEAK_CHECK();
}

/* ---- embfile ------------------------------------------------------------- */

enum { IO_TEST_DIM = 3, IO_TEST_NU = 2, IO_TEST_NI = 4 };
#define IO_TEST_NV ((IO_TEST_NU + IO_TEST_NI) * IO_TEST_DIM)

static void io_test_rows(float *rows)
{
    for (int k = 0; k < IO_TEST_NV; k++)
        rows[k] = (float)(k - 7) * 0.3125f + (k % 3 == 0 ? 1e-30f : 0.0f) -
                  (k == 5 ? 3.4e38f : 0.0f);
}

TEST(io_embfile_round_trip)
{
    char *dir = io_test_dir_new();
    REQUIRE(dir);
    char path[512], err[512] = "";
    io_test_path(path, sizeof(path), dir, "t.emb");
    float rows[IO_TEST_NV];
    io_test_rows(rows);
    int rc = embfile_write(path, IO_TEST_DIM, IO_TEST_NU, IO_TEST_NI, rows, err, sizeof(err));
    if (rc != 0)
        test_fail(__FILE__, __LINE__, "embfile_write: %d %s", rc, err);
    struct stat st;
    CHECK(stat(path, &st) == 0 && st.st_size == 40 + IO_TEST_NV * 4);
    embfile_t ef;
    rc = embfile_read(path, &ef, err, sizeof(err));
    if (rc != 0)
        test_fail(__FILE__, __LINE__, "embfile_read: %d %s", rc, err);
    if (rc == 0) {
        CHECK_EQ_INT(ef.dim, IO_TEST_DIM);
        CHECK_EQ_INT(ef.n_users, IO_TEST_NU);
        CHECK_EQ_INT(ef.n_items, IO_TEST_NI);
        CHECK(memcmp(ef.rows, rows, sizeof(rows)) == 0); /* bit-exact */
        free(ef.rows);
    }
    /* An empty table (no users, no items) is a valid file too. */
    rc = embfile_write(path, 5, 0, 0, rows, err, sizeof(err));
    CHECK_EQ_INT(rc, 0);
    rc = embfile_read(path, &ef, err, sizeof(err));
    CHECK_EQ_INT(rc, 0);
    if (rc == 0) {
        CHECK(ef.dim == 5 && ef.n_users == 0 && ef.n_items == 0 && ef.rows != NULL);
        free(ef.rows);
    }
    /* dim 0 cannot be written. */
    CHECK_EQ_INT(embfile_write(path, 0, 1, 1, rows, err, sizeof(err)), -EINVAL);
    CHECK_EQ_INT(io_test_count_names(dir, ".tmp."), 0);
    io_test_dir_free(dir);
    IO_TEST_LEAK_CHECK();
}

/* The layout of docs/EMBFILE.md built by hand, byte by byte, with the
 * bitwise CRC: embfile_read must accept it, and embfile_write must produce
 * exactly these bytes. Also the golden example printed in the document. */
static void io_test_put32(unsigned char *p, uint32_t v)
{
    for (int k = 0; k < 4; k++)
        p[k] = (unsigned char)(v >> (8 * k));
}

static void io_embfile_matches_documented_layout_in(const char *dir)
{
    char path[512], err[512] = "";
    io_test_path(path, sizeof(path), dir, "doc.emb");
    /* dim 2, 1 user [1, -2], 1 item [0.5, 3]: the example in EMBFILE.md. */
    const unsigned char payload[16] = {
        0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0, /* 1.0f, -2.0f */
        0x00, 0x00, 0x00, 0x3f, 0x00, 0x00, 0x40, 0x40, /* 0.5f, 3.0f */
    };
    unsigned char file[56];
    memset(file, 0, sizeof(file));
    memcpy(file, "DERRDEMB", 8);
    io_test_put32(file + 8, 1);   /* version */
    io_test_put32(file + 12, 2);  /* dim */
    io_test_put32(file + 16, 1);  /* n_users */
    io_test_put32(file + 20, 1);  /* n_items */
    io_test_put32(file + 24, 16); /* payload bytes, u64 low half */
    io_test_put32(file + 28, 0);  /* high half */
    io_test_put32(file + 32, io_test_crc32c_naive(payload, 16));
    io_test_put32(file + 36, io_test_crc32c_naive(file, 36));
    memcpy(file + 40, payload, 16);
    /* The checksums quoted in the document. */
    CHECK_EQ_INT(io_test_crc32c_naive(payload, 16), 0xFCC8B008u);
    CHECK_EQ_INT(io_test_crc32c_naive(file, 36), 0xF7318FBFu);
    REQUIRE(io_test_put(dir, "doc.emb", file, sizeof(file)) == 0);
    embfile_t ef;
    int rc = embfile_read(path, &ef, err, sizeof(err));
    if (rc != 0)
        test_fail(__FILE__, __LINE__, "embfile_read of the documented layout: %d %s", rc, err);
    if (rc == 0) {
        CHECK(ef.dim == 2 && ef.n_users == 1 && ef.n_items == 1);
        CHECK(ef.rows[0] == 1.0f && ef.rows[1] == -2.0f && ef.rows[2] == 0.5f &&
              ef.rows[3] == 3.0f);
        free(ef.rows);
    }
    const float rows[4] = { 1.0f, -2.0f, 0.5f, 3.0f };
    io_test_path(path, sizeof(path), dir, "written.emb");
    CHECK_EQ_INT(embfile_write(path, 2, 1, 1, rows, err, sizeof(err)), 0);
    unsigned char *buf = NULL;
    size_t len = 0;
    CHECK_EQ_INT(fsutil_read_all(path, 1 << 20, &buf, &len, err, sizeof(err)), 0);
    CHECK_EQ_INT(len, sizeof(file));
    CHECK(buf && len == sizeof(file) && memcmp(buf, file, len) == 0);
    free(buf);
}

TEST(io_embfile_matches_documented_layout)
{
    io_test_in_dir(io_embfile_matches_documented_layout_in);
}

TEST(io_embfile_missing_file)
{
    embfile_t ef = { 7, 8, 9, NULL };
    char err[512] = "";
    CHECK_EQ_INT(embfile_read("/nonexistent-derrd-dir/t.emb", &ef, err, sizeof(err)), -ENOENT);
    CHECK(strstr(err, "/nonexistent-derrd-dir/t.emb") != NULL);
    CHECK(ef.dim == 7 && ef.n_users == 8 && ef.n_items == 9 && ef.rows == NULL);
}

/* Reads path, which must be refused with -EBADMSG, leaving out untouched.
 * Returns 1 if so. */
static int io_test_refused(const char *path, char *err, size_t errlen)
{
    embfile_t ef = { 7, 8, 9, NULL };
    err[0] = 0;
    int rc = embfile_read(path, &ef, err, errlen);
    if (rc == 0)
        free(ef.rows);
    return rc == -EBADMSG && err[0] && strstr(err, path) && ef.dim == 7 && ef.n_users == 8 &&
           ef.n_items == 9 && ef.rows == NULL;
}

static void io_test_embfile_corrupt(const char *dir)
{
    char good[512], bad[512], err[512] = "";
    io_test_path(good, sizeof(good), dir, "good.emb");
    io_test_path(bad, sizeof(bad), dir, "bad.emb");
    float rows[IO_TEST_NV];
    io_test_rows(rows);
    REQUIRE(embfile_write(good, IO_TEST_DIM, IO_TEST_NU, IO_TEST_NI, rows, err,
                          sizeof(err)) == 0);
    unsigned char *buf = NULL;
    size_t len = 0;
    REQUIRE(fsutil_read_all(good, 1 << 20, &buf, &len, err, sizeof(err)) == 0);
    REQUIRE(len == 40 + IO_TEST_NV * 4);
    int failures = 0;
    /* Every bit of every byte. */
    for (size_t pos = 0; pos < len; pos++)
        for (int bit = 0; bit < 8; bit++) {
            buf[pos] ^= (unsigned char)(1u << bit);
            if (io_test_put(dir, "bad.emb", buf, len) < 0 ||
                !io_test_refused(bad, err, sizeof(err))) {
                if (failures++ < 5)
                    test_fail(__FILE__, __LINE__, "bit %d of byte %zu flipped: not refused "
                              "(err \"%s\")", bit, pos, err);
            }
            buf[pos] ^= (unsigned char)(1u << bit);
        }
    /* Every truncation, and one byte too many. */
    for (size_t cut = 0; cut < len; cut++)
        if (io_test_put(dir, "bad.emb", buf, cut) < 0 ||
            !io_test_refused(bad, err, sizeof(err))) {
            if (failures++ < 10)
                test_fail(__FILE__, __LINE__, "truncated to %zu bytes: not refused (err \"%s\")",
                          cut, err);
        }
    unsigned char *longer = malloc(len + 1);
    REQUIRE(longer);
    memcpy(longer, buf, len);
    longer[len] = 0;
    CHECK(io_test_put(dir, "bad.emb", longer, len + 1) == 0);
    CHECK(io_test_refused(bad, err, sizeof(err)));
    CHECK(strstr(err, "truncated") != NULL || strstr(err, "payload bytes") != NULL);
    free(longer);
    CHECK_EQ_INT(failures, 0);
    /* The untouched original still reads. */
    embfile_t ef = { 0, 0, 0, NULL };
    CHECK_EQ_INT(embfile_read(good, &ef, err, sizeof(err)), 0);
    free(ef.rows);
    free(buf);
}

TEST(io_embfile_corrupt_every_bit_and_truncation)
{
    char *dir = io_test_dir_new();
    REQUIRE(dir);
    io_test_embfile_corrupt(dir);
    io_test_dir_free(dir);
    IO_TEST_LEAK_CHECK();
}

/* Puts v at float index k of the payload of the file at path and recomputes
 * both checksums, so only the value check can catch it. */
static int io_test_patch_value(const char *path, int k, float v)
{
    char err[512];
    unsigned char *buf = NULL;
    size_t len = 0;
    if (fsutil_read_all(path, 1 << 20, &buf, &len, err, sizeof(err)) < 0 || len < 40)
        return -1;
    memcpy(buf + 40 + 4 * (size_t)k, &v, 4);
    uint32_t pc = crc32c_update(0, buf + 40, len - 40);
    for (int b = 0; b < 4; b++)
        buf[32 + b] = (unsigned char)(pc >> (8 * b));
    uint32_t hc = crc32c_update(0, buf, 36);
    for (int b = 0; b < 4; b++)
        buf[36 + b] = (unsigned char)(hc >> (8 * b));
    fsutil_part_t part = { buf, len };
    int rc = fsutil_write_atomic(path, &part, 1, err, sizeof(err));
    free(buf);
    return rc;
}

TEST(io_embfile_refuses_non_finite)
{
    char *dir = io_test_dir_new();
    REQUIRE(dir);
    char path[512], err[512] = "";
    io_test_path(path, sizeof(path), dir, "nan.emb");
    const float bad[3] = { NAN, INFINITY, -INFINITY };
    for (int b = 0; b < 3; b++) {
        float rows[IO_TEST_NV];
        io_test_rows(rows);
        /* The writer refuses a diverged model up front... */
        rows[4] = bad[b];
        CHECK_EQ_INT(embfile_write(path, IO_TEST_DIM, IO_TEST_NU, IO_TEST_NI, rows, err,
                                   sizeof(err)), -EINVAL);
        if (!strstr(err, "finite"))
            test_fail(__FILE__, __LINE__, "write of %g: err \"%s\"", (double)bad[b], err);
        /* ...and the reader refuses one written elsewhere, checksums and all. */
        io_test_rows(rows);
        REQUIRE(embfile_write(path, IO_TEST_DIM, IO_TEST_NU, IO_TEST_NI, rows, err,
                              sizeof(err)) == 0);
        REQUIRE(io_test_patch_value(path, 4, bad[b]) == 0);
        CHECK(io_test_refused(path, err, sizeof(err)));
        if (!strstr(err, "finite") || !strstr(err, "value 4"))
            test_fail(__FILE__, __LINE__, "value %g: err \"%s\"", (double)bad[b], err);
    }
    io_test_dir_free(dir);
    IO_TEST_LEAK_CHECK();
}

/* Rewrites the u32 at off of the file at path and recomputes the header
 * checksum, so only the semantic checks can catch the change. */
static int io_test_patch_header(const char *dir, const char *name, size_t off, uint32_t v)
{
    char path[512], err[512];
    io_test_path(path, sizeof(path), dir, name);
    unsigned char *buf = NULL;
    size_t len = 0;
    if (fsutil_read_all(path, 1 << 20, &buf, &len, err, sizeof(err)) < 0 || len < 40) {
        free(buf);
        return -1;
    }
    io_test_put32(buf + off, v);
    io_test_put32(buf + 36, crc32c_update(0, buf, 36));
    int rc = io_test_put(dir, name, buf, len);
    free(buf);
    return rc;
}

TEST(io_embfile_refuses_bad_header_fields)
{
    char *dir = io_test_dir_new();
    REQUIRE(dir);
    char path[512], err[512] = "";
    io_test_path(path, sizeof(path), dir, "h.emb");
    float rows[IO_TEST_NV];
    io_test_rows(rows);
    struct {
        size_t off;
        uint32_t v;
        const char *reason;
    } cases[] = {
        { 8, 2, "version 2" },
        { 8, 0, "version 0" },
        { 12, 0, "inconsistent sizes" },       /* dim 0 */
        { 12, 6, "inconsistent sizes" },       /* dim doubled, byte count kept */
        { 12, 65537, "inconsistent sizes" },   /* over the dim bound */
        { 16, 3, "inconsistent sizes" },       /* one user more */
        { 20, 0, "inconsistent sizes" },       /* no items */
        { 24, IO_TEST_NV * 4 + 4, "inconsistent sizes" },
        { 28, 1, "inconsistent sizes" },       /* byte count over 4 GiB */
        { 32, 0x12345678u, "payload checksum" },
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        CHECK_EQ_INT(embfile_write(path, IO_TEST_DIM, IO_TEST_NU, IO_TEST_NI, rows, err,
                                   sizeof(err)), 0);
        CHECK(io_test_patch_header(dir, "h.emb", cases[k].off, cases[k].v) == 0);
        if (!io_test_refused(path, err, sizeof(err)) || !strstr(err, cases[k].reason))
            test_fail(__FILE__, __LINE__, "u32 %u at %zu: err \"%s\", want \"%s\"", cases[k].v,
                      cases[k].off, err, cases[k].reason);
    }
    /* A consistent header for a smaller table over a payload cut to match:
     * everything agrees except the payload checksum. */
    CHECK_EQ_INT(embfile_write(path, IO_TEST_DIM, IO_TEST_NU, IO_TEST_NI, rows, err,
                               sizeof(err)), 0);
    const uint32_t smaller = (IO_TEST_NU + IO_TEST_NI - 1) * IO_TEST_DIM * 4;
    CHECK(truncate(path, 40 + smaller) == 0);
    CHECK(io_test_patch_header(dir, "h.emb", 20, IO_TEST_NI - 1) == 0);
    CHECK(io_test_patch_header(dir, "h.emb", 24, smaller) == 0);
    CHECK(io_test_refused(path, err, sizeof(err)));
    CHECK(strstr(err, "payload checksum mismatch") != NULL);
    /* Sizes that multiply out right, but dim 0 (rows with no values) or a
     * dim over the 65536 bound, over an empty payload. */
    const uint32_t dims[2][3] = { { 0, IO_TEST_NU, IO_TEST_NI }, { 65537, 0, 0 } };
    for (int k = 0; k < 2; k++) {
        CHECK_EQ_INT(embfile_write(path, IO_TEST_DIM, IO_TEST_NU, IO_TEST_NI, rows, err,
                                   sizeof(err)), 0);
        CHECK(truncate(path, 40) == 0);
        CHECK(io_test_patch_header(dir, "h.emb", 12, dims[k][0]) == 0);
        CHECK(io_test_patch_header(dir, "h.emb", 16, dims[k][1]) == 0);
        CHECK(io_test_patch_header(dir, "h.emb", 20, dims[k][2]) == 0);
        CHECK(io_test_patch_header(dir, "h.emb", 24, 0) == 0);
        CHECK(io_test_patch_header(dir, "h.emb", 32, 0) == 0); /* CRC-32C of nothing */
        if (!io_test_refused(path, err, sizeof(err)) || !strstr(err, "inconsistent sizes"))
            test_fail(__FILE__, __LINE__, "dim %u: err \"%s\"", dims[k][0], err);
    }
    /* Not an embedding file at all. */
    CHECK(io_test_puts(dir, "h.emb", "user\titem\n0\t1\n0\t2\n1\t0\n1\t3\n2\t4\n3\t5\n4\t6\n5\t7\n6\t8\n") == 0);
    CHECK(io_test_refused(path, err, sizeof(err)));
    CHECK(strstr(err, "magic") != NULL);
    /* Shorter than a header. */
    CHECK(io_test_puts(dir, "h.emb", "DERRDEMB\1\0\0\0") == 0);
    CHECK(io_test_refused(path, err, sizeof(err)));
    CHECK(strstr(err, "truncated header") != NULL);
    io_test_dir_free(dir);
    IO_TEST_LEAK_CHECK();
}

/* ---- fsutil -------------------------------------------------------------- */

static int io_test_file_is(const char *path, const void *data, size_t len)
{
    unsigned char *buf = NULL;
    size_t n = 0;
    char err[512];
    int ok = fsutil_read_all(path, 1 << 20, &buf, &n, err, sizeof(err)) == 0 && n == len &&
             memcmp(buf, data, len) == 0;
    free(buf);
    return ok;
}

static void io_fsutil_write_atomic_parts_and_replace_in(const char *dir)
{
    char path[512], err[512] = "";
    io_test_path(path, sizeof(path), dir, "f.bin");
    fsutil_part_t parts[4] = { { "hello", 5 }, { "", 0 }, { ", ", 2 }, { "world\n", 6 } };
    CHECK_EQ_INT(fsutil_write_atomic(path, parts, 4, err, sizeof(err)), 0);
    CHECK(io_test_file_is(path, "hello, world\n", 13));
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644);
    /* Replace with something shorter: no trace of the old content. */
    fsutil_part_t one = { "bye", 3 };
    CHECK_EQ_INT(fsutil_write_atomic(path, &one, 1, err, sizeof(err)), 0);
    CHECK(io_test_file_is(path, "bye", 3));
    /* No parts: an empty file. */
    CHECK_EQ_INT(fsutil_write_atomic(path, NULL, 0, err, sizeof(err)), 0);
    CHECK(io_test_file_is(path, "", 0));
    /* A large part (many write() calls' worth is not needed; 1 MiB). */
    size_t big = 1 << 20;
    unsigned char *data = malloc(big);
    REQUIRE(data);
    for (size_t k = 0; k < big; k++)
        data[k] = (unsigned char)(k * 2654435761u >> 24);
    fsutil_part_t bp[2] = { { data, big / 3 }, { data + big / 3, big - big / 3 } };
    CHECK_EQ_INT(fsutil_write_atomic(path, bp, 2, err, sizeof(err)), 0);
    unsigned char *back = NULL;
    size_t n = 0;
    CHECK_EQ_INT(fsutil_read_all(path, big, &back, &n, err, sizeof(err)), 0);
    CHECK(back && n == big && memcmp(back, data, big) == 0);
    free(back);
    free(data);
    /* Only the target is left in the directory. */
    CHECK_EQ_INT(io_test_count_names(dir, ".tmp."), 0);
    CHECK_EQ_INT(io_test_count_names(dir, "f.bin"), 1);
}

TEST(io_fsutil_write_atomic_parts_and_replace)
{
    io_test_in_dir(io_fsutil_write_atomic_parts_and_replace_in);
}

static void io_fsutil_write_atomic_failures_in(const char *dir)
{
    char path[512], err[512] = "";
    fsutil_part_t one = { "x", 1 };
    /* The directory does not exist. */
    io_test_path(path, sizeof(path), dir, "no/such/dir/f.bin");
    CHECK_EQ_INT(fsutil_write_atomic(path, &one, 1, err, sizeof(err)), -ENOENT);
    if (!strstr(err, "no/such/dir/f.bin") || !strstr(err, "No such file or directory"))
        test_fail(__FILE__, __LINE__, "err \"%s\"", err);
    /* The target is a directory: the rename fails, the temp file goes. */
    char sub[512];
    io_test_path(sub, sizeof(sub), dir, "sub");
    REQUIRE(mkdir(sub, 0755) == 0);
    err[0] = 0;
    int rc = fsutil_write_atomic(sub, &one, 1, err, sizeof(err));
    CHECK(rc < 0);
    CHECK(rc == -EISDIR || rc == -ENOTEMPTY || rc == -EEXIST);
    CHECK(strstr(err, sub) != NULL && strstr(err, "rename") != NULL);
    CHECK_EQ_INT(io_test_count_names(dir, ".tmp."), 0);
    struct stat st;
    CHECK(stat(sub, &st) == 0 && S_ISDIR(st.st_mode));
}

TEST(io_fsutil_write_atomic_failures)
{
    io_test_in_dir(io_fsutil_write_atomic_failures_in);
}

static void io_fsutil_crash_between_write_and_rename_in(const char *dir)
{
    /* A crash after the temp file was written and before the rename leaves
     * "<path>.tmp.<pid>" with any content next to the intact old file. */
    char path[512], stale[600], mine[600], err[512] = "";
    io_test_path(path, sizeof(path), dir, "t.emb");
    float rows[IO_TEST_NV];
    io_test_rows(rows);
    REQUIRE(embfile_write(path, IO_TEST_DIM, IO_TEST_NU, IO_TEST_NI, rows, err,
                          sizeof(err)) == 0);
    /* Dead writers' torn temp files, one of them with this process's pid
     * (temp names are unique per call, so neither is ever reused). */
    snprintf(stale, sizeof(stale), "%s.tmp.%ld", path, (long)getpid() + 100000L);
    snprintf(mine, sizeof(mine), "%s.tmp.%ld", path, (long)getpid());
    char garbage[4096];
    memset(garbage, 0xA5, sizeof(garbage));
    memcpy(garbage, "DERRDEMB", 8); /* starts like a real one */
    REQUIRE(io_test_put(dir, strrchr(stale, '/') + 1, garbage, 77) == 0);
    REQUIRE(io_test_put(dir, strrchr(mine, '/') + 1, garbage, sizeof(garbage)) == 0);
    embfile_t ef;
    int rc = embfile_read(path, &ef, err, sizeof(err));
    CHECK_EQ_INT(rc, 0);
    if (rc == 0) {
        CHECK(memcmp(ef.rows, rows, sizeof(rows)) == 0);
        free(ef.rows);
    }
    /* The next write succeeds, is exact (no tail of the longer garbage),
     * and consumes its own temp name. */
    for (int k = 0; k < IO_TEST_NV; k++)
        rows[k] = -rows[k];
    CHECK_EQ_INT(embfile_write(path, IO_TEST_DIM, IO_TEST_NU, IO_TEST_NI, rows, err,
                               sizeof(err)), 0);
    rc = embfile_read(path, &ef, err, sizeof(err));
    CHECK_EQ_INT(rc, 0);
    if (rc == 0) {
        CHECK(memcmp(ef.rows, rows, sizeof(rows)) == 0);
        free(ef.rows);
    }
    CHECK(access(mine, F_OK) == 0);  /* not ours to remove */
    CHECK(access(stale, F_OK) == 0);
    CHECK_EQ_INT(io_test_count_names(dir, ".tmp."), 2); /* and none of our own left */
}

TEST(io_fsutil_crash_between_write_and_rename)
{
    io_test_in_dir(io_fsutil_crash_between_write_and_rename_in);
}

/* One daemon per state directory: a second lock on it is refused with
 * -EBUSY and a reason naming the directory, and it is free again once the
 * first holder closes its descriptor. */
TEST(io_fsutil_lock_dir_is_exclusive)
{
    char *dir = io_test_dir_new();
    REQUIRE(dir);
    char err[512] = "";
    int fd = fsutil_lock_dir(dir, err, sizeof(err));
    CHECK(fd >= 0);
    err[0] = 0;
    CHECK_EQ_INT(fsutil_lock_dir(dir, err, sizeof(err)), -EBUSY);
    CHECK(strstr(err, dir) && strstr(err, "in use"));
    if (fd >= 0)
        close(fd);
    int again = fsutil_lock_dir(dir, err, sizeof(err));
    CHECK(again >= 0);
    if (again >= 0)
        close(again);
    /* A directory that is not there. */
    char missing[600];
    snprintf(missing, sizeof(missing), "%s/none", dir);
    CHECK_EQ_INT(fsutil_lock_dir(missing, err, sizeof(err)), -ENOENT);
    io_test_dir_free(dir);
}

TEST(io_fsutil_read_all)
{
    char *dir = io_test_dir_new();
    REQUIRE(dir);
    char path[512], err[512] = "";
    unsigned char *buf = (unsigned char *)"sentinel";
    size_t len = 99;
    /* Empty file: a valid (freeable) buffer and length 0. */
    CHECK(io_test_puts(dir, "empty", "") == 0);
    io_test_path(path, sizeof(path), dir, "empty");
    CHECK_EQ_INT(fsutil_read_all(path, 10, &buf, &len, err, sizeof(err)), 0);
    CHECK(buf != NULL && len == 0);
    free(buf);
    /* Over the limit. */
    CHECK(io_test_puts(dir, "ten", "0123456789") == 0);
    io_test_path(path, sizeof(path), dir, "ten");
    CHECK_EQ_INT(fsutil_read_all(path, 10, &buf, &len, err, sizeof(err)), 0);
    CHECK(len == 10 && memcmp(buf, "0123456789", 10) == 0);
    free(buf);
    CHECK_EQ_INT(fsutil_read_all(path, 9, &buf, &len, err, sizeof(err)), -EFBIG);
    CHECK(buf == NULL && len == 0 && strstr(err, path) && strstr(err, "limit"));
    /* A directory. */
    CHECK_EQ_INT(fsutil_read_all(dir, 10, &buf, &len, err, sizeof(err)), -EINVAL);
    CHECK(buf == NULL && strstr(err, "not a regular file"));
    /* A FIFO where a file belongs: refused at once, not waited on for a
     * writer (the test's timeout would catch a wait). */
    io_test_path(path, sizeof(path), dir, "fifo");
    REQUIRE(mkfifo(path, 0600) == 0);
    CHECK_EQ_INT(fsutil_read_all(path, 10, &buf, &len, err, sizeof(err)), -EINVAL);
    CHECK(buf == NULL && strstr(err, "not a regular file"));
    /* Missing. */
    io_test_path(path, sizeof(path), dir, "missing");
    CHECK_EQ_INT(fsutil_read_all(path, 10, &buf, &len, err, sizeof(err)), -ENOENT);
    CHECK(buf == NULL && strstr(err, path));
    io_test_dir_free(dir);
    IO_TEST_LEAK_CHECK();
}

/* proc_status_kib: a field of /proc/self/status in KiB, the whole name
 * only, -1 when absent or not in kB. */
TEST(io_proc_status_kib)
{
    long size = proc_status_kib("VmSize"), hwm = proc_status_kib("VmHWM");
    CHECK(size > 0 && hwm > 0 && hwm <= size);
    CHECK_EQ_INT(proc_status_kib("NoSuchField"), -1);
    CHECK_EQ_INT(proc_status_kib("VmHW"), -1); /* a prefix of a field is not the field */
    CHECK_EQ_INT(proc_status_kib("Name"), -1); /* not a kB field */
}
