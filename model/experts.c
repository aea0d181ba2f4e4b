/* Distillation Experts with sparse expert evaluation; see experts.h. */
#include "experts.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fastmath.h"
#include "gemm.h"
#include "rng.h"
#include "simd.h"
#include "vec.h"

#define DE_EPS 1e-10f /* the reference's log(p + eps) guard */

int experts_init(experts_t *de, int32_t n_experts, int32_t ds, int32_t dt,
                 uint64_t seed)
{
    memset(de, 0, sizeof(*de));
    if (n_experts <= 0 || ds <= 0 || dt <= 0)
        return -EINVAL;
    de->n_experts = n_experts;
    de->ds = ds;
    de->dt = dt;
    de->dh = (ds + dt) / 2;
    de->ex_size = ds * de->dh + de->dh + de->dh * dt + dt;
    de->sel_size = dt * n_experts + n_experts;
    size_t n = (size_t)n_experts * (size_t)de->ex_size + (size_t)de->sel_size;
    de->params = malloc(n * sizeof(float));
    if (!de->params)
        return -ENOMEM;
    de->ex = de->params;
    de->sel = de->params + (size_t)n_experts * (size_t)de->ex_size;
    rng_t rng;
    rng_init_stream(&rng, seed, RNG_INIT, 0xde, (uint64_t)dt);
    float b1 = 1.0f / sqrtf((float)ds), b2 = 1.0f / sqrtf((float)de->dh);
    float bs = 1.0f / sqrtf((float)dt);
    for (int32_t e = 0; e < n_experts; e++) {
        float *x = de->ex + (size_t)e * de->ex_size;
        int32_t l1 = ds * de->dh + de->dh;
        for (int32_t k = 0; k < de->ex_size; k++) {
            float bound = k < l1 ? b1 : b2;
            x[k] = bound * (2.0f * rng_float(&rng) - 1.0f);
        }
    }
    for (int32_t k = 0; k < de->sel_size; k++)
        de->sel[k] = bs * (2.0f * rng_float(&rng) - 1.0f);
    return 0;
}

void experts_close(experts_t *de)
{
    free(de->params);
    memset(de, 0, sizeof(*de));
}

/* ---- workspace ---------------------------------------------------------- */

struct de_work {
    int32_t M, ds, dh, dt;   /* the shape the buffers were sized for */
    int64_t cap_n, cap_p;
    int nworkers;
    /* per entity */
    float *p;        /* (n, M) selection softmax */
    float *w;        /* (n, M) Gumbel-softmax weights */
    float *dlogit;   /* (n, M) gradient at the selection logits */
    float *r;        /* (n, dt) 2 * weight * (pred - t) */
    double *loss;    /* (n) */
    int32_t *ent_off;   /* (n + 1) pairs of entity k: ent_pair[ent_off[k] ..] */
    int32_t *ent_pair;  /* (P) */
    /* per pair, grouped by expert */
    int32_t *exp_off;   /* (M + 1) */
    int32_t *pair_ent;  /* (P) entity of each pair */
    int32_t *pair_exp;  /* (P) expert of each pair */
    float *H;           /* (P, dh) hidden activations */
    float *Y;           /* (P, dt) expert outputs */
    float *dX;          /* (P, ds) gradient at the student row, per pair */
    /* the expert passes' tasks: a block of at most DE_BLOCK pairs of one
     * expert each, so that one expert holding most entities (the usual case
     * once the selection sharpens) still spreads over every worker */
    int32_t n_tasks, cap_tasks;
    int32_t *task_exp;  /* (tasks) expert */
    int32_t *task_p0;   /* (tasks) first pair */
    int32_t *task_n;    /* (tasks) pairs */
    int32_t *task_part; /* (tasks) -1: the expert's first block, which adds
                           into grad_ex; else its slot in gpart */
    float *gpart;       /* (slots, ex_size) other blocks' expert gradients */
    int64_t cap_slots;
    /* per worker, DE_BLOCK rows each */
    float **X;          /* gathered student rows (ds) */
    float **dY;         /* (dt) */
    float **dH;         /* (dh) */
};

enum { DE_CHUNK = 128, DE_BLOCK = 256 };

