/*
 * distill: training epochs for a BPR-MF model, alone (the teacher, or a
 * student without distillation) or distilled from a frozen teacher with
 * Distillation Experts (DE), Relaxed Ranking Distillation (RRD), or both
 * (DE-RRD).
 *
 * One step on a mini-batch of (user, observed item, sampled unobserved item):
 *
 *   loss = BPR + lambda_de * DE + lambda_rrd * RRD      (sums, as the reference)
 *
 * forward and backward run on the worker pool in fixed chunks; gradient rows
 * are gathered in scatter lists and applied in chunk order, then lazy Adam
 * (adam.h) updates only the touched rows. A run is reproducible for a given
 * seed, whatever the thread count.
 *
 * DE terms: the batch's unique users (weight 1) and half of its unique
 * positive and negative items (weight 0.5), as the reference. Knobs that cut
 * the cost: de_keep and de_max_experts limit the experts evaluated per
 * entity (experts.h); de_sample keeps each entity's DE term with
 * probability de_sample and scales it by 1/de_sample, an unbiased estimate of
 * the reference's sum; de_every computes DE on one step in de_every, scaled
 * by de_every, which also makes the experts' own updates that much rarer.
 *
 * RRD terms: the batch's unique users, with K interesting and L uninteresting
 * items redrawn every epoch (rrd.h); rrd_sample subsamples them the same
 * unbiased way. RRD_ITEM ranks users for the batch's unique positive items
 * (the item side alone). RRD_IR is the authors' IR-RRD: RRD_PAPER plus an
 * item side (its own lambda, K and L) whose anchors are the distinct items
 * the users' side sampled in the step. RRD_NOSAMPLE takes the teacher's top K in order against every
 * other unobserved item (scores and gradients by sgemm over the whole item
 * table; pair it with rrd_sample, it costs a full scoring pass per anchor).
 *
 * A distill_t is driven from one thread; it uses the pool it was given.
 */
#ifndef DERRD_DISTILL_H
#define DERRD_DISTILL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "adam.h"
#include "mf.h"
#include "pool.h"
#include "ratings.h"

typedef enum {
    RRD_PAPER = 0,   /* sampled interesting and uninteresting items */
    RRD_NOSAMPLE,    /* top-K in order, all other unobserved items */
    RRD_ITEM,        /* item-side: rank users for each item */
    RRD_IR           /* the authors' IR-RRD: RRD_PAPER plus an item side on
                      * the items it sampled in the step */
} rrd_variant_t;

typedef struct {
    int32_t dim;         /* model dim: 200 teacher, 20 student */
    int32_t batch;       /* samples per step */
    adam_cfg_t adam;
    float init_std;      /* N(0, std^2) embedding init */
    bool init_from_teacher; /* with a teacher, add to that init the best
                             * rank-dim fit of its scores (mf_add_projection;
                             * docs/MODEL.md): about half the epochs. Not for
                             * a model to be warm started: its new rows would
                             * sit in another basis than the copied ones */
    uint64_t seed;

    bool use_de;
    int32_t n_experts;
    float lambda_de;
    float de_keep;       /* drop the lightest experts holding < de_keep */
    int32_t de_max_experts; /* at most this many experts per entity; 0 = all */
    float de_sample;     /* share of batch entities that get a DE term */
    int32_t de_every;    /* DE on every de_every-th step only, weighted by it */

    bool use_rrd;
    rrd_variant_t rrd_variant;
    int32_t rrd_n;       /* teacher top-N to draw interesting items from */
    int32_t rrd_k;       /* interesting items */
    int32_t rrd_l;       /* uninteresting items */
    float rrd_temp;      /* weight exp(-rank / rrd_temp) */
    float lambda_rrd;
    float rrd_sample;    /* share of batch anchors that get an RRD term */
    /* RRD_IR's item side (the authors' main_IR_RRD.py: 5e-4, 20, 20; N,
     * temperature and sampling as the users' side) */
    float lambda_rrd_item;
    int32_t rrd_item_k;
    int32_t rrd_item_l;
} distill_cfg_t;

/* The reference's settings: dim 20, batch 1024, Adam 1e-3 / wd 1e-3,
 * 30 experts, lambda_de 1e-2, N 500, K 40, L 40, temp 10, lambda_rrd 1e-3;
 * no DE and no RRD. The cost knobs are set to derrd's measured defaults
 * (bench/RESULTS.md): de_max_experts 2, de_every 5, rrd_sample 0.2; the
 * reference is de_max_experts 0, de_every 1, rrd_sample 1. */
distill_cfg_t distill_cfg_default(void);

