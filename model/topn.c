/* Per-user top-N selection; see topn.h. */
#include "topn.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"

typedef struct {
    float s;
    int32_t i;
} topn__pair_t;

/* Descending score, then ascending id: a strict total order. */
static inline int topn__before(const topn__pair_t *a, const topn__pair_t *b)
{
    return a->s > b->s || (a->s == b->s && a->i < b->i);
}

static int topn__cmp(const void *pa, const void *pb)
{
    const topn__pair_t *a = pa, *b = pb;
    return topn__before(a, b) ? -1 : topn__before(b, a) ? 1 : 0;
}

/* Rearranges v so that its first k entries are the k best, unordered. */
static void topn__partition(topn__pair_t *v, int32_t n, int32_t k)
{
    int32_t lo = 0, hi = n - 1;
    uint32_t seed = 2463534242u;
    while (lo < hi) {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        topn__pair_t pivot = v[lo + (int32_t)(seed % (uint32_t)(hi - lo + 1))];
        int32_t i = lo, j = hi;
        while (i <= j) {
            while (topn__before(&v[i], &pivot))
                i++;
            while (topn__before(&pivot, &v[j]))
                j--;
            if (i <= j) {
                topn__pair_t t = v[i];
                v[i] = v[j];
                v[j] = t;
                i++;
                j--;
            }
        }
        if (k - 1 <= j)
            hi = j;
        else if (k - 1 >= i)
            lo = i;
        else
            return;
    }
}

static int32_t topn__finish(topn__pair_t *v, int32_t m, int32_t n, int32_t *out)
{
    if (m > n) {
        topn__partition(v, m, n);
        m = n;
    }
    qsort(v, (size_t)m, sizeof(*v), topn__cmp);
    for (int32_t k = 0; k < m; k++)
        out[k] = v[k].i;
    return m;
}

/* topn_select with the caller's scratch of n_items pairs. */
static int32_t topn__select(float *scores, int32_t n_items, const int32_t *excl,
                            int32_t n_excl, int32_t n, int32_t *out, topn__pair_t *v)
{
    if (n <= 0)
        return 0;
    for (int32_t k = 0; k < n_excl; k++)
        scores[excl[k]] = -INFINITY;
    int32_t avail = n_items - n_excl;
    int32_t m = 0;
    const int32_t stride = 8;
    if ((int64_t)n * 4 < avail && n_items >= 64 * stride) {
        /* Threshold from every stride-th score: about 1.5x the share we
         * need of the sample, so that usually enough items pass. */
        int32_t ns = 0;
        for (int32_t i = 0; i < n_items; i += stride)
            if (scores[i] != -INFINITY) {
                v[ns].s = scores[i];
                v[ns].i = i;
                ns++;
            }
        int32_t q = (int32_t)((int64_t)n * 3 / (2 * stride)) + 8;
        if (q < ns) {
            topn__partition(v, ns, q);
            float thr = v[0].s;
            for (int32_t k = 1; k < q; k++)
                if (v[k].s < thr)
                    thr = v[k].s;
            for (int32_t i = 0; i < n_items; i++)
                if (scores[i] >= thr && scores[i] != -INFINITY) {
                    v[m].s = scores[i];
                    v[m].i = i;
                    m++;
                }
            if (m < n)
                m = 0; /* too few passed: take the full path */
        }
    }
    if (m == 0) {
        for (int32_t i = 0; i < n_items; i++)
            if (scores[i] != -INFINITY) {
                v[m].s = scores[i];
                v[m].i = i;
                m++;
            }
    }
    return topn__finish(v, m, n, out);
}

