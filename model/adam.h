/*
 * adam: Adam with L2 weight decay (PyTorch's Adam(weight_decay=wd)) over a
 * table of rows, updating only the rows that got a gradient.
 *
 * The reference trains with dense Adam: every parameter moves at every step,
 * even when its gradient is only the weight-decay term. A row that sits out k
 * steps therefore keeps drifting on its momentum. adam_table_update() brings a
 * row up to date in closed form when it next gets a gradient (and
 * adam_table_flush() brings every row up to date before the model is read):
 * m decays by beta1^k, v by beta2^k, and the parameter moves by the sum of the
 * k momentum steps it would have taken, a geometric series. The
 * approximations: the weight-decay gradient of those k steps is applied with
 * the parameter held at its value when the row went idle; the bias-corrected
 * step size is held constant across the gap; eps is left out of the
 * catch-up (1e-8 against sqrt(v) orders of magnitude larger). Rows that never
 * had a gradient stay at their initial values.
 *
 * Thread-safety: callers split rows between threads (row % nparts == part);
 * two threads must never touch the same row at once.
 */
#ifndef DERRD_ADAM_H
#define DERRD_ADAM_H

#include <stdint.h>

typedef struct {
    float lr;
    float beta1;
    float beta2;
    float eps;
    float wd; /* L2 coefficient added to the gradient */
} adam_cfg_t;

/* lr 1e-3, betas (0.9, 0.999), eps 1e-8, wd 1e-3: the reference's values. */
adam_cfg_t adam_cfg_default(void);

typedef struct {
    int32_t rows;
    int32_t cols;
    float *p;          /* (rows, cols) the parameters, borrowed */
    float *m;          /* (rows, cols) first moment */
    float *v;          /* (rows, cols) second moment */
    float *g;          /* (rows, cols) gradient; zero outside touched rows */
    int64_t *last;     /* (rows) the step a row is up to date with */
    uint8_t *touched;  /* (rows) the row has a gradient for this step */
    /* Powers of the betas by gap length, for the catch-up; built on first
     * use for the betas in force (cache_b1, cache_b2). */
    double cache_b1, cache_b2;
    double *pow_b1, *pow_b2, *pow_rr; /* (ADAM_CACHE) */
} adam_table_t;

enum { ADAM_CACHE = 16384 };

/* Allocates the optimizer state for the rows x cols parameters at params
 * (which stay owned by the caller). Returns 0 or -ENOMEM. */
int adam_table_init(adam_table_t *t, float *params, int32_t rows, int32_t cols);

void adam_table_close(adam_table_t *t);

/* The gradient row to accumulate into; marks the row touched. */
static inline float *adam_table_grad(adam_table_t *t, int32_t row)
{
    t->touched[row] = 1;
    return t->g + (int64_t)row * t->cols;
}

/* Step number `step` (1-based) for the touched rows with
 * row % nparts == part: catch up, apply the gradient, clear it. */
void adam_table_update(adam_table_t *t, const adam_cfg_t *cfg, int64_t step,
                       int part, int nparts);

/* Brings the rows with row % nparts == part up to date with `step`, as if
 * they had taken part in every step with a zero data gradient. */
void adam_table_flush(adam_table_t *t, const adam_cfg_t *cfg, int64_t step,
                      int part, int nparts);

/* Reference: one dense Adam step over every row, with the touched rows'
 * gradients and zero elsewhere. Used by tests to check the lazy path. */
void adam_table_update_dense(adam_table_t *t, const adam_cfg_t *cfg, int64_t step);

#endif
