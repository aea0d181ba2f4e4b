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
#include "vec.h"

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

/* Adds to mf's rows the best rank-mf->dim approximation of the teacher's
 * scores, split evenly between the sides: with S = teacher users x items^T
 * and S = sum_c sigma_c a_c b_c^T its singular value decomposition, user u
 * gets sqrt(sigma_c) a_c[u] and item i sqrt(sigma_c) b_c[i] in column c,
 * for the mf->dim largest sigma_c. Their inner products are then the least
 * squares fit of S over all user-item pairs of that rank (Eckart-Young).
 * Computed from the teacher's rows alone (two dim x dim eigenproblems, no
 * n_users x n_items matrix); columns beyond the teacher's rank get 0.
 * The teacher must have mf's users and items. Returns 0, -EINVAL, -ENOMEM
 * or -EDOM (LAPACK did not converge). */
int mf_add_projection(mf_t *mf, const mf_t *teacher);

/* Deep copy into dst (which must be empty or closed). */
int mf_init_copy(mf_t *dst, const mf_t *src);

void mf_close(mf_t *mf);


/* BPR loss over n triples, -sum log sigmoid(x_ui - x_uj), returned.
 * coef[s] receives dloss/d(x_ui - x_uj) for each triple. */
double bpr_forward(const mf_t *mf, const bpr_triple_t *t, int32_t n, float *coef);

/* Appends the gradient of the BPR loss (scaled by each coef) to out, as rows
 * of the mf's parameter block. The vectors point into mf->params, so apply
 * them before the parameters change. Returns 0 or -ENOMEM. */
int bpr_backward(const mf_t *mf, const bpr_triple_t *t, int32_t n,
                 const float *coef, scatter_t *out);

#endif
