/*
 * Tests of the derrd-train command line, run as a subprocess: usage errors
 * and bad input exit 2 with the reason on the first line of stderr, and
 * tiny end-to-end runs (student, teacher --save, derrd --teacher) exit 0
 * with the --json line.
 *
 * The binary is the derrd-train next to this test binary (both live in
 * build/, or both in build/asan/); a missing one is a failure, not a skip.
 * Every test works in its own mkdtemp directory under /tmp and removes it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/embfile.h"
#include "io/fsutil.h"
#include "test.h"
#include "testutil.h"

/* ---- helpers ------------------------------------------------------------- */

/* Runs derrd-train with args (NULL-terminated) in dir (test_run_tool). */
static int cli_test_run(test_run_t *r, const char *dir, const char *const *args)
{
    return test_run_tool(r, dir, "derrd-train", args);
}

static void cli_test_print(const char *what, const test_run_t *r)
{
    fprintf(stderr, "    [%s] exit %d\n    stdout: %.600s\n    stderr: %.1200s\n", what,
            r->status, r->out ? r->out : "", r->err ? r->err : "");
}

/* Copies the first line of s (without the newline) into out. */
static void cli_test_first_line(const char *s, char *out, size_t len)
{
    size_t n = strcspn(s, "\n");
    if (n >= len)
        n = len - 1;
    memcpy(out, s, n);
    out[n] = 0;
}

static int cli_test_count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* Copies the last non-empty line of s into out. */
static void cli_test_last_line(const char *s, char *out, size_t len)
{
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '\n')
        n--;
    size_t b = n;
    while (b > 0 && s[b - 1] != '\n')
        b--;
    size_t m = n - b < len - 1 ? n - b : len - 1;
    memcpy(out, s + b, m);
    out[m] = 0;
}

/*
 * Expects a refusal: exit status 2, nothing on stdout, and a first stderr
 * line that starts with the program name and contains reason. strict: the
 * reason is all there is (at most the reason and a "see --help" line).
 */
static int cli_test_expect_refusal(const char *what, const test_run_t *r, const char *reason,
                                   int strict)
{
    char first[1024];
    cli_test_first_line(r->err ? r->err : "", first, sizeof(first));
    int ok = r->status == 2 && r->out && r->out[0] == 0 && strstr(first, "derrd-train") &&
             strstr(first, reason) && (!strict || cli_test_count_lines(r->err) <= 2);
    if (!ok) {
        test_fail(__FILE__, __LINE__, "%s: want exit 2 with \"%s\" on the first stderr line%s",
                  what, reason, strict ? " (and at most 2 lines)" : "");
        cli_test_print(what, r);
    }
    return ok;
}

/* Generates a leave-one-out dataset in dir: every user gets per_user train
 * items, a valid and a test item, and n_cands other items as candidates.
 * Returns 0 and the n_users, n_items the loader will see. */
static int cli_test_make_dataset(const char *dir, int nu, int ni, int per_user, int n_cands,
                                 uint64_t seed, int32_t *n_users, int32_t *n_items)
{
    const char *names[4] = { "train.tsv", "valid.tsv", "test.tsv", "candidates.tsv" };
    FILE *f[4] = { 0 };
    int rc = -1, max_item = -1;
    int *perm = malloc((size_t)ni * sizeof(int));
    if (!perm || per_user + 2 + n_cands > ni)
        goto done;
    for (int k = 0; k < 4; k++) {
        char path[4200];
        snprintf(path, sizeof(path), "%s/%s", dir, names[k]);
        if (!(f[k] = fopen(path, "w")))
            goto done;
    }
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (int u = 0; u < nu; u++) {
        int need = per_user + 2 + n_cands;
        for (int k = 0; k < ni; k++)
            perm[k] = k;
        for (int k = 0; k < need; k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            int j = k + (int)(x % (uint64_t)(ni - k));
            int t = perm[k];
            perm[k] = perm[j];
            perm[j] = t;
            if (perm[k] > max_item)
                max_item = perm[k];
        }
        for (int k = 0; k < per_user; k++)
            fprintf(f[0], "%d\t%d\n", u, perm[k]);
        fprintf(f[1], "%d\t%d\n", u, perm[per_user]);
        fprintf(f[2], "%d\t%d\n", u, perm[per_user + 1]);
        fprintf(f[3], "%d", u);
        for (int k = 0; k < n_cands; k++)
            fprintf(f[3], "\t%d", perm[per_user + 2 + k]);
        fprintf(f[3], "\n");
    }
    *n_users = nu;
    *n_items = max_item + 1;
    rc = 0;
done:
    for (int k = 0; k < 4; k++)
        if (f[k] && fclose(f[k]) != 0)
            rc = -1;
    free(perm);
    return rc;
}

