/* BPR / DE / RRD training epochs; see distill.h. */
#include "distill.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experts.h"
#include "gemm.h"
#include "rng.h"
#include "rrd.h"
#include "scatter.h"
#include "topn.h"

#define DISTILL_MIN_TEMP 1e-3f

enum { CHUNK = 128, DISTILL_MAX_KL = 1024 }; /* samples or anchors per task: fixed, so results do not
                         depend on the thread count */

/* One side of DE: its experts, their optimizer and the step's batch. */
typedef struct {
    experts_t ex;
    adam_table_t opt_ex;   /* rows = experts */
    adam_table_t opt_sel;  /* one row: the selection net */
    de_work_t *work;
    int32_t n;
    int32_t *rows;         /* (n) model rows of the entities */
    float *s;              /* (n, ds) student rows */
    float *t;              /* (n, dt) teacher rows */
    float *weight;         /* (n) */
    float *gumbel;         /* (n, M) */
    float *ds;             /* (n, ds) gradient at the student rows */
    uint8_t *used;         /* (M) */
} distill__de_side_t;

struct distill {
    distill_cfg_t cfg;
    const ratings_t *train;
    const mf_t *teacher;
    pool_t *pool;
    int nparts;             /* row partitions of the optimizer step */
    int nworkers;           /* pool threads: the per-worker scratch count */

    mf_t model;
    adam_table_t opt;       /* rows: users, then items */
    int32_t epoch;
    int64_t step;

    int32_t *pair_u;        /* (nnz) training pairs */
    int32_t *pair_i;
    int32_t *order;         /* (nnz) this epoch's order */

    bpr_triple_t *batch;    /* (batch) */
    float *coef;            /* (batch) */
    int nchunks;            /* chunks per full batch */
    scatter_t *sc_bpr;      /* (nchunks) */
    const scatter_t **lists;/* a step's lists, in the order they are summed */
    double *loss_chunk;     /* (max chunks) */

    /* the batch's unique entities, in order of first appearance */
    int64_t *seen_user, *seen_pos, *seen_neg;
    int32_t *uniq_user, *uniq_pos, *uniq_neg;
    int32_t n_user, n_pos, n_neg;

    distill__de_side_t de[2]; /* users, items */
    scatter_t sc_de;

    /* RRD: anchors are users, or items for RRD_ITEM */
    ratings_t anchor_r;      /* the anchor-by-target matrix (owned) */
    int32_t n_anchor, n_target, anchor_base, target_base;
    int32_t *topn;           /* (n_anchor, rrd_n) teacher's ranked targets */
    int32_t topn_computed;   /* lists computed at setup (the rest were reused) */
    int32_t *rrd_tgt;        /* (n_anchor, K + L) this epoch's samples */
    int32_t *rrd_nk, *rrd_nl;/* (n_anchor) how many of each were drawn */
    float *anchor_grad;      /* (batch anchors, dim) */
    scatter_t *sc_rrd;       /* per anchor chunk */
    int rrd_chunks_cap;
    const int32_t *step_anchor;
    int32_t *rrd_pick;       /* (batch) the sampled anchors of a step */
    int32_t n_step_anchor;
    /* RRD_NOSAMPLE: per worker scores (CHUNK, n_target), anchor rows
     * (CHUNK, dim), the compacted uninteresting scores and gradients
     * (n_target each); per anchor chunk the targets' gradient (n_target, dim) */
    float **ns_S, **ns_P, **ns_u, **ns_g;
    float *ns_dT;
    /* per worker scratch */
    uint64_t **bitmap;
    float **scr_f;
    int32_t **scr_i;
};

distill_cfg_t distill_cfg_default(void)
{
    distill_cfg_t c;
    memset(&c, 0, sizeof(c));
    c.dim = 20;
    c.batch = 1024;
    c.adam = adam_cfg_default();
    c.init_std = 0.01f;
    c.seed = 0;
    c.use_de = false;
    c.n_experts = 30;
    c.lambda_de = 0.01f;
    c.de_keep = 0.0f;
    c.de_max_experts = 2;
    c.de_sample = 1.0f;
    c.de_every = 5;
    c.use_rrd = false;
    c.rrd_variant = RRD_PAPER;
    c.rrd_n = 500;
    c.rrd_k = 40;
    c.rrd_l = 40;
    c.rrd_temp = 10.0f;
    c.lambda_rrd = 0.001f;
    c.rrd_sample = 0.2f;
    return c;
}

static void distill__de_side_close(distill__de_side_t *sd)
{
    experts_close(&sd->ex);
    adam_table_close(&sd->opt_ex);
    adam_table_close(&sd->opt_sel);
    de_work_free(sd->work);
    free(sd->rows);
    free(sd->s);
    free(sd->t);
    free(sd->weight);
    free(sd->gumbel);
    free(sd->ds);
    free(sd->used);
    memset(sd, 0, sizeof(*sd));
}

