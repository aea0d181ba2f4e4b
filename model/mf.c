/* BPR matrix factorisation; see mf.h. */
#include "simd.h"
#include "mf.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

int mf_init(mf_t *mf, int32_t n_users, int32_t n_items, int32_t dim)
{
    memset(mf, 0, sizeof(*mf));
    if (n_users < 0 || n_items < 0 || dim <= 0)
        return -EINVAL;
    size_t n = ((size_t)n_users + (size_t)n_items) * (size_t)dim;
    mf->params = calloc(n ? n : 1, sizeof(float));
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