de_work_t *de_work_new(void)
{
    return calloc(1, sizeof(de_work_t));
}

static void de__free_workers(de_work_t *w)
{
    for (int k = 0; k < w->nworkers; k++) {
        free(w->X[k]);
        free(w->dY[k]);
        free(w->dH[k]);
    }
    free(w->X);
    free(w->dY);
    free(w->dH);
    w->X = w->dY = w->dH = NULL;
    w->nworkers = 0;
}

void de_work_free(de_work_t *w)
{
    if (!w)
        return;
    free(w->p);
    free(w->w);
    free(w->dlogit);
    free(w->r);
    free(w->loss);
    free(w->ent_off);
    free(w->ent_pair);
    free(w->exp_off);
    free(w->pair_ent);
    free(w->pair_exp);
    free(w->H);
    free(w->Y);
    free(w->dX);
    free(w->task_exp);
    free(w->task_p0);
    free(w->task_n);
    free(w->task_part);
    free(w->gpart);
    de__free_workers(w);
    free(w);
}

static int de__grow(void **ptr, size_t bytes)
{
    void *q = realloc(*ptr, bytes ? bytes : 1);
    if (!q)
        return -ENOMEM;
    *ptr = q;
    return 0;
}

/* A work sized for other experts starts over: sizes depend on the shape. */
static void de__check_shape(de_work_t *w, const experts_t *de)
{
    if (w->M == de->n_experts && w->ds == de->ds && w->dh == de->dh && w->dt == de->dt)
        return;
    w->cap_n = w->cap_p = 0;
    w->cap_tasks = 0;
    w->cap_slots = 0;
    de__free_workers(w);
    w->M = de->n_experts;
    w->ds = de->ds;
    w->dh = de->dh;
    w->dt = de->dt;
}

static int de__reserve_n(de_work_t *w, const experts_t *de, int64_t n)
{
    if (n <= w->cap_n)
        return 0;
    n = n < w->cap_n * 3 / 2 ? w->cap_n * 3 / 2 : n;
    size_t M = (size_t)de->n_experts;
    if (de__grow((void **)&w->p, (size_t)n * M * sizeof(float)) ||
        de__grow((void **)&w->w, (size_t)n * M * sizeof(float)) ||
        de__grow((void **)&w->dlogit, (size_t)n * M * sizeof(float)) ||
        de__grow((void **)&w->r, (size_t)n * (size_t)de->dt * sizeof(float)) ||
        de__grow((void **)&w->loss, (size_t)n * sizeof(double)) ||
        de__grow((void **)&w->ent_off, ((size_t)n + 1) * sizeof(int32_t)) ||
        de__grow((void **)&w->exp_off, (M + 1) * sizeof(int32_t)))
        return -ENOMEM;
    w->cap_n = n;
    return 0;
}

static int de__reserve_p(de_work_t *w, const experts_t *de, int64_t P)
{
    if (P <= w->cap_p)
        return 0;
    P = P < w->cap_p * 3 / 2 ? w->cap_p * 3 / 2 : P;
    if (de__grow((void **)&w->ent_pair, (size_t)P * sizeof(int32_t)) ||
        de__grow((void **)&w->pair_ent, (size_t)P * sizeof(int32_t)) ||
        de__grow((void **)&w->pair_exp, (size_t)P * sizeof(int32_t)) ||
        de__grow((void **)&w->H, (size_t)P * (size_t)de->dh * sizeof(float)) ||
        de__grow((void **)&w->Y, (size_t)P * (size_t)de->dt * sizeof(float)) ||
        de__grow((void **)&w->dX, (size_t)P * (size_t)de->ds * sizeof(float)))
        return -ENOMEM;
    w->cap_p = P;
    return 0;
}

