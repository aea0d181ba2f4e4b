/*
 * Tests of `derrd-snap from-emb`, `bench` and the escaping of ids, run as a
 * subprocess: an embedding file becomes a snapshot with decimal row ids and
 * the same floats; bench measures every snapshot given for the users they
 * share and reports ratios to the first; refusals exit 1 or 2.
 *
 * The binary is the derrd-snap next to this test binary. Every test works in
 * its own mkdtemp directory under /tmp and removes it.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/embfile.h"
#include "io/fsutil.h"
#include "io/snapshot.h"
#include "model/rng.h"
#include "test.h"
#include "testutil.h"

/* ---- helpers ------------------------------------------------------------- */

/* Writes dir/name, an embedding file of random rows; *rows (malloc'd,
 * caller frees; may be NULL) gets them. Returns 0. */
static int snapcli_test_emb(const char *dir, const char *name, uint32_t dim, uint32_t nu,
                            uint32_t ni, uint64_t seed, float **rows)
{
    size_t n = ((size_t)nu + ni) * dim;
    float *v = malloc(n * sizeof(*v) + 1);
    if (!v)
        return -ENOMEM;
    rng_t rng;
    rng_init(&rng, seed);
    for (size_t k = 0; k < n; k++)
        v[k] = rng_normal(&rng);
    char path[600], err[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int rc = embfile_write(path, dim, nu, ni, v, err, sizeof(err));
    if (rc < 0)
        fprintf(stderr, "    %s\n", err);
    if (rows && rc == 0)
        *rows = v;
    else
        free(v);
    return rc;
}


/* ---- from-emb ------------------------------------------------------------ */

static void snapcli_test_from_emb_body(const char *dir)
{
    enum { NU = 12, NI = 105, DIM = 5 };
    float *rows = NULL;
    REQUIRE(snapcli_test_emb(dir, "m.emb", DIM, NU, NI, 1, &rows) == 0);
    char emb[600], out[600], err[512];
    snprintf(emb, sizeof(emb), "%s/m.emb", dir);
    snprintf(out, sizeof(out), "%s/m.dsnap", dir);
    test_run_t r;
    TEST_RUN_TOOL(&r, dir, "derrd-snap", "from-emb", emb, out, "--version", "7", "--level", "1");
    CHECK_EQ_INT(r.status, 0);
    CHECK(strstr(r.out, "dim 5, 12 users, 105 items") && strstr(r.out, "zstd level 1") &&
          strstr(r.out, "MB/s raw"));

    snapshot_t *s = NULL;
    REQUIRE(snapshot_open(out, &s, err, sizeof(err)) == 0);
    const snapshot_desc_t *d = snapshot_desc(s);
    CHECK_EQ_INT(d->version, 7);
    CHECK_EQ_INT(d->dim, DIM);
    CHECK_EQ_INT(d->n_users, NU);
    CHECK_EQ_INT(d->n_items, NI);
    CHECK(d->topic[0] == 0 && d->n_pos == 0 && d->teacher_version == 0 && d->round == 0);
    CHECK(isnan(d->quality.hr10) && isnan(d->quality.teacher_ndcg10));
    /* Row r's id is "r"; the floats are the file's, bit for bit. */
    for (int t = 0; t < 2; t++)
        for (int64_t row = 0; row < (t ? NI : NU); row++) {
            char id[16];
            int l = snprintf(id, sizeof(id), "%lld", (long long)row);
            CHECK_EQ_INT(t ? snapshot_item_row(s, id, (size_t)l)
                           : snapshot_user_row(s, id, (size_t)l), row);
        }
    CHECK(memcmp(d->user_emb, rows, (size_t)NU * DIM * sizeof(float)) == 0);
    CHECK(memcmp(d->item_emb, rows + NU * DIM, (size_t)NI * DIM * sizeof(float)) == 0);
    CHECK_EQ_INT(snapshot_user_row(s, "012", 3), -1);
    /* The printed sizes are the file's. */
    snapshot_size_t sz;
    snapshot_size(s, &sz);
    char want[128];
    snprintf(want, sizeof(want), "raw %llu bytes, file %llu bytes",
             (unsigned long long)sz.raw_bytes, (unsigned long long)sz.file_bytes);
    CHECK(strstr(r.out, want) != NULL);
    struct stat st;
    CHECK(stat(out, &st) == 0 && (uint64_t)st.st_size == sz.file_bytes);
    test_run_close(&r);
    snapshot_free(s);

    /* derrd-snap reads it like any snapshot: recommend by decimal id. */
    TEST_RUN_TOOL(&r, dir, "derrd-snap", "recommend", out, "--user", "11", "-k", "3");
    CHECK_EQ_INT(r.status, 0);
    int lines = 0;
    for (const char *p = r.out; *p; p++)
        lines += *p == '\n';
    CHECK_EQ_INT(lines, 3);
    test_run_close(&r);

    /* Refusals: usage (2), unreadable or unwritable input (1). */
    const char *const usage[][6] = {
        { "from-emb", NULL },
        { "from-emb", emb, NULL },
        { "from-emb", emb, out, "extra", NULL },
        { "from-emb", emb, out, "--level", "23", NULL },
        { "from-emb", emb, out, "--version", "-1", NULL },
        { "from-emb", emb, out, "--nope", NULL },
    };
    for (int k = 0; k < 6; k++) {
        test_run_tool(&r, dir, "derrd-snap", usage[k]);
        if (r.status != 2 || !strstr(r.err, "derrd-snap"))
            test_fail(__FILE__, __LINE__, "usage case %d: exit %d, stderr %s", k, r.status,
                      r.err);
        test_run_close(&r);
    }
    unsigned char *file = NULL;
    size_t len = 0;
    REQUIRE(fsutil_read_all(emb, 1 << 20, &file, &len, err, sizeof(err)) == 0);
    file[len - 1] ^= 0x10;
    fsutil_part_t part = { file, len };
    CHECK(fsutil_write_atomic(emb, &part, 1, err, sizeof(err)) == 0);
    free(file);
    char out2[600];
    snprintf(out2, sizeof(out2), "%s/bad.dsnap", dir);
    TEST_RUN_TOOL(&r, dir, "derrd-snap", "from-emb", emb, out2);
    CHECK_EQ_INT(r.status, 1);
    CHECK(strstr(r.err, "checksum mismatch") && access(out2, F_OK) != 0);
    test_run_close(&r);
    /* dim 5000: an embedding file may have it, a snapshot may not. */
    REQUIRE(snapcli_test_emb(dir, "wide.emb", 5000, 2, 3, 2, NULL) == 0);
    snprintf(emb, sizeof(emb), "%s/wide.emb", dir);
    TEST_RUN_TOOL(&r, dir, "derrd-snap", "from-emb", emb, out2);
    CHECK_EQ_INT(r.status, 1);
    CHECK(r.err[0] != 0 && access(out2, F_OK) != 0);
    test_run_close(&r);
    TEST_RUN_TOOL(&r, dir, "derrd-snap", "from-emb", "--help");
    CHECK(r.status == 0 && strstr(r.out, "usage: derrd-snap from-emb"));
    test_run_close(&r);
    free(rows);
}

TEST(snapcli_from_emb)
{
    test_in_tmpdir("snapcli", snapcli_test_from_emb_body);
}

/* Ids are opaque bytes: recommend and info escape the ones that would break
 * a line's fields or reach the terminal raw. */
static void snapcli_test_escape_body(const char *dir)
{
    float ue[2] = { 1, 0 }, ie[4] = { 1, 0, 0.5f, 0 };
    const char *uid[1] = { "u" }, *iid[2] = { "a\tb\nc", "x\\y\x1b[31m" };
    uint16_t ulen[1] = { 1 }, ilen[2] = { 5, 8 };
    snapshot_desc_t d = { .version = 1, .created_ms = 1, .dim = 2, .n_users = 1, .n_items = 2,
                          .user_emb = ue, .item_emb = ie, .user_ids = uid, .user_id_len = ulen,
                          .item_ids = iid, .item_id_len = ilen, .topic = "t\x1b",
                          .quality = { NAN, NAN, NAN, NAN, 0 } };
    char path[600], err[512];
    snprintf(path, sizeof(path), "%s/esc.dsnap", dir);
    REQUIRE(snapshot_write(path, &d, 3, err, sizeof(err)) == 0);
    test_run_t r;
    TEST_RUN_TOOL(&r, dir, "derrd-snap", "recommend", path, "--user", "u", "-k", "2");
    CHECK_EQ_INT(r.status, 0);
    if (!strstr(r.out, "1\ta\\tb\\nc\t") || !strstr(r.out, "2\tx\\\\y\\x1b[31m\t"))
        test_fail(__FILE__, __LINE__, "recommend output: %s", r.out);
    test_run_close(&r);
    TEST_RUN_TOOL(&r, dir, "derrd-snap", "info", path);
    CHECK_EQ_INT(r.status, 0);
    CHECK(strstr(r.out, "topic            t\\x1b\n") != NULL);
    CHECK(strchr(r.out, 0x1b) == NULL);
    test_run_close(&r);

    /* info --json stays JSON (UTF-8) for a topic that is not: a byte that
     * is no UTF-8 becomes U+FFFD, valid sequences stay. */
    d.topic = "t\xff\xc3\xa9\xc3";
    REQUIRE(snapshot_write(path, &d, 3, err, sizeof(err)) == 0);
    TEST_RUN_TOOL(&r, dir, "derrd-snap", "info", path, "--json");
    CHECK_EQ_INT(r.status, 0);
    if (!strstr(r.out, "\"t\\ufffd\xc3\xa9\\ufffd\"") || strchr(r.out, 0xff))
        test_fail(__FILE__, __LINE__, "info --json: %s", r.out);
    test_run_close(&r);
}

TEST(snapcli_recommend_escapes_ids)
{
    test_in_tmpdir("snapcli", snapcli_test_escape_body);
}

/* ---- bench --------------------------------------------------------------- */

static void snapcli_test_bench_body(const char *dir)
{
    /* Two models of the same items; the wide one knows only users 0..7. */
    REQUIRE(snapcli_test_emb(dir, "a.emb", 4, 12, 300, 3, NULL) == 0);
    REQUIRE(snapcli_test_emb(dir, "b.emb", 40, 8, 300, 4, NULL) == 0);
    char ea[600], eb[600], a[600], b[600];
    snprintf(ea, sizeof(ea), "%s/a.emb", dir);
    snprintf(eb, sizeof(eb), "%s/b.emb", dir);
    snprintf(a, sizeof(a), "%s/a.dsnap", dir);
    snprintf(b, sizeof(b), "%s/b.dsnap", dir);
    test_run_t r;
    TEST_RUN_TOOL(&r, dir, "derrd-snap", "from-emb", ea, a);
    CHECK_EQ_INT(r.status, 0);
    test_run_close(&r);
    TEST_RUN_TOOL(&r, dir, "derrd-snap", "from-emb", eb, b);
    CHECK_EQ_INT(r.status, 0);
    test_run_close(&r);

    TEST_RUN_TOOL(&r, dir, "derrd-snap", "bench", a, b, "--users", "5", "-k", "3", "--seed", "9",
                     "--json");
    CHECK_EQ_INT(r.status, 0);
    const char *second = strchr(r.out, '\n');
    REQUIRE(second && second[1] == '{');
    second++;
    CHECK(strchr(second, '\n') && strchr(second, '\n')[1] == 0); /* two lines */
    CHECK(test_json_num(r.out, "dim") == 4.0);
    CHECK(test_json_num(second, "dim") == 40.0);
    CHECK(test_json_num(r.out, "users") == 5.0);
    CHECK(test_json_num(second, "users_in_every_snapshot") == 8.0);
    CHECK(test_json_num(second, "k") == 3.0);
    CHECK(test_json_num(r.out, "recommend_ratio_to_first") == 1.0);
    double us = test_json_num(second, "recommend_us_per_user");
    double open_s = test_json_num(second, "open_seconds");
    CHECK(us > 0 && open_s > 0 && test_json_num(second, "recommend_ratio_to_first") > 0);
    CHECK(strstr(second, "\"recommend_us_passes\": [") &&
          strstr(second, "\"open_seconds_runs\": ["));
    test_run_close(&r);

    /* Text: a header, a row per snapshot, the ratio by dim. More users than
     * the snapshots share: all shared ones. */
    TEST_RUN_TOOL(&r, dir, "derrd-snap", "bench", a, b, "--users", "100");
    CHECK_EQ_INT(r.status, 0);
    CHECK(strstr(r.out, "rec_us") && strstr(r.out, "8 users (seed 0, of 8 with an id"));
    CHECK(strstr(r.out, "dim 40 / dim 4: recommend ") != NULL);
    test_run_close(&r);
    /* The same dim twice: labelled by path. One snapshot: no ratio. */
    TEST_RUN_TOOL(&r, dir, "derrd-snap", "bench", a, a, "--users", "3");
    CHECK_EQ_INT(r.status, 0);
    CHECK(strstr(r.out, "a.dsnap / ") != NULL);
    test_run_close(&r);
    TEST_RUN_TOOL(&r, dir, "derrd-snap", "bench", a, "--users", "3");
    CHECK(r.status == 0 && !strstr(r.out, " / "));
    test_run_close(&r);

    /* Refusals. */
    TEST_RUN_TOOL(&r, dir, "derrd-snap", "bench");
    CHECK_EQ_INT(r.status, 2);
    test_run_close(&r);
    TEST_RUN_TOOL(&r, dir, "derrd-snap", "bench", a, "--users", "0");
    CHECK_EQ_INT(r.status, 2);
    test_run_close(&r);
    TEST_RUN_TOOL(&r, dir, "derrd-snap", "bench", a, dir); /* dir has no latest */
    CHECK_EQ_INT(r.status, 1);
    test_run_close(&r);
    TEST_RUN_TOOL(&r, dir, "derrd-snap", "bench", "--help");
    CHECK(r.status == 0 && strstr(r.out, "usage: derrd-snap bench"));
    test_run_close(&r);
}

TEST_SLOW(snapcli_bench, 120)
{
    test_in_tmpdir("snapcli", snapcli_test_bench_body);
}