/* The standard tiny dataset: 30 users, 50 items, 8 train items each, 20
 * candidates. */
static int cli_test_tiny(const char *dir, int32_t *n_users, int32_t *n_items)
{
    return cli_test_make_dataset(dir, 30, 50, 8, 20, 1, n_users, n_items);
}

/* Writes a teacher file for (nu, ni) users and items of the given dim. */
static int cli_test_write_teacher(const char *path, uint32_t dim, uint32_t nu, uint32_t ni)
{
    size_t n = ((size_t)nu + ni) * dim;
    float *rows = malloc(n * sizeof(float));
    if (!rows)
        return -1;
    for (size_t k = 0; k < n; k++)
        rows[k] = 0.01f * (float)((int)(k * 37 % 101) - 50);
    char err[512];
    int rc = embfile_write(path, dim, nu, ni, rows, err, sizeof(err));
    if (rc < 0)
        test_fail(__FILE__, __LINE__, "embfile_write: %s", err);
    free(rows);
    return rc;
}

/* Checks that stdout's last line is the --json object with the metric keys. */
static int cli_test_check_json(const char *what, const test_run_t *r, const char *method)
{
    char last[8192], want[64];
    cli_test_last_line(r->out ? r->out : "", last, sizeof(last));
    snprintf(want, sizeof(want), "\"method\": \"%s\"", method);
    const char *keys[] = { want, "\"valid\": {", "\"test\": {", "\"HR@5\"", "\"NDCG@10\"",
                           "\"MRR@20\"", "\"best_epoch\"", "\"epochs\"" };
    size_t len = strlen(last);
    int ok = r->status == 0 && len > 2 && last[0] == '{' && last[len - 1] == '}';
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
        if (!strstr(last, keys[k])) {
            test_fail(__FILE__, __LINE__, "%s: no %s in the last stdout line", what, keys[k]);
            ok = 0;
        }
    /* "valid" comes before "test", and each holds 9 metrics. */
    const char *v = strstr(last, "\"valid\": {"), *t = strstr(last, "\"test\": {");
    if (!(v && t && v < t))
        ok = 0;
    if (!ok) {
        test_fail(__FILE__, __LINE__, "%s: want exit 0 and a JSON last line", what);
        cli_test_print(what, r);
    }
    return ok;
}

/* ---- usage --------------------------------------------------------------- */

TEST(cli_help)
{
    char *dir = test_tmpdir_new("cli");
    REQUIRE(dir);
    test_run_t r;
    const char *args[] = { "--help", NULL };
    if (cli_test_run(&r, dir, args) == 0) {
        CHECK_EQ_INT(r.status, 0);
        CHECK(strncmp(r.out, "usage: derrd-train", 18) == 0);
        CHECK(strstr(r.out, "--data DIR") != NULL && strstr(r.out, "--method M") != NULL &&
              strstr(r.out, "--teacher FILE") != NULL);
        CHECK(r.err[0] == 0);
    }
    test_run_close(&r);
    test_tmpdir_free(dir);
}