static int de__reserve_workers(de_work_t *w, const experts_t *de, int nworkers)
{
    if (nworkers == w->nworkers)
        return 0;
    de__free_workers(w);
    w->X = calloc((size_t)nworkers, sizeof(float *));
    w->dY = calloc((size_t)nworkers, sizeof(float *));
    w->dH = calloc((size_t)nworkers, sizeof(float *));
    if (!w->X || !w->dY || !w->dH)
        return -ENOMEM;
    w->nworkers = nworkers;
    for (int k = 0; k < nworkers; k++) {
        w->X[k] = malloc((size_t)DE_BLOCK * (size_t)de->ds * sizeof(float));
        w->dY[k] = malloc((size_t)DE_BLOCK * (size_t)de->dt * sizeof(float));
        w->dH[k] = malloc((size_t)DE_BLOCK * (size_t)de->dh * sizeof(float));
        if (!w->X[k] || !w->dY[k] || !w->dH[k])
            return -ENOMEM;
    }
    return 0;
}

/* Splits every expert's pairs into blocks of at most DE_BLOCK. The split
 * depends on the pairs only, never on the thread count, so the sums stay
 * reproducible. */
static int de__plan_tasks(de_work_t *w, const experts_t *de)
{
    int32_t M = de->n_experts;
    int32_t tasks = 0;
    for (int32_t e = 0; e < M; e++)
        tasks += (w->exp_off[e + 1] - w->exp_off[e] + DE_BLOCK - 1) / DE_BLOCK;
    if (tasks > w->cap_tasks) {
        if (de__grow((void **)&w->task_exp, (size_t)tasks * sizeof(int32_t)) ||
            de__grow((void **)&w->task_p0, (size_t)tasks * sizeof(int32_t)) ||
            de__grow((void **)&w->task_n, (size_t)tasks * sizeof(int32_t)) ||
            de__grow((void **)&w->task_part, (size_t)tasks * sizeof(int32_t)))
            return -ENOMEM;
        w->cap_tasks = tasks;
    }
    int32_t t = 0, slots = 0;
    for (int32_t e = 0; e < M; e++)
        for (int32_t p = w->exp_off[e]; p < w->exp_off[e + 1]; p += DE_BLOCK) {
            int32_t left = w->exp_off[e + 1] - p;
            w->task_exp[t] = e;
            w->task_p0[t] = p;
            w->task_n[t] = left < DE_BLOCK ? left : DE_BLOCK;
            w->task_part[t] = p == w->exp_off[e] ? -1 : slots++;
            t++;
        }
    w->n_tasks = t;
    if (slots > w->cap_slots) {
        if (de__grow((void **)&w->gpart, (size_t)slots * (size_t)de->ex_size * sizeof(float)))
            return -ENOMEM;
        w->cap_slots = slots;
    }
    return 0;
}

/* ---- the passes ---------------------------------------------------------- */

typedef struct {
    const experts_t *de;
    const de_batch_t *b;
    de_work_t *w;
    float *grad_ex;
    int32_t chunk;
} de__job_t;

