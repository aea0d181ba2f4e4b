/*
 * experts: Distillation Experts (DE-RRD, section 3.2), one side (users or
 * items).
 *
 * M experts, each Linear(ds, dh) -> ReLU -> Linear(dh, dt) with
 * dh = (ds + dt) / 2, map a student embedding into the teacher's space. A
 * selection net Linear(dt, M) -> softmax over the frozen teacher embedding
 * gives p; Gumbel-softmax w = softmax((log(p + 1e-10) + g) / temp) weighs the
 * experts. The loss of an entity is weight * ||t - sum_e w_e f_e(s)||^2.
 *
 * Cost: the reference evaluates all M experts for every entity. Here each
 * entity keeps its heaviest experts, in decreasing weight, until they hold at
 * least 1 - keep of the weight or max_experts are kept; the kept weights are
 * renormalised to sum to 1, which is exactly a Gumbel-softmax over the kept
 * experts' logits, and its gradient is computed as such. keep = 0 with no cap
 * is the reference. At the low temperatures of most of training one expert
 * holds nearly all the weight, so both forms agree. Pairs (entity, expert)
 * are grouped by expert so each expert runs as a few sgemm calls over all its
 * entities.
 *
 * Parameters are one block: the experts, then the selection net.
 * An experts_t is not thread-safe; de_forward_backward() uses the pool.
 */
#ifndef DERRD_EXPERTS_H
#define DERRD_EXPERTS_H

#include <stdint.h>

#include "pool.h"

typedef struct {
    int32_t n_experts; /* M */
    int32_t ds;        /* student dim */
    int32_t dh;        /* hidden dim, (ds + dt) / 2 */
    int32_t dt;        /* teacher dim */
    int32_t ex_size;   /* floats per expert: ds*dh + dh + dh*dt + dt */
    int32_t sel_size;  /* floats of the selection net: dt*M + M */
    float *params;     /* one block: M * ex_size, then sel_size */
    float *ex;         /* (M, ex_size) expert e: W1 (ds, dh) | b1 (dh) | W2 (dh, dt) | b2 (dt) */
    float *sel;        /* W (dt, M) | b (M) */
} experts_t;

/* Allocates and initialises like PyTorch's nn.Linear (uniform in
 * +-1/sqrt(fan_in) for weights and biases). Returns 0, -EINVAL, -ENOMEM. */
int experts_init(experts_t *de, int32_t n_experts, int32_t ds, int32_t dt,
                 uint64_t seed);

void experts_close(experts_t *de);

/* One batch of entities of this side. */
typedef struct {
    int32_t n;            /* entities */
    const float *s;       /* (n, ds) student rows */
    const float *t;       /* (n, dt) teacher rows, frozen */
    const float *weight;  /* (n) loss weight of each entity */
    const float *gumbel;  /* (n, M) Gumbel(0,1) noise */
    float temp;           /* Gumbel-softmax temperature, > 0 */
    float keep;           /* drop the lightest experts holding < keep of the weight */
    int32_t max_experts;  /* keep at most this many per entity; 0 = M */
} de_batch_t;

typedef struct de_work de_work_t;

/* Scratch that grows to the largest batch seen. NULL when out of memory. */
de_work_t *de_work_new(void);
void de_work_free(de_work_t *w);

/* Forward and backward for one batch. Returns the loss, or NAN with
 * *evaluated = -1 when out of memory (a NaN loss otherwise means NaN or
 * infinite inputs: a diverged model). Adds the gradient of the experts into grad_ex (M, ex_size),
 * setting ex_used[e] = 1 for every expert that got one, and of the selection
 * net into grad_sel (sel_size). Writes dloss/ds into ds (n, ds).
 * *evaluated receives the number of (entity, expert) pairs evaluated. */
double de_forward_backward(const experts_t *de, const de_batch_t *b,
                           de_work_t *w, pool_t *pool, float *grad_ex,
                           uint8_t *ex_used, float *grad_sel, float *ds,
                           int64_t *evaluated);

/* Reference: out[0..dt) += w * f_e(s), expert e on one student row, in
 * double; h is dh doubles of scratch. */
void experts_apply_naive(const experts_t *de, int32_t e, const float *s, double w,
                         double *h, double *out);

/* Reference loss in double precision, evaluating every expert. */
double de_loss_naive(const experts_t *de, const de_batch_t *b);

#endif
