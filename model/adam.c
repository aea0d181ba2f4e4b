/* Lazy Adam with closed-form catch-up; see adam.h for why it matches dense. */
#include "simd.h"
#include "adam.h"
#include "bigmem.h"
#include "vec.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

adam_cfg_t adam_cfg_default(void)
{
    adam_cfg_t cfg = { 1e-3f, 0.9f, 0.999f, 1e-8f, 1e-3f };
    return cfg;
}

/* Bias-corrected step size of step s (1-based). */
static double adam__lr(const adam_cfg_t *cfg, int64_t s)
{
    return cfg->lr * sqrt(1.0 - pow(cfg->beta2, (double)s)) / (1.0 - pow(cfg->beta1, (double)s));
}

/* Per step and per gap length, the constants the updates need, so that a row
 * update costs table look-ups instead of pow(). Past ADAM_CACHE steps the
 * bias corrections are 1 to float precision (beta2^16384 < 1e-7). */
static void adam__tables(adam_table_t *t)
{
    const adam_cfg_t *cfg = &t->cfg;
    double b1 = cfg->beta1, b2 = cfg->beta2, rr = 1.0 / sqrt(b2), q = b1 * rr;
    double b1k = 1.0, b2k = 1.0, rrk = 1.0;
    for (int k = 0; k < ADAM_CACHE; k++) {
        adam__tab_t *e = &t->tab[k];
        e->lr = k ? (float)(cfg->lr / (1.0 - pow(b1, (double)k))) : 0.0f;
        e->bc2 = k ? (float)(1.0 / sqrt(1.0 - pow(b2, (double)k))) : 0.0f;
        e->lr_full = k ? (float)adam__lr(cfg, k) : 0.0f;
        double sum_q = q * (1.0 - b1k * rrk) / (1.0 - q);
        double sum_r = rr * (rrk - 1.0) / (rr - 1.0);
        e->sum_q = (float)sum_q;
        e->sum_wd = (float)((sum_r - sum_q) * cfg->wd);
        e->b1k = (float)b1k;
        e->b2k = (float)b2k;
        b1k *= b1;
        b2k *= b2;
        rrk *= rr;
    }
    /* Early on the bias correction moves fast, so the momentum sum of a gap
     * is summed step by step: early[s][k] = sum_{j<=k} lr_{s+j} q^j, in
     * double, in the order a row's catch-up would sum it (it is spent within
     * ADAM_EXACT_GAP steps: q^256 < 1e-11). */
    double qd = (double)cfg->beta1 / sqrt((double)cfg->beta2);
    for (int s = 0; s < ADAM_EXACT; s++) {
        float *row = t->early + (size_t)s * (ADAM_EXACT_GAP + 1);
        double qj = 1.0, A = 0.0;
        row[0] = 0.0f;
        for (int j = 1; j <= ADAM_EXACT_GAP; j++) {
            qj *= qd;
            A += (double)t->tab[s + j].lr_full * qj;
            row[j] = (float)A;
        }
    }
}

int adam_table_init(adam_table_t *t, float *params, int32_t rows, int32_t cols,
                    const adam_cfg_t *cfg)
{
    memset(t, 0, sizeof(*t));
    t->cfg = *cfg;
    size_t n = (size_t)rows * (size_t)cols;
    t->rows = rows;
    t->cols = cols;
    t->p = params;
    t->m = bigmem_zero_floats(n);
    t->v = bigmem_zero_floats(n);
    t->g = calloc(n ? n : 1, sizeof(float));
    t->last = calloc(rows ? (size_t)rows : 1, sizeof(int64_t));
    t->touched = calloc(rows ? (size_t)rows : 1, 1);
    t->tab = malloc(ADAM_CACHE * sizeof(*t->tab));
    t->early = malloc((size_t)ADAM_EXACT * (ADAM_EXACT_GAP + 1) * sizeof(float));
    if (!t->m || !t->v || !t->g || !t->last || !t->touched || !t->tab || !t->early) {
        adam_table_close(t);
        return -ENOMEM;
    }
    adam__tables(t);
    return 0;
}