/* Selection softmax and Gumbel-softmax weights, per entity chunk. */
FAST_CLONES static void de__select(void *ctx, int task, int worker)
{
    (void)worker;
    de__job_t *job = ctx;
    const experts_t *de = job->de;
    const de_batch_t *b = job->b;
    de_work_t *w = job->w;
    int32_t M = de->n_experts, dt = de->dt;
    int32_t k0 = task * job->chunk;
    int32_t k1 = k0 + job->chunk < b->n ? k0 + job->chunk : b->n;
    const float *Ws = de->sel, *bs = de->sel + (size_t)dt * M;
    float inv_temp = 1.0f / b->temp;
    /* logits = t (n, dt) x Ws (dt, M) */
    gemm(false, false, k1 - k0, M, dt, 1.0f, b->t + (size_t)k0 * dt, dt, Ws, M,
         0.0f, w->p + (size_t)k0 * M, M);
    for (int32_t k = k0; k < k1; k++) {
        float *p = w->p + (size_t)k * M, *wk = w->w + (size_t)k * M;
        const float *g = b->gumbel + (size_t)k * M;
        /* The element-wise work (exp, log) in loops of its own, so that
         * they vectorise; the reductions (max, in-order sums) stay scalar. */
        for (int32_t e = 0; e < M; e++)
            p[e] += bs[e];
        float mx = -INFINITY;
        for (int32_t e = 0; e < M; e++)
            mx = p[e] > mx ? p[e] : mx;
        for (int32_t e = 0; e < M; e++)
            p[e] = fast_expf_neg(p[e] - mx);
        float sum = 0.0f;
        for (int32_t e = 0; e < M; e++)
            sum += p[e];
        for (int32_t e = 0; e < M; e++) {
            p[e] /= sum;
            wk[e] = (fast_logf(p[e] + DE_EPS) + g[e]) * inv_temp;
        }
        float zmax = -INFINITY;
        for (int32_t e = 0; e < M; e++)
            zmax = wk[e] > zmax ? wk[e] : zmax;
        for (int32_t e = 0; e < M; e++)
            wk[e] = fast_expf_neg(wk[e] - zmax);
        float zs = 0.0f;
        for (int32_t e = 0; e < M; e++)
            zs += wk[e];
        for (int32_t e = 0; e < M; e++)
            wk[e] /= zs;
        /* Keep the heaviest experts until they hold 1 - keep of the weight
         * (or max_experts of them), renormalise, zero the rest. keep = 0
         * with no cap keeps every expert, even when rounding says the first
         * ones already hold all the weight. */
        int32_t cap = b->max_experts > 0 && b->max_experts < M ? b->max_experts : M;
        if (cap == M && b->keep <= 0.0f)
            continue; /* all kept; w already sums to 1 */
        int32_t order[256], nk = 0;
        float kept = 0.0f;
        uint8_t taken[256] = { 0 };
        while (nk < cap && (nk == 0 || kept < 1.0f - b->keep)) {
            /* the next heaviest: a scan, since few are taken at low T */
            int32_t best = -1;
            for (int32_t e = 0; e < M; e++)
                if (!taken[e] && (best < 0 || wk[e] > wk[best]))
                    best = e;
            taken[best] = 1;
            order[nk++] = best;
            kept += wk[best];
        }
        for (int32_t e = 0; e < M; e++)
            if (!taken[e])
                wk[e] = 0.0f;
        for (int32_t q = 0; q < nk; q++)
            wk[order[q]] /= kept;
    }
}

/* Expert forward over a block of its pairs: H = relu(X W1 + b1),
 * Y = H W2 + b2. */
static void de__expert_forward(void *ctx, int task, int worker)
{
    de__job_t *job = ctx;
    const experts_t *de = job->de;
    de_work_t *w = job->w;
    int32_t e = w->task_exp[task], p0 = w->task_p0[task], n = w->task_n[task];
    int32_t ds = de->ds, dh = de->dh, dt = de->dt;
    const float *W1 = de->ex + (size_t)e * de->ex_size;
    const float *b1 = W1 + ds * dh, *W2 = b1 + dh, *b2 = W2 + dh * dt;
    float *X = w->X[worker];
    for (int32_t k = 0; k < n; k++)
        memcpy(X + (size_t)k * ds, job->b->s + (size_t)w->pair_ent[p0 + k] * ds,
               (size_t)ds * sizeof(float));
    float *H = w->H + (size_t)p0 * dh, *Y = w->Y + (size_t)p0 * dt;
    gemm(false, false, n, dh, ds, 1.0f, X, ds, W1, dh, 0.0f, H, dh);
    for (int32_t k = 0; k < n; k++) {
        float *h = H + (size_t)k * dh;
        for (int32_t c = 0; c < dh; c++) {
            float x = h[c] + b1[c];
            h[c] = x > 0.0f ? x : 0.0f;
        }
    }
    gemm(false, false, n, dt, dh, 1.0f, H, dh, W2, dt, 0.0f, Y, dt);
    for (int32_t k = 0; k < n; k++) {
        float *y = Y + (size_t)k * dt;
        for (int32_t c = 0; c < dt; c++)
            y[c] += b2[c];
    }
}

