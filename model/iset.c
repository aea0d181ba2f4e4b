/*
 * A linear-probing hash set of 64-bit keys (user << 32 | item) for
 * membership, plus one growable item array per user for order and for
 * erasure: forgetting a user walks its own array, never the whole set.
 * Deletion uses backward shift (no tombstones), as in model/idmap.c.
 */
#include "model/iset.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define ISET_EMPTY UINT64_MAX

typedef struct {
    int32_t *items;
    int32_t n, cap;
} iset_user_t;

struct iset {
    uint64_t *keys;     /* (cap) ISET_EMPTY = free */
    uint64_t cap, n;    /* cap: power of two */
    iset_user_t *users; /* (users_cap) */
    int64_t n_users, users_cap;
    size_t item_bytes;  /* heap of the per-user arrays */
    uint64_t seed;      /* keys the slot hash: rows come from outside */
};

static inline uint64_t iset__key(int64_t u, int64_t i)
{
    return (uint64_t)u << 32 | (uint64_t)i;
}

/* MurmurHash3's 64-bit finaliser over the seeded key: with a seed the
 * sender of the events does not know, the pairs it makes rows for cannot
 * be chosen to share a probe chain. */
static inline uint64_t iset__slot(const iset_t *s, uint64_t key, uint64_t mask)
{
    key ^= s->seed;
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    key *= 0xc4ceb9fe1a85ec53ULL;
    key ^= key >> 33;
    return key & mask;
}

iset_t *iset_new(uint64_t seed)
{
    iset_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->seed = seed;
    s->cap = 1024;
    s->keys = malloc(s->cap * sizeof(*s->keys));
    if (!s->keys) {
        free(s);
        return NULL;
    }
    memset(s->keys, 0xff, s->cap * sizeof(*s->keys));
    return s;
}

void iset_free(iset_t *s)
{
    if (!s)
        return;
    for (int64_t u = 0; u < s->n_users; u++)
        free(s->users[u].items);
    free(s->users);
    free(s->keys);
    free(s);
}

static int iset__grow(iset_t *s)
{
    uint64_t cap = s->cap * 2, mask = cap - 1;
    uint64_t *keys = malloc(cap * sizeof(*keys));
    if (!keys)
        return -ENOMEM;
    memset(keys, 0xff, cap * sizeof(*keys));
    for (uint64_t k = 0; k < s->cap; k++) {
        uint64_t key = s->keys[k];
        if (key == ISET_EMPTY)
            continue;
        uint64_t t = iset__slot(s, key, mask);
        while (keys[t] != ISET_EMPTY)
            t = (t + 1) & mask;
        keys[t] = key;
    }
    free(s->keys);
    s->keys = keys;
    s->cap = cap;
    return 0;
}

/* The slot holding key, or the empty slot where it would go. */
static uint64_t iset__find(const iset_t *s, uint64_t key)
{
    uint64_t mask = s->cap - 1, t = iset__slot(s, key, mask);
    while (s->keys[t] != ISET_EMPTY && s->keys[t] != key)
        t = (t + 1) & mask;
    return t;
}

static int iset__valid(int64_t u, int64_t i)
{
    return u >= 0 && i >= 0 && u < INT32_MAX && i < INT32_MAX;
}

int iset_has(const iset_t *s, int64_t u, int64_t i)
{
    if (!iset__valid(u, i))
        return 0;
    return s->keys[iset__find(s, iset__key(u, i))] != ISET_EMPTY;
}

static int iset__reserve_user(iset_t *s, int64_t u)
{
    if (u < s->n_users)
        return 0;
    if (u >= s->users_cap) {
        int64_t cap = s->users_cap ? s->users_cap : 1024;
        while (cap <= u)
            cap *= 2;
        iset_user_t *users = realloc(s->users, (size_t)cap * sizeof(*users));
        if (!users)
            return -ENOMEM;
        s->users = users;
        s->users_cap = cap;
    }
    memset(s->users + s->n_users, 0, (size_t)(u + 1 - s->n_users) * sizeof(*s->users));
    s->n_users = u + 1;
    return 0;
}

int iset_add(iset_t *s, int64_t u, int64_t i)
{
    if (!iset__valid(u, i))
        return -EINVAL;
    uint64_t key = iset__key(u, i);
    uint64_t t = iset__find(s, key);
    if (s->keys[t] == key)
        return 0;
    if (iset__reserve_user(s, u))
        return -ENOMEM;
    iset_user_t *us = &s->users[u];
    if (us->n == us->cap) {
        if (us->cap > INT32_MAX / 2)
            return -ENOMEM;
        int32_t cap = us->cap ? us->cap * 2 : 4;
        int32_t *items = realloc(us->items, (size_t)cap * sizeof(*items));
        if (!items)
            return -ENOMEM;
        s->item_bytes += (size_t)(cap - us->cap) * sizeof(*items);
        us->items = items;
        us->cap = cap;
    }
    if ((s->n + 1) * 4 > s->cap * 3) { /* load <= 0.75 */
        if (iset__grow(s))
            return -ENOMEM;
        t = iset__find(s, key);
    }
    s->keys[t] = key;
    s->n++;
    us->items[us->n++] = (int32_t)i;
    return 1;
}

static void iset__delete(iset_t *s, uint64_t key)
{
    uint64_t mask = s->cap - 1, gap = iset__find(s, key);
    if (s->keys[gap] != key)
        return;
    for (uint64_t t = (gap + 1) & mask; s->keys[t] != ISET_EMPTY; t = (t + 1) & mask) {
        uint64_t home = iset__slot(s, s->keys[t], mask);
        if (((t - home) & mask) >= ((t - gap) & mask)) {
            s->keys[gap] = s->keys[t];
            gap = t;
        }
    }
    s->keys[gap] = ISET_EMPTY;
    s->n--;
}

int64_t iset_forget_user(iset_t *s, int64_t u)
{
    if (u < 0 || u >= s->n_users)
        return 0;
    iset_user_t *us = &s->users[u];
    int64_t n = us->n;
    for (int32_t k = 0; k < us->n; k++)
        iset__delete(s, iset__key(u, us->items[k]));
    s->item_bytes -= (size_t)us->cap * sizeof(*us->items);
    free(us->items);
    *us = (iset_user_t){ 0 };
    return n;
}

const int32_t *iset_items(const iset_t *s, int64_t u, int32_t *n)
{
    if (u < 0 || u >= s->n_users || s->users[u].n == 0) {
        *n = 0;
        return NULL;
    }
    *n = s->users[u].n;
    return s->users[u].items;
}

int64_t iset_count(const iset_t *s) { return (int64_t)s->n; }
int64_t iset_users(const iset_t *s) { return s->n_users; }

size_t iset_memory(const iset_t *s)
{
    return sizeof(*s) + s->cap * sizeof(*s->keys) +
           (size_t)s->users_cap * sizeof(*s->users) + s->item_bytes;
}