int topn_select(float *scores, int32_t n_items, const int32_t *excl,
                int32_t n_excl, int32_t n, int32_t *out)
{
    topn__pair_t *v = malloc((size_t)(n_items > 0 ? n_items : 1) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    int32_t got = topn__select(scores, n_items, excl, n_excl, n, out, v);
    free(v);
    return got;
}

int topn_select_naive(const float *scores, int32_t n_items, const int32_t *excl,
                      int32_t n_excl, int32_t n, int32_t *out)
{
    topn__pair_t *v = malloc((size_t)(n_items > 0 ? n_items : 1) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    int32_t m = 0;
    for (int32_t i = 0; i < n_items; i++) {
        int excluded = 0;
        for (int32_t k = 0; k < n_excl; k++)
            if (excl[k] == i)
                excluded = 1;
        if (!excluded && scores[i] != -INFINITY) {
            v[m].s = scores[i];
            v[m].i = i;
            m++;
        }
    }
    qsort(v, (size_t)m, sizeof(*v), topn__cmp);
    int32_t got = m < n ? m : n;
    for (int32_t k = 0; k < got; k++)
        out[k] = v[k].i;
    free(v);
    return got;
}

enum { TOPN_BLOCK = 64 };

typedef struct {
    const mf_t *mf;
    const ratings_t *r;
    const int32_t *list;
    int32_t n_list;
    int32_t n;
    int32_t *out;
    float **scratch;  /* per worker: (TOPN_BLOCK, n_items) scores */
    float **urows;    /* per worker: (TOPN_BLOCK, dim) gathered user rows */
    topn__pair_t **pairs; /* per worker: (n_items) selection scratch */
} topn__job_t;

static void topn__block(void *ctx, int task, int worker)
{
    topn__job_t *job = ctx;
    const mf_t *mf = job->mf;
    int32_t d = mf->dim, ni = mf->n_items;
    int32_t b0 = task * TOPN_BLOCK;
    int32_t nb = job->n_list - b0 < TOPN_BLOCK ? job->n_list - b0 : TOPN_BLOCK;
    float *sc = job->scratch[worker], *ur = job->urows[worker];
    for (int32_t k = 0; k < nb; k++) {
        int32_t u = job->list ? job->list[b0 + k] : b0 + k;
        memcpy(ur + (int64_t)k * d, mf->ue + (int64_t)u * d, (size_t)d * sizeof(float));
    }
    /* (nb, d) x (ni, d)^T -> (nb, ni) */
    gemm(false, true, nb, ni, d, 1.0f, ur, d, mf->ie, d, 0.0f, sc, ni);
    for (int32_t k = 0; k < nb; k++) {
        int32_t u = job->list ? job->list[b0 + k] : b0 + k;
        int32_t *o = job->out + (int64_t)(b0 + k) * job->n;
        int32_t got = topn__select(sc + (int64_t)k * ni, ni, ratings_items(job->r, u),
                                   ratings_count(job->r, u), job->n, o, job->pairs[worker]);
        for (int32_t x = got; x < job->n; x++)
            o[x] = -1;
    }
}

int topn_users(const mf_t *mf, const ratings_t *r, const int32_t *list,
               int32_t n_list, int32_t n, pool_t *pool, int32_t *out)
{
    int nw = pool_threads(pool);
    topn__job_t job = { mf, r, list, list ? n_list : mf->n_users, n, out,
                        calloc((size_t)nw, sizeof(float *)),
                        calloc((size_t)nw, sizeof(float *)),
                        calloc((size_t)nw, sizeof(topn__pair_t *)) };
    size_t ni = (size_t)(mf->n_items ? mf->n_items : 1);
    int rc = -ENOMEM;
    if (!job.scratch || !job.urows || !job.pairs)
        goto done;
    for (int w = 0; w < nw; w++) {
        job.scratch[w] = malloc((size_t)TOPN_BLOCK * ni * sizeof(float));
        job.urows[w] = malloc((size_t)TOPN_BLOCK * (size_t)mf->dim * sizeof(float));
        job.pairs[w] = malloc(ni * sizeof(topn__pair_t));
        if (!job.scratch[w] || !job.urows[w] || !job.pairs[w])
            goto done;
    }
    pool_run(pool, (job.n_list + TOPN_BLOCK - 1) / TOPN_BLOCK, topn__block, &job);
    rc = 0;
done:
    for (int w = 0; w < nw; w++) {
        if (job.scratch)
            free(job.scratch[w]);
        if (job.urows)
            free(job.urows[w]);
        if (job.pairs)
            free(job.pairs[w]);
    }
    free(job.scratch);
    free(job.urows);
    free(job.pairs);
    return rc;
}
