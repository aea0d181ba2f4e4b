/* CSR interaction matrix; see ratings.h. */
#include "ratings.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int ratings__cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

int ratings_init(ratings_t *r, int32_t n_users, int32_t n_items,
                 const int32_t *users, const int32_t *items, int64_t n)
{
    memset(r, 0, sizeof(*r));
    if (n_users < 0 || n_items < 0 || n < 0)
        return -EINVAL;
    for (int64_t k = 0; k < n; k++)
        if (users[k] < 0 || users[k] >= n_users || items[k] < 0 || items[k] >= n_items)
            return -EINVAL;
    r->n_users = n_users;
    r->n_items = n_items;
    r->row = calloc((size_t)n_users + 1, sizeof(int64_t));
    r->col = malloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t));
    if (!r->row || !r->col)
        goto fail;
    for (int64_t k = 0; k < n; k++)
        r->row[users[k] + 1]++;
    for (int32_t u = 0; u < n_users; u++)
        r->row[u + 1] += r->row[u];
    int64_t *fill = malloc((size_t)(n_users > 0 ? n_users : 1) * sizeof(int64_t));
    if (!fill)
        goto fail;
    memcpy(fill, r->row, (size_t)n_users * sizeof(int64_t));
    for (int64_t k = 0; k < n; k++)
        r->col[fill[users[k]]++] = items[k];
    free(fill);
    /* Sort each row, then squeeze out duplicates in place. */
    int64_t out = 0;
    for (int32_t u = 0; u < n_users; u++) {
        int64_t b = r->row[u], e = r->row[u + 1];
        qsort(r->col + b, (size_t)(e - b), sizeof(int32_t), ratings__cmp_i32);
        r->row[u] = out;
        for (int64_t k = b; k < e; k++)
            if (k == b || r->col[k] != r->col[k - 1])
                r->col[out++] = r->col[k];
    }
    r->row[n_users] = out;
    r->nnz = out;
    return 0;
fail:
    ratings_close(r);
    return -ENOMEM;
}

int ratings_init_transpose(ratings_t *r, const ratings_t *src)
{
    memset(r, 0, sizeof(*r));
    r->n_users = src->n_items;
    r->n_items = src->n_users;
    r->nnz = src->nnz;
    r->row = calloc((size_t)r->n_users + 1, sizeof(int64_t));
    r->col = malloc((size_t)(src->nnz > 0 ? src->nnz : 1) * sizeof(int32_t));
    int64_t *fill = malloc(((size_t)r->n_users + 1) * sizeof(int64_t));
    if (!r->row || !r->col || !fill) {
        free(fill);
        ratings_close(r);
        return -ENOMEM;
    }
    for (int64_t k = 0; k < src->nnz; k++)
        r->row[src->col[k] + 1]++;
    for (int32_t i = 0; i < r->n_users; i++)
        r->row[i + 1] += r->row[i];
    memcpy(fill, r->row, ((size_t)r->n_users + 1) * sizeof(int64_t));
    /* Users are visited in order, so every transposed row comes out sorted. */
    for (int32_t u = 0; u < src->n_users; u++)
        for (int64_t k = src->row[u]; k < src->row[u + 1]; k++)
            r->col[fill[src->col[k]]++] = u;
    free(fill);
    return 0;
}

void ratings_close(ratings_t *r)
{
    free(r->row);
    free(r->col);
    memset(r, 0, sizeof(*r));
}

bool ratings_has(const ratings_t *r, int32_t u, int32_t i)
{
    const int32_t *v = r->col + r->row[u];
    int64_t lo = 0, hi = r->row[u + 1] - r->row[u];
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (v[mid] < i)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < r->row[u + 1] - r->row[u] && v[lo] == i;
}