void distill_free(distill_t *d)
{
    if (!d)
        return;
    mf_close(&d->model);
    adam_table_close(&d->opt);
    free(d->pair_u);
    free(d->pair_i);
    free(d->order);
    free(d->batch);
    free(d->coef);
    if (d->sc_bpr)
        for (int c = 0; c < d->nchunks; c++)
            scatter_close(&d->sc_bpr[c]);
    free(d->sc_bpr);
    free(d->lists);
    free(d->loss_chunk);
    free(d->seen_user);
    free(d->seen_pos);
    free(d->seen_neg);
    free(d->uniq_user);
    free(d->uniq_pos);
    free(d->uniq_neg);
    for (int s = 0; s < 2; s++)
        distill__de_side_close(&d->de[s]);
    scatter_close(&d->sc_de);
    ratings_close(&d->anchor_r);
    free(d->topn);
    free(d->rrd_tgt);
    free(d->rrd_nk);
    free(d->rrd_nl);
    free(d->anchor_grad);
    free(d->rrd_pick);
    if (d->sc_rrd)
        for (int c = 0; c < d->rrd_chunks_cap; c++)
            scatter_close(&d->sc_rrd[c]);
    free(d->sc_rrd);
    for (int w = 0; w < d->nworkers; w++) {
        if (d->bitmap)
            free(d->bitmap[w]);
        if (d->scr_f)
            free(d->scr_f[w]);
        if (d->scr_i)
            free(d->scr_i[w]);
    }
    for (int w = 0; w < d->nworkers && d->ns_S; w++) {
        free(d->ns_S[w]);
        free(d->ns_P[w]);
        free(d->ns_u[w]);
        free(d->ns_g[w]);
    }
    free(d->ns_S);
    free(d->ns_P);
    free(d->ns_u);
    free(d->ns_g);
    free(d->ns_dT);
    free(d->bitmap);
    free(d->scr_f);
    free(d->scr_i);
    free(d);
}

static int distill__de_side_init(distill_t *d, distill__de_side_t *sd, int side)
{
    const distill_cfg_t *c = &d->cfg;
    int32_t cap = 3 * c->batch;
    int rc = experts_init(&sd->ex, c->n_experts, c->dim, d->teacher->dim,
                          c->seed ^ (0x5eed0000ULL + (uint64_t)side));
    if (rc < 0)
        return rc;
    if (adam_table_init(&sd->opt_ex, sd->ex.ex, sd->ex.n_experts, sd->ex.ex_size, &c->adam) < 0 ||
        adam_table_init(&sd->opt_sel, sd->ex.sel, 1, sd->ex.sel_size, &c->adam) < 0)
        return -ENOMEM;
    sd->work = de_work_new();
    sd->rows = malloc((size_t)cap * sizeof(int32_t));
    sd->s = malloc((size_t)cap * (size_t)c->dim * sizeof(float));
    sd->t = malloc((size_t)cap * (size_t)d->teacher->dim * sizeof(float));
    sd->weight = malloc((size_t)cap * sizeof(float));
    sd->gumbel = malloc((size_t)cap * (size_t)c->n_experts * sizeof(float));
    sd->ds = malloc((size_t)cap * (size_t)c->dim * sizeof(float));
    sd->used = calloc((size_t)c->n_experts, 1);
    if (!sd->work || !sd->rows || !sd->s || !sd->t || !sd->weight || !sd->gumbel ||
        !sd->ds || !sd->used)
        return -ENOMEM;
    return 0;
}

/* The teacher's top-N lists of every anchor, copying prev's where allowed
 * (see distill_new_reusing). */
static int distill__topn(distill_t *d, const mf_t *view, const distill_t *prev,
                         const uint8_t *stale)
{
    int32_t N = d->cfg.rrd_n;
    int reuse = prev && prev->topn && prev->cfg.use_rrd && prev->cfg.rrd_n == N &&
                prev->cfg.rrd_variant == RRD_PAPER && d->cfg.rrd_variant == RRD_PAPER;
    if (!reuse) {
        d->topn_computed = d->n_anchor;
        return topn_users(view, &d->anchor_r, NULL, d->n_anchor, N, d->pool, d->topn);
    }
    int32_t *list = malloc((size_t)(d->n_anchor ? d->n_anchor : 1) * sizeof(int32_t));
    if (!list)
        return -ENOMEM;
    int32_t n = 0;
    for (int32_t a = 0; a < d->n_anchor; a++) {
        if (a < prev->n_anchor && !(stale && stale[a]))
            memcpy(d->topn + (size_t)a * N, prev->topn + (size_t)a * N, (size_t)N * sizeof(int32_t));
        else
            list[n++] = a;
    }
    int rc = 0;
    if (n > 0) {
        int32_t *tmp = malloc((size_t)n * (size_t)N * sizeof(int32_t));
        rc = tmp ? topn_users(view, &d->anchor_r, list, n, N, d->pool, tmp) : -ENOMEM;
        for (int32_t k = 0; rc == 0 && k < n; k++)
            memcpy(d->topn + (size_t)list[k] * N, tmp + (size_t)k * N, (size_t)N * sizeof(int32_t));
        free(tmp);
    }
    free(list);
    d->topn_computed = n;
    return rc;
}

distill_t *distill_new(const distill_cfg_t *cfg, const ratings_t *train, const mf_t *teacher,
                       pool_t *pool, char *err, size_t errlen)
{
    return distill_new_reusing(cfg, train, teacher, pool, NULL, NULL, err, errlen);
}

int32_t distill_topn_computed(const distill_t *d) { return d->topn_computed; }

