/*
 * adam: Adam with L2 weight decay (PyTorch's Adam(weight_decay=wd)) over a
 * table of rows, updating only the rows that got a gradient.
 *
 * The reference trains with dense Adam: every parameter moves at every step,
 * even when its gradient is only the weight-decay term. A row that sits out k
 * steps therefore keeps drifting on its momentum. adam_table_update() brings a
 * row up to date in closed form when it next gets a gradient (and
 * adam_table_flush() brings every row up to date; distill does it at every
 * epoch's end):
 * m decays by beta1^k, v by beta2^k, and the parameter moves by the sum of the
 * k momentum steps it would have taken, a geometric series (summed step by
 * step in the first ADAM_EXACT steps, where the bias correction still
 * moves). The approximations: the weight decay of those k steps is applied
 * after the momentum, at one rate for the gap (its bias correction taken at
 * the gap's middle); the weight-decay gradient's share of v is left out; eps
 * is left out of the catch-up (1e-8 against sqrt(v) orders of magnitude
 * larger). Elements that never had a gradient stay at their initial values,
 * where dense Adam would pull them toward 0 by about lr per step.
 *
 * Thread-safety: callers split rows between threads with adam_part();
 * two threads must never touch the same row at once.
 */
#ifndef DERRD_ADAM_H
#define DERRD_ADAM_H

#include <stdint.h>

#include "scatter.h"

typedef struct {
    float lr;
    float beta1;
    float beta2;
    float eps;
    float wd; /* L2 coefficient added to the gradient */
} adam_cfg_t;

/* lr 1e-3, betas (0.9, 0.999), eps 1e-8, wd 1e-3: the reference's values. */
adam_cfg_t adam_cfg_default(void);

enum { ADAM_CACHE = 16384, ADAM_MAX_PARTS = 64, ADAM_EXACT = 1024, ADAM_EXACT_GAP = 256 };

/* Internal: per step s the bias-corrected rates, per gap length k the
 * catch-up sums. */
typedef struct {
    float lr, bc2, lr_full;     /* by step */
    float sum_q, sum_wd, b1k, b2k; /* by gap length */
} adam__tab_t;

/* Internal: one part's scatter entries, sorted by row. */
typedef struct {
    int32_t *cnt;          /* (rows) entries of a row this step; 0 outside */
    int32_t *pos;          /* (rows) end of a row's run in sorted */
    scatter_entry_t *sorted;
    int32_t *rows;         /* rows with entries, ascending */
    int64_t cap, n_rows, cap_rows;
    float *grad;           /* (n_rows, cols) their summed gradients */
} adam__part_t;

typedef struct {
    int32_t rows;
    int32_t cols;
    float *p;          /* (rows, cols) the parameters, borrowed */
    float *m;          /* (rows, cols) first moment */
    float *v;          /* (rows, cols) second moment */
    float *g;          /* (rows, cols) gradient; zero outside touched rows */
    int64_t *last;     /* (rows) the step a row is up to date with */
    uint8_t *touched;  /* (rows) the row has a gradient for this step */
    adam_cfg_t cfg;
    adam__tab_t *tab;  /* (ADAM_CACHE) constants by step and by gap length */
    float *early;      /* (ADAM_EXACT, ADAM_EXACT_GAP + 1) the momentum sum of a
                          gap of k steps after step s, s < ADAM_EXACT */
    adam__part_t parts[ADAM_MAX_PARTS]; /* scratch of adam_table_gather/apply */
} adam_table_t;

/* Allocates the optimizer state for the rows x cols parameters at params
 * (which stay owned by the caller), to be trained with cfg.
 * Returns 0 or -ENOMEM. */
int adam_table_init(adam_table_t *t, float *params, int32_t rows, int32_t cols,
                    const adam_cfg_t *cfg);

void adam_table_close(adam_table_t *t);

/* Rows go to threads in blocks: of 64 rows, so that two threads never share
 * a cache line of the per-row arrays, or of one row when rows are at least
 * ADAM_WIDE floats. A table of a few wide rows (the experts: 30 rows of
 * 24,510) would otherwise fall in one block, on one thread; at 4 KB a row,
 * sharing those cache lines costs nothing. */
enum { ADAM_WIDE = 1024 };

static inline int adam_block_shift(const adam_table_t *t)
{
    return t->cols >= ADAM_WIDE ? 0 : 6;
}

static inline int32_t adam_block(const adam_table_t *t)
{
    return (int32_t)1 << adam_block_shift(t);
}

/* Which of nparts threads owns a row of t. Every thread asks this of every
 * scatter entry, so it avoids dividing when it can. */
static inline int adam_part(const adam_table_t *t, int32_t row, int nparts)
{
    uint32_t b = (uint32_t)row >> adam_block_shift(t);
    if ((nparts & (nparts - 1)) == 0)
        return (int)(b & (uint32_t)(nparts - 1));
    return (int)(b % (uint32_t)nparts);
}

/* The gradient row to accumulate into; marks the row touched. */
static inline float *adam_table_grad(adam_table_t *t, int32_t row)
{
    t->touched[row] = 1;
    return t->g + (int64_t)row * t->cols;
}

/* Step number `step` (1-based) for the touched rows with
 * adam_part(t, row, nparts) == part: catch up, apply the gradient, clear it. */
void adam_table_update(adam_table_t *t, int64_t step, int part, int nparts);

/* Scatter-list training is two phases, each run for every part (in
 * parallel, one part per thread), the second after all of the first:
 *
 * adam_table_gather() sums, for the rows of `part`, their entries in
 * lists[0..nlists) in list order into the part's own buffer. It only reads
 * the entries' vectors, which may point into the parameters themselves.
 * Returns 0, -ENOMEM, or -EINVAL when part >= ADAM_MAX_PARTS.
 *
 * adam_table_apply() then catches those rows up and applies step `step` in
 * one pass over their state (t->g is not used). */
int adam_table_gather(adam_table_t *t, const scatter_t *const *lists, int nlists,
                      int part, int nparts);
void adam_table_apply(adam_table_t *t, int64_t step, int part);

/* Brings the rows of part `part` up to date with `step`, as if
 * they had taken part in every step with a zero data gradient. */
void adam_table_flush(adam_table_t *t, int64_t step, int part, int nparts);

/* Reference: one dense Adam step over every row, with the touched rows'
 * gradients and zero elsewhere. Used by tests to check the lazy path. */
void adam_table_update_dense(adam_table_t *t, int64_t step);

#endif
