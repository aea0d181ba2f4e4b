/*
 * Tests of `derrd-snap from-emb` and `derrd-snap bench`, run as a
 * subprocess: an embedding file becomes a snapshot with decimal row ids and
 * the same floats; bench measures every snapshot given for the users they
 * share and reports ratios to the first; refusals exit 1 or 2.
 *
 * The binary is the derrd-snap next to this test binary. Every test works in
 * its own mkdtemp directory under /tmp and removes it.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io/embfile.h"
#include "io/fsutil.h"
#include "io/snapshot.h"
#include "model/rng.h"
#include "test.h"

/* ---- helpers ------------------------------------------------------------- */

static int snapcli_test_rm_cb(const char *path, const struct stat *st, int flag,
                              struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Runs body in a fresh temporary directory, removed afterwards (also when
 * body returns early from a failed REQUIRE). */
static void snapcli_test_in_dir(void (*body)(const char *dir))
{
    char dir[] = "/tmp/derrd-test-snapcli-XXXXXX";
    if (!mkdtemp(dir)) {
        test_fail(__FILE__, __LINE__, "mkdtemp: %s", strerror(errno));
        return;
    }
    body(dir);
    CHECK(nftw(dir, snapcli_test_rm_cb, 16, FTW_DEPTH | FTW_PHYS) == 0);
}

typedef struct {
    int status; /* exit code; 128 + signal; -1 if it could not run */
    char *out, *err;
} snapcli_test_run_t;

static char *snapcli_test_slurp(const char *path)
{
    unsigned char *buf = NULL;
    size_t len = 0;
    char err[512];
    if (fsutil_read_all(path, 1 << 24, &buf, &len, err, sizeof(err)) < 0)
        return strdup("");
    char *s = realloc(buf, len + 1);
    if (!s) {
        free(buf);
        return strdup("");
    }
    s[len] = 0;
    return s;
}

/* Runs derrd-snap (beside this test binary) with args (NULL-terminated),
 * stdout and stderr captured in files in dir; killed after 30 s. */
static void snapcli_test_run(snapcli_test_run_t *r, const char *dir, const char *const *args)
{
    memset(r, 0, sizeof(*r));
    r->status = -1;
    char self[4096], bin[4200];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) {
        test_fail(__FILE__, __LINE__, "readlink /proc/self/exe: %s", strerror(errno));
        return;
    }
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (slash)
        *slash = 0;
    snprintf(bin, sizeof(bin), "%s/derrd-snap", self);
    if (access(bin, X_OK) != 0) {
        test_fail(__FILE__, __LINE__, "%s: %s (build it beside the tests)", bin, strerror(errno));
        return;
    }
    const char *argv[32];
    int argc = 0;
    argv[argc++] = bin;
    for (int k = 0; args[k] && argc < 31; k++)
        argv[argc++] = args[k];
    argv[argc] = NULL;
    char op[600], ep[600];
    snprintf(op, sizeof(op), "%s/cli.out", dir);
    snprintf(ep, sizeof(ep), "%s/cli.err", dir);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        test_fail(__FILE__, __LINE__, "fork: %s", strerror(errno));
        return;
    }
    if (pid == 0) {
        unlink(op);
        unlink(ep);
        int in = open("/dev/null", O_RDONLY);
        int o = open(op, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(ep, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (in < 0 || o < 0 || e < 0 || dup2(in, 0) < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
            _exit(126);
        alarm(30);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    r->out = snapcli_test_slurp(op);
    r->err = snapcli_test_slurp(ep);
}

static void snapcli_test_run_close(snapcli_test_run_t *r)
{
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof(*r));
}

#define SNAPCLI_TEST_RUN(r, dir, ...)                                          \
    do {                                                                       \
        const char *snapcli_args_[] = { __VA_ARGS__, NULL };                   \
        snapcli_test_run(r, dir, snapcli_args_);                               \
    } while (0)

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

/* The number after "key": in a JSON text, or NaN. */
static double snapcli_test_json_num(const char *s, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\": ", key);
    const char *p = strstr(s, pat);
    return p ? strtod(p + strlen(pat), NULL) : NAN;
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
    snapcli_test_run_t r;
    SNAPCLI_TEST_RUN(&r, dir, "from-emb", emb, out, "--version", "7", "--level", "1");
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
    snapcli_test_run_close(&r);
    snapshot_free(s);

    /* derrd-snap reads it like any snapshot: recommend by decimal id. */
    SNAPCLI_TEST_RUN(&r, dir, "recommend", out, "--user", "11", "-k", "3");
    CHECK_EQ_INT(r.status, 0);
    int lines = 0;
    for (const char *p = r.out; *p; p++)
        lines += *p == '\n';
    CHECK_EQ_INT(lines, 3);
    snapcli_test_run_close(&r);

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
        snapcli_test_run(&r, dir, usage[k]);
        if (r.status != 2 || !strstr(r.err, "derrd-snap"))
            test_fail(__FILE__, __LINE__, "usage case %d: exit %d, stderr %s", k, r.status,
                      r.err);
        snapcli_test_run_close(&r);
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
    SNAPCLI_TEST_RUN(&r, dir, "from-emb", emb, out2);
    CHECK_EQ_INT(r.status, 1);
    CHECK(strstr(r.err, "checksum mismatch") && access(out2, F_OK) != 0);
    snapcli_test_run_close(&r);
    /* dim 5000: an embedding file may have it, a snapshot may not. */
    REQUIRE(snapcli_test_emb(dir, "wide.emb", 5000, 2, 3, 2, NULL) == 0);
    snprintf(emb, sizeof(emb), "%s/wide.emb", dir);
    SNAPCLI_TEST_RUN(&r, dir, "from-emb", emb, out2);
    CHECK_EQ_INT(r.status, 1);
    CHECK(r.err[0] != 0 && access(out2, F_OK) != 0);
    snapcli_test_run_close(&r);
    SNAPCLI_TEST_RUN(&r, dir, "from-emb", "--help");
    CHECK(r.status == 0 && strstr(r.out, "usage: derrd-snap from-emb"));
    snapcli_test_run_close(&r);
    free(rows);
}

TEST(snapcli_from_emb)
{
    snapcli_test_in_dir(snapcli_test_from_emb_body);
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
    snapcli_test_run_t r;
    SNAPCLI_TEST_RUN(&r, dir, "from-emb", ea, a);
    CHECK_EQ_INT(r.status, 0);
    snapcli_test_run_close(&r);
    SNAPCLI_TEST_RUN(&r, dir, "from-emb", eb, b);
    CHECK_EQ_INT(r.status, 0);
    snapcli_test_run_close(&r);

    SNAPCLI_TEST_RUN(&r, dir, "bench", a, b, "--users", "5", "-k", "3", "--seed", "9",
                     "--json");
    CHECK_EQ_INT(r.status, 0);
    const char *second = strchr(r.out, '\n');
    REQUIRE(second && second[1] == '{');
    second++;
    CHECK(strchr(second, '\n') && strchr(second, '\n')[1] == 0); /* two lines */
    CHECK(snapcli_test_json_num(r.out, "dim") == 4.0);
    CHECK(snapcli_test_json_num(second, "dim") == 40.0);
    CHECK(snapcli_test_json_num(r.out, "users") == 5.0);
    CHECK(snapcli_test_json_num(second, "users_in_every_snapshot") == 8.0);
    CHECK(snapcli_test_json_num(second, "k") == 3.0);
    CHECK(snapcli_test_json_num(r.out, "recommend_ratio_to_first") == 1.0);
    double us = snapcli_test_json_num(second, "recommend_us_per_user");
    double open_s = snapcli_test_json_num(second, "open_seconds");
    CHECK(us > 0 && open_s > 0 && snapcli_test_json_num(second, "recommend_ratio_to_first") > 0);
    CHECK(strstr(second, "\"recommend_us_passes\": [") &&
          strstr(second, "\"open_seconds_runs\": ["));
    snapcli_test_run_close(&r);

    /* Text: a header, a row per snapshot, the ratio by dim. More users than
     * the snapshots share: all shared ones. */
    SNAPCLI_TEST_RUN(&r, dir, "bench", a, b, "--users", "100");
    CHECK_EQ_INT(r.status, 0);
    CHECK(strstr(r.out, "rec_us") && strstr(r.out, "8 users (seed 0, of 8 with an id"));
    CHECK(strstr(r.out, "dim 40 / dim 4: recommend ") != NULL);
    snapcli_test_run_close(&r);
    /* The same dim twice: labelled by path. One snapshot: no ratio. */
    SNAPCLI_TEST_RUN(&r, dir, "bench", a, a, "--users", "3");
    CHECK_EQ_INT(r.status, 0);
    CHECK(strstr(r.out, "a.dsnap / ") != NULL);
    snapcli_test_run_close(&r);
    SNAPCLI_TEST_RUN(&r, dir, "bench", a, "--users", "3");
    CHECK(r.status == 0 && !strstr(r.out, " / "));
    snapcli_test_run_close(&r);

    /* Refusals. */
    SNAPCLI_TEST_RUN(&r, dir, "bench");
    CHECK_EQ_INT(r.status, 2);
    snapcli_test_run_close(&r);
    SNAPCLI_TEST_RUN(&r, dir, "bench", a, "--users", "0");
    CHECK_EQ_INT(r.status, 2);
    snapcli_test_run_close(&r);
    SNAPCLI_TEST_RUN(&r, dir, "bench", a, dir); /* dir has no latest */
    CHECK_EQ_INT(r.status, 1);
    snapcli_test_run_close(&r);
    SNAPCLI_TEST_RUN(&r, dir, "bench", "--help");
    CHECK(r.status == 0 && strstr(r.out, "usage: derrd-snap bench"));
    snapcli_test_run_close(&r);
}

TEST_SLOW(snapcli_bench, 120)
{
    snapcli_test_in_dir(snapcli_test_bench_body);
}