const int32_t *distill_topn(const distill_t *d) { return d->topn; }

distill_t *distill_new_reusing(const distill_cfg_t *cfg, const ratings_t *train,
                               const mf_t *teacher, pool_t *pool, const distill_t *prev,
                               const uint8_t *stale, char *err, size_t errlen)
{
    const distill_cfg_t *c = cfg;
    if (c->dim <= 0 || c->batch <= 0 || !(c->adam.lr > 0.0f) || c->adam.wd < 0.0f) {
        snprintf(err, errlen, "dim, batch and lr must be positive, wd not negative");
        return NULL;
    }
    if ((c->use_de || c->use_rrd) && !teacher) {
        snprintf(err, errlen, "DE and RRD need a teacher");
        return NULL;
    }
    if (teacher && (teacher->n_users != train->n_users || teacher->n_items != train->n_items)) {
        snprintf(err, errlen, "teacher has %d users and %d items, the data %d and %d",
                 teacher->n_users, teacher->n_items, train->n_users, train->n_items);
        return NULL;
    }
    if (c->use_de && (c->n_experts < 1 || c->n_experts > 256 || !(c->de_sample > 0.0f) ||
                      c->de_sample > 1.0f || c->de_keep < 0.0f || c->de_keep >= 1.0f ||
                      c->de_every < 1 || c->de_max_experts < 0)) {
        snprintf(err, errlen, "DE needs 1..256 experts, de_sample in (0, 1], de_keep in [0, 1), "
                 "de_every >= 1, de_max_experts >= 0");
        return NULL;
    }
    if (c->use_rrd && (c->rrd_n < 1 || c->rrd_k < 1 || c->rrd_l < 0 || c->rrd_k > c->rrd_n ||
                       c->rrd_k + c->rrd_l > DISTILL_MAX_KL || !(c->rrd_temp > 0.0f) ||
                       !(c->rrd_sample > 0.0f) || c->rrd_sample > 1.0f)) {
        snprintf(err, errlen, "RRD needs N >= K >= 1, L >= 0, K + L <= %d, a positive "
                 "temperature and rrd_sample in (0, 1]", DISTILL_MAX_KL);
        return NULL;
    }
    if (train->nnz == 0) {
        snprintf(err, errlen, "no training interactions");
        return NULL;
    }
    distill_t *d = calloc(1, sizeof(*d));
    if (!d)
        goto oom;
    d->cfg = *cfg;
    d->train = train;
    d->teacher = teacher;
    d->pool = pool;
    d->nworkers = pool_threads(pool);
    d->nparts = d->nworkers;
    if (d->nparts > ADAM_MAX_PARTS)
        d->nparts = ADAM_MAX_PARTS;
    if (mf_init(&d->model, train->n_users, train->n_items, c->dim) < 0)
        goto oom;
    mf_init_normal(&d->model, c->init_std, c->seed);
    if (adam_table_init(&d->opt, d->model.params, train->n_users + train->n_items, c->dim,
                        &c->adam) < 0)
        goto oom;
    int64_t nnz = train->nnz;
    d->pair_u = malloc((size_t)nnz * sizeof(int32_t));
    d->pair_i = malloc((size_t)nnz * sizeof(int32_t));
    d->order = malloc((size_t)nnz * sizeof(int32_t));
    d->batch = malloc((size_t)c->batch * sizeof(bpr_triple_t));
    d->coef = malloc((size_t)c->batch * sizeof(float));
    d->nchunks = (c->batch + CHUNK - 1) / CHUNK;
    d->sc_bpr = calloc((size_t)d->nchunks, sizeof(scatter_t));
    d->lists = calloc(2 * (size_t)d->nchunks + 2, sizeof(scatter_t *));
    d->loss_chunk = calloc((size_t)d->nchunks + (size_t)c->batch / CHUNK + 2, sizeof(double));
    d->seen_user = malloc((size_t)train->n_users * sizeof(int64_t));
    d->seen_pos = malloc((size_t)train->n_items * sizeof(int64_t));
    d->seen_neg = malloc((size_t)train->n_items * sizeof(int64_t));
    d->uniq_user = malloc((size_t)c->batch * sizeof(int32_t));
    d->uniq_pos = malloc((size_t)c->batch * sizeof(int32_t));
    d->uniq_neg = malloc((size_t)c->batch * sizeof(int32_t));
    if (!d->pair_u || !d->pair_i || !d->order || !d->batch || !d->coef || !d->sc_bpr || !d->lists ||
        !d->loss_chunk || !d->seen_user || !d->seen_pos || !d->seen_neg ||
        !d->uniq_user || !d->uniq_pos || !d->uniq_neg)
        goto oom;
    for (int32_t u = 0; u < train->n_users; u++)
        for (int64_t k = train->row[u]; k < train->row[u + 1]; k++) {
            d->pair_u[k] = u;
            d->pair_i[k] = train->col[k];
        }
    for (int32_t u = 0; u < train->n_users; u++)
        d->seen_user[u] = -1;
    for (int32_t i = 0; i < train->n_items; i++)
        d->seen_pos[i] = d->seen_neg[i] = -1;
    scatter_init(&d->sc_de);
    if (c->use_de) {
        for (int s = 0; s < 2; s++)
            if (distill__de_side_init(d, &d->de[s], s) < 0)
                goto oom;
    }
    if (c->use_rrd) {
        bool item_side = c->rrd_variant == RRD_ITEM;
        if (item_side) {
            if (ratings_init_transpose(&d->anchor_r, train) < 0)
                goto oom;
        } else {
            /* a copy keeps ownership simple: anchor_r is always ours */
            if (ratings_init(&d->anchor_r, train->n_users, train->n_items, d->pair_u,
                             d->pair_i, nnz) < 0)
                goto oom;
        }
        d->n_anchor = d->anchor_r.n_users;
        d->n_target = d->anchor_r.n_items;
        d->anchor_base = item_side ? train->n_users : 0;
        d->target_base = item_side ? 0 : train->n_users;
        int32_t N = c->rrd_n, KL = c->rrd_k + c->rrd_l;
        d->topn = malloc((size_t)d->n_anchor * (size_t)N * sizeof(int32_t));
        d->rrd_tgt = malloc((size_t)d->n_anchor * (size_t)KL * sizeof(int32_t));
        d->rrd_nk = malloc((size_t)d->n_anchor * sizeof(int32_t));
        d->rrd_nl = malloc((size_t)d->n_anchor * sizeof(int32_t));
        d->anchor_grad = malloc((size_t)c->batch * (size_t)c->dim * sizeof(float));
        d->rrd_pick = malloc((size_t)c->batch * sizeof(int32_t));
        d->rrd_chunks_cap = (c->batch + CHUNK - 1) / CHUNK;
        d->sc_rrd = calloc((size_t)d->rrd_chunks_cap, sizeof(scatter_t));
        d->bitmap = calloc((size_t)d->nworkers, sizeof(uint64_t *));
        d->scr_f = calloc((size_t)d->nworkers, sizeof(float *));
        d->scr_i = calloc((size_t)d->nworkers, sizeof(int32_t *));
        if (!d->topn || !d->rrd_tgt || !d->rrd_nk || !d->rrd_nl || !d->anchor_grad || !d->rrd_pick ||
            !d->sc_rrd || !d->bitmap || !d->scr_f || !d->scr_i)
            goto oom;
        for (int w = 0; w < d->nworkers; w++) {
            d->bitmap[w] = calloc(((size_t)d->n_target + 63) / 64, sizeof(uint64_t));
            d->scr_f[w] = malloc(((size_t)N + (size_t)KL) * sizeof(float));
            d->scr_i[w] = malloc(((size_t)N + (size_t)KL) * sizeof(int32_t));
            if (!d->bitmap[w] || !d->scr_f[w] || !d->scr_i[w])
                goto oom;
        }
        if (c->rrd_variant == RRD_NOSAMPLE) {
            size_t nt = (size_t)d->n_target, dim = (size_t)c->dim;
            d->ns_S = calloc((size_t)d->nworkers, sizeof(float *));
            d->ns_P = calloc((size_t)d->nworkers, sizeof(float *));
            d->ns_u = calloc((size_t)d->nworkers, sizeof(float *));
            d->ns_g = calloc((size_t)d->nworkers, sizeof(float *));
            d->ns_dT = malloc((size_t)d->rrd_chunks_cap * nt * dim * sizeof(float));
            if (!d->ns_S || !d->ns_P || !d->ns_u || !d->ns_g || !d->ns_dT)
                goto oom;
            for (int w = 0; w < d->nworkers; w++) {
                d->ns_S[w] = malloc((size_t)CHUNK * nt * sizeof(float));
                d->ns_P[w] = malloc((size_t)CHUNK * dim * sizeof(float));
                d->ns_u[w] = malloc(nt * sizeof(float));
                d->ns_g[w] = malloc(nt * sizeof(float));
                if (!d->ns_S[w] || !d->ns_P[w] || !d->ns_u[w] || !d->ns_g[w])
                    goto oom;
            }
        }
        /* The teacher's ranking, seen from the anchors' side. */
        mf_t view = *teacher;
        if (item_side) {
            view.n_users = teacher->n_items;
            view.n_items = teacher->n_users;
            view.ue = teacher->ie;
            view.ie = teacher->ue;
        }
        if (distill__topn(d, &view, prev, stale) < 0)
            goto oom;
    }
    return d;
oom:
    snprintf(err, errlen, "out of memory");
    distill_free(d);
    return NULL;
}

