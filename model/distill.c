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
#include "simd.h"
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

/* One side of RRD: anchors (users, or items) whose ranking of targets (items,
 * or users) the student learns. RRD_IR runs two: the users' side, then an
 * item side anchored on the items the users' side sampled in that step. */
typedef struct {
    bool on;
    bool item_side;          /* anchors are items */
    bool nosample;           /* RRD_NOSAMPLE */
    int side;                /* 0, or 1 for RRD_IR's item side: its random streams */
    int32_t n, k, l;         /* top-N, interesting, uninteresting */
    float temp, lambda, sample;
    ratings_t anchor_r;      /* the anchor-by-target matrix (owned) */
    int32_t n_anchor, n_target, anchor_base, target_base;
    int32_t *topn;           /* (n_anchor, n) teacher's ranked targets */
    int32_t topn_computed;   /* lists computed at setup (the rest were reused) */
    int32_t topn_filtered;   /* reused lists that dropped newly observed targets */
    int32_t *tgt;            /* (n_anchor, k + l) this epoch's samples */
    int32_t *nk, *nl;        /* (n_anchor) how many of each were drawn */
    uint8_t *want;           /* (n_anchor) or NULL: anchors this epoch samples for */
    int32_t cap;             /* anchors in one step, at most */
    float *anchor_grad;      /* (cap, dim) */
    scatter_t *sc;           /* per anchor chunk */
    int chunks_cap;
    const int32_t *step_anchor;
    int32_t *pick;           /* (cap) the sampled anchors of a step */
    int32_t n_step_anchor;
    int32_t *cand;           /* RRD_IR item side: (cap) the step's candidate anchors */
    int64_t *seen;           /* RRD_IR item side: (n_anchor) step that last took it */
    /* RRD_NOSAMPLE: per worker scores (CHUNK, n_target), anchor rows
     * (CHUNK, dim), the compacted uninteresting scores and gradients
     * (n_target each); per anchor chunk the targets' gradient (n_target, dim) */
    float **ns_S, **ns_P, **ns_u, **ns_g;
    float *ns_dT;
    /* per worker scratch */
    uint64_t **bitmap;
    float **scr_f;
    int32_t **scr_i;
} distill__rrd_side_t;

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
    int64_t synced;         /* every row is up to date with this step */

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

    distill__rrd_side_t rrd[2]; /* RRD: [0] users or (RRD_ITEM) items; [1] RRD_IR's items */
};

