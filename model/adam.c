/* Lazy Adam with closed-form catch-up; see adam.h for why it matches dense. */
#include "adam.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

adam_cfg_t adam_cfg_default(void)
{
    adam_cfg_t cfg = { 1e-3f, 0.9f, 0.999f, 1e-8f, 1e-3f };
    return cfg;
}

int adam_table_init(adam_table_t *t, float *params, int32_t rows, int32_t cols)
{
    memset(t, 0, sizeof(*t));
    size_t n = (size_t)rows * (size_t)cols;
    t->rows = rows;
    t->cols = cols;
    t->p = params;
    t->m = calloc(n ? n : 1, sizeof(float));
    t->v = calloc(n ? n : 1, sizeof(float));
    t->g = calloc(n ? n : 1, sizeof(float));
    t->last = calloc(rows ? (size_t)rows : 1, sizeof(int64_t));
    t->touched = calloc(rows ? (size_t)rows : 1, 1);
    t->pow_b1 = malloc(ADAM_CACHE * sizeof(double));
    t->pow_b2 = malloc(ADAM_CACHE * sizeof(double));
    t->pow_rr = malloc(ADAM_CACHE * sizeof(double));
    if (!t->m || !t->v || !t->g || !t->last || !t->touched || !t->pow_b1 || !t->pow_b2 ||
        !t->pow_rr) {
        adam_table_close(t);
        return -ENOMEM;
    }
    return 0;
}

void adam_table_close(adam_table_t *t)
{
    free(t->m);
    free(t->v);
    free(t->g);
    free(t->last);
    free(t->touched);
    free(t->pow_b1);
    free(t->pow_b2);
    free(t->pow_rr);
    memset(t, 0, sizeof(*t));
}

static void adam__cache(adam_table_t *t, const adam_cfg_t *cfg)
{
    if (t->cache_b1 == cfg->beta1 && t->cache_b2 == cfg->beta2)
        return;
    double rr = 1.0 / sqrt((double)cfg->beta2);
    t->pow_b1[0] = t->pow_b2[0] = t->pow_rr[0] = 1.0;
    for (int k = 1; k < ADAM_CACHE; k++) {
        t->pow_b1[k] = t->pow_b1[k - 1] * cfg->beta1;
        t->pow_b2[k] = t->pow_b2[k - 1] * cfg->beta2;
        t->pow_rr[k] = t->pow_rr[k - 1] * rr;
    }
    t->cache_b1 = cfg->beta1;
    t->cache_b2 = cfg->beta2;
}

static inline double adam__pow(const double *cache, double base, int64_t k)
{
    return k < ADAM_CACHE ? cache[k] : pow(base, (double)k);
}

/* Bias-corrected step size of step s. */
static inline double adam__lr(const adam_table_t *t, const adam_cfg_t *cfg, int64_t s)
{
    return cfg->lr * sqrt(1.0 - adam__pow(t->pow_b2, cfg->beta2, s)) /
           (1.0 - adam__pow(t->pow_b1, cfg->beta1, s));
}

/* Moves row r through steps last+1 .. upto with no data gradient.
 *
 * With q = beta1 / sqrt(beta2) and rr = 1 / sqrt(beta2), the k skipped steps
 * move the parameter by -(m A + wd p B) / sqrt(v), where
 *   A = sum_j lr_j q^j             (momentum, mostly spent in ~20 steps)
 *   B = sum_j lr_j (1 - beta1^j) rr^j  (weight decay, spread over the gap)
 * The bias-corrected rate lr_j changes slowly, so A takes it at the gap's
 * first step and B at its middle; both sums are then geometric series. */
