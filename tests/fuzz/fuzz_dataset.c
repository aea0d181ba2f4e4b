/*
 * fuzz_dataset: io/dataset.h's loader on crafted directories (derrd-train
 * --data and derrd-snap load a dataset from wherever they are pointed).
 * dataset_load takes a directory, so each input is cut into its four files
 * and written to the scratch directory: train.tsv is what comes before the
 * first "##\n", valid.tsv what comes before the second, test.tsv before the
 * third, candidates.tsv the rest (a '#' is valid in no file, so the cuts
 * never hide a valid line); a file with no part is empty.
 *
 * The outcome is compared with a reference loader written here from
 * dataset.h and the dataset README alone: both accept or both refuse. Of a
 * dataset that loads it checks every field against the reference: the
 * counts, the training pairs in order, each held-out item at its user and
 * -1 elsewhere, each candidates line at its user's row and rows of -1 for
 * the users without one. Of a refusal: -EBADMSG (or -ENOMEM), nothing left
 * to free, and a printable reason that names the directory, then one of
 * the four files (with a line number inside it for a line's error) or the
 * directory itself; a short error buffer is cut and NUL-terminated.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/dataset.h"
#include "tests/fuzz/fuzzutil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_SEP "##\n"
#define FUZZ_MAX_CELLS (1LL << 31) /* dataset.c's bound on users x (candidates + 1) */

static const char *const fuzz_ds_names[4] = { "train.tsv", "valid.tsv", "test.tsv",
                                              "candidates.tsv" };

/* One file as the reference reads it. */
typedef struct {
    int64_t lines;  /* lines, a last one without a newline included */
    int32_t width;  /* ids per line (all the same); 0 with no lines */
    int32_t *v;     /* (lines, width) */
    int64_t cap;
} fuzz_tsv_t;

static void fuzz_tsv_push(fuzz_tsv_t *t, int32_t x, int64_t at)
{
    if (at == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 64;
        t->v = realloc(t->v, (size_t)t->cap * sizeof(*t->v));
        FUZZ_CHECK(t->v != NULL);
    }
    t->v[at] = x;
}

/* The line syntax of dataset.h: every line of s[0..n) (split at '\n', the
 * last one may lack it, one '\r' before the end of a line ignored) is
 * decimal ids below DATASET_MAX_ID separated by single tabs, two per line
 * (width 2) or at least two and as many on every line (width 0). Returns
 * 1 with the ids in t, or 0. Counts t->lines either way. */
static int fuzz_tsv_parse(const unsigned char *s, size_t n, int32_t width, fuzz_tsv_t *t)
{
    int64_t at = 0;
    int ok = 1;
    for (size_t start = 0; start < n;) {
        const unsigned char *nl = memchr(s + start, '\n', n - start);
        size_t end = nl ? (size_t)(nl - s) : n;
        size_t stop = end > start && s[end - 1] == '\r' ? end - 1 : end;
        t->lines++;
        int32_t fields = 0;
        for (size_t p = start; ok;) {
            int64_t id = 0;
            size_t digits = 0;
            while (p < stop && s[p] >= '0' && s[p] <= '9' && id < DATASET_MAX_ID) {
                id = 10 * id + (s[p++] - '0');
                digits++;
            }
            if (!digits || id >= DATASET_MAX_ID) {
                ok = 0;
                break;
            }
            fuzz_tsv_push(t, (int32_t)id, at++);
            fields++;
            if (p == stop)
                break;
            if (s[p] != '\t')
                ok = 0;
            p++;
        }
        if (ok && (fields < 2 || (width && fields != width)))
            ok = 0;
        width = fields;
        start = end + 1;
    }
    t->width = t->lines ? width : 0;
    return ok;
}

