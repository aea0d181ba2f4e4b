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

int scatter_add(scatter_t *s, int32_t row, float scale, const float *vec)
{
    if (s->n == s->cap) {
        int64_t cap = s->cap ? s->cap * 2 : 1024;
        scatter_entry_t *v = realloc(s->v, (size_t)cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n].row = row;
    s->v[s->n].scale = scale;
    s->v[s->n].vec = vec;
    s->n++;
    return 0;
}

void scatter_apply(const scatter_t *s, adam_table_t *t, int part, int nparts)
{
    int32_t d = t->cols;
    for (int64_t k = 0; k < s->n; k++) {
        const scatter_entry_t *e = &s->v[k];
        if (e->row % nparts != part)
            continue;
        float *g = adam_table_grad(t, e->row);
        float a = e->scale;
        const float *x = e->vec;
        for (int32_t c = 0; c < d; c++)
            g[c] += a * x[c];
    }
}