/* ---- per-epoch RRD samples ---------------------------------------------- */

typedef struct {
    distill_t *d;
} distill__job_t;

static void distill__rrd_sample(void *ctx, int task, int worker)
{
    distill_t *d = ((distill__job_t *)ctx)->d;
    const distill_cfg_t *c = &d->cfg;
    int32_t N = c->rrd_n, K = c->rrd_k, L = c->rrd_l, KL = K + L;
    int32_t a0 = task * CHUNK;
    int32_t a1 = a0 + CHUNK < d->n_anchor ? a0 + CHUNK : d->n_anchor;
    uint64_t *bm = d->bitmap[worker];
    for (int32_t a = a0; a < a1; a++) {
        rng_t rng;
        rng_init_stream(&rng, c->seed, RNG_RRD, (uint64_t)d->epoch, (uint64_t)a);
        const int32_t *top = d->topn + (int64_t)a * N;
        int32_t *out = d->rrd_tgt + (int64_t)a * KL;
        int32_t nk;
        if (c->rrd_variant == RRD_NOSAMPLE) {
            nk = 0;
            while (nk < K && top[nk] >= 0) {
                out[nk] = top[nk];
                nk++;
            }
        } else {
            nk = rrd_sample_interesting(&rng, top, N, K, c->rrd_temp, d->scr_f[worker],
                                        d->scr_i[worker], out);
        }
        /* Uninteresting: not observed, not in the top-N list. */
        const int32_t *obs = ratings_items(&d->anchor_r, a);
        int32_t nobs = ratings_count(&d->anchor_r, a);
        int64_t taken = 0;
        for (int32_t k = 0; k < nobs; k++) {
            bm[obs[k] >> 6] |= 1ULL << (obs[k] & 63);
            taken++;
        }
        for (int32_t k = 0; k < N && top[k] >= 0; k++) {
            uint64_t bit = 1ULL << (top[k] & 63);
            if (!(bm[top[k] >> 6] & bit)) {
                bm[top[k] >> 6] |= bit;
                taken++;
            }
        }
        int32_t nl = 0;
        if (c->rrd_variant != RRD_NOSAMPLE)
            nl = rrd_sample_uninteresting(&rng, d->n_target, bm, taken, L, out + nk);
        for (int32_t k = 0; k < nobs; k++)
            bm[obs[k] >> 6] = 0;
        for (int32_t k = 0; k < N && top[k] >= 0; k++)
            bm[top[k] >> 6] = 0;
        for (int32_t k = 0; k < nl; k++)
            bm[out[nk + k] >> 6] = 0;
        d->rrd_nk[a] = nk;
        d->rrd_nl[a] = nl;
    }
}

