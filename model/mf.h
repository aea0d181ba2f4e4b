/*
 * mf: BPR matrix factorisation. Score(u, i) = <user row u, item row i>.
 *
 * Parameters live in one block, users first, then items, so one optimizer
 * table (rows = n_users + n_items) covers both: row u is user u, row
 * n_users + i is item i. An mf_t owns its block.
 */
#ifndef DERRD_MF_H
#define DERRD_MF_H

#include <stdint.h>

#include "scatter.h"

typedef struct {
    int32_t n_users;
    int32_t n_items;
    int32_t dim;
    float *params; /* (n_users + n_items, dim) */
    float *ue;     /* (n_users, dim) = params */
    float *ie;     /* (n_items, dim) = params + n_users * dim */
} mf_t;

/* One BPR sample: user u prefers observed item i to unobserved item j. */
typedef struct {
    int32_t u;
    int32_t i;
    int32_t j;
} bpr_triple_t;

/* Allocates zeroed parameters. Returns 0, -EINVAL or -ENOMEM. */
int mf_init(mf_t *mf, int32_t n_users, int32_t n_items, int32_t dim);

/* Fills every parameter from N(0, std^2) (the reference uses std 0.01). */
void mf_init_normal(mf_t *mf, float std, uint64_t seed);

/* Deep copy into dst (which must be empty or closed). */
int mf_init_copy(mf_t *dst, const mf_t *src);

void mf_close(mf_t *mf);

/* Eight running sums so the compiler can vectorise without reassociating
 * (no -ffast-math); the order is fixed, so results are reproducible. */
static inline float mf_dot(const float *a, const float *b, int32_t d)
{
    float acc[8] = { 0.0f };
    int32_t k = 0;
    for (; k + 8 <= d; k += 8)
        for (int l = 0; l < 8; l++)
            acc[l] += a[k + l] * b[k + l];
    for (; k < d; k++)
        acc[k & 7] += a[k] * b[k];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* BPR loss over n triples, -sum log sigmoid(x_ui - x_uj), returned.
 * coef[s] receives dloss/d(x_ui - x_uj) for each triple. */
double bpr_forward(const mf_t *mf, const bpr_triple_t *t, int32_t n, float *coef);

/* Appends the gradient of the BPR loss (scaled by each coef) to out, as rows
 * of the mf's parameter block. The vectors point into mf->params, so apply
 * them before the parameters change. Returns 0 or -ENOMEM. */
int bpr_backward(const mf_t *mf, const bpr_triple_t *t, int32_t n,
                 const float *coef, scatter_t *out);

#endif
