/*
 * scatter: gradient contributions gathered in parallel and applied in a fixed
 * order. Each entry says grad[row] += scale * vec.
 *
 * Workers build their own lists for fixed chunks of a step's work; the lists
 * are then applied in chunk order, each worker taking the rows with
 * row % nparts == part. Every row therefore sums its contributions in the
 * same order whatever the thread count, which keeps training reproducible.
 *
 * The vectors are borrowed: they must stay unchanged until applied.
 */
#ifndef DERRD_SCATTER_H
#define DERRD_SCATTER_H

#include <stdint.h>

#include "adam.h"

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

/* Appends one entry. Returns 0 or -ENOMEM. */
int scatter_add(scatter_t *s, int32_t row, float scale, const float *vec);

/* Adds the entries whose row % nparts == part into t's gradient rows. */
void scatter_apply(const scatter_t *s, adam_table_t *t, int part, int nparts);

#endif