/* ---- one step ------------------------------------------------------------ */

typedef struct {
    distill_t *d;
    int32_t n;         /* samples in this batch */
    int64_t first;     /* index of the batch's first sample in the epoch order */
    int failed;
} distill__step_t;

static void distill__bpr_chunk(void *ctx, int task, int worker)
{
    (void)worker;
    distill__step_t *st = ctx;
    distill_t *d = st->d;
    const ratings_t *r = d->train;
    int32_t s0 = task * CHUNK;
    int32_t s1 = s0 + CHUNK < st->n ? s0 + CHUNK : st->n;
    rng_t rng;
    rng_init_stream(&rng, d->cfg.seed, RNG_NEGATIVE, (uint64_t)d->step, (uint64_t)task);
    for (int32_t s = s0; s < s1; s++) {
        int32_t k = d->order[st->first + s];
        int32_t u = d->pair_u[k], j;
        do
            j = (int32_t)rng_below(&rng, (uint32_t)r->n_items);
        while (ratings_has(r, u, j) && ratings_count(r, u) < r->n_items);
        d->batch[s].u = u;
        d->batch[s].i = d->pair_i[k];
        d->batch[s].j = j;
    }
    d->loss_chunk[task] = bpr_forward(&d->model, d->batch + s0, s1 - s0, d->coef + s0);
    scatter_clear(&d->sc_bpr[task]);
    if (bpr_backward(&d->model, d->batch + s0, s1 - s0, d->coef + s0, &d->sc_bpr[task]) < 0)
        st->failed = 1;
}

static void distill__uniques(distill_t *d, int32_t n)
{
    d->n_user = d->n_pos = d->n_neg = 0;
    for (int32_t s = 0; s < n; s++) {
        const bpr_triple_t *t = &d->batch[s];
        if (d->seen_user[t->u] != d->step) {
            d->seen_user[t->u] = d->step;
            d->uniq_user[d->n_user++] = t->u;
        }
        if (d->seen_pos[t->i] != d->step) {
            d->seen_pos[t->i] = d->step;
            d->uniq_pos[d->n_pos++] = t->i;
        }
        if (d->seen_neg[t->j] != d->step) {
            d->seen_neg[t->j] = d->step;
            d->uniq_neg[d->n_neg++] = t->j;
        }
    }
}