void adam_table_close(adam_table_t *t)
{
    for (int k = 0; k < ADAM_MAX_PARTS; k++) {
        free(t->parts[k].cnt);
        free(t->parts[k].pos);
        free(t->parts[k].grad);
        free(t->parts[k].sorted);
        free(t->parts[k].rows);
    }
    free(t->m);
    free(t->v);
    free(t->g);
    free(t->last);
    free(t->touched);
    free(t->tab);
    free(t->early);
    memset(t, 0, sizeof(*t));
}

/* Moves row r through steps last+1 .. upto with no data gradient.
 *
 * With q = beta1 / sqrt(beta2) and rr = 1 / sqrt(beta2), the k skipped steps
 * move the parameter by -(m A + wd p B) / sqrt(v), where
 *   A = sum_j lr_j q^j             (momentum, mostly spent in ~20 steps)
 *   B = sum_j lr_j (1 - beta1^j) rr^j  (weight decay, spread over the gap)
 * The bias-corrected rate lr_j changes slowly, so A takes it at the gap's
 * first step and B at its middle; both sums are then geometric series. */
typedef struct {
    float A, B;      /* B includes wd */
    float b1k, b2k;  /* beta1^k, beta2^k */
} adam__gap_t;

static adam__gap_t adam__gap(const adam_table_t *t, int64_t s, int64_t k)
{
    adam__gap_t g = { 0.0f, 0.0f, 1.0f, 1.0f };
    if (k <= 0)
        return g;
    const adam_cfg_t *cfg = &t->cfg;
    int64_t s1 = s + 1, sm = s + (k + 1) / 2;
    float lr1 = s1 < ADAM_CACHE ? t->tab[s1].lr_full : cfg->lr;
    float lrm = sm < ADAM_CACHE ? t->tab[sm].lr_full : cfg->lr;
    double B;
    if (k < ADAM_CACHE) {
        const adam__tab_t *e = &t->tab[k];
        g.A = lr1 * e->sum_q;
        B = (double)lrm * e->sum_wd;
        g.b1k = e->b1k;
        g.b2k = e->b2k;
    } else {
        /* A very long gap: momentum is long spent, v has decayed away. */
        double b1 = cfg->beta1, b2 = cfg->beta2, rr = 1.0 / sqrt(b2), q = b1 * rr;
        double rrk = pow(rr, (double)k), sum_q = q / (1.0 - q);
        double sum_r = rr * (rrk - 1.0) / (rr - 1.0);
        g.A = (float)(lr1 * sum_q);
        B = cfg->wd > 0.0f ? lrm * (sum_r - sum_q) * cfg->wd : 0.0; /* rr^k is inf by now */
        g.b1k = 0.0f;
        g.b2k = (float)pow(b2, (double)k);
    }
    if (s < ADAM_EXACT)
        g.A = t->early[(size_t)s * (ADAM_EXACT_GAP + 1) + (k < ADAM_EXACT_GAP ? k : ADAM_EXACT_GAP)];
    g.B = (float)(B < 1e30 ? B : 1e30); /* keeps B * 0 finite for v = 0 */
    return g;
}

typedef struct {
    float lr;   /* lr / (1 - beta1^t) */
    float bc2;  /* 1 / sqrt(1 - beta2^t) */
} adam__step_t;

static adam__step_t adam__step_consts(const adam_table_t *t, int64_t step)
{
    adam__step_t k = { t->cfg.lr, 1.0f };
    if (step < ADAM_CACHE) {
        k.lr = t->tab[step].lr;
        k.bc2 = t->tab[step].bc2;
    }
    return k;
}

/* One pass over row r: the catch-up of its idle steps, then (when grad is
 * not NULL) step `step` with that gradient. A single pass matters: the
 * optimizer state is far larger than the caches, so the cost is the bytes
 * moved. Branch-free so that it vectorises. */
