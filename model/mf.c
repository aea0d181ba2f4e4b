/* BPR matrix factorisation; see mf.h. */
#include "simd.h"
#include "mf.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "bigmem.h"
#include "gemm.h"
#include "rng.h"

int mf_init(mf_t *mf, int32_t n_users, int32_t n_items, int32_t dim)
{
    memset(mf, 0, sizeof(*mf));
    if (n_users < 0 || n_items < 0 || dim <= 0)
        return -EINVAL;
    size_t n = ((size_t)n_users + (size_t)n_items) * (size_t)dim;
    mf->params = bigmem_zero_floats(n);
    if (!mf->params)
        return -ENOMEM;
    mf->n_users = n_users;
    mf->n_items = n_items;
    mf->dim = dim;
    mf->ue = mf->params;
    mf->ie = mf->params + (size_t)n_users * (size_t)dim;
    return 0;
}

void mf_init_normal(mf_t *mf, float std, uint64_t seed)
{
    rng_t rng;
    rng_init_stream(&rng, seed, RNG_INIT, (uint64_t)mf->dim, 0);
    size_t n = ((size_t)mf->n_users + (size_t)mf->n_items) * (size_t)mf->dim;
    for (size_t k = 0; k < n; k++)
        mf->params[k] = std * rng_normal(&rng);
}

/* x^T x of the (n, d) rows x, in double. Returns 0 or -ENOMEM. */
static int mf__gram(const float *x, int32_t n, int32_t d, double *g)
{
    float *f = malloc((size_t)d * (size_t)d * sizeof(float));
    if (!f)
        return -ENOMEM;
    gemm(true, false, d, d, n, 1.0f, x, d, x, d, 0.0f, f, d);
    for (size_t k = 0; k < (size_t)d * (size_t)d; k++)
        g[k] = f[k];
    free(f);
    return 0;
}

/* c = a b, or a b^T with bt, for d x d doubles (small: no BLAS needed). */
static void mf__dmul(const double *a, const double *b, bool bt, int32_t d, double *c)
{
    for (int32_t j = 0; j < d; j++)
        for (int32_t l = 0; l < d; l++) {
            double acc = 0.0;
            for (int32_t q = 0; q < d; q++)
                acc += a[(size_t)j * d + q] * (bt ? b[(size_t)l * d + q] : b[(size_t)q * d + l]);
            c[(size_t)j * d + l] = acc;
        }
}

/*
 * With U = Q R (Q orthonormal; R = D^(1/2) E^T from the eigenvectors E and
 * eigenvalues D of U^T U), S = U V^T = Q N for N = R V^T, so S's singular
 * values and left vectors (in Q's basis) are those of N: the eigenpairs
 * (sigma^2, p) of N N^T = R (V^T V) R^T. The rank-k fit is then
 *   users: Q p sqrt(sigma) = U (E D^(-1/2) p) sqrt(sigma)
 *   items: N^T p / sqrt(sigma) = V (R^T p) / sqrt(sigma)
 * two dim x k maps applied with gemm. D^(-1/2) and 1/sqrt(sigma) are taken
 * as 0 where the teacher is rank-deficient.
 */