distill_cfg_t distill_cfg_default(void)
{
    distill_cfg_t c;
    memset(&c, 0, sizeof(c));
    c.dim = 20;
    c.batch = 1024;
    c.adam = adam_cfg_default();
    c.init_std = 0.01f;
    c.init_from_teacher = true;
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
    c.lambda_rrd_item = 5e-4f;
    c.rrd_item_k = 20;
    c.rrd_item_l = 20;
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

static void distill__rrd_side_close(distill__rrd_side_t *rs, int nworkers)
{
    ratings_close(&rs->anchor_r);
    free(rs->topn);
    free(rs->tgt);
    free(rs->nk);
    free(rs->nl);
    free(rs->want);
    free(rs->anchor_grad);
    free(rs->pick);
    free(rs->cand);
    free(rs->seen);
    if (rs->sc)
        for (int c = 0; c < rs->chunks_cap; c++)
            scatter_close(&rs->sc[c]);
    free(rs->sc);
    for (int w = 0; w < nworkers; w++) {
        if (rs->bitmap)
            free(rs->bitmap[w]);
        if (rs->scr_f)
            free(rs->scr_f[w]);
        if (rs->scr_i)
            free(rs->scr_i[w]);
    }
    for (int w = 0; w < nworkers && rs->ns_S; w++) {
        free(rs->ns_S[w]);
        free(rs->ns_P[w]);
        free(rs->ns_u[w]);
        free(rs->ns_g[w]);
    }
    free(rs->ns_S);
    free(rs->ns_P);
    free(rs->ns_u);
    free(rs->ns_g);
    free(rs->ns_dT);
    free(rs->bitmap);
    free(rs->scr_f);
    free(rs->scr_i);
    memset(rs, 0, sizeof(*rs));
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
    for (int s = 0; s < 2; s++)
        distill__rrd_side_close(&d->rrd[s], d->nworkers);
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

/* The teacher's top-N lists of every anchor of side rs, copying prev's where
 * allowed (see distill_new_reusing: the users' side of the paper's RRD in
 * both). */
static int distill__topn(distill_t *d, distill__rrd_side_t *rs, const mf_t *view,
                         const distill_t *prev, const uint8_t *stale)
{
    int32_t N = rs->n;
    const distill__rrd_side_t *pr = prev ? &prev->rrd[0] : NULL;
    int reuse = rs->side == 0 && pr && pr->on && pr->topn && pr->n == N && !pr->item_side &&
                !pr->nosample && !rs->item_side && !rs->nosample;
    if (!reuse) {
        rs->topn_computed = rs->n_anchor;
        return topn_users(view, &rs->anchor_r, NULL, rs->n_anchor, N, d->pool, rs->topn);
    }
    int32_t *list = malloc((size_t)(rs->n_anchor ? rs->n_anchor : 1) * sizeof(int32_t));
    if (!list)
        return -ENOMEM;
    int32_t n = 0, filtered = 0;
    for (int32_t a = 0; a < rs->n_anchor; a++) {
        int flag = a >= pr->n_anchor ? DISTILL_LIST_RECOMPUTE
                   : stale           ? stale[a]
                                     : DISTILL_LIST_KEEP;
        const int32_t *src = flag == DISTILL_LIST_RECOMPUTE ? NULL : pr->topn + (size_t)a * N;
        int32_t *dst = rs->topn + (size_t)a * N;
        if (flag == DISTILL_LIST_KEEP) {
            memcpy(dst, src, (size_t)N * sizeof(int32_t));
        } else if (flag == DISTILL_LIST_FILTER) {
            /* The same teacher ranks the same way: what the anchor
             * observed since leaves the list, the rest keeps its order. A
             * list more than a tenth of N short of full (over this and
             * earlier filterings) is computed again, so lists do not wither
             * between full refreshes. */
            int32_t m = 0;
            for (int32_t k = 0; k < N && src[k] >= 0; k++)
                if (src[k] < rs->n_target && !ratings_has(&rs->anchor_r, a, src[k]))
                    dst[m++] = src[k];
            int64_t full = (int64_t)rs->n_target - ratings_count(&rs->anchor_r, a);
            if (full > N)
                full = N;
            if ((full - m) * 10 > N) {
                list[n++] = a;
                continue;
            }
            for (; m < N; m++)
                dst[m] = -1;
            filtered++;
        } else {
            list[n++] = a;
        }
    }
    rs->topn_filtered = filtered;
    int rc = 0;
    if (n > 0) {
        int32_t *tmp = malloc((size_t)n * (size_t)N * sizeof(int32_t));
        rc = tmp ? topn_users(view, &rs->anchor_r, list, n, N, d->pool, tmp) : -ENOMEM;
        for (int32_t k = 0; rc == 0 && k < n; k++)
            memcpy(rs->topn + (size_t)list[k] * N, tmp + (size_t)k * N, (size_t)N * sizeof(int32_t));
        free(tmp);
    }
    free(list);
    rs->topn_computed = n;
    return rc;
}

/* Sets up one RRD side: its settings are already in rs. */
static int distill__rrd_side_init(distill_t *d, distill__rrd_side_t *rs, const mf_t *teacher,
                                  const distill_t *prev, const uint8_t *stale)
{
    const distill_cfg_t *c = &d->cfg;
    const ratings_t *train = d->train;
    if (rs->item_side) {
        if (ratings_init_transpose(&rs->anchor_r, train) < 0)
            return -ENOMEM;
    } else {
        /* a copy keeps ownership simple: anchor_r is always ours */
        if (ratings_init(&rs->anchor_r, train->n_users, train->n_items, d->pair_u, d->pair_i,
                         train->nnz) < 0)
            return -ENOMEM;
    }
    rs->n_anchor = rs->anchor_r.n_users;
    rs->n_target = rs->anchor_r.n_items;
    rs->anchor_base = rs->item_side ? train->n_users : 0;
    rs->target_base = rs->item_side ? 0 : train->n_users;
    /* The step's anchors: the batch's unique users or positive items, or for
     * RRD_IR's item side every item its users' side sampled. */
    rs->cap = rs->side == 1 ? rs->n_anchor : c->batch;
    int32_t N = rs->n, KL = rs->k + rs->l;
    rs->topn = malloc((size_t)rs->n_anchor * (size_t)N * sizeof(int32_t));
    rs->tgt = malloc((size_t)rs->n_anchor * (size_t)KL * sizeof(int32_t));
    rs->nk = malloc((size_t)rs->n_anchor * sizeof(int32_t));
    rs->nl = malloc((size_t)rs->n_anchor * sizeof(int32_t));
    rs->anchor_grad = malloc((size_t)rs->cap * (size_t)c->dim * sizeof(float));
    rs->pick = malloc((size_t)rs->cap * sizeof(int32_t));
    rs->chunks_cap = (rs->cap + CHUNK - 1) / CHUNK;
    rs->sc = calloc((size_t)rs->chunks_cap, sizeof(scatter_t));
    rs->bitmap = calloc((size_t)d->nworkers, sizeof(uint64_t *));
    rs->scr_f = calloc((size_t)d->nworkers, sizeof(float *));
    rs->scr_i = calloc((size_t)d->nworkers, sizeof(int32_t *));
    if (!rs->topn || !rs->tgt || !rs->nk || !rs->nl || !rs->anchor_grad || !rs->pick ||
        !rs->sc || !rs->bitmap || !rs->scr_f || !rs->scr_i)
        return -ENOMEM;
    if (rs->side == 1) {
        rs->cand = malloc((size_t)rs->cap * sizeof(int32_t));
        rs->seen = malloc((size_t)rs->n_anchor * sizeof(int64_t));
        if (!rs->cand || !rs->seen)
            return -ENOMEM;
        for (int32_t a = 0; a < rs->n_anchor; a++)
            rs->seen[a] = -1;
    }
    for (int w = 0; w < d->nworkers; w++) {
        rs->bitmap[w] = calloc(((size_t)rs->n_target + 63) / 64, sizeof(uint64_t));
        rs->scr_f[w] = malloc(((size_t)N + (size_t)KL) * sizeof(float));
        rs->scr_i[w] = malloc(((size_t)N + (size_t)KL) * sizeof(int32_t));
        if (!rs->bitmap[w] || !rs->scr_f[w] || !rs->scr_i[w])
            return -ENOMEM;
    }
    if (rs->nosample) {
        size_t nt = (size_t)rs->n_target, dim = (size_t)c->dim;
        rs->ns_S = calloc((size_t)d->nworkers, sizeof(float *));
        rs->ns_P = calloc((size_t)d->nworkers, sizeof(float *));
        rs->ns_u = calloc((size_t)d->nworkers, sizeof(float *));
        rs->ns_g = calloc((size_t)d->nworkers, sizeof(float *));
        rs->ns_dT = malloc((size_t)rs->chunks_cap * nt * dim * sizeof(float));
        if (!rs->ns_S || !rs->ns_P || !rs->ns_u || !rs->ns_g || !rs->ns_dT)
            return -ENOMEM;
        for (int w = 0; w < d->nworkers; w++) {
            rs->ns_S[w] = malloc((size_t)CHUNK * nt * sizeof(float));
            rs->ns_P[w] = malloc((size_t)CHUNK * dim * sizeof(float));
            rs->ns_u[w] = malloc(nt * sizeof(float));
            rs->ns_g[w] = malloc(nt * sizeof(float));
            if (!rs->ns_S[w] || !rs->ns_P[w] || !rs->ns_u[w] || !rs->ns_g[w])
                return -ENOMEM;
        }
    }
    /* The teacher's ranking, seen from the anchors' side. */
    mf_t view = *teacher;
    if (rs->item_side) {
        view.n_users = teacher->n_items;
        view.n_items = teacher->n_users;
        view.ue = teacher->ie;
        view.ie = teacher->ue;
    }
    return distill__topn(d, rs, &view, prev, stale);
}

distill_t *distill_new(const distill_cfg_t *cfg, const ratings_t *train, const mf_t *teacher,
                       pool_t *pool, char *err, size_t errlen)
{
    return distill_new_reusing(cfg, train, teacher, pool, NULL, NULL, err, errlen);
}

int32_t distill_topn_computed(const distill_t *d) { return d->rrd[0].topn_computed; }

int32_t distill_topn_filtered(const distill_t *d) { return d->rrd[0].topn_filtered; }

const int32_t *distill_topn(const distill_t *d) { return d->rrd[0].topn; }

distill_t *distill_new_reusing(const distill_cfg_t *cfg, const ratings_t *train,
                               const mf_t *teacher, pool_t *pool, const distill_t *prev,
                               const uint8_t *stale, char *err, size_t errlen)
{
    const distill_cfg_t *c = cfg;
    if (c->dim <= 0 || c->batch <= 0 || !(c->adam.lr > 0.0f) || c->adam.wd < 0.0f) {
        snprintf(err, errlen, "dim, batch and lr must be positive, wd not negative");
        return NULL;
    }
    /* Rows and training pairs are indexed in 32 bits (epoch orders, scatter
     * lists, samples). */
    if (train->nnz > INT32_MAX || (int64_t)train->n_users + train->n_items > INT32_MAX) {
        snprintf(err, errlen, "%lld interactions over %lld rows: over the 2^31 - 1 of each "
                 "this build trains on", (long long)train->nnz,
                 (long long)train->n_users + train->n_items);
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
    if (c->use_rrd && c->rrd_variant == RRD_IR &&
        (c->rrd_item_k < 1 || c->rrd_item_l < 0 || c->rrd_item_k > c->rrd_n ||
         c->rrd_item_k + c->rrd_item_l > DISTILL_MAX_KL || !(c->lambda_rrd_item >= 0.0f))) {
        snprintf(err, errlen, "RRD_IR's item side needs N >= K >= 1, L >= 0, K + L <= %d and "
                 "a lambda >= 0", DISTILL_MAX_KL);
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
    if (c->init_from_teacher && teacher) {
        int rc = mf_add_projection(&d->model, teacher);
        if (rc < 0) {
            snprintf(err, errlen, "student init from the teacher: %s", strerror(-rc));
            distill_free(d);
            return NULL;
        }
    }
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
    /* BPR chunks, DE, and the RRD sides' anchor chunks (RRD_IR's item side
     * may take every item in a step). */
    int64_t item_chunks = c->use_rrd && c->rrd_variant == RRD_IR
                              ? ((int64_t)train->n_items + CHUNK - 1) / CHUNK : 0;
    d->lists = calloc(2 * (size_t)d->nchunks + 2 + (size_t)item_chunks, sizeof(scatter_t *));
    d->loss_chunk = calloc((size_t)d->nchunks + (size_t)c->batch / CHUNK + 2 + (size_t)item_chunks,
                           sizeof(double));
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
        d->rrd[0] = (distill__rrd_side_t){
            .on = true, .item_side = c->rrd_variant == RRD_ITEM,
            .nosample = c->rrd_variant == RRD_NOSAMPLE, .side = 0, .n = c->rrd_n,
            .k = c->rrd_k, .l = c->rrd_l, .temp = c->rrd_temp, .lambda = c->lambda_rrd,
            .sample = c->rrd_sample,
        };
        if (distill__rrd_side_init(d, &d->rrd[0], teacher, prev, stale) < 0)
            goto oom;
        if (c->rrd_variant == RRD_IR) {
            d->rrd[1] = (distill__rrd_side_t){
                .on = true, .item_side = true, .nosample = false, .side = 1, .n = c->rrd_n,
                .k = c->rrd_item_k, .l = c->rrd_item_l, .temp = c->rrd_temp,
                .lambda = c->lambda_rrd_item, .sample = c->rrd_sample,
            };
            if (distill__rrd_side_init(d, &d->rrd[1], teacher, NULL, NULL) < 0)
                goto oom;
        }
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

/* Random streams of RRD_IR's item side: apart from the users' side, whose
 * draws stay those of the paper's RRD alone. */
#define DISTILL__SIDE_STREAM(side) ((uint64_t)(side) << 40)

/* An RRD pass over one side: the epoch's samples, or a step's terms (st). */
typedef struct {
    distill_t *d;
    distill__rrd_side_t *rs;
    struct distill__step *st; /* NULL when sampling */
    const uint8_t *want;      /* sampling: NULL, or the anchors to draw for */
} distill__rrd_job_t;

static void distill__rrd_sample(void *ctx, int task, int worker)
{
    distill__rrd_job_t *job = ctx;
    distill_t *d = job->d;
    distill__rrd_side_t *rs = job->rs;
    const distill_cfg_t *c = &d->cfg;
    int32_t N = rs->n, K = rs->k, L = rs->l, KL = K + L;
    int32_t a0 = task * CHUNK;
    int32_t a1 = a0 + CHUNK < rs->n_anchor ? a0 + CHUNK : rs->n_anchor;
    uint64_t *bm = rs->bitmap[worker];
    for (int32_t a = a0; a < a1; a++) {
        if (job->want && !job->want[a]) { /* not in this epoch's sample */
            rs->nk[a] = rs->nl[a] = 0;
            continue;
        }
        rng_t rng;
        rng_init_stream(&rng, c->seed, RNG_RRD, (uint64_t)d->epoch,
                        (uint64_t)a | DISTILL__SIDE_STREAM(rs->side));
        const int32_t *top = rs->topn + (int64_t)a * N;
        int32_t *out = rs->tgt + (int64_t)a * KL;
        int32_t nk;
        if (rs->nosample) {
            nk = 0;
            while (nk < K && top[nk] >= 0) {
                out[nk] = top[nk];
                nk++;
            }
        } else {
            nk = rrd_sample_interesting(&rng, top, N, K, rs->temp, rs->scr_f[worker],
                                        rs->scr_i[worker], out);
        }
        /* Uninteresting: not observed, not in the top-N list. */
        const int32_t *obs = ratings_items(&rs->anchor_r, a);
        int32_t nobs = ratings_count(&rs->anchor_r, a);
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
        if (!rs->nosample)
            nl = rrd_sample_uninteresting(&rng, rs->n_target, bm, taken, L, out + nk);
        for (int32_t k = 0; k < nobs; k++)
            bm[obs[k] >> 6] = 0;
        for (int32_t k = 0; k < N && top[k] >= 0; k++)
            bm[top[k] >> 6] = 0;
        for (int32_t k = 0; k < nl; k++)
            bm[out[nk + k] >> 6] = 0;
        rs->nk[a] = nk;
        rs->nl[a] = nl;
    }
}

/* ---- one step ------------------------------------------------------------ */

typedef struct distill__step {
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
        if (ratings_count(r, u) >= r->n_items)
            j = d->pair_i[k]; /* no unobserved item: (u, i, i) moves nothing */
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
    if (pairs < 0)
        return -ENOMEM;
    if (!isfinite(loss))
        return -EDOM; /* the student or the experts diverged */
    for (int32_t e = 0; e < M; e++)
        if (sd->used[e])
            sd->opt_ex.touched[e] = 1;
    for (int32_t k = 0; k < sd->n; k++)
        if (scatter_add(&d->sc_de, sd->rows[k], 1.0f, sd->ds + (int64_t)k * ds) < 0)
            return -ENOMEM;
    /* The weights hold lambda_de and the sampling factors; without lambda
     * this estimates the reference's unweighted DE sum. */
    stats->loss_de += c->lambda_de > 0.0f ? loss / (double)c->lambda_de : 0.0;
    stats->de_entities += sd->n;
    stats->de_pairs += pairs;
    return 0;
}

FAST_CLONES static void distill__rrd_chunk(void *ctx, int task, int worker)
{
    distill__rrd_job_t *job = ctx;
    distill__step_t *st = job->st;
    distill__rrd_side_t *rs = job->rs;
    distill_t *d = job->d;
    int32_t dim = d->cfg.dim, KL = rs->k + rs->l;
    int32_t a0 = task * CHUNK;
    int32_t a1 = a0 + CHUNK < rs->n_step_anchor ? a0 + CHUNK : rs->n_step_anchor;
    scatter_t *sc = &rs->sc[task];
    scatter_clear(sc);
    (void)worker;
    double loss = 0.0;
    float lam = rs->lambda / rs->sample;
    for (int32_t q = a0; q < a1; q++) {
        int32_t a = rs->step_anchor[q];
        int32_t nk = rs->nk[a], nl = rs->nl[a];
        if (nk == 0)
            continue;
        const int32_t *tg = rs->tgt + (int64_t)a * KL;
        const float *pa = d->model.params + (int64_t)(rs->anchor_base + a) * dim;
        float s[DISTILL_MAX_KL], g[DISTILL_MAX_KL];
        /* The targets are random rows of a table larger than the L2 cache:
         * ask for each a few targets ahead of its use. */
        enum { AHEAD = 8 };
        for (int32_t k = 0; k < AHEAD && k < nk + nl; k++)
            vec_prefetch(d->model.params + (int64_t)(rs->target_base + tg[k]) * dim,
                         (size_t)dim * sizeof(float));
        for (int32_t k = 0; k < nk + nl; k++) {
            if (k + AHEAD < nk + nl)
                vec_prefetch(d->model.params + (int64_t)(rs->target_base + tg[k + AHEAD]) * dim,
                             (size_t)dim * sizeof(float));
            s[k] = vec_dot(pa, d->model.params + (int64_t)(rs->target_base + tg[k]) * dim, dim);
        }
        loss += rrd_loss(s, nk, s + nk, nl, g, g + nk);
        float *ag = rs->anchor_grad + (int64_t)q * dim;
        for (int32_t x = 0; x < dim; x++)
            ag[x] = 0.0f;
        for (int32_t k = 0; k < nk + nl; k++) {
            const float *pt = d->model.params + (int64_t)(rs->target_base + tg[k]) * dim;
            float gk = g[k];
            for (int32_t x = 0; x < dim; x++)
                ag[x] += gk * pt[x];
            if (scatter_add(sc, rs->target_base + tg[k], lam * gk, pa) < 0)
                st->failed = 1;
        }
        if (scatter_add(sc, rs->anchor_base + a, lam, ag) < 0)
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
    distill__rrd_job_t *job = ctx;
    distill__step_t *st = job->st;
    distill__rrd_side_t *rs = job->rs;
    distill_t *d = job->d;
    int32_t dim = d->cfg.dim, KL = rs->k + rs->l, nt = rs->n_target;
    int32_t a0 = task * CHUNK;
    int32_t n = (a0 + CHUNK < rs->n_step_anchor ? a0 + CHUNK : rs->n_step_anchor) - a0;
    float *S = rs->ns_S[worker], *P = rs->ns_P[worker];
    float *su = rs->ns_u[worker], *gu = rs->ns_g[worker];
    uint64_t *bm = rs->bitmap[worker];
    const float *T = d->model.params + (int64_t)rs->target_base * dim;
    float *dT = rs->ns_dT + (int64_t)task * nt * dim;
    scatter_t *sc = &rs->sc[task];
    scatter_clear(sc);
    double loss = 0.0;
    float lam = rs->lambda / rs->sample;
    for (int32_t q = 0; q < n; q++)
        memcpy(P + (int64_t)q * dim,
               d->model.params + (int64_t)(rs->anchor_base + rs->step_anchor[a0 + q]) * dim,
               (size_t)dim * sizeof(float));
    gemm(false, true, n, nt, dim, 1.0f, P, dim, T, dim, 0.0f, S, nt);
    for (int32_t q = 0; q < n; q++) {
        int32_t a = rs->step_anchor[a0 + q];
        float *row = S + (int64_t)q * nt;
        int32_t nk = rs->nk[a];
        const int32_t *top = rs->tgt + (int64_t)a * KL;
        const int32_t *obs = ratings_items(&rs->anchor_r, a);
        int32_t nobs = ratings_count(&rs->anchor_r, a);
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
    float *ag = rs->anchor_grad + (int64_t)a0 * dim;
    gemm(false, false, n, dim, nt, lam, S, nt, T, dim, 0.0f, ag, dim);
    gemm(true, false, nt, dim, n, lam, S, nt, P, dim, 0.0f, dT, dim);
    for (int32_t q = 0; q < n; q++)
        if (scatter_add(sc, rs->anchor_base + rs->step_anchor[a0 + q], 1.0f,
                        ag + (int64_t)q * dim) < 0)
            st->failed = 1;
    for (int32_t t = 0; t < nt; t++)
        if (scatter_add(sc, rs->target_base + t, 1.0f, dT + (int64_t)t * dim) < 0)
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

/* Brings every row up to date with the last step, once per step. */
static void distill__flush_all(distill_t *d)
{
    if (d->synced == d->step)
        return;
    distill__job_t job = { d };
    pool_run(d->pool, d->nparts, distill__flush, &job);
    d->synced = d->step;
}

/* The step's anchors of side rs: the n_all of all, or a random share of them
 * (the loss weight 1 / sample makes up for the rest). */
static void distill__rrd_anchors(distill_t *d, distill__rrd_side_t *rs, const int32_t *all,
                                 int32_t n_all)
{
    rs->step_anchor = all;
    rs->n_step_anchor = n_all;
    if (rs->sample < 1.0f) {
        rng_t pick;
        rng_init_stream(&pick, d->cfg.seed, RNG_RRD_PICK, (uint64_t)d->step, (uint64_t)rs->side);
        rs->n_step_anchor = 0;
        for (int32_t k = 0; k < n_all; k++)
            if (rng_float(&pick) < rs->sample)
                rs->pick[rs->n_step_anchor++] = all[k];
        rs->step_anchor = rs->pick;
    }
}

/* RRD_IR: the item side's candidate anchors are the distinct items the users'
 * side u sampled this epoch (interesting and uninteresting) for the batch's
 * users, in order of first appearance. Returns how many, in it->cand. All
 * the batch's users count, not only those u picked for this step: the item
 * side's own pick (weighted 1 / sample) then estimates the reference's sum
 * without bias. */
static int32_t distill__rrd_sampled(distill_t *d, const distill__rrd_side_t *u,
                                    distill__rrd_side_t *it)
{
    int32_t n = 0, KL = u->k + u->l;
    for (int32_t q = 0; q < d->n_user; q++) {
        int32_t a = d->uniq_user[q];
        const int32_t *tg = u->tgt + (int64_t)a * KL;
        for (int32_t k = 0; k < u->nk[a] + u->nl[a]; k++)
            if (it->seen[tg[k]] != d->step) {
                it->seen[tg[k]] = d->step;
                it->cand[n++] = tg[k];
            }
    }
    return n;
}

/* Runs side rs's RRD over its step anchors; adds its loss (unweighted by
 * lambda, reweighted for the sampling) to *loss; returns the chunks run. */
static int distill__rrd_run(distill_t *d, distill__step_t *st, distill__rrd_side_t *rs,
                            double *loss)
{
    int n = (rs->n_step_anchor + CHUNK - 1) / CHUNK;
    distill__rrd_job_t job = { d, rs, st, NULL };
    pool_run(d->pool, n, rs->nosample ? distill__rrd_full_chunk : distill__rrd_chunk, &job);
    for (int k = 0; k < n; k++)
        *loss += d->loss_chunk[k] / rs->sample;
    return n;
}

/* The anchors of the users' side (or RRD_ITEM's items) that the positives
 * in order[0..n) can bring into a step, flagged in rs->want. */
static int distill__rrd_want(distill_t *d, distill__rrd_side_t *rs, int64_t n)
{
    if (!rs->want && !(rs->want = malloc((size_t)rs->n_anchor)))
        return -ENOMEM;
    memset(rs->want, 0, (size_t)rs->n_anchor);
    const int32_t *anchor_of = rs->item_side ? d->pair_i : d->pair_u;
    for (int64_t s = 0; s < n; s++)
        rs->want[anchor_of[d->order[s]]] = 1;
    return 0;
}

int distill_epoch(distill_t *d, distill_stats_t *stats)
{
    return distill_epoch_on(d, NULL, d->train->nnz, stats);
}

int distill_epoch_on(distill_t *d, const int32_t *pos, int64_t nnz, distill_stats_t *stats)
{
    const distill_cfg_t *c = &d->cfg;
    memset(stats, 0, sizeof(*stats));
    stats->epoch = d->epoch;
    if (nnz < 0 || nnz > d->train->nnz)
        return -EINVAL;
    if (pos) {
        for (int64_t k = 0; k < nnz; k++) {
            if (pos[k] < 0 || pos[k] >= d->train->nnz)
                return -EINVAL;
            d->order[k] = pos[k];
        }
    } else {
        for (int64_t k = 0; k < nnz; k++)
            d->order[k] = (int32_t)k;
    }
    rng_t rng;
    rng_init_stream(&rng, c->seed, RNG_SHUFFLE, (uint64_t)d->epoch, 0);
    rng_shuffle_i32(&rng, d->order, nnz);
    for (int side = 0; side < 2; side++) {
        distill__rrd_side_t *rs = &d->rrd[side];
        if (!rs->on)
            continue;
        /* A sample draws RRD targets only for the anchors it can reach (not
         * RRD_IR's item side, whose anchors are whatever items the users'
         * side drew), so a short epoch on a large state stays short. */
        distill__rrd_job_t rjob = { d, rs, NULL, NULL };
        if (pos && side == 0) {
            if (distill__rrd_want(d, rs, nnz) < 0)
                return -ENOMEM;
            rjob.want = rs->want;
        }
        pool_run(d->pool, (rs->n_anchor + CHUNK - 1) / CHUNK, distill__rrd_sample, &rjob);
    }
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
            for (int side = 0; side < 2; side++) {
                int rc = distill__de_side(d, side, temp, stats);
                if (rc < 0)
                    return rc; /* -ENOMEM, or -EDOM: diverged */
            }
        }
        int nrrd[2] = { 0, 0 };
        if (c->use_rrd) {
            distill__rrd_side_t *u = &d->rrd[0];
            if (u->item_side)
                distill__rrd_anchors(d, u, d->uniq_pos, d->n_pos);
            else
                distill__rrd_anchors(d, u, d->uniq_user, d->n_user);
            nrrd[0] = distill__rrd_run(d, &st, u, &stats->loss_rrd);
        }
        if (d->rrd[1].on) {
            distill__rrd_side_t *it = &d->rrd[1];
            distill__rrd_anchors(d, it, it->cand, distill__rrd_sampled(d, &d->rrd[0], it));
            nrrd[1] = distill__rrd_run(d, &st, it, &stats->loss_rrd_item);
        }
        if (st.failed)
            return -ENOMEM;
        int nl = 0;
        for (int k = 0; k < nch; k++)
            d->lists[nl++] = &d->sc_bpr[k];
        d->lists[nl++] = &d->sc_de;
        for (int side = 0; side < 2; side++)
            for (int k = 0; k < nrrd[side]; k++)
                d->lists[nl++] = &d->rrd[side].sc[k];
        distill__update_t up = { d, (const scatter_t *const *)d->lists, nl, 0 };
        pool_run(d->pool, d->nparts, distill__gather, &up);
        if (up.failed)
            return -ENOMEM;
        pool_run(d->pool, d->nparts, distill__update, &up);
    }
    /* A whole epoch ends with every row brought up to date, whether or not
     * the model is read: a gap caught up in two parts is not quite the
     * same as in one, so catching up only on a read would make the
     * trajectory depend on how often the model is read. It costs a pass
     * over the rows, less than the epoch's pass over the pairs; an epoch on
     * a sample leaves it to distill_model, so that its cost follows the
     * sample, not the state. */
    if (!pos)
        distill__flush_all(d);
    d->epoch++;
    return 0;
}

const mf_t *distill_model(distill_t *d)
{
    distill__flush_all(d); /* nothing to do after a whole epoch */
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