typedef struct {
    int32_t epoch;        /* the epoch just finished, from 0 */
    double loss_bpr;      /* sums over the epoch, before the lambdas */
    double loss_de;
    double loss_rrd;
    double loss_rrd_item; /* RRD_IR's item side */
    int64_t samples;
    int64_t de_entities;  /* DE terms computed */
    int64_t de_pairs;     /* (entity, expert) evaluations */
    float temperature;    /* Gumbel-softmax temperature of the epoch */
} distill_stats_t;

typedef struct distill distill_t;

/* Sets up training on `train`. teacher (frozen, borrowed; its n_users and
 * n_items must match train) is required when cfg uses DE or RRD, and may be
 * NULL otherwise. With RRD it computes the teacher's top-N lists here.
 * Returns NULL with a reason in err on bad settings or out of memory. */
distill_t *distill_new(const distill_cfg_t *cfg, const ratings_t *train,
                       const mf_t *teacher, pool_t *pool, char *err,
                       size_t errlen);

/* What distill_new_reusing does with an anchor's list (stale[] values). */
enum {
    DISTILL_LIST_KEEP = 0,      /* take prev's list as it is */
    DISTILL_LIST_RECOMPUTE = 1, /* compute it afresh */
    DISTILL_LIST_FILTER = 2     /* take prev's list without the targets the
                                 * anchor has observed since: exact (but for
                                 * its tail, and new targets) when the teacher
                                 * rows did not move; computed afresh when
                                 * it is more than N / 10 short of full */
};

/* distill_new, reusing the teacher's top-N lists of `prev` (RRD, user side,
 * same N): an anchor below prev's anchor count is treated as its flag in
 * stale[] says (above); the others (new users) are computed. For streaming
 * rounds between full teacher refreshes, where a fold-in moves the teacher
 * a little or not at all and the lists stay nearly right. prev may be NULL
 * (compute every list), and stale (keep every list of prev); prev is only
 * read. */
distill_t *distill_new_reusing(const distill_cfg_t *cfg, const ratings_t *train,
                               const mf_t *teacher, pool_t *pool, const distill_t *prev,
                               const uint8_t *stale, char *err, size_t errlen);

/* How many top-N lists the last distill_new_reusing computed, and how many
 * of the reused ones it filtered (DISTILL_LIST_FILTER). */
int32_t distill_topn_computed(const distill_t *d);
int32_t distill_topn_filtered(const distill_t *d);

/* The teacher's top-N lists, (anchors, rrd_n), or NULL without RRD. */
const int32_t *distill_topn(const distill_t *d);

void distill_free(distill_t *d);

/* Warm start for streaming rounds: before d's first epoch, copies prev's
 * embedding rows (user and item rows present in both: a row keeps its
 * meaning as tables grow; new rows keep their random init), prev's experts
 * and selection networks when both use DE with the same shape, and prev's
 * epoch count, so the Gumbel temperature and the random streams go on where
 * prev stopped. prev's rows are first brought up to date (as distill_model
 * does); it may be freed afterwards. The optimizer starts fresh (zero
 * moments, step 0). Returns 0, or -EINVAL when the dims differ or d has
 * already trained. */
int distill_warm_start(distill_t *d, distill_t *prev);

/* The same from saved rows (a restart): copies m's overlapping rows and sets
 * the epoch count; the experts keep their fresh initialisation. */
int distill_warm_start_rows(distill_t *d, const mf_t *m, int32_t epochs);

/* Epochs run so far (including those inherited by distill_warm_start). */
int32_t distill_epochs(const distill_t *d);

/* Runs one epoch. Returns 0, -ENOMEM, or -EDOM when the Distillation
 * Experts' loss is not finite (the model diverged). A diverging BPR or RRD
 * part is not detected here: check the epoch's losses (isfinite) or the
 * model. */
int distill_epoch(distill_t *d, distill_stats_t *stats);

/* One epoch over a sample of the training pairs instead of all of them: pos
 * lists n positions in train's CSR order (train->col indices, each below
 * nnz; repeats train that pair twice), shuffled as an epoch's order is. RRD
 * draws this epoch's targets only for the anchors the sample reaches, so
 * the cost follows n, not the size of train (apart from RRD_IR's item
 * side). Counts as one epoch (the Gumbel temperature moves on). With every
 * position in ascending order it is distill_epoch(), bit for bit.
 * Returns 0, -EINVAL (n or a position out of range), -ENOMEM or -EDOM. */
int distill_epoch_on(distill_t *d, const int32_t *pos, int64_t n, distill_stats_t *stats);

/* Brings every row up to date with the last step and returns the model,
 * owned by d and valid until the next epoch or distill_free(). After a
 * whole epoch (distill_epoch) there is nothing to bring up to date: each
 * ends by catching lazy Adam's idle rows up, read or not, so reading the
 * model never changes the training. After distill_epoch_on, whose cost
 * follows its sample, rows may lag and a read catches them up in place. */
const mf_t *distill_model(distill_t *d);

#endif
