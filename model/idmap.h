/*
 * idmap: external ids (byte strings) to dense rows 0, 1, 2, ... in order of
 * first appearance, with O(1) expected lookup. Rows index the embedding
 * tables, so a row never changes meaning: an erased id leaves a hole (a row
 * with no key) and is never reused; a returning id gets a new row.
 *
 * Keys are hashed with a per-map seed, so crafted ids cannot force collision
 * chains. An idmap_t is not thread-safe; one owner at a time.
 */
#ifndef DERRD_IDMAP_H
#define DERRD_IDMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct idmap idmap_t;

/* A new empty map; NULL on out of memory. seed picks the hash function. */
idmap_t *idmap_new(uint64_t seed);
void idmap_free(idmap_t *m);

/* The row of key, or -1 when it has none. */
int64_t idmap_find(const idmap_t *m, const void *key, size_t len);

/* The row of key, giving it the next row when it has none (*added = 1).
 * Returns the row, -EINVAL for an empty key or one over 65535 bytes, or
 * -ENOMEM. */
int64_t idmap_intern(idmap_t *m, const void *key, size_t len, int *added);

/* Hands out the next row as a hole (restoring a saved map). Returns the
 * row or -ENOMEM. */
int64_t idmap_add_hole(idmap_t *m);

/* Erases key: its row becomes a hole. Returns the row, or -1 when absent. */
int64_t idmap_erase(idmap_t *m, const void *key, size_t len);

/* The key of row (not NUL-terminated; valid until the next intern), or NULL
 * for a hole. *len gets its length. row must be < idmap_rows(). */
const char *idmap_key(const idmap_t *m, int64_t row, size_t *len);

/* Rows handed out so far (holes included), and ids currently mapped. */
int64_t idmap_rows(const idmap_t *m);
int64_t idmap_count(const idmap_t *m);

/* Bytes of heap the map holds. */
size_t idmap_memory(const idmap_t *m);

/* Key bytes the map has copied moving its key buffer, over its life: the
 * work its growth and compaction cost (tests bound it, instead of a time). */
uint64_t idmap_bytes_moved(const idmap_t *m);

#endif
