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

void metrics_select_init(metrics_select_t *s, metrics_select_rule_t rule)
{
    memset(s, 0, sizeof(*s));
    s->rule = rule;
    for (int k = 0; k < METRICS_NK; k++) {
        s->best[k] = -1.0;
        s->best_epoch[k] = -1;
    }
    s->last = -1;
}

unsigned metrics_select_update(metrics_select_t *s, const metrics_t *valid, int32_t epoch)
{
    unsigned mask = 0;
    for (int k = 0; k < METRICS_NK; k++) {
        /* The authors' code compares HR rounded to 4 places, strictly. */
        double score = s->rule == METRICS_SELECT_HR ? nearbyint(valid->hr[k] * 1e4) / 1e4
                                                    : valid->ndcg[1];
        if (score > s->best[k]) {
            s->best[k] = score;
            s->best_epoch[k] = epoch;
            s->valid[k] = *valid;
            mask |= 1u << k;
        }
    }
    if (mask) {
        s->last = epoch;
        s->since = 0;
    } else {
        s->since++;
    }
    return mask;
}

enum { METRICS_CHUNK = 512 }; /* users per task; the plan's lu is 16 bits */
_Static_assert(METRICS_CHUNK <= 65536, "plan user index is 16 bits");

/* One task per METRICS_CHUNK users, direct or through a plan. */
typedef struct {
    const mf_t *mf;
    const loo_split_t *split;
    const metrics_plan_t *plan; /* NULL: metrics__chunk */
    metrics_t *part; /* (tasks) partial sums, merged in task order */
} metrics__job_t;

static inline float metrics__score(const mf_t *mf, const float *pu, int32_t item)
{
    if (item < 0 || item >= mf->n_items)
        return 0.0f;
    return vec_dot(pu, mf->ie + (int64_t)item * mf->dim, mf->dim);
}

/* User u is ranked: it has a target and a row in the model. */
static inline int metrics__ranked(const mf_t *mf, const loo_split_t *sp, int32_t u)
{
    return sp->target[u] >= 0 && u < mf->n_users;
}

FAST_CLONES static void metrics__chunk(void *ctx, int task, int worker)
{
    (void)worker;
    metrics__job_t *job = ctx;
    const loo_split_t *sp = job->split;
    const mf_t *mf = job->mf;
    metrics_t *m = &job->part[task];
    int32_t u0 = task * METRICS_CHUNK;
    int32_t u1 = u0 + METRICS_CHUNK < sp->n_users ? u0 + METRICS_CHUNK : sp->n_users;
    for (int32_t u = u0; u < u1; u++) {
        if (!metrics__ranked(mf, sp, u))
            continue;
        const float *pu = mf->ue + (int64_t)u * mf->dim;
        float st = metrics__score(mf, pu, sp->target[u]);
        const int32_t *c = sp->cands + (int64_t)u * sp->n_cands;
        int64_t rank = 0;
        /* The candidates are random rows of a table larger than the caches:
         * ask for each row a few candidates ahead of its use. */
        enum { AHEAD = 6 };
        for (int32_t k = 0; k < sp->n_cands; k++) {
            if (k + AHEAD < sp->n_cands && c[k + AHEAD] >= 0 && c[k + AHEAD] < mf->n_items)
                vec_prefetch(mf->ie + (int64_t)c[k + AHEAD] * mf->dim,
                             (size_t)mf->dim * sizeof(float));
            rank += !(metrics__score(mf, pu, c[k]) < st);
        }
        metrics_add_rank(m, rank);
    }
}

/* ---- through a plan ------------------------------------------------------ */

struct metrics_plan {
    int32_t n_users, n_cands;
    const int32_t *cands;
    int64_t *off;   /* (blocks + 1) pairs of block b: [off[b], off[b + 1]); a block
                       is METRICS_CHUNK users, one task of metrics_eval_plan() */
    int32_t *item;  /* (pairs) candidate item, sorted within a block */
    uint16_t *lu;   /* (pairs) user within the block */
};

void metrics_plan_free(metrics_plan_t *plan)
{
    if (!plan)
        return;
    free(plan->off);
    free(plan->item);
    free(plan->lu);
    free(plan);
}