TEST(cli_usage_errors_exit_2)
{
    char *dir = test_tmpdir_new("cli");
    REQUIRE(dir);
    int32_t nu, ni;
    CHECK(cli_test_tiny(dir, &nu, &ni) == 0);
    /* Options that would start training carry --max-epochs 1 so that a
     * check that has gone missing costs a second, not a timeout. */
    struct {
        const char *what;
        const char *args[16];
        const char *reason;
        int strict;
    } cases[] = {
        { "no --data", { "--method", "student", NULL }, "--data DIR is required", 1 },
        { "no --method", { "--data", dir, NULL }, "--method is required", 1 },
        { "unknown --method", { "--data", dir, "--method", "bpr", "--max-epochs", "1", NULL },
          "unknown method 'bpr'", 1 },
        { "bad --seed", { "--data", dir, "--method", "student", "--seed", "x", "--max-epochs",
                          "1", NULL }, "--seed: 'x' is not an integer", 1 },
        { "negative --seed", { "--data", dir, "--method", "student", "--seed", "-1",
                               "--max-epochs", "1", NULL }, "--seed: '-1'", 1 },
        { "--threads 0", { "--data", dir, "--method", "student", "--threads", "0",
                           "--max-epochs", "1", NULL }, "--threads: '0' is not an integer", 1 },
        { "--max-epochs 0", { "--data", dir, "--method", "student", "--max-epochs", "0", NULL },
          "--max-epochs: '0'", 1 },
        { "--lr junk", { "--data", dir, "--method", "student", "--lr", "1e-3x",
                         "--max-epochs", "1", NULL }, "--lr: '1e-3x' is not a number", 1 },
        { "unknown --select", { "--data", dir, "--method", "student", "--select", "ndcg",
                                "--max-epochs", "1", NULL }, "unknown --select 'ndcg'", 1 },
        { "unknown --rrd-variant", { "--data", dir, "--method", "rrd", "--rrd-variant", "x",
                                     "--max-epochs", "1", NULL }, "unknown --rrd-variant 'x'", 1 },
        { "--teacher with student", { "--data", dir, "--method", "student", "--teacher",
                                      "t.emb", "--max-epochs", "1", NULL }, "--teacher goes with",
          1 },
        { "--save in a missing directory", { "--data", dir, "--method", "student", "--save",
                                              "/nonexistent/t.emb", "--max-epochs", "1", NULL },
          "cannot write in its directory /nonexistent", 1 },
        { "--save to a directory", { "--data", dir, "--method", "student", "--save", dir,
                                     "--max-epochs", "1", NULL }, "is a directory", 1 },
        { "stray argument", { "--data", dir, "--method", "student", "extra", "--max-epochs", "1",
                              NULL }, "unexpected argument 'extra'", 1 },
        /* getopt's own message, followed by the whole usage text. */
        { "unknown option", { "--data", dir, "--method", "student", "--bogus", "--max-epochs",
                              "1", NULL }, "unknown option '--bogus'", 0 },
        { "option without its value", { "--data", dir, "--method", "student", "--max-epochs",
                                         "1", "--seed", NULL }, "option '--seed' needs a value", 0 },
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        test_run_t r;
        if (cli_test_run(&r, dir, cases[k].args) == 0)
            cli_test_expect_refusal(cases[k].what, &r, cases[k].reason, cases[k].strict);
        test_run_close(&r);
    }
    test_tmpdir_free(dir);
}

/* ---- bad data ------------------------------------------------------------ */

static void cli_bad_data_exit_2_in(const char *dir)
{
    char sub[4200], path[4300];
    int32_t nu, ni;
    test_run_t r;
    /* A missing directory. */
    snprintf(sub, sizeof(sub), "%s/missing", dir);
    const char *a1[] = { "--data", sub, "--method", "student", "--max-epochs", "1", NULL };
    if (cli_test_run(&r, dir, a1) == 0)
        cli_test_expect_refusal("missing data dir", &r, "missing/train.tsv: No such file", 1);
    test_run_close(&r);
    /* A malformed line 4 of train.tsv. */
    snprintf(sub, sizeof(sub), "%s/bad", dir);
    CHECK(mkdir(sub, 0755) == 0);
    CHECK(cli_test_tiny(sub, &nu, &ni) == 0);
    snprintf(path, sizeof(path), "%s/train.tsv", sub);
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    fputs("0\t1\n0\t2\n1\t3\n1\t4 5\n2\t0\n", f);
    fclose(f);
    const char *a2[] = { "--data", sub, "--method", "student", "--max-epochs", "1", NULL };
    if (cli_test_run(&r, dir, a2) == 0)
        cli_test_expect_refusal("malformed train.tsv", &r, "train.tsv:4: expected a tab", 1);
    test_run_close(&r);
    /* An id out of range on line 2 of test.tsv. */
    CHECK(cli_test_tiny(sub, &nu, &ni) == 0);
    snprintf(path, sizeof(path), "%s/test.tsv", sub);
    f = fopen(path, "w");
    REQUIRE(f);
    fputs("0\t1\n1\t100000000\n", f);
    fclose(f);
    if (cli_test_run(&r, dir, a2) == 0)
        cli_test_expect_refusal("id out of range", &r, "test.tsv:2: id out of range", 1);
    test_run_close(&r);
}

