/*
 * metrics: leave-one-out ranking metrics, as in the DE-RRD paper's protocol.
 *
 * For each user, the held-out target item is ranked among the user's sampled
 * candidates; rank = the number of candidates that score at least as high as
 * the target (ties count against the model, so an untrained model that scores
 * everything equally gets the worst rank, not the best; so do NaN scores,
 * the target's or a candidate's, so that a diverged model scores 0, never
 * 1). HR@K, NDCG@K and
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

/* Early stopping and model selection on the valid split.
 *
 * METRICS_SELECT_HR is the DE-RRD authors' protocol (their evaluation code):
 * for each K, the epoch with the best valid HR@K, rounded to 4 places, gives
 * the K metrics (valid and test, so the reported @5, @10 and @20 may come
 * from different epochs); an evaluation counts as an improvement when any
 * HR@K improved. METRICS_SELECT_NDCG10 takes every metric from the one epoch
 * with the best valid NDCG@10, and only that counts as an improvement. */
typedef enum {
    METRICS_SELECT_HR,
    METRICS_SELECT_NDCG10,
} metrics_select_rule_t;

typedef struct {
    metrics_select_rule_t rule;
    double best[METRICS_NK];       /* the selection score of each K's epoch */
    int32_t best_epoch[METRICS_NK];/* -1 before the first evaluation */
    metrics_t valid[METRICS_NK];   /* the valid metrics of each K's epoch */
    int32_t last;                  /* the last improvement's epoch, or -1 */
    int32_t since;                 /* evaluations since the last improvement */
} metrics_select_t;

void metrics_select_init(metrics_select_t *s, metrics_select_rule_t rule);

/* Takes epoch's valid metrics. Returns a bit mask: bit k set when K's
 * selected epoch is now this one (0: no improvement; under
 * METRICS_SELECT_NDCG10 all bits move together). */
unsigned metrics_select_update(metrics_select_t *s, const metrics_t *valid, int32_t epoch);

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

/* A split's candidates regrouped for repeated evaluation (early stopping
 * scores the same candidates after every epoch). metrics_eval() reads one
 * item row per (user, candidate) pair, at random: at dim 200 the item table
 * is ten times the L2 cache, so the pass is bound by those reads. The plan
 * holds, for each block of users, the block's pairs sorted by item, so a
 * pass reads the item table once per block, in address order, while the
 * block's user rows stay in cache, and each item row is scored against its
 * block users four at a time (four independent sums keep the vector adder
 * busy where one waits on its own latency). The scores and ranks are the
 * same, bit for bit. The plan depends on the candidates only: splits sharing the
 * candidate array (valid and test) share a plan. */
typedef struct metrics_plan metrics_plan_t;

/* NULL when out of memory. split->cands must outlive the plan. */
metrics_plan_t *metrics_plan_new(const loo_split_t *split);
void metrics_plan_free(metrics_plan_t *plan);

/* metrics_eval() through a plan built for split's candidates (plan NULL:
 * metrics_eval). Returns 0, -ENOMEM, or -EINVAL when the plan was built for
 * other candidates. */
int metrics_eval_plan(const mf_t *mf, const loo_split_t *split, const metrics_plan_t *plan,
                      pool_t *pool, metrics_t *out);

#endif
