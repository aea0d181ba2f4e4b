/* Leave-one-out dataset reader; see dataset.h. */
#include "dataset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"

#define DATASET_MAX_FILE (1ULL << 34)
#define DATASET_MAX_CELLS (1LL << 31) /* users x (candidates + 1) */

typedef struct {
    int32_t *v;
    int64_t n, cap;
} dataset__vec_t;

static int dataset__push(dataset__vec_t *a, int32_t x)
{
    if (a->n == a->cap) {
        int64_t cap = a->cap ? a->cap * 2 : 4096;
        int32_t *v = realloc(a->v, (size_t)cap * sizeof(int32_t));
        if (!v)
            return -ENOMEM;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = x;
    return 0;
}

/* Parses one decimal id at *p; advances *p. Returns the id or -1. */
static int64_t dataset__id(const char **p, const char *end)
{
    const char *s = *p;
    int64_t v = 0;
    if (s == end || *s < '0' || *s > '9')
        return -1;
    while (s < end && *s >= '0' && *s <= '9') {
        v = v * 10 + (*s - '0');
        if (v >= DATASET_MAX_ID)
            return -2;
        s++;
    }
    *p = s;
    return v;
}

/* Reads a file of lines "id<TAB>id[<TAB>id...]" into rows of `width` ids
 * (width 0: any count >= 2, but the same on every line; reported back). */
static int dataset__read(const char *dir, const char *name, int32_t *width,
                         dataset__vec_t *out, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    unsigned char *buf;
    size_t len;
    int rc = fsutil_read_all(path, DATASET_MAX_FILE, &buf, &len, err, errlen);
    if (rc < 0)
        return rc;
    const char *p = (const char *)buf, *end = p + len;
    int64_t line = 0;
    rc = 0;
    while (p < end) {
        line++;
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        const char *q = p;
        int32_t count = 0;
        for (;;) {
            int64_t id = dataset__id(&q, eol);
            if (id < 0) {
                snprintf(err, errlen, "%s:%lld: %s", path, (long long)line,
                         id == -2 ? "id out of range" : q == eol ? "missing field"
                                                                  : "expected a non-negative integer");
                rc = -EBADMSG;
                goto done;
            }
            if (dataset__push(out, (int32_t)id) < 0) {
                snprintf(err, errlen, "%s: out of memory", path);
                rc = -ENOMEM;
                goto done;
            }
            count++;
            if (q == eol || (*q == '\r' && q + 1 == eol))
                break;
            if (*q != '\t') {
                snprintf(err, errlen, "%s:%lld: expected a tab or the end of the line", path,
                         (long long)line);
                rc = -EBADMSG;
                goto done;
            }
            q++;
        }
        if (count < 2 || (*width && count != *width)) {
            snprintf(err, errlen, "%s:%lld: %d fields, expected %d", path, (long long)line, count,
                     *width ? *width : 2);
            rc = -EBADMSG;
            goto done;
        }
        *width = count;
        if (eol == end) /* the last line had no newline: end + 1 is no pointer */
            break;
        p = eol + 1;
    }
done:
    free(buf);
    return rc;
}

void dataset_close(dataset_t *ds)
{
    free(ds->train_u);
    free(ds->train_i);
    free(ds->valid);
    free(ds->test);
    free(ds->cands);
    memset(ds, 0, sizeof(*ds));
}

/* The density rule of dataset.h: cells sized by the largest ids, against
 * the ids the files hold. */
static int dataset__dense(int64_t cells, int64_t ids)
{
    return cells <= DATASET_TABLE_RATIO * ids + DATASET_TABLE_SLACK;
}

int dataset_check_items(const dataset_t *ds, const char *dir, char *err, size_t errlen)
{
    if (dataset__dense(ds->n_items, ds->n_ids))
        return 0;
    snprintf(err, errlen, "%s: item ids up to %d for the %lld ids in the files (item ids must "
             "be dense: tables are sized by the largest)", dir, ds->n_items - 1,
             (long long)ds->n_ids);
    return -EBADMSG;
}

int dataset_load(dataset_t *ds, const char *dir, char *err, size_t errlen)
{
    memset(ds, 0, sizeof(*ds));
    dataset__vec_t tr = { 0 }, va = { 0 }, te = { 0 }, ca = { 0 };
    int32_t w2 = 2, wc = 0;
    int rc;
    if ((rc = dataset__read(dir, "train.tsv", &w2, &tr, err, errlen)) < 0 ||
        (rc = dataset__read(dir, "valid.tsv", &w2, &va, err, errlen)) < 0 ||
        (rc = dataset__read(dir, "test.tsv", &w2, &te, err, errlen)) < 0 ||
        (rc = dataset__read(dir, "candidates.tsv", &wc, &ca, err, errlen)) < 0)
        goto done;
    int32_t nu = 0, ni = 0;
    dataset__vec_t *pairs[3] = { &tr, &va, &te };
    for (int f = 0; f < 3; f++)
        for (int64_t k = 0; k < pairs[f]->n; k += 2) {
            if (pairs[f]->v[k] + 1 > nu)
                nu = pairs[f]->v[k] + 1;
            if (pairs[f]->v[k + 1] + 1 > ni)
                ni = pairs[f]->v[k + 1] + 1;
        }
    for (int64_t k = 0; k < ca.n; k++) {
        int32_t x = ca.v[k];
        if (k % wc == 0) {
            if (x + 1 > nu)
                nu = x + 1;
        } else if (x + 1 > ni) {
            ni = x + 1;
        }
    }
    if (tr.n == 0) {
        snprintf(err, errlen, "%s/train.tsv: no interactions", dir);
        rc = -EBADMSG;
        goto done;
    }
    if ((int64_t)nu * (wc ? wc : 1) > DATASET_MAX_CELLS) {
        snprintf(err, errlen, "%s: %d users with %d candidates each is too large (ids must be "
                 "dense)", dir, nu, wc ? wc - 1 : 0);
        rc = -EBADMSG;
        goto done;
    }
    /* Sized by the largest user id, not by the input: bound them by what was
     * read (dataset.h), before allocating. */
    int64_t ids = tr.n + va.n + te.n + ca.n;
    int64_t cells = (int64_t)nu * (2 + (wc > 1 ? wc - 1 : 1));
    if (!dataset__dense(cells, ids)) {
        snprintf(err, errlen, "%s: user ids up to %d need per-user tables of %lld ids for the "
                 "%lld ids in the files (user ids must be dense)", dir, nu - 1,
                 (long long)cells, (long long)ids);
        rc = -EBADMSG;
        goto done;
    }
    ds->n_users = nu;
    ds->n_items = ni;
    ds->n_train = tr.n / 2;
    ds->n_cands = wc ? wc - 1 : 0;
    ds->n_ids = ids;
    ds->train_u = malloc((size_t)ds->n_train * sizeof(int32_t));
    ds->train_i = malloc((size_t)ds->n_train * sizeof(int32_t));
    ds->valid = malloc((size_t)nu * sizeof(int32_t));
    ds->test = malloc((size_t)nu * sizeof(int32_t));
    ds->cands = malloc((size_t)nu * (size_t)(ds->n_cands ? ds->n_cands : 1) * sizeof(int32_t));
    if (!ds->train_u || !ds->train_i || !ds->valid || !ds->test || !ds->cands) {
        snprintf(err, errlen, "%s: out of memory", dir);
        rc = -ENOMEM;
        goto done;
    }
    for (int64_t k = 0; k < ds->n_train; k++) {
        ds->train_u[k] = tr.v[2 * k];
        ds->train_i[k] = tr.v[2 * k + 1];
    }
    for (int32_t u = 0; u < nu; u++)
        ds->valid[u] = ds->test[u] = -1;
    for (int64_t k = 0; k < (int64_t)nu * ds->n_cands; k++)
        ds->cands[k] = -1;
    const char *names[2] = { "valid.tsv", "test.tsv" };
    int32_t *targets[2] = { ds->valid, ds->test };
    dataset__vec_t *held[2] = { &va, &te };
    for (int f = 0; f < 2; f++)
        for (int64_t k = 0; k < held[f]->n; k += 2) {
            int32_t u = held[f]->v[k];
            if (targets[f][u] >= 0) {
                snprintf(err, errlen, "%s/%s:%lld: user %d has a second held-out item", dir,
                         names[f], (long long)(k / 2 + 1), u);
                rc = -EBADMSG;
                goto done;
            }
            targets[f][u] = held[f]->v[k + 1];
        }
    for (int64_t k = 0; k < ca.n; k += wc) {
        int32_t u = ca.v[k];
        int32_t *row = ds->cands + (int64_t)u * ds->n_cands;
        if (row[0] >= 0) {
            snprintf(err, errlen, "%s/candidates.tsv:%lld: user %d has a second line", dir,
                     (long long)(k / wc + 1), u);
            rc = -EBADMSG;
            goto done;
        }
        memcpy(row, ca.v + k + 1, (size_t)ds->n_cands * sizeof(int32_t));
    }
    for (int f = 0; f < 2; f++) {
        if (held[f]->n == 0) {
            snprintf(err, errlen, "%s/%s: no held-out items", dir, names[f]);
            rc = -EBADMSG;
            goto done;
        }
        for (int64_t k = 0; k < held[f]->n; k += 2) {
            int32_t u = held[f]->v[k];
            if (ds->n_cands == 0 || ds->cands[(int64_t)u * ds->n_cands] < 0) {
                snprintf(err, errlen, "%s/%s:%lld: user %d has a held-out item but no line in "
                         "candidates.tsv", dir, names[f], (long long)(k / 2 + 1), u);
                rc = -EBADMSG;
                goto done;
            }
        }
    }
    rc = 0;
done:
    free(tr.v);
    free(va.v);
    free(te.v);
    free(ca.v);
    if (rc < 0)
        dataset_close(ds);
    return rc;
}
