/*
 * rrd: Relaxed Ranking Distillation (DE-RRD, section 3.3) for one anchor
 * (a user, or an item for the item-side variant).
 *
 * The teacher's top-N unobserved targets of the anchor are ranked. K
 * "interesting" targets are drawn from them with weight exp(-rank / temp),
 * without replacement, and kept in teacher order; L "uninteresting" targets
 * are drawn uniformly from the anchor's other unobserved targets. With the
 * student's scores s_1..s_K (interesting, in order) and u_1..u_L:
 *
 *   loss = -sum_k [ s_k - log( sum_{j>=k} exp(s_j) + sum_l exp(u_l) ) ]
 *
 * computed with a shifted log-sum-exp so large scores cannot overflow.
 * All functions are pure and thread-safe.
 */
#ifndef DERRD_RRD_H
#define DERRD_RRD_H

#include <stdint.h>

#include "rng.h"

/* Returns the loss and writes dloss/ds_k into g_int[0..K) and dloss/du_l into
 * g_un[0..L). K >= 1, L >= 0. */
double rrd_loss(const float *s_int, int32_t K, const float *s_un, int32_t L,
                float *g_int, float *g_un);

/* The same loss by the formula, in double precision, for tests. */
double rrd_loss_naive(const float *s_int, int32_t K, const float *s_un, int32_t L);

/* Draws min(K, n_top) distinct ranks from 0..n_top-1 with weight
 * exp(-rank / temp) (Gumbel-top-k, which is sampling without replacement),
 * and writes the ranked targets top[rank] to out in rank order.
 * scratch holds n_top floats and n_top ints. Returns the count. */
int32_t rrd_sample_interesting(rng_t *rng, const int32_t *top, int32_t n_top,
                               int32_t K, float temp, float *scratch_f,
                               int32_t *scratch_i, int32_t *out);

/* Draws L distinct targets uniformly from [0, n_targets) whose bit is clear
 * in `taken` (the anchor's observed targets and its top-N list); sets their
 * bits and returns how many were drawn (fewer only when not enough remain).
 * The caller clears the bits again. */
int32_t rrd_sample_uninteresting(rng_t *rng, int32_t n_targets, uint64_t *taken,
                                 int64_t n_taken, int32_t L, int32_t *out);

#endif