TEST(cli_bad_data_exit_2)
{
    test_in_tmpdir("cli", cli_bad_data_exit_2_in);
}

/*
 * The --teacher failures run with leak detection off: derrd-train returns
 * from main() on these paths without freeing the dataset and ratings it
 * already loaded, which LeakSanitizer reports (turning exit 2 into 1).
 */
static void cli_teacher_file_refused_in(const char *dir)
{
    int32_t nu, ni;
    REQUIRE(cli_test_tiny(dir, &nu, &ni) == 0);
    char tpath[4200];
    snprintf(tpath, sizeof(tpath), "%s/teacher.emb", dir);
    const char *args[] = { "--data", dir, "--method", "de", "--teacher", tpath, "--max-epochs",
                           "1", "--threads", "2", "--quiet", NULL };
    test_run_t r;
    /* A good teacher of dim 8 is accepted ... */
    REQUIRE(cli_test_write_teacher(tpath, 8, (uint32_t)nu, (uint32_t)ni) == 0);
    if (cli_test_run(&r, dir, args) == 0 && r.status != 0) {
        test_fail(__FILE__, __LINE__, "a good teacher file was refused");
        cli_test_print("good teacher", &r);
    }
    test_run_close(&r);
    /* ... one flipped byte is not (one in the header, one in the payload). */
    const size_t flips[2] = { 13, 40 + 4 * 8 * 7 + 2 };
    const char *reasons[2] = { "header checksum mismatch", "payload checksum mismatch" };
    for (int k = 0; k < 2; k++) {
        REQUIRE(cli_test_write_teacher(tpath, 8, (uint32_t)nu, (uint32_t)ni) == 0);
        int fd = open(tpath, O_RDWR);
        REQUIRE(fd >= 0);
        unsigned char b = 0;
        CHECK(pread(fd, &b, 1, (off_t)flips[k]) == 1);
        b ^= 0x04;
        CHECK(pwrite(fd, &b, 1, (off_t)flips[k]) == 1);
        close(fd);
        if (cli_test_run(&r, dir, args) == 0)
            cli_test_expect_refusal("corrupt teacher", &r, reasons[k], 1);
        test_run_close(&r);
    }
    /* Users or items that do not match the data. */
    const uint32_t shapes[2][2] = { { (uint32_t)nu + 1, (uint32_t)ni },
                                    { (uint32_t)nu, (uint32_t)ni - 1 } };
    for (int k = 0; k < 2; k++) {
        REQUIRE(cli_test_write_teacher(tpath, 8, shapes[k][0], shapes[k][1]) == 0);
        if (cli_test_run(&r, dir, args) == 0)
            cli_test_expect_refusal("mismatched teacher", &r, "teacher has", 1);
        test_run_close(&r);
    }
    /* A missing teacher file. */
    snprintf(tpath, sizeof(tpath), "%s/none.emb", dir);
    if (cli_test_run(&r, dir, args) == 0)
        cli_test_expect_refusal("missing teacher", &r, "none.emb: No such file", 1);
    test_run_close(&r);
}

TEST(cli_teacher_file_refused)
{
    test_in_tmpdir("cli", cli_teacher_file_refused_in);
}

/* A run that diverges stops with exit 1 and says so, instead of training
 * on: a teacher whose values (1e20) overflow the DE loss. Before, this read
 * "out of memory", and a NaN model ranked first in every metric. */