FAST_CLONES static void adam__row(adam_table_t *t, const adam__step_t *k, int32_t r,
                                  int64_t step, const float *restrict grad)
{
    const adam_cfg_t *cfg = &t->cfg;
    int64_t upto = grad ? step - 1 : step;
    adam__gap_t gp = adam__gap(t, t->last[r], upto - t->last[r]);
    float wd = cfg->wd, b1 = cfg->beta1, b2 = cfg->beta2, eps = cfg->eps;
    int64_t off = (int64_t)r * t->cols;
    float *restrict p = t->p + off, *restrict m = t->m + off, *restrict v = t->v + off;
    if (upto > t->last[r]) {
        for (int32_t c = 0; c < t->cols; c++) {
            /* v = 0: the element never had a gradient. Dense Adam would pull
             * it toward 0 by about lr per step on weight decay alone; we
             * leave it at its initial value instead (docs/MODEL.md). */
            float vc = v[c];
            float has = vc > 0.0f ? 1.0f : 0.0f;
            float isq = has / sqrtf(vc + (1.0f - has));
            float p0 = p[c], mc = m[c];
            /* Momentum first (it is spent early in the gap), then the weight
             * decay of the whole gap on where momentum left the parameter. */
            float p1 = p0 - mc * gp.A * isq;
            float shrink = gp.B * isq;
            shrink = shrink < 1.0f ? shrink : 1.0f; /* toward 0, never past */
            float pn = p1 * (1.0f - shrink);
            p[c] = vc > 0.0f ? pn : p0;
            m[c] = vc > 0.0f ? gp.b1k * mc + (1.0f - gp.b1k) * wd * pn : mc;
            v[c] = gp.b2k * vc;
        }
    }
    if (grad) {
        float lr = k->lr, bc2 = k->bc2;
        for (int32_t c = 0; c < t->cols; c++) {
            float gc = grad[c] + wd * p[c];
            float mc = b1 * m[c] + (1.0f - b1) * gc;
            float vc = b2 * v[c] + (1.0f - b2) * gc * gc;
            m[c] = mc;
            v[c] = vc;
            p[c] -= lr * mc / (sqrtf(vc) * bc2 + eps);
        }
    }
    t->last[r] = step;
}

void adam_table_update(adam_table_t *t, int64_t step, int part, int nparts)
{
    adam__step_t k = adam__step_consts(t, step);
    int32_t blk = adam_block(t);
    for (int32_t b = part * blk; b < t->rows; b += nparts * blk) {
        int32_t e = b + blk < t->rows ? b + blk : t->rows;
        for (int32_t r = b; r < e; r++)
            if (t->touched[r]) {
                float *g = t->g + (int64_t)r * t->cols;
                adam__row(t, &k, r, step, g);
                memset(g, 0, (size_t)t->cols * sizeof(float));
                t->touched[r] = 0;
            }
    }
}

