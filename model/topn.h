/*
 * topn: each user's N highest-scoring items that the user has not interacted
 * with, in descending score order (ties: the lower item id first).
 *
 * topn_users() scores blocks of users against every item with one sgemm per
 * block, then selects per user: it marks the user's observed items, takes a
 * threshold from a strided sample of the scores, keeps only the items at or
 * above it, and sorts those. Blocks run in parallel on the pool.
 * topn_select_naive() is the full-sort reference the fast path is tested
 * against.
 */
#ifndef DERRD_TOPN_H
#define DERRD_TOPN_H

#include <stdint.h>

#include "mf.h"
#include "pool.h"
#include "ratings.h"

/* Selects into out[0..n) the n best items of scores[0..n_items), skipping the
 * sorted item ids excl[0..n_excl). scores is clobbered. Returns how many were
 * written (fewer than n when fewer items remain). Returns -ENOMEM on
 * allocation failure. */
int topn_select(float *scores, int32_t n_items, const int32_t *excl,
                int32_t n_excl, int32_t n, int32_t *out);

int topn_select_naive(const float *scores, int32_t n_items, const int32_t *excl,
                      int32_t n_excl, int32_t n, int32_t *out);

/* For each of the users list[0..n_list), writes its top n unobserved items
 * (under mf, excluding r's items) to out + k * n, padding with -1. list may
 * be NULL for all users in order. Returns 0 or -ENOMEM. */
int topn_users(const mf_t *mf, const ratings_t *r, const int32_t *list,
               int32_t n_list, int32_t n, pool_t *pool, int32_t *out);

#endif