/* Per entity: prediction, loss, residual, and the selection gradient. */
FAST_CLONES static void de__combine(void *ctx, int task, int worker)
{
    (void)worker;
    de__job_t *job = ctx;
    const experts_t *de = job->de;
    const de_batch_t *b = job->b;
    de_work_t *w = job->w;
    int32_t M = de->n_experts, dt = de->dt;
    int32_t k0 = task * job->chunk;
    int32_t k1 = k0 + job->chunk < b->n ? k0 + job->chunk : b->n;
    float dw[256];
    for (int32_t k = k0; k < k1; k++) {
        const float *t = b->t + (size_t)k * dt;
        const float *wk = w->w + (size_t)k * M;
        float *r = w->r + (size_t)k * dt;
        for (int32_t c = 0; c < dt; c++)
            r[c] = -t[c];
        for (int32_t q = w->ent_off[k]; q < w->ent_off[k + 1]; q++) {
            int32_t pr = w->ent_pair[q];
            const float *y = w->Y + (size_t)pr * dt;
            float we = wk[w->pair_exp[pr]];
            for (int32_t c = 0; c < dt; c++)
                r[c] += we * y[c];
        }
        /* r = pred - t now */
        w->loss[k] = b->weight[k] * (double)vec_dot(r, r, dt);
        float scale = 2.0f * b->weight[k];
        for (int32_t c = 0; c < dt; c++)
            r[c] *= scale;
        /* dL/dw_e = r . Y_e for evaluated experts, 0 for skipped ones. */
        for (int32_t e = 0; e < M; e++)
            dw[e] = 0.0f;
        for (int32_t q = w->ent_off[k]; q < w->ent_off[k + 1]; q++) {
            int32_t pr = w->ent_pair[q];
            dw[w->pair_exp[pr]] = vec_dot(r, w->Y + (size_t)pr * dt, dt);
        }
        /* Through w = softmax(z), z = (log(p + eps) + g) / temp, p = softmax(logit). */
        const float *p = w->p + (size_t)k * M;
        float dot = 0.0f;
        for (int32_t e = 0; e < M; e++)
            dot += wk[e] * dw[e];
        float dp[256];
        float dot2 = 0.0f;
        for (int32_t e = 0; e < M; e++) {
            float dz = wk[e] * (dw[e] - dot);
            dp[e] = dz / b->temp / (p[e] + DE_EPS);
            dot2 += p[e] * dp[e];
        }
        float *dl = w->dlogit + (size_t)k * M;
        for (int32_t e = 0; e < M; e++)
            dl[e] = p[e] * (dp[e] - dot2);
    }
}

/* Expert backward over a block of its pairs. The expert's first block adds
 * its parameter gradient into grad_ex, the others into their own slot of
 * gpart (summed in block order afterwards). */
static void de__expert_backward(void *ctx, int task, int worker)
{
    de__job_t *job = ctx;
    const experts_t *de = job->de;
    de_work_t *w = job->w;
    int32_t e = w->task_exp[task], p0 = w->task_p0[task], n = w->task_n[task];
    int32_t M = de->n_experts, ds = de->ds, dh = de->dh, dt = de->dt;
    const float *W1 = de->ex + (size_t)e * de->ex_size;
    const float *W2 = W1 + ds * dh + dh;
    float *gW1 = job->grad_ex + (size_t)e * de->ex_size;
    if (w->task_part[task] >= 0) {
        gW1 = w->gpart + (size_t)w->task_part[task] * de->ex_size;
        memset(gW1, 0, (size_t)de->ex_size * sizeof(float));
    }
    float *gb1 = gW1 + ds * dh, *gW2 = gb1 + dh, *gb2 = gW2 + dh * dt;
    float *X = w->X[worker], *dY = w->dY[worker], *dH = w->dH[worker];
    for (int32_t k = 0; k < n; k++) {
        int32_t ent = w->pair_ent[p0 + k];
        memcpy(X + (size_t)k * ds, job->b->s + (size_t)ent * ds, (size_t)ds * sizeof(float));
        float we = w->w[(size_t)ent * M + e];
        const float *r = w->r + (size_t)ent * dt;
        float *dy = dY + (size_t)k * dt;
        for (int32_t c = 0; c < dt; c++) {
            dy[c] = we * r[c];
            gb2[c] += dy[c];
        }
    }
    const float *H = w->H + (size_t)p0 * dh;
    gemm(true, false, dh, dt, n, 1.0f, H, dh, dY, dt, 1.0f, gW2, dt);
    gemm(false, true, n, dh, dt, 1.0f, dY, dt, W2, dt, 0.0f, dH, dh);
    for (int32_t k = 0; k < n; k++) {
        const float *h = H + (size_t)k * dh;
        float *g = dH + (size_t)k * dh;
        for (int32_t c = 0; c < dh; c++) {
            g[c] = h[c] > 0.0f ? g[c] : 0.0f;
            gb1[c] += g[c];
        }
    }
    gemm(true, false, ds, dh, n, 1.0f, X, ds, dH, dh, 1.0f, gW1, dh);
    gemm(false, true, n, ds, dh, 1.0f, dH, dh, W1, dh, 0.0f,
         w->dX + (size_t)p0 * ds, ds);
}