FAST_CLONES int adam_table_gather(adam_table_t *t, const scatter_t *const *lists, int nlists,
                                  int part, int nparts)
{
    if (part < 0 || part >= ADAM_MAX_PARTS || nparts < 1)
        return -EINVAL;
    adam__part_t *pt = &t->parts[part];
    if (!pt->cnt) {
        pt->cnt = calloc((size_t)(t->rows ? t->rows : 1), sizeof(int32_t));
        pt->pos = malloc((size_t)(t->rows ? t->rows : 1) * sizeof(int32_t));
        if (!pt->cnt || !pt->pos)
            return -ENOMEM;
    }
    /* Counting sort of this part's entries by row, stable in list order, so
     * each row's gradient is summed from one contiguous run. */
    int64_t n = 0;
    pt->n_rows = 0;
    for (int l = 0; l < nlists; l++) {
        const scatter_t *s = lists[l];
        for (int64_t x = 0; x < s->n; x++) {
            int32_t r = s->v[x].row;
            if (adam_part(t, r, nparts) != part)
                continue;
            if (pt->cnt[r]++ == 0) {
                if (pt->n_rows == pt->cap_rows) {
                    int64_t cap = pt->cap_rows ? pt->cap_rows * 2 : 4096;
                    int32_t *nr = realloc(pt->rows, (size_t)cap * sizeof(int32_t));
                    float *ng = realloc(pt->grad, (size_t)cap * (size_t)t->cols * sizeof(float));
                    if (nr)
                        pt->rows = nr;
                    if (ng)
                        pt->grad = ng;
                    if (!nr || !ng)
                        goto oom;
                    pt->cap_rows = cap;
                }
                pt->rows[pt->n_rows++] = r;
            }
            n++;
        }
    }
    /* The rows in ascending order, so that the passes over their state
     * below and in adam_table_apply() walk memory forward; the scan reads
     * one count per row of the part. Each row's sum keeps its list order,
     * so the results do not change. */
    int64_t nr = 0;
    int32_t blk = adam_block(t);
    for (int32_t b = part * blk; b < t->rows; b += nparts * blk) {
        int32_t e = b + blk < t->rows ? b + blk : t->rows;
        for (int32_t r = b; r < e; r++)
            if (pt->cnt[r])
                pt->rows[nr++] = r;
    }
    if (n > pt->cap) {
        scatter_entry_t *ns = realloc(pt->sorted, (size_t)n * sizeof(*ns));
        if (!ns)
            goto oom;
        pt->sorted = ns;
        pt->cap = n;
    }
    int32_t acc = 0;
    for (int64_t q = 0; q < pt->n_rows; q++) {
        int32_t r = pt->rows[q];
        pt->pos[r] = acc;
        acc += pt->cnt[r];
    }
    for (int l = 0; l < nlists; l++) {
        const scatter_t *s = lists[l];
        for (int64_t x = 0; x < s->n; x++) {
            int32_t r = s->v[x].row;
            if (adam_part(t, r, nparts) == part)
                pt->sorted[pt->pos[r]++] = s->v[x];
        }
    }
    int32_t d = t->cols;
    for (int64_t q = 0; q < pt->n_rows; q++) {
        int32_t r = pt->rows[q];
        int32_t end = pt->pos[r], begin = end - pt->cnt[r];
        if (q + 2 < pt->n_rows) {
            int32_t r2 = pt->rows[q + 2];
            for (int32_t x = pt->pos[r2] - pt->cnt[r2]; x < pt->pos[r2]; x++)
                vec_prefetch(pt->sorted[x].vec, (size_t)d * sizeof(float));
        }
        float *restrict g = pt->grad + q * d;
        memset(g, 0, (size_t)d * sizeof(float));
        for (int32_t x = begin; x < end; x++) {
            float a = pt->sorted[x].scale;
            const float *restrict v = pt->sorted[x].vec;
            for (int32_t c = 0; c < d; c++)
                g[c] += a * v[c];
        }
        pt->cnt[r] = 0;
    }
    return 0;
oom:
    /* Leave the counts clean for the next call. */
    for (int64_t q = 0; q < pt->n_rows; q++)
        pt->cnt[pt->rows[q]] = 0;
    pt->n_rows = 0;
    return -ENOMEM;
}

void adam_table_apply(adam_table_t *t, int64_t step, int part)
{
    if (part < 0 || part >= ADAM_MAX_PARTS)
        return;
    adam__part_t *pt = &t->parts[part];
    adam__step_t k = adam__step_consts(t, step);
    size_t bytes = (size_t)t->cols * sizeof(float);
    for (int64_t q = 0; q < pt->n_rows; q++) {
        if (q + 2 < pt->n_rows) {
            int64_t off = (int64_t)pt->rows[q + 2] * t->cols;
            vec_prefetch_w(t->p + off, bytes);
            vec_prefetch_w(t->m + off, bytes);
            vec_prefetch_w(t->v + off, bytes);
        }
        adam__row(t, &k, pt->rows[q], step, pt->grad + q * t->cols);
    }
    pt->n_rows = 0;
}

void adam_table_flush(adam_table_t *t, int64_t step, int part, int nparts)
{
    adam__step_t k = adam__step_consts(t, step);
    int32_t blk = adam_block(t);
    for (int32_t b = part * blk; b < t->rows; b += nparts * blk) {
        int32_t e = b + blk < t->rows ? b + blk : t->rows;
        for (int32_t r = b; r < e; r++)
            adam__row(t, &k, r, step, NULL);
    }
}

void adam_table_update_dense(adam_table_t *t, int64_t step)
{
    for (int32_t r = 0; r < t->rows; r++)
        t->touched[r] = 1;
    adam_table_update(t, step, 0, 1);
}
