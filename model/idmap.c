/*
 * Open addressing with linear probing over a power-of-two slot array. A slot
 * holds row + 1 (0 = empty) and the rows keep each key's hash, so probing
 * compares 32-bit hashes first and touches key bytes only on a likely match.
 * Erasure uses backward-shift deletion, so there are no tombstones and probe
 * chains stay as short as the load factor allows.
 *
 * Key bytes live in one growing buffer addressed by offset; an erased key's
 * bytes are zeroed at once (the id is personal data) and the space is
 * reclaimed when the buffer next grows.
 */
#include "model/idmap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t off;  /* into bytes */
    uint32_t len;  /* 0 = hole */
    uint32_t hash;
} idmap_row_t;

struct idmap {
    uint64_t seed;
    uint32_t *slots;    /* (cap) row + 1, 0 = empty */
    uint64_t cap;       /* power of two */
    idmap_row_t *rows;  /* (n_rows) */
    int64_t n_rows, rows_cap, n_keys;
    char *bytes;        /* key bytes of every row, by offset */
    uint64_t used, bytes_cap, dead; /* dead = bytes of erased keys */
    uint64_t moved;                 /* key bytes copied by compactions, ever */
};

#define IDMAP_MAX_KEY 65535

static inline uint64_t idmap__mix(uint64_t a, uint64_t b)
{
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

/* A seeded multiply-mix hash over 8-byte words; good spread, cheap for the
 * short ids events carry. */
static uint32_t idmap__hash(uint64_t seed, const unsigned char *p, size_t len)
{
    const uint64_t k0 = 0xa0761d6478bd642fULL, k1 = 0xe7037ed1a0b428dbULL;
    uint64_t h = seed ^ (len * k0);
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = idmap__mix(h ^ w, k1);
        p += 8;
        len -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, len);
    h = idmap__mix(h ^ w ^ ((uint64_t)len << 56), k1);
    h = idmap__mix(h, k0);
    return (uint32_t)(h ^ (h >> 32));
}

idmap_t *idmap_new(uint64_t seed)
{
    idmap_t *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->seed = seed;
    m->cap = 64;
    m->slots = calloc(m->cap, sizeof(*m->slots));
    if (!m->slots) {
        free(m);
        return NULL;
    }
    return m;
}

void idmap_free(idmap_t *m)
{
    if (!m)
        return;
    free(m->slots);
    free(m->rows);
    free(m->bytes);
    free(m);
}

static int64_t idmap__probe(const idmap_t *m, const void *key, size_t len,
                            uint32_t hash, uint64_t *slot_out)
{
    uint64_t mask = m->cap - 1;
    for (uint64_t s = hash & mask;; s = (s + 1) & mask) {
        uint32_t v = m->slots[s];
        if (v == 0) {
            *slot_out = s;
            return -1;
        }
        const idmap_row_t *r = &m->rows[v - 1];
        if (r->hash == hash && r->len == len &&
            memcmp(m->bytes + r->off, key, len) == 0) {
            *slot_out = s;
            return (int64_t)v - 1;
        }
    }
}

int64_t idmap_find(const idmap_t *m, const void *key, size_t len)
{
    if (len == 0 || len > IDMAP_MAX_KEY)
        return -1;
    uint64_t slot;
    return idmap__probe(m, key, len, idmap__hash(m->seed, key, len), &slot);
}