/* Out of memory: NAN, and *evaluated = -1 so that the caller can tell it
 * from a loss that is NaN because the inputs were. */
static double de__oom(int64_t *evaluated)
{
    if (evaluated)
        *evaluated = -1;
    return NAN;
}

double de_forward_backward(const experts_t *de, const de_batch_t *b,
                           de_work_t *w, pool_t *pool, float *grad_ex,
                           uint8_t *ex_used, float *grad_sel, float *ds_out,
                           int64_t *evaluated)
{
    int32_t M = de->n_experts, n = b->n;
    if (evaluated)
        *evaluated = 0;
    if (n == 0)
        return 0.0;
    de__check_shape(w, de);
    if (M > 256 || de__reserve_n(w, de, n) < 0)
        return de__oom(evaluated);
    de__job_t job = { de, b, w, grad_ex, DE_CHUNK };
    int nchunks = (n + DE_CHUNK - 1) / DE_CHUNK;
    pool_run(pool, nchunks, de__select, &job);

    /* Pairs grouped by expert (counting sort), entities in order within. */
    memset(w->exp_off, 0, (size_t)(M + 1) * sizeof(int32_t));
    for (int32_t k = 0; k < n; k++) {
        const float *wk = w->w + (size_t)k * M;
        for (int32_t e = 0; e < M; e++)
            if (wk[e] > 0.0f)
                w->exp_off[e + 1]++;
    }
    for (int32_t e = 0; e < M; e++)
        w->exp_off[e + 1] += w->exp_off[e];
    int64_t P = w->exp_off[M];
    if (de__reserve_p(w, de, P) < 0 || de__reserve_workers(w, de, pool_threads(pool)) < 0 ||
        de__plan_tasks(w, de) < 0)
        return de__oom(evaluated);
    memset(w->ent_off, 0, ((size_t)n + 1) * sizeof(int32_t));
    /* Fill pair_ent by expert, and count pairs per entity. */
    int32_t *cursor = malloc((size_t)M * sizeof(int32_t));
    if (!cursor)
        return de__oom(evaluated);
    memcpy(cursor, w->exp_off, (size_t)M * sizeof(int32_t));
    for (int32_t k = 0; k < n; k++) {
        const float *wk = w->w + (size_t)k * M;
        for (int32_t e = 0; e < M; e++)
            if (wk[e] > 0.0f) {
                w->pair_exp[cursor[e]] = e;
                w->pair_ent[cursor[e]++] = k;
                w->ent_off[k + 1]++;
            }
    }
    free(cursor);
    for (int32_t k = 0; k < n; k++)
        w->ent_off[k + 1] += w->ent_off[k];
    /* ent_pair lists each entity's pairs in expert order. */
    int32_t *ecur = malloc(((size_t)n + 1) * sizeof(int32_t));
    if (!ecur)
        return de__oom(evaluated);
    memcpy(ecur, w->ent_off, (size_t)n * sizeof(int32_t));
    for (int64_t pr = 0; pr < P; pr++)
        w->ent_pair[ecur[w->pair_ent[pr]]++] = (int32_t)pr;
    free(ecur);
    if (evaluated)
        *evaluated = P;

    pool_run(pool, w->n_tasks, de__expert_forward, &job);
    pool_run(pool, nchunks, de__combine, &job);
    pool_run(pool, w->n_tasks, de__expert_backward, &job);
    for (int32_t t = 0; t < w->n_tasks; t++) {
        int32_t e = w->task_exp[t];
        ex_used[e] = 1;
        if (w->task_part[t] < 0)
            continue;
        float *g = grad_ex + (size_t)e * de->ex_size;
        const float *part = w->gpart + (size_t)w->task_part[t] * de->ex_size;
        for (int32_t c = 0; c < de->ex_size; c++)
            g[c] += part[c];
    }

    /* Gradients at the student rows, summed in expert order. */
    int32_t ds = de->ds;
    for (int32_t k = 0; k < n; k++) {
        float *d = ds_out + (size_t)k * ds;
        for (int32_t c = 0; c < ds; c++)
            d[c] = 0.0f;
        for (int32_t q = w->ent_off[k]; q < w->ent_off[k + 1]; q++) {
            const float *x = w->dX + (size_t)w->ent_pair[q] * ds;
            for (int32_t c = 0; c < ds; c++)
                d[c] += x[c];
        }
    }
    /* Selection net: dWs += t^T dlogit, dbs += sum dlogit. */
    int32_t dt = de->dt;
    gemm(true, false, dt, M, n, 1.0f, b->t, dt, w->dlogit, M, 1.0f, grad_sel, M);
    float *gbs = grad_sel + (size_t)dt * M;
    double loss = 0.0;
    for (int32_t k = 0; k < n; k++) {
        const float *dl = w->dlogit + (size_t)k * M;
        for (int32_t e = 0; e < M; e++)
            gbs[e] += dl[e];
        loss += w->loss[k];
    }
    return loss;
}