/* Gathers one DE side's entities, runs it, and queues the student gradient. */
static int distill__de_side(distill_t *d, int side, float temp, distill_stats_t *stats)
{
    const distill_cfg_t *c = &d->cfg;
    distill__de_side_t *sd = &d->de[side];
    const mf_t *te = d->teacher;
    int32_t ds = c->dim, dt = te->dim, M = c->n_experts;
    rng_t pick;
    rng_init_stream(&pick, c->seed, RNG_DE_SAMPLE, (uint64_t)d->step, (uint64_t)side);
    float boost = (float)c->de_every / c->de_sample; /* undoes the subsampling */
    sd->n = 0;
    const int32_t *lists[2];
    int32_t counts[2];
    float weights[2];
    int nlists;
    if (side == 0) {
        lists[0] = d->uniq_user;
        counts[0] = d->n_user;
        weights[0] = 1.0f;
        nlists = 1;
    } else {
        lists[0] = d->uniq_pos;
        counts[0] = d->n_pos;
        lists[1] = d->uniq_neg;
        counts[1] = d->n_neg;
        weights[0] = weights[1] = 0.5f;
        nlists = 2;
    }
    for (int l = 0; l < nlists; l++) {
        for (int32_t k = 0; k < counts[l]; k++) {
            if (c->de_sample < 1.0f && rng_float(&pick) >= c->de_sample)
                continue;
            int32_t id = lists[l][k];
            int32_t n = sd->n++;
            sd->rows[n] = side == 0 ? id : d->model.n_users + id;
            memcpy(sd->s + (int64_t)n * ds, d->model.params + (int64_t)sd->rows[n] * ds,
                   (size_t)ds * sizeof(float));
            const float *trow = side == 0 ? te->ue + (int64_t)id * dt : te->ie + (int64_t)id * dt;
            memcpy(sd->t + (int64_t)n * dt, trow, (size_t)dt * sizeof(float));
            sd->weight[n] = c->lambda_de * weights[l] * boost;
        }
    }
    if (sd->n == 0)
        return 0;
    rng_t g;
    rng_init_stream(&g, c->seed, RNG_GUMBEL, (uint64_t)d->step, (uint64_t)side);
    rng_gumbel_fill(&g, sd->gumbel, sd->n * M);
    de_batch_t b = { sd->n, sd->s, sd->t, sd->weight, sd->gumbel, temp, c->de_keep,
                     c->de_max_experts };
    memset(sd->used, 0, (size_t)M);
    int64_t pairs = 0;
    double loss = de_forward_backward(&sd->ex, &b, sd->work, d->pool, sd->opt_ex.g, sd->used,
                                      adam_table_grad(&sd->opt_sel, 0), sd->ds, &pairs);
    if (isnan(loss))
        return -ENOMEM;
    for (int32_t e = 0; e < M; e++)
        if (sd->used[e])
            sd->opt_ex.touched[e] = 1;
    for (int32_t k = 0; k < sd->n; k++)
        if (scatter_add(&d->sc_de, sd->rows[k], 1.0f, sd->ds + (int64_t)k * ds) < 0)
            return -ENOMEM;
    /* The weights hold lambda_de and the sampling factors; without lambda
     * this estimates the reference's unweighted DE sum. */
    stats->loss_de += loss / (double)c->lambda_de;
    stats->de_entities += sd->n;
    stats->de_pairs += pairs;
    return 0;
}

static void distill__rrd_chunk(void *ctx, int task, int worker)
{
    distill__step_t *st = ctx;
    distill_t *d = st->d;
    const distill_cfg_t *c = &d->cfg;
    int32_t dim = c->dim, KL = c->rrd_k + c->rrd_l;
    int32_t a0 = task * CHUNK;
    int32_t a1 = a0 + CHUNK < d->n_step_anchor ? a0 + CHUNK : d->n_step_anchor;
    scatter_t *sc = &d->sc_rrd[task];
    scatter_clear(sc);
    (void)worker;
    double loss = 0.0;
    float lam = c->lambda_rrd / c->rrd_sample;
    for (int32_t q = a0; q < a1; q++) {
        int32_t a = d->step_anchor[q];
        int32_t nk = d->rrd_nk[a], nl = d->rrd_nl[a];
        if (nk == 0)
            continue;
        const int32_t *tg = d->rrd_tgt + (int64_t)a * KL;
        const float *pa = d->model.params + (int64_t)(d->anchor_base + a) * dim;
        float s[DISTILL_MAX_KL], g[DISTILL_MAX_KL];
        for (int32_t k = 0; k < nk + nl; k++)
            s[k] = vec_dot(pa, d->model.params + (int64_t)(d->target_base + tg[k]) * dim, dim);
        loss += rrd_loss(s, nk, s + nk, nl, g, g + nk);
        float *ag = d->anchor_grad + (int64_t)q * dim;
        for (int32_t x = 0; x < dim; x++)
            ag[x] = 0.0f;
        for (int32_t k = 0; k < nk + nl; k++) {
            const float *pt = d->model.params + (int64_t)(d->target_base + tg[k]) * dim;
            float gk = g[k];
            for (int32_t x = 0; x < dim; x++)
                ag[x] += gk * pt[x];
            if (scatter_add(sc, d->target_base + tg[k], lam * gk, pa) < 0)
                st->failed = 1;
        }
        if (scatter_add(sc, d->anchor_base + a, lam, ag) < 0)
            st->failed = 1;
    }
    d->loss_chunk[task] = loss;
}

/* RRD_NOSAMPLE for a chunk of anchors: the teacher's top K in order against
 * every other unobserved target. Scores come from one sgemm over the whole
 * target table, and so do the gradients: G (anchors, targets) times the
 * targets for the anchors, G^T times the anchors for the targets. */
