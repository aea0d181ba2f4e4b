/*
 * scatter: gradient contributions gathered in parallel and applied in a fixed
 * order. Each entry says grad[row] += scale * vec.
 *
 * Workers build their own lists for fixed chunks of a step's work; the
 * optimizer (adam_table_gather) then sums them in list order, each
 * worker taking the rows of its part. Every row therefore sums its contributions in the
 * same order whatever the thread count, which keeps training reproducible.
 *
 * The vectors are borrowed: they must stay unchanged until applied.
 */
#ifndef DERRD_SCATTER_H
#define DERRD_SCATTER_H

#include <errno.h>
#include <stdint.h>

typedef struct {
    int32_t row;
    float scale;
    const float *vec;
} scatter_entry_t;

typedef struct {
    scatter_entry_t *v;
    int64_t n;
    int64_t cap;
} scatter_t;

void scatter_init(scatter_t *s);
void scatter_close(scatter_t *s);

static inline void scatter_clear(scatter_t *s)
{
    s->n = 0;
}

/* Internal: grows the list; 0 or -ENOMEM. */
int scatter__grow(scatter_t *s);

/* Appends one entry. Returns 0 or -ENOMEM. */
static inline int scatter_add(scatter_t *s, int32_t row, float scale, const float *vec)
{
    if (s->n == s->cap && scatter__grow(s) < 0)
        return -ENOMEM;
    scatter_entry_t *e = &s->v[s->n++];
    e->row = row;
    e->scale = scale;
    e->vec = vec;
    return 0;
}

/* Adds every entry into grad, a dense (rows, cols) matrix: the plain
 * reference the optimizer's fused path is tested against. */
void scatter_apply_dense(const scatter_t *s, float *grad, int32_t cols);

#endif
