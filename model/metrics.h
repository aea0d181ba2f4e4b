/*
 * metrics: leave-one-out ranking metrics, as in the DE-RRD paper's protocol.
 *
 * For each user, the held-out target item is ranked among the user's sampled
 * candidates; rank = the number of candidates that score at least as high as
 * the target (ties count against the model, so an untrained model that scores
 * everything equally gets the worst rank, not the best). HR@K, NDCG@K and
 * MRR@K for K = 5, 10, 20 are averaged over the users that have a target.
 */
#ifndef DERRD_METRICS_H
#define DERRD_METRICS_H

#include <stdint.h>

#include "mf.h"
#include "pool.h"

enum { METRICS_NK = 3 };

/* The cut-offs: 5, 10, 20. */
extern const int metrics_k[METRICS_NK];

typedef struct {
    double hr[METRICS_NK];
    double ndcg[METRICS_NK];
    double mrr[METRICS_NK];
    int64_t users; /* how many users were ranked */
} metrics_t;

/* Adds one user whose target has 0-based rank `rank`. */
void metrics_add_rank(metrics_t *m, int64_t rank);

/* Adds b's sums to a. */
void metrics_merge(metrics_t *a, const metrics_t *b);

/* Turns sums into means over m->users. */
void metrics_finish(metrics_t *m);

/* The leave-one-out split a model is scored on. */
typedef struct {
    int32_t n_users;
    int32_t n_cands;        /* candidates per user */
    const int32_t *target;  /* (n_users) held-out item, -1 when none */
    const int32_t *cands;   /* (n_users, n_cands) candidate items */
} loo_split_t;

/* Ranks every user's target under mf and fills out with the means.
 * Items outside the model (id >= n_items) score 0, users beyond it are
 * skipped. Runs on the pool. Returns 0 or -ENOMEM. */
int metrics_eval(const mf_t *mf, const loo_split_t *split, pool_t *pool,
                 metrics_t *out);

#endif