static void cli_diverged_in(const char *dir)
{
    int32_t nu, ni;
    REQUIRE(cli_test_tiny(dir, &nu, &ni) == 0);
    enum { DIM = 8 };
    size_t n = ((size_t)nu + (size_t)ni) * DIM;
    float *rows = malloc(n * sizeof(float));
    REQUIRE(rows);
    for (size_t k = 0; k < n; k++)
        rows[k] = (k % 3 ? 1e20f : -1e20f);
    char path[4200], err[512];
    snprintf(path, sizeof(path), "%s/huge.emb", dir);
    REQUIRE(embfile_write(path, DIM, (uint32_t)nu, (uint32_t)ni, rows, err, sizeof(err)) == 0);
    free(rows);
    test_run_t r;
    const char *args[] = { "--data", dir, "--method", "de", "--teacher", path, "--init", "normal",
                           "--de-every", "1", "--max-epochs", "3", "--quiet", NULL };
    if (cli_test_run(&r, dir, args) == 0) {
        if (r.status != 1 || !strstr(r.err, "de diverged in epoch 0"))
            test_fail(__FILE__, __LINE__, "exit %d, stderr %s", r.status, r.err);
    }
    test_run_close(&r);
}

TEST(cli_divergence_stops_with_a_reason)
{
    test_in_tmpdir("cli", cli_diverged_in);
}

/* ---- tiny successful runs ------------------------------------------------ */

static void cli_train_student_json_in(const char *dir)
{
    int32_t nu, ni;
    REQUIRE(cli_test_tiny(dir, &nu, &ni) == 0);
    test_run_t r;
    const char *args[] = { "--data", dir, "--method", "student", "--max-epochs", "3", "--json",
                           "--quiet", "--threads", "2", NULL };
    if (cli_test_run(&r, dir, args) == 0) {
        cli_test_check_json("student", &r, "student");
        CHECK(strstr(r.out, "\"epochs\": 3") != NULL);
        CHECK(strstr(r.out, "\"dim\": 20") != NULL);
        CHECK(strstr(r.out, "\"select\": \"hr\"") != NULL); /* the authors' protocol */
        CHECK(strstr(r.out, "\"best_epochs\": {\"HR@5\": ") != NULL);
        CHECK(r.err[0] == 0); /* --quiet */
    }
    /* The other selection rule is accepted and named. */
    const char *argsn[] = { "--data", dir, "--method", "student", "--max-epochs", "2", "--json",
                            "--quiet", "--select", "ndcg10", NULL };
    test_run_t rn;
    if (cli_test_run(&rn, dir, argsn) == 0)
        CHECK(rn.out && strstr(rn.out, "\"select\": \"ndcg10\"") != NULL);
    test_run_close(&rn);
    /* The same seed gives the same metrics, whatever the thread count. */
    const char *args1[] = { "--data", dir, "--method", "student", "--max-epochs", "3", "--json",
                            "--quiet", "--threads", "1", NULL };
    test_run_t r1;
    if (cli_test_run(&r1, dir, args1) == 0 && r.out && r1.out) {
        const char *m2 = strstr(r.out, "\"valid\": {"), *m1 = strstr(r1.out, "\"valid\": {");
        CHECK(m1 && m2 && strcmp(m1, m2) == 0);
    }
    test_run_close(&r1);
    test_run_close(&r);
}

TEST(cli_train_student_json)
{
    test_in_tmpdir("cli", cli_train_student_json_in);
}

/* The "blas_core" of derrd-train's JSON line run with OPENBLAS_CORETYPE set
 * to value (NULL: unset), into out; 0 or -1. */