static void distill__rrd_full_chunk(void *ctx, int task, int worker)
{
    distill__step_t *st = ctx;
    distill_t *d = st->d;
    const distill_cfg_t *c = &d->cfg;
    int32_t dim = c->dim, KL = c->rrd_k + c->rrd_l, nt = d->n_target;
    int32_t a0 = task * CHUNK;
    int32_t n = (a0 + CHUNK < d->n_step_anchor ? a0 + CHUNK : d->n_step_anchor) - a0;
    float *S = d->ns_S[worker], *P = d->ns_P[worker];
    float *su = d->ns_u[worker], *gu = d->ns_g[worker];
    uint64_t *bm = d->bitmap[worker];
    const float *T = d->model.params + (int64_t)d->target_base * dim;
    float *dT = d->ns_dT + (int64_t)task * nt * dim;
    scatter_t *sc = &d->sc_rrd[task];
    scatter_clear(sc);
    double loss = 0.0;
    float lam = c->lambda_rrd / c->rrd_sample;
    for (int32_t q = 0; q < n; q++)
        memcpy(P + (int64_t)q * dim,
               d->model.params + (int64_t)(d->anchor_base + d->step_anchor[a0 + q]) * dim,
               (size_t)dim * sizeof(float));
    gemm(false, true, n, nt, dim, 1.0f, P, dim, T, dim, 0.0f, S, nt);
    for (int32_t q = 0; q < n; q++) {
        int32_t a = d->step_anchor[a0 + q];
        float *row = S + (int64_t)q * nt;
        int32_t nk = d->rrd_nk[a];
        const int32_t *top = d->rrd_tgt + (int64_t)a * KL;
        const int32_t *obs = ratings_items(&d->anchor_r, a);
        int32_t nobs = ratings_count(&d->anchor_r, a);
        if (nk == 0) {
            memset(row, 0, (size_t)nt * sizeof(float));
            continue;
        }
        for (int32_t k = 0; k < nobs; k++)
            bm[obs[k] >> 6] |= 1ULL << (obs[k] & 63);
        for (int32_t k = 0; k < nk; k++)
            bm[top[k] >> 6] |= 1ULL << (top[k] & 63);
        float s_int[DISTILL_MAX_KL], g_int[DISTILL_MAX_KL];
        for (int32_t k = 0; k < nk; k++)
            s_int[k] = row[top[k]];
        int32_t m = 0;
        for (int32_t t = 0; t < nt; t++)
            if (!(bm[t >> 6] >> (t & 63) & 1))
                su[m++] = row[t];
        loss += rrd_loss(s_int, nk, su, m, g_int, gu);
        m = 0;
        for (int32_t t = 0; t < nt; t++)
            row[t] = bm[t >> 6] >> (t & 63) & 1 ? 0.0f : gu[m++];
        for (int32_t k = 0; k < nk; k++)
            row[top[k]] = g_int[k];
        for (int32_t k = 0; k < nobs; k++)
            bm[obs[k] >> 6] = 0;
        for (int32_t k = 0; k < nk; k++)
            bm[top[k] >> 6] = 0;
    }
    float *ag = d->anchor_grad + (int64_t)a0 * dim;
    gemm(false, false, n, dim, nt, lam, S, nt, T, dim, 0.0f, ag, dim);
    gemm(true, false, nt, dim, n, lam, S, nt, P, dim, 0.0f, dT, dim);
    for (int32_t q = 0; q < n; q++)
        if (scatter_add(sc, d->anchor_base + d->step_anchor[a0 + q], 1.0f,
                        ag + (int64_t)q * dim) < 0)
            st->failed = 1;
    for (int32_t t = 0; t < nt; t++)
        if (scatter_add(sc, d->target_base + t, 1.0f, dT + (int64_t)t * dim) < 0)
            st->failed = 1;
    d->loss_chunk[task] = loss;
}

typedef struct {
    distill_t *d;
    const scatter_t *const *lists;
    int nlists;
    int failed;
} distill__update_t;

/* Gradient sums for the embeddings, one part of the rows per worker. */
static void distill__gather(void *ctx, int part, int worker)
{
    (void)worker;
    distill__update_t *up = ctx;
    distill_t *d = up->d;
    if (adam_table_gather(&d->opt, up->lists, up->nlists, part, d->nparts) < 0)
        up->failed = 1;
}

/* Adam for the embeddings and the experts, once every gather is done. */
static void distill__update(void *ctx, int part, int worker)
{
    (void)worker;
    distill__update_t *up = ctx;
    distill_t *d = up->d;
    adam_table_apply(&d->opt, d->step, part);
    if (d->cfg.use_de)
        for (int s = 0; s < 2; s++) {
            adam_table_update(&d->de[s].opt_ex, d->step, part, d->nparts);
            adam_table_update(&d->de[s].opt_sel, d->step, part, d->nparts);
        }
}

static void distill__flush(void *ctx, int part, int worker)
{
    (void)worker;
    distill_t *d = ((distill__job_t *)ctx)->d;
    adam_table_flush(&d->opt, d->step, part, d->nparts);
    if (d->cfg.use_de)
        for (int s = 0; s < 2; s++) {
            adam_table_flush(&d->de[s].opt_ex, d->step, part, d->nparts);
            adam_table_flush(&d->de[s].opt_sel, d->step, part, d->nparts);
        }
}

