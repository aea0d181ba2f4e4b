/*
 * iset: the set of (user, item) interactions the daemon has accepted, with
 * each user's items in order of arrival. Adding a pair twice is a no-op, so
 * a replayed event changes nothing. Rows are the dense rows of model/idmap.
 *
 * Membership is one hash probe; a user's items are a contiguous array, so
 * building the training matrix is a walk over users. Not thread-safe; one
 * owner at a time.
 */
#ifndef DERRD_ISET_H
#define DERRD_ISET_H

#include <stddef.h>
#include <stdint.h>

typedef struct iset iset_t;

/* A new empty set, NULL on out of memory. seed keys the slot hash (pick it
 * at random where the rows come from untrusted input); nothing the set
 * returns depends on it. */
iset_t *iset_new(uint64_t seed);
void iset_free(iset_t *s);

/* Adds (u, i). Returns 1 when added, 0 when already present, -EINVAL for a
 * negative or too large row (rows must be < 2^31), -ENOMEM. */
int iset_add(iset_t *s, int64_t u, int64_t i);

/* 1 when (u, i) is in the set. */
int iset_has(const iset_t *s, int64_t u, int64_t i);

/* Removes every interaction of user u; returns how many. */
int64_t iset_forget_user(iset_t *s, int64_t u);

/* User u's items in order of arrival (NULL when none); *n gets the count.
 * Valid until the next change of the set. */
const int32_t *iset_items(const iset_t *s, int64_t u, int32_t *n);

/* Interactions in the set; one past the highest user row ever added. */
int64_t iset_count(const iset_t *s);
int64_t iset_users(const iset_t *s);

/* Bytes of heap the set holds. */
size_t iset_memory(const iset_t *s);

#endif