void experts_apply_naive(const experts_t *de, int32_t e, const float *s, double w,
                         double *h, double *out)
{
    int32_t ds = de->ds, dh = de->dh, dt = de->dt;
    const float *W1 = de->ex + (size_t)e * de->ex_size;
    const float *b1 = W1 + ds * dh, *W2 = b1 + dh, *b2 = W2 + dh * dt;
    for (int32_t j = 0; j < dh; j++) {
        double a = b1[j];
        for (int32_t c = 0; c < ds; c++)
            a += (double)s[c] * W1[(size_t)c * dh + j];
        h[j] = a > 0.0 ? a : 0.0;
    }
    for (int32_t c = 0; c < dt; c++) {
        double a = b2[c];
        for (int32_t j = 0; j < dh; j++)
            a += h[j] * W2[(size_t)j * dt + c];
        out[c] += w * a;
    }
}

double de_loss_naive(const experts_t *de, const de_batch_t *b)
{
    int32_t M = de->n_experts, ds = de->ds, dh = de->dh, dt = de->dt;
    double loss = 0.0;
    double *pred = malloc((size_t)dt * sizeof(double));
    double *h = malloc((size_t)dh * sizeof(double));
    double *p = malloc((size_t)M * sizeof(double));
    double *z = malloc((size_t)M * sizeof(double));
    if (!pred || !h || !p || !z) {
        loss = NAN;
        goto done;
    }
    const float *Ws = de->sel, *bs = de->sel + (size_t)dt * M;
    for (int32_t k = 0; k < b->n; k++) {
        const float *s = b->s + (size_t)k * ds, *t = b->t + (size_t)k * dt;
        double mx = -INFINITY;
        for (int32_t e = 0; e < M; e++) {
            double a = bs[e];
            for (int32_t c = 0; c < dt; c++)
                a += (double)t[c] * Ws[(size_t)c * M + e];
            p[e] = a;
            mx = fmax(mx, a);
        }
        double sum = 0.0;
        for (int32_t e = 0; e < M; e++)
            sum += (p[e] = exp(p[e] - mx));
        double zmax = -INFINITY;
        for (int32_t e = 0; e < M; e++) {
            p[e] /= sum;
            z[e] = (log(p[e] + (double)DE_EPS) + b->gumbel[(size_t)k * M + e]) / b->temp;
            zmax = fmax(zmax, z[e]);
        }
        double zs = 0.0;
        for (int32_t e = 0; e < M; e++)
            zs += (z[e] = exp(z[e] - zmax));
        for (int32_t c = 0; c < dt; c++)
            pred[c] = 0.0;
        for (int32_t e = 0; e < M; e++)
            experts_apply_naive(de, e, s, z[e] / zs, h, pred);
        double l = 0.0;
        for (int32_t c = 0; c < dt; c++)
            l += (t[c] - pred[c]) * (t[c] - pred[c]);
        loss += b->weight[k] * l;
    }
done:
    free(pred);
    free(h);
    free(p);
    free(z);
    return loss;
}