static int fuzz_cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* The users (the first id of each line) of t, sorted (malloc'd). */
static int32_t *fuzz_tsv_users(const fuzz_tsv_t *t)
{
    int32_t *u = malloc((size_t)(t->lines ? t->lines : 1) * sizeof(*u));
    FUZZ_CHECK(u != NULL);
    for (int64_t k = 0; k < t->lines; k++)
        u[k] = t->v[k * t->width];
    qsort(u, (size_t)t->lines, sizeof(*u), fuzz_cmp_i32);
    return u;
}

/* 1 when no user has two lines in t. */
static int fuzz_tsv_users_once(const fuzz_tsv_t *t)
{
    int32_t *u = fuzz_tsv_users(t);
    int once = 1;
    for (int64_t k = 1; k < t->lines && once; k++)
        once = u[k] != u[k - 1];
    free(u);
    return once;
}

/* The rules of a whole dataset; f holds the four files, each parsed. Returns
 * 1 when it must load, with the users and items it spans. */
static int fuzz_ds_reference(const fuzz_tsv_t *f, int32_t *nu, int32_t *ni)
{
    *nu = *ni = 0;
    for (int k = 0; k < 4; k++)
        for (int64_t l = 0; l < f[k].lines; l++)
            for (int32_t c = 0; c < f[k].width; c++) {
                int32_t x = f[k].v[l * f[k].width + c], *n = c == 0 ? nu : ni;
                if (x + 1 > *n)
                    *n = x + 1;
            }
    if (f[0].lines == 0 || f[1].lines == 0 || f[2].lines == 0)
        return 0;
    if ((int64_t)*nu * (f[3].width ? f[3].width : 1) > FUZZ_MAX_CELLS)
        return 0;
    int64_t ids = 0, cells = (int64_t)*nu * (2 + (f[3].width > 1 ? f[3].width - 1 : 1));
    for (int k = 0; k < 4; k++)
        ids += f[k].lines * f[k].width;
    if (cells > DATASET_TABLE_RATIO * ids + DATASET_TABLE_SLACK) /* user ids far from dense */
        return 0;
    if (!fuzz_tsv_users_once(&f[1]) || !fuzz_tsv_users_once(&f[2]) ||
        !fuzz_tsv_users_once(&f[3]))
        return 0;
    /* Every held-out item's user has a candidates line. */
    int32_t *cu = fuzz_tsv_users(&f[3]);
    int found = 1;
    for (int k = 1; k <= 2; k++)
        for (int64_t l = 0; l < f[k].lines && found; l++)
            found = bsearch(&f[k].v[2 * l], cu, (size_t)f[3].lines, sizeof(*cu),
                            fuzz_cmp_i32) != NULL;
    free(cu);
    return found;
}

/* A held-out table (valid or test) against the lines it came from. */
static void fuzz_ds_check_held(const int32_t *held, const fuzz_tsv_t *t, const dataset_t *ds)
{
    int64_t set = 0;
    for (int32_t u = 0; u < ds->n_users; u++) {
        FUZZ_CHECK(held[u] >= -1 && held[u] < ds->n_items);
        set += held[u] >= 0;
    }
    FUZZ_CHECK(set == t->lines);
    for (int64_t l = 0; l < t->lines; l++)
        FUZZ_CHECK(held[t->v[2 * l]] == t->v[2 * l + 1]);
}

/* What a refused load must leave: nothing to free. */
static int fuzz_ds_empty(const dataset_t *ds)
{
    return ds->n_users == 0 && ds->n_items == 0 && ds->n_train == 0 && ds->n_cands == 0 &&
           !ds->train_u && !ds->train_i && !ds->valid && !ds->test && !ds->cands;
}

static void fuzz_ds_check_loaded(const dataset_t *ds, const fuzz_tsv_t *f, int32_t nu,
                                 int32_t ni)
{
    FUZZ_CHECK(ds->n_users == nu && ds->n_items == ni);
    FUZZ_CHECK(ds->n_train == f[0].lines);
    for (int64_t k = 0; k < ds->n_train; k++)
        FUZZ_CHECK(ds->train_u[k] == f[0].v[2 * k] && ds->train_i[k] == f[0].v[2 * k + 1]);
    fuzz_ds_check_held(ds->valid, &f[1], ds);
    fuzz_ds_check_held(ds->test, &f[2], ds);
    FUZZ_CHECK(ds->n_cands == f[3].width - 1);
    int64_t rows = 0;
    for (int32_t u = 0; u < nu; u++) {
        const int32_t *row = ds->cands + (int64_t)u * ds->n_cands;
        rows += row[0] >= 0;
        for (int32_t c = 0; c < ds->n_cands; c++)
            FUZZ_CHECK(row[0] >= 0 ? row[c] >= 0 && row[c] < ni : row[c] == -1);
    }
    FUZZ_CHECK(rows == f[3].lines);
    for (int64_t l = 0; l < f[3].lines; l++) {
        const int32_t *line = f[3].v + l * f[3].width;
        FUZZ_CHECK(memcmp(ds->cands + (int64_t)line[0] * ds->n_cands, line + 1,
                          (size_t)ds->n_cands * sizeof(int32_t)) == 0);
    }
}

/* The form of a refusal's reason: "DIR/FILE:LINE: ...", "DIR/FILE: ..."
 * or "DIR: ...", LINE inside FILE. */
static void fuzz_ds_check_reason(const char *err, size_t cap, const char *dir,
                                 const fuzz_tsv_t *f)
{
    FUZZ_CHECK(fuzz_printable(err, cap));
    size_t dl = strlen(dir);
    FUZZ_CHECK(strncmp(err, dir, dl) == 0);
    const char *p = err + dl;
    if (p[0] == ':') {
        FUZZ_CHECK(p[1] == ' ' && p[2]);
        return;
    }
    FUZZ_CHECK(p[0] == '/');
    int k = 0;
    while (k < 4 && strncmp(p + 1, fuzz_ds_names[k], strlen(fuzz_ds_names[k])) != 0)
        k++;
    FUZZ_CHECK(k < 4);
    p += 1 + strlen(fuzz_ds_names[k]);
    FUZZ_CHECK(p[0] == ':');
    if (p[1] >= '0' && p[1] <= '9') {
        char *end;
        long long line = strtoll(p + 1, &end, 10);
        FUZZ_CHECK(line >= 1 && line <= f[k].lines);
        p = end;
        FUZZ_CHECK(p[0] == ':');
    }
    FUZZ_CHECK(p[1] == ' ' && p[2]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *part[4];
    size_t len[4];
    size_t at = 0;
    for (int k = 0; k < 4; k++) {
        const uint8_t *cut = k < 3 && at < size
                                 ? memmem(data + at, size - at, FUZZ_SEP, strlen(FUZZ_SEP))
                                 : NULL;
        part[k] = data + at;
        len[k] = cut ? (size_t)(cut - part[k]) : size - at;
        at = cut ? (size_t)(cut - data) + strlen(FUZZ_SEP) : size;
    }
    char path[512];
    for (int k = 0; k < 4; k++)
        fuzz_scratch_write(fuzz_ds_names[k], part[k], len[k], path, sizeof(path));
    const char *dir = fuzz_scratch_dir();

    fuzz_tsv_t f[4];
    memset(f, 0, sizeof(f));
    int ok = 1;
    for (int k = 0; k < 4; k++)
        ok &= fuzz_tsv_parse(part[k], len[k], k < 3 ? 2 : 0, &f[k]);
    int32_t nu = 0, ni = 0;
    int valid = ok && fuzz_ds_reference(f, &nu, &ni);

    dataset_t ds;
    memset(&ds, 0x5a, sizeof(ds));
    char err[1024];
    memset(err, 0x55, sizeof(err));
    int rc = dataset_load(&ds, dir, err, sizeof(err));
    if (rc < 0) {
        if (valid)
            fprintf(stderr, "dataset_load refused what the reference accepts: %s\n", err);
        FUZZ_CHECK(!valid);
        FUZZ_CHECK(rc == -EBADMSG || rc == -ENOMEM);
        FUZZ_CHECK(fuzz_ds_empty(&ds));
        fuzz_ds_check_reason(err, sizeof(err), dir, f);
        char small[8];
        memset(small, 0x55, sizeof(small));
        FUZZ_CHECK(dataset_load(&ds, dir, small, sizeof(small)) == rc);
        FUZZ_CHECK(memchr(small, 0, sizeof(small)) && strncmp(small, err, strlen(small)) == 0);
    } else {
        if (!valid)
            fprintf(stderr, "dataset_load accepted what the reference refuses\n");
        FUZZ_CHECK(rc == 0 && valid);
        fuzz_ds_check_loaded(&ds, f, nu, ni);
        dataset_close(&ds);
        FUZZ_CHECK(fuzz_ds_empty(&ds));
    }
    for (int k = 0; k < 4; k++)
        free(f[k].v);
    return 0;
}
