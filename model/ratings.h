/*
 * ratings: the training interactions as a read-only CSR matrix, users by
 * items. Each user's items are sorted and unique, so membership is a binary
 * search and duplicate input pairs are no-ops.
 *
 * A ratings_t owns its arrays; once built it may be read from any thread.
 */
#ifndef DERRD_RATINGS_H
#define DERRD_RATINGS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    int32_t n_users;
    int32_t n_items;
    int64_t nnz;
    int64_t *row; /* (n_users + 1) offsets into col */
    int32_t *col; /* (nnz) items of user u in col[row[u] .. row[u+1]) */
} ratings_t;

/* Builds the matrix from n (user, item) pairs; duplicates are dropped.
 * Returns 0, -EINVAL when an id is outside [0, n_users) or [0, n_items),
 * or -ENOMEM. On error r is left empty (safe to close). */
int ratings_init(ratings_t *r, int32_t n_users, int32_t n_items,
                 const int32_t *users, const int32_t *items, int64_t n);

/* Builds the items-by-users transpose of src. */
int ratings_init_transpose(ratings_t *r, const ratings_t *src);

void ratings_close(ratings_t *r);

static inline int32_t ratings_count(const ratings_t *r, int32_t u)
{
    return (int32_t)(r->row[u + 1] - r->row[u]);
}

static inline const int32_t *ratings_items(const ratings_t *r, int32_t u)
{
    return r->col + r->row[u];
}

/* True when (u, i) is an interaction. */
bool ratings_has(const ratings_t *r, int32_t u, int32_t i);

#endif
