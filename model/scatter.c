/* Ordered gradient scatter; see scatter.h. */
#include "scatter.h"

#include <errno.h>
#include <stdlib.h>

void scatter_init(scatter_t *s)
{
    s->v = NULL;
    s->n = 0;
    s->cap = 0;
}

void scatter_close(scatter_t *s)
{
    free(s->v);
    scatter_init(s);
}

int scatter__grow(scatter_t *s)
{
    int64_t cap = s->cap ? s->cap * 2 : 1024;
    scatter_entry_t *v = realloc(s->v, (size_t)cap * sizeof(*v));
    if (!v)
        return -ENOMEM;
    s->v = v;
    s->cap = cap;
    return 0;
}

void scatter_apply_dense(const scatter_t *s, float *grad, int32_t cols)
{
    for (int64_t k = 0; k < s->n; k++) {
        const scatter_entry_t *e = &s->v[k];
        float *g = grad + (int64_t)e->row * cols;
        for (int32_t c = 0; c < cols; c++)
            g[c] += e->scale * e->vec[c];
    }
}