int mf_add_projection(mf_t *mf, const mf_t *teacher)
{
    const mf_t *t = teacher;
    if (t->n_users != mf->n_users || t->n_items != mf->n_items || t->dim <= 0)
        return -EINVAL;
    int32_t d = t->dim, k = mf->dim < t->dim ? mf->dim : t->dim;
    size_t dd = (size_t)d * (size_t)d;
    double *gu = malloc(dd * sizeof(double)), *gv = malloc(dd * sizeof(double));
    double *r = malloc(dd * sizeof(double)), *tmp = malloc(dd * sizeof(double));
    double *lu = malloc((size_t)d * sizeof(double)), *s2 = malloc((size_t)d * sizeof(double));
    float *a = calloc((size_t)d * (size_t)mf->dim, sizeof(float));
    float *b = calloc((size_t)d * (size_t)mf->dim, sizeof(float));
    int rc = -ENOMEM;
    if (!gu || !gv || !r || !tmp || !lu || !s2 || !a || !b)
        goto out;
    if ((rc = mf__gram(t->ue, t->n_users, d, gu)) < 0 ||
        (rc = mf__gram(t->ie, t->n_items, d, gv)) < 0 || (rc = eigh(gu, d, lu)) < 0)
        goto out;
    /* gu's row j is now e_j; r's row j is sqrt(D_j) e_j. */
    double lmax = lu[d - 1] > 0.0 ? lu[d - 1] : 0.0;
    for (int32_t j = 0; j < d; j++) {
        if (!(lu[j] > 1e-12 * lmax))
            lu[j] = 0.0;
        for (int32_t c = 0; c < d; c++)
            r[(size_t)j * d + c] = sqrt(lu[j]) * gu[(size_t)j * d + c];
    }
    /* tmp = R Gv, then gv = tmp R^T = N N^T. */
    mf__dmul(r, gv, false, d, tmp);
    mf__dmul(tmp, r, true, d, gv);
    if ((rc = eigh(gv, d, s2)) < 0)
        goto out;
    double smax = s2[d - 1] > 0.0 ? sqrt(s2[d - 1]) : 0.0;
    for (int32_t c = 0; c < k; c++) {
        const double *p = gv + (size_t)(d - 1 - c) * d; /* c-th largest */
        double sigma = s2[d - 1 - c] > 0.0 ? sqrt(s2[d - 1 - c]) : 0.0;
        if (!(sigma > 1e-9 * smax))
            continue;
        double up = sqrt(sigma), down = 1.0 / sqrt(sigma);
        for (int32_t j = 0; j < d; j++) {
            if (lu[j] == 0.0 || p[j] == 0.0)
                continue;
            double wa = p[j] / sqrt(lu[j]) * up, wb = p[j] * sqrt(lu[j]) * down;
            const double *e = gu + (size_t)j * d;
            for (int32_t q = 0; q < d; q++) {
                a[(size_t)q * mf->dim + c] += (float)(wa * e[q]);
                b[(size_t)q * mf->dim + c] += (float)(wb * e[q]);
            }
        }
    }
    gemm(false, false, mf->n_users, mf->dim, d, 1.0f, t->ue, d, a, mf->dim, 1.0f, mf->ue, mf->dim);
    gemm(false, false, mf->n_items, mf->dim, d, 1.0f, t->ie, d, b, mf->dim, 1.0f, mf->ie, mf->dim);
    rc = 0;
out:
    free(gu);
    free(gv);
    free(r);
    free(tmp);
    free(lu);
    free(s2);
    free(a);
    free(b);
    return rc;
}

int mf_init_copy(mf_t *dst, const mf_t *src)
{
    int rc = mf_init(dst, src->n_users, src->n_items, src->dim);
    if (rc < 0)
        return rc;
    size_t n = ((size_t)src->n_users + (size_t)src->n_items) * (size_t)src->dim;
    memcpy(dst->params, src->params, n * sizeof(float));
    return 0;
}

void mf_close(mf_t *mf)
{
    free(mf->params);
    memset(mf, 0, sizeof(*mf));
}

/* log(1 + exp(x)) without overflow. */
static inline double mf__softplus(double x)
{
    return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x));
}

FAST_CLONES double bpr_forward(const mf_t *mf, const bpr_triple_t *t, int32_t n, float *coef)
{
    int32_t d = mf->dim;
    double loss = 0.0;
    for (int32_t s = 0; s < n; s++) {
        if (s + 4 < n) {
            /* The rows are random rows of tables larger than the caches. */
            size_t bytes = (size_t)d * sizeof(float);
            vec_prefetch(mf->ue + (int64_t)t[s + 4].u * d, bytes);
            vec_prefetch(mf->ie + (int64_t)t[s + 4].i * d, bytes);
            vec_prefetch(mf->ie + (int64_t)t[s + 4].j * d, bytes);
        }
        const float *pu = mf->ue + (int64_t)t[s].u * d;
        float x = vec_dot(pu, mf->ie + (int64_t)t[s].i * d, d) -
                  vec_dot(pu, mf->ie + (int64_t)t[s].j * d, d);
        /* -log sigmoid(x) = softplus(-x); its derivative is -sigmoid(-x). */
        loss += mf__softplus(-(double)x);
        coef[s] = (float)(-1.0 / (1.0 + exp((double)x)));
    }
    return loss;
}

int bpr_backward(const mf_t *mf, const bpr_triple_t *t, int32_t n,
                 const float *coef, scatter_t *out)
{
    int32_t d = mf->dim, nu = mf->n_users;
    for (int32_t s = 0; s < n; s++) {
        const float *pu = mf->ue + (int64_t)t[s].u * d;
        const float *qi = mf->ie + (int64_t)t[s].i * d;
        const float *qj = mf->ie + (int64_t)t[s].j * d;
        float c = coef[s];
        if (scatter_add(out, t[s].u, c, qi) < 0 ||
            scatter_add(out, t[s].u, -c, qj) < 0 ||
            scatter_add(out, nu + t[s].i, c, pu) < 0 ||
            scatter_add(out, nu + t[s].j, -c, pu) < 0)
            return -ENOMEM;
    }
    return 0;
}