static int cli_test_blas_core(const char *dir, const char *value, char *out, size_t len)
{
    char *saved = getenv("OPENBLAS_CORETYPE") ? strdup(getenv("OPENBLAS_CORETYPE")) : NULL;
    if (value)
        setenv("OPENBLAS_CORETYPE", value, 1);
    else
        unsetenv("OPENBLAS_CORETYPE");
    test_run_t r;
    const char *args[] = { "--data", dir, "--method", "student", "--max-epochs", "1", "--json",
                           "--quiet", NULL };
    int rc = cli_test_run(&r, dir, args);
    if (saved)
        setenv("OPENBLAS_CORETYPE", saved, 1);
    else
        unsetenv("OPENBLAS_CORETYPE");
    free(saved);
    const char *k = rc == 0 && r.out ? strstr(r.out, "\"blas_core\": \"") : NULL;
    const char *e = k ? strchr(k + 14, '"') : NULL;
    if (!e || (size_t)(e - (k + 14)) >= len) {
        cli_test_print("blas_core", &r);
        test_run_close(&r);
        return -1;
    }
    memcpy(out, k + 14, (size_t)(e - (k + 14)));
    out[e - (k + 14)] = 0;
    test_run_close(&r);
    return 0;
}

/* OpenBLAS falls back to its slow generic kernels on CPUs it does not know
 * (this project's Xeons); derrd-train then starts again with better ones
 * named, unless the operator named some. */
static void cli_blas_kernels_in(const char *dir)
{
    int32_t nu, ni;
    REQUIRE(cli_test_tiny(dir, &nu, &ni) == 0);
    char core[64];
    REQUIRE(cli_test_blas_core(dir, NULL, core, sizeof(core)) == 0);
#if defined(__x86_64__) && defined(__GNUC__) /* x86 builtins, as in model/gemm.c */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        CHECK(strcmp(core, "Prescott") != 0);
        if (!strcmp(core, "Prescott"))
            fprintf(stderr, "    derrd-train ran OpenBLAS's generic kernels on an AVX2 CPU\n");
    }
#endif
    REQUIRE(cli_test_blas_core(dir, "Prescott", core, sizeof(core)) == 0);
    CHECK(strcmp(core, "Prescott") == 0); /* the operator's choice stands */
}

TEST(cli_blas_kernels)
{
    test_in_tmpdir("cli", cli_blas_kernels_in);
}

static void cli_train_teacher_save_then_derrd_in(const char *dir)
{
    int32_t nu, ni;
    REQUIRE(cli_test_tiny(dir, &nu, &ni) == 0);
    char tpath[4200];
    snprintf(tpath, sizeof(tpath), "%s/teacher.emb", dir);
    test_run_t r;
    const char *a1[] = { "--data", dir, "--method", "teacher", "--dim", "8", "--max-epochs", "2",
                         "--save", tpath, "--json", "--quiet", "--threads", "2", NULL };
    REQUIRE(cli_test_run(&r, dir, a1) == 0);
    cli_test_check_json("teacher --save", &r, "teacher");
    CHECK(strstr(r.out, "\"dim\": 8") != NULL);
    test_run_close(&r);
    /* The saved teacher is a verified file of the data's shape. */
    embfile_t ef;
    char err[512] = "";
    int rc = embfile_read(tpath, &ef, err, sizeof(err));
    if (rc != 0)
        test_fail(__FILE__, __LINE__, "embfile_read of the --save file: %s", err);
    REQUIRE(rc == 0);
    CHECK_EQ_INT(ef.dim, 8);
    CHECK_EQ_INT(ef.n_users, nu);
    CHECK_EQ_INT(ef.n_items, ni);
    free(ef.rows);
    /* A dim-20 student distilled from that dim-8 teacher with DE and RRD. */
    const char *a2[] = { "--data", dir, "--method", "derrd", "--teacher", tpath, "--max-epochs",
                         "2", "--json", "--quiet", "--threads", "2", NULL };
    if (cli_test_run(&r, dir, a2) == 0) {
        cli_test_check_json("derrd --teacher", &r, "derrd");
        CHECK(strstr(r.out, "\"dim\": 20") != NULL);
        CHECK(strstr(r.out, "\"de_experts_per_entity\"") != NULL);
        CHECK(strstr(r.out, "\"teacher_epochs\"") == NULL); /* loaded, not trained */
    }
    test_run_close(&r);
}

TEST(cli_train_teacher_save_then_derrd)
{
    test_in_tmpdir("cli", cli_train_teacher_save_then_derrd_in);
}