static int idmap__grow_slots(idmap_t *m)
{
    uint64_t cap = m->cap * 2;
    uint32_t *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return -ENOMEM;
    for (uint64_t s = 0; s < m->cap; s++) {
        uint32_t v = m->slots[s];
        if (!v)
            continue;
        uint64_t t = m->rows[v - 1].hash & (cap - 1);
        while (slots[t])
            t = (t + 1) & (cap - 1);
        slots[t] = v;
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return 0;
}

/* Makes room for len more key bytes, compacting away erased keys when that
 * frees enough. */
static int idmap__reserve_bytes(idmap_t *m, size_t len)
{
    if (m->used + len <= m->bytes_cap)
        return 0;
    uint64_t live = m->used - m->dead;
    uint64_t cap = m->bytes_cap ? m->bytes_cap : 4096;
    while (cap < live + len || (2 * m->dead < m->used && cap < m->used + len))
        cap *= 2;
    char *bytes = malloc(cap);
    if (!bytes)
        return -ENOMEM;
    uint64_t at = 0;
    for (int64_t r = 0; r < m->n_rows; r++) {
        idmap_row_t *row = &m->rows[r];
        if (!row->len)
            continue;
        memcpy(bytes + at, m->bytes + row->off, row->len);
        row->off = at;
        at += row->len;
    }
    free(m->bytes);
    m->bytes = bytes;
    m->bytes_cap = cap;
    m->used = at;
    m->dead = 0;
    m->moved += at;
    return 0;
}

static int idmap__reserve_rows(idmap_t *m)
{
    if (m->n_rows >= (int64_t)UINT32_MAX - 1)
        return -ENOMEM;
    if (m->n_rows < m->rows_cap)
        return 0;
    int64_t cap = m->rows_cap ? m->rows_cap * 2 : 64;
    idmap_row_t *rows = realloc(m->rows, (size_t)cap * sizeof(*rows));
    if (!rows)
        return -ENOMEM;
    m->rows = rows;
    m->rows_cap = cap;
    return 0;
}

int64_t idmap_add_hole(idmap_t *m)
{
    if (idmap__reserve_rows(m))
        return -ENOMEM;
    m->rows[m->n_rows] = (idmap_row_t){ 0 };
    return m->n_rows++;
}

int64_t idmap_intern(idmap_t *m, const void *key, size_t len, int *added)
{
    if (added)
        *added = 0;
    if (len == 0 || len > IDMAP_MAX_KEY)
        return -EINVAL;
    uint32_t hash = idmap__hash(m->seed, key, len);
    uint64_t slot;
    int64_t row = idmap__probe(m, key, len, hash, &slot);
    if (row >= 0)
        return row;
    if ((uint64_t)(m->n_keys + 1) * 4 > m->cap * 3) { /* load <= 0.75 */
        if (idmap__grow_slots(m))
            return -ENOMEM;
        idmap__probe(m, key, len, hash, &slot);
    }
    if (idmap__reserve_rows(m) || idmap__reserve_bytes(m, len))
        return -ENOMEM;
    memcpy(m->bytes + m->used, key, len);
    row = m->n_rows++;
    m->rows[row] = (idmap_row_t){ .off = m->used, .len = (uint32_t)len, .hash = hash };
    m->used += len;
    m->slots[slot] = (uint32_t)row + 1;
    m->n_keys++;
    if (added)
        *added = 1;
    return row;
}

int64_t idmap_erase(idmap_t *m, const void *key, size_t len)
{
    if (len == 0 || len > IDMAP_MAX_KEY)
        return -1;
    uint32_t hash = idmap__hash(m->seed, key, len);
    uint64_t slot;
    int64_t row = idmap__probe(m, key, len, hash, &slot);
    if (row < 0)
        return -1;
    /* Backward-shift: pull later members of the chain into the gap when
     * their home slot does not lie cyclically in (gap, s]. */
    uint64_t mask = m->cap - 1, gap = slot;
    for (uint64_t s = (gap + 1) & mask; m->slots[s]; s = (s + 1) & mask) {
        uint64_t home = m->rows[m->slots[s] - 1].hash & mask;
        if (((s - home) & mask) >= ((s - gap) & mask)) {
            m->slots[gap] = m->slots[s];
            gap = s;
        }
    }
    m->slots[gap] = 0;
    idmap_row_t *r = &m->rows[row];
    memset(m->bytes + r->off, 0, r->len);
    m->dead += r->len;
    r->len = 0;
    m->n_keys--;
    return row;
}

const char *idmap_key(const idmap_t *m, int64_t row, size_t *len)
{
    const idmap_row_t *r = &m->rows[row];
    *len = r->len;
    return r->len ? m->bytes + r->off : NULL;
}

int64_t idmap_rows(const idmap_t *m) { return m->n_rows; }
int64_t idmap_count(const idmap_t *m) { return m->n_keys; }

size_t idmap_memory(const idmap_t *m)
{
    return sizeof(*m) + m->cap * sizeof(*m->slots) +
           (size_t)m->rows_cap * sizeof(*m->rows) + m->bytes_cap;
}

uint64_t idmap_bytes_moved(const idmap_t *m) { return m->moved; }
