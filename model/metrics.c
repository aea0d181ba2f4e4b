/* Leave-one-out metrics; see metrics.h. */
#include "simd.h"
#include "metrics.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const int metrics_k[METRICS_NK] = { 5, 10, 20 };

void metrics_add_rank(metrics_t *m, int64_t rank)
{
    for (int k = 0; k < METRICS_NK; k++) {
        if (rank < metrics_k[k]) {
            m->hr[k] += 1.0;
            m->ndcg[k] += 1.0 / log2((double)rank + 2.0);
            m->mrr[k] += 1.0 / ((double)rank + 1.0);
        }
    }
    m->users++;
}

void metrics_merge(metrics_t *a, const metrics_t *b)
{
    for (int k = 0; k < METRICS_NK; k++) {
        a->hr[k] += b->hr[k];
        a->ndcg[k] += b->ndcg[k];
        a->mrr[k] += b->mrr[k];
    }
    a->users += b->users;
}

void metrics_finish(metrics_t *m)
{
    if (m->users == 0)
        return;
    for (int k = 0; k < METRICS_NK; k++) {
        m->hr[k] /= (double)m->users;
        m->ndcg[k] /= (double)m->users;
        m->mrr[k] /= (double)m->users;
    }
}

enum { METRICS_CHUNK = 256 };

typedef struct {
    const mf_t *mf;
    const loo_split_t *split;
    metrics_t *part; /* (tasks) partial sums, merged in task order */
    int32_t chunk;
} metrics__job_t;

static inline float metrics__score(const mf_t *mf, const float *pu, int32_t item)
{
    if (item < 0 || item >= mf->n_items)
        return 0.0f;
    return vec_dot(pu, mf->ie + (int64_t)item * mf->dim, mf->dim);
}

FAST_CLONES static void metrics__chunk(void *ctx, int task, int worker)
{
    (void)worker;
    metrics__job_t *job = ctx;
    const loo_split_t *sp = job->split;
    const mf_t *mf = job->mf;
    metrics_t *m = &job->part[task];
    int32_t u0 = task * job->chunk;
    int32_t u1 = u0 + job->chunk < sp->n_users ? u0 + job->chunk : sp->n_users;
    for (int32_t u = u0; u < u1; u++) {
        if (sp->target[u] < 0 || u >= mf->n_users)
            continue;
        const float *pu = mf->ue + (int64_t)u * mf->dim;
        float st = metrics__score(mf, pu, sp->target[u]);
        const int32_t *c = sp->cands + (int64_t)u * sp->n_cands;
        int64_t rank = 0;
        /* The candidates are random rows of a table larger than the caches:
         * ask for each row a few candidates ahead of its use. */
        enum { AHEAD = 6 };
        for (int32_t k = 0; k < sp->n_cands; k++) {
            if (k + AHEAD < sp->n_cands && c[k + AHEAD] >= 0 && c[k + AHEAD] < mf->n_items) {
                const char *row = (const char *)(mf->ie + (int64_t)c[k + AHEAD] * mf->dim);
                for (int32_t off = 0; off < mf->dim * 4; off += 64)
                    __builtin_prefetch(row + off);
            }
            rank += metrics__score(mf, pu, c[k]) >= st;
        }
        metrics_add_rank(m, rank);
    }
}

int metrics_eval(const mf_t *mf, const loo_split_t *split, pool_t *pool,
                 metrics_t *out)
{
    metrics__job_t job = { mf, split, NULL, METRICS_CHUNK };
    int ntasks = (split->n_users + job.chunk - 1) / job.chunk;
    memset(out, 0, sizeof(*out));
    if (ntasks == 0)
        return 0;
    job.part = calloc((size_t)ntasks, sizeof(metrics_t));
    if (!job.part)
        return -ENOMEM;
    pool_run(pool, ntasks, metrics__chunk, &job);
    for (int t = 0; t < ntasks; t++)
        metrics_merge(out, &job.part[t]);
    metrics_finish(out);
    free(job.part);
    return 0;
}