static void adam__catch_up(adam_table_t *t, const adam_cfg_t *cfg, int32_t r,
                           int64_t upto)
{
    int64_t s = t->last[r];
    int64_t k = upto - s;
    if (k <= 0)
        return;
    adam__cache(t, cfg);
    double b1 = cfg->beta1, b2 = cfg->beta2;
    double rr = 1.0 / sqrt(b2), q = b1 * rr;
    double b1k = adam__pow(t->pow_b1, b1, k), b2k = adam__pow(t->pow_b2, b2, k);
    double rrk = k < ADAM_CACHE ? t->pow_rr[k] : pow(rr, (double)k);
    double qk = b1k * rrk;
    double sum_q = q * (1.0 - qk) / (1.0 - q);
    double sum_r = rr * (rrk - 1.0) / (rr - 1.0);
    float A = (float)(adam__lr(t, cfg, s + 1) * sum_q);
    float B = (float)(adam__lr(t, cfg, s + (k + 1) / 2) * (sum_r - sum_q) * cfg->wd);
    float fb1k = (float)b1k, fb2k = (float)b2k, wd = cfg->wd;
    float *p = t->p + (int64_t)r * t->cols;
    float *m = t->m + (int64_t)r * t->cols;
    float *v = t->v + (int64_t)r * t->cols;
    for (int32_t c = 0; c < t->cols; c++) {
        /* v = 0: the element never had a gradient, and dense Adam's drift
         * for it is ~0 too, so leave it. */
        float isq = v[c] > 0.0f ? 1.0f / sqrtf(v[c]) : 0.0f;
        float shrink = fminf(B * isq, 1.0f); /* decay pulls toward 0, not past */
        float p0 = p[c];
        p[c] = p0 * (1.0f - shrink) - m[c] * A * isq;
        m[c] = v[c] > 0.0f ? fb1k * m[c] + (1.0f - fb1k) * wd * p0 : m[c];
        v[c] = fb2k * v[c];
    }
    t->last[r] = upto;
}

typedef struct {
    float lr;   /* lr / (1 - beta1^t) */
    float bc2;  /* 1 / sqrt(1 - beta2^t) */
} adam__step_t;

static adam__step_t adam__step_consts(const adam_cfg_t *cfg, int64_t step)
{
    adam__step_t k;
    k.lr = (float)(cfg->lr / (1.0 - pow(cfg->beta1, (double)step)));
    k.bc2 = (float)(1.0 / sqrt(1.0 - pow(cfg->beta2, (double)step)));
    return k;
}

static void adam__step_row(adam_table_t *t, const adam_cfg_t *cfg,
                           const adam__step_t *k, int32_t r, int64_t step)
{
    adam__catch_up(t, cfg, r, step - 1);
    float lr = k->lr, bc2 = k->bc2;
    float b1 = cfg->beta1, b2 = cfg->beta2, eps = cfg->eps, wd = cfg->wd;
    int64_t off = (int64_t)r * t->cols;
    float *p = t->p + off, *m = t->m + off, *v = t->v + off, *g = t->g + off;
    for (int32_t c = 0; c < t->cols; c++) {
        float gc = g[c] + wd * p[c];
        m[c] = b1 * m[c] + (1.0f - b1) * gc;
        v[c] = b2 * v[c] + (1.0f - b2) * gc * gc;
        p[c] -= lr * m[c] / (sqrtf(v[c]) * bc2 + eps);
        g[c] = 0.0f;
    }
    t->last[r] = step;
    t->touched[r] = 0;
}

void adam_table_update(adam_table_t *t, const adam_cfg_t *cfg, int64_t step,
                       int part, int nparts)
{
    adam__step_t k = adam__step_consts(cfg, step);
    for (int32_t r = part; r < t->rows; r += nparts)
        if (t->touched[r])
            adam__step_row(t, cfg, &k, r, step);
}

void adam_table_flush(adam_table_t *t, const adam_cfg_t *cfg, int64_t step,
                      int part, int nparts)
{
    for (int32_t r = part; r < t->rows; r += nparts)
        adam__catch_up(t, cfg, r, step);
}

void adam_table_update_dense(adam_table_t *t, const adam_cfg_t *cfg, int64_t step)
{
    adam__step_t k = adam__step_consts(cfg, step);
    for (int32_t r = 0; r < t->rows; r++)
        adam__step_row(t, cfg, &k, r, step); /* its catch-up is a no-op */
}