int distill_epoch(distill_t *d, distill_stats_t *stats)
{
    const distill_cfg_t *c = &d->cfg;
    memset(stats, 0, sizeof(*stats));
    stats->epoch = d->epoch;
    distill__job_t job = { d };
    int64_t nnz = d->train->nnz;
    for (int64_t k = 0; k < nnz; k++)
        d->order[k] = (int32_t)k;
    rng_t rng;
    rng_init_stream(&rng, c->seed, RNG_SHUFFLE, (uint64_t)d->epoch, 0);
    rng_shuffle_i32(&rng, d->order, nnz);
    if (c->use_rrd)
        pool_run(d->pool, (d->n_anchor + CHUNK - 1) / CHUNK, distill__rrd_sample, &job);
    /* The paper's schedule, with a floor: a daemon's epoch count grows
     * without bound, and 10^(-epoch/100) reaches 0 (then 0/0 in the softmax)
     * near epoch 4500. Offline runs end long before epoch 300, where the
     * floor starts. */
    float temp = (float)pow(10.0, -(double)d->epoch / 100.0);
    if (temp < DISTILL_MIN_TEMP)
        temp = DISTILL_MIN_TEMP;
    stats->temperature = temp;

    for (int64_t first = 0; first < nnz; first += c->batch) {
        int32_t n = (int32_t)(nnz - first < c->batch ? nnz - first : c->batch);
        d->step++;
        distill__step_t st = { d, n, first, 0 };
        int nch = (n + CHUNK - 1) / CHUNK;
        pool_run(d->pool, nch, distill__bpr_chunk, &st);
        for (int k = 0; k < nch; k++)
            stats->loss_bpr += d->loss_chunk[k];
        stats->samples += n;
        distill__uniques(d, n);
        scatter_clear(&d->sc_de);
        if (c->use_de && d->step % c->de_every == 0) {
            for (int side = 0; side < 2; side++)
                if (distill__de_side(d, side, temp, stats) < 0)
                    return -ENOMEM;
        }
        int nrrd = 0;
        if (c->use_rrd) {
            const int32_t *all = c->rrd_variant == RRD_ITEM ? d->uniq_pos : d->uniq_user;
            int32_t n_all = c->rrd_variant == RRD_ITEM ? d->n_pos : d->n_user;
            d->step_anchor = all;
            d->n_step_anchor = n_all;
            if (c->rrd_sample < 1.0f) {
                /* Keep a random share; the loss weight makes up for the rest. */
                rng_t pick;
                rng_init_stream(&pick, c->seed, RNG_RRD_PICK, (uint64_t)d->step, 0);
                d->n_step_anchor = 0;
                for (int32_t k = 0; k < n_all; k++)
                    if (rng_float(&pick) < c->rrd_sample)
                        d->rrd_pick[d->n_step_anchor++] = all[k];
                d->step_anchor = d->rrd_pick;
            }
            nrrd = (d->n_step_anchor + CHUNK - 1) / CHUNK;
            pool_run(d->pool, nrrd,
                     c->rrd_variant == RRD_NOSAMPLE ? distill__rrd_full_chunk : distill__rrd_chunk,
                     &st);
            for (int k = 0; k < nrrd; k++)
                stats->loss_rrd += d->loss_chunk[k] / c->rrd_sample;
        }
        if (st.failed)
            return -ENOMEM;
        int nl = 0;
        for (int k = 0; k < nch; k++)
            d->lists[nl++] = &d->sc_bpr[k];
        d->lists[nl++] = &d->sc_de;
        for (int k = 0; k < nrrd; k++)
            d->lists[nl++] = &d->sc_rrd[k];
        distill__update_t up = { d, (const scatter_t *const *)d->lists, nl, 0 };
        pool_run(d->pool, d->nparts, distill__gather, &up);
        if (up.failed)
            return -ENOMEM;
        pool_run(d->pool, d->nparts, distill__update, &up);
    }
    d->epoch++;
    return 0;
}

const mf_t *distill_model(distill_t *d)
{
    distill__job_t job = { d };
    pool_run(d->pool, d->nparts, distill__flush, &job);
    return &d->model;
}

int distill_warm_start_rows(distill_t *d, const mf_t *pm, int32_t epochs)
{
    mf_t *m = &d->model;
    if (pm->dim != m->dim || d->step != 0 || d->epoch != 0 || epochs < 0)
        return -EINVAL;
    int32_t nu = pm->n_users < m->n_users ? pm->n_users : m->n_users;
    int32_t ni = pm->n_items < m->n_items ? pm->n_items : m->n_items;
    memcpy(m->ue, pm->ue, (size_t)nu * (size_t)m->dim * sizeof(float));
    memcpy(m->ie, pm->ie, (size_t)ni * (size_t)m->dim * sizeof(float));
    d->epoch = epochs;
    return 0;
}

int distill_warm_start(distill_t *d, distill_t *prev)
{
    if (d->cfg.dim != prev->cfg.dim || d->step != 0 || d->epoch != 0)
        return -EINVAL;
    /* prev's rows may lag its last step (lazy Adam): bring them up to date. */
    int rc = distill_warm_start_rows(d, distill_model(prev), prev->epoch);
    if (rc)
        return rc;
    if (d->cfg.use_de && prev->cfg.use_de)
        for (int s = 0; s < 2; s++) {
            experts_t *a = &d->de[s].ex;
            const experts_t *b = &prev->de[s].ex;
            if (a->n_experts == b->n_experts && a->ds == b->ds && a->dt == b->dt)
                memcpy(a->params, b->params,
                       ((size_t)a->n_experts * (size_t)a->ex_size + (size_t)a->sel_size) *
                           sizeof(float));
        }
    return 0;
}

int32_t distill_epochs(const distill_t *d) { return d->epoch; }