metrics_plan_t *metrics_plan_new(const loo_split_t *split)
{
    metrics_plan_t *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->n_users = split->n_users;
    p->n_cands = split->n_cands;
    p->cands = split->cands;
    int32_t n_blocks = (split->n_users + METRICS_CHUNK - 1) / METRICS_CHUNK;
    int64_t pairs = (int64_t)split->n_users * split->n_cands;
    /* Bucket 0 holds ids below 0 (they score 0), bucket i + 1 item i. */
    int32_t hi = 0;
    for (int64_t q = 0; q < pairs; q++)
        if (split->cands[q] >= hi)
            hi = split->cands[q] == INT32_MAX ? INT32_MAX - 1 : split->cands[q] + 1;
    size_t nb = (size_t)hi + 1;
    int64_t *cnt = malloc(nb * sizeof(int64_t));
    p->off = malloc(((size_t)n_blocks + 1) * sizeof(int64_t));
    p->item = malloc((size_t)(pairs ? pairs : 1) * sizeof(int32_t));
    p->lu = malloc((size_t)(pairs ? pairs : 1) * sizeof(uint16_t));
    if (!cnt || !p->off || !p->item || !p->lu) {
        free(cnt);
        metrics_plan_free(p);
        return NULL;
    }
    p->off[0] = 0;
    for (int32_t b = 0; b < n_blocks; b++) {
        int32_t u0 = b * METRICS_CHUNK;
        int32_t u1 = u0 + METRICS_CHUNK < p->n_users ? u0 + METRICS_CHUNK : p->n_users;
        int64_t base = (int64_t)u0 * p->n_cands, end = (int64_t)u1 * p->n_cands;
        /* Counting sort of the block's pairs by item, stable in user order. */
        memset(cnt, 0, nb * sizeof(int64_t));
        for (int64_t q = base; q < end; q++) {
            int32_t it = split->cands[q];
            cnt[it < 0 ? 0 : (size_t)it + 1]++;
        }
        int64_t acc = base;
        for (size_t k = 0; k < nb; k++) {
            int64_t c = cnt[k];
            cnt[k] = acc;
            acc += c;
        }
        for (int64_t q = base; q < end; q++) {
            int32_t it = split->cands[q];
            int64_t at = cnt[it < 0 ? 0 : (size_t)it + 1]++;
            p->item[at] = it;
            p->lu[at] = (uint16_t)((q - base) / p->n_cands);
        }
        p->off[b + 1] = end;
    }
    free(cnt);
    return p;
}

FAST_CLONES static void metrics__block(void *ctx, int task, int worker)
{
    (void)worker;
    metrics__job_t *job = ctx;
    const loo_split_t *sp = job->split;
    const metrics_plan_t *pl = job->plan;
    const mf_t *mf = job->mf;
    int32_t u0 = task * METRICS_CHUNK;
    int32_t u1 = u0 + METRICS_CHUNK < sp->n_users ? u0 + METRICS_CHUNK : sp->n_users;
    float st[METRICS_CHUNK];
    int32_t rank[METRICS_CHUNK];
    uint8_t on[METRICS_CHUNK];
    for (int32_t u = u0; u < u1; u++) {
        on[u - u0] = (uint8_t)metrics__ranked(mf, sp, u);
        rank[u - u0] = 0;
        if (on[u - u0])
            st[u - u0] = metrics__score(mf, mf->ue + (int64_t)u * mf->dim, sp->target[u]);
    }
    const float *ue = mf->ue + (int64_t)u0 * mf->dim;
    int32_t d = mf->dim;
    int64_t q = pl->off[task], q_end = pl->off[task + 1];
    while (q < q_end) {
        /* The block's pairs are sorted by item: score each item's users four
         * at a time against the one item row (vec_dot4 is vec_dot, four at
         * once). */
        int32_t it = pl->item[q];
        int64_t q1 = q;
        while (q1 < q_end && pl->item[q1] == it)
            q1++;
        if (it < 0 || it >= mf->n_items) {
            for (; q < q1; q++)
                if (on[pl->lu[q]])
                    rank[pl->lu[q]] += !(0.0f < st[pl->lu[q]]);
            continue;
        }
        const float *row = mf->ie + (int64_t)it * d;
        const float *a[4];
        int32_t who[4], n = 0;
        for (; q < q1; q++) {
            int32_t lu = pl->lu[q];
            if (!on[lu])
                continue;
            a[n] = ue + (int64_t)lu * d;
            who[n++] = lu;
            if (n == 4) {
                float s[4];
                vec_dot4(a, row, d, s);
                for (int j = 0; j < 4; j++)
                    rank[who[j]] += !(s[j] < st[who[j]]);
                n = 0;
            }
        }
        for (int j = 0; j < n; j++)
            rank[who[j]] += !(vec_dot(a[j], row, d) < st[who[j]]);
    }
    metrics_t *m = &job->part[task];
    for (int32_t u = u0; u < u1; u++)
        if (on[u - u0])
            metrics_add_rank(m, rank[u - u0]);
}

int metrics_eval_plan(const mf_t *mf, const loo_split_t *split, const metrics_plan_t *plan,
                      pool_t *pool, metrics_t *out)
{
    memset(out, 0, sizeof(*out));
    if (plan && (plan->cands != split->cands || plan->n_users != split->n_users ||
                 plan->n_cands != split->n_cands))
        return -EINVAL;
    metrics__job_t job = { mf, split, plan, NULL };
    int ntasks = (split->n_users + METRICS_CHUNK - 1) / METRICS_CHUNK;
    if (ntasks == 0)
        return 0;
    job.part = calloc((size_t)ntasks, sizeof(metrics_t));
    if (!job.part)
        return -ENOMEM;
    pool_run(pool, ntasks, plan ? metrics__block : metrics__chunk, &job);
    for (int t = 0; t < ntasks; t++)
        metrics_merge(out, &job.part[t]);
    metrics_finish(out);
    free(job.part);
    return 0;
}

int metrics_eval(const mf_t *mf, const loo_split_t *split, pool_t *pool,
                 metrics_t *out)
{
    return metrics_eval_plan(mf, split, NULL, pool, out);
}
