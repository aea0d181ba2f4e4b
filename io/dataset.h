/*
 * dataset: the shared leave-one-out benchmark format (a directory holding
 * train.tsv, valid.tsv, test.tsv and candidates.tsv; see the README).
 *
 *   train.tsv       user<TAB>item            one interaction per line
 *   valid.tsv       user<TAB>item            at most one held-out item per user
 *   test.tsv        user<TAB>item            at most one held-out item per user
 *   candidates.tsv  user<TAB>item<TAB>...    the same number of items per line
 *
 * Ids are dense non-negative integers below DATASET_MAX_ID. Every malformed
 * line is refused with "file:line: reason". Plain arrays, no model types.
 *
 * The per-user tables (valid, test and candidates: n_users x (2 + n_cands)
 * ids) are sized by the largest user id, so they may hold at most
 * DATASET_TABLE_RATIO times the ids in the files plus DATASET_TABLE_SLACK:
 * a dataset whose user ids are far from dense is refused ("user ids must
 * be dense") before anything is allocated, and a few bytes naming user
 * 99,999,999 cannot take gigabytes. Item ids are not held to it: nothing
 * here is sized by them.
 */
#ifndef DERRD_DATASET_H
#define DERRD_DATASET_H

#include <stddef.h>
#include <stdint.h>

#define DATASET_MAX_ID 100000000
#define DATASET_TABLE_RATIO 64
#define DATASET_TABLE_SLACK (1 << 20)

typedef struct {
    int32_t n_users;    /* 1 + the largest user id in any file */
    int32_t n_items;    /* 1 + the largest item id in any file */
    int64_t n_train;
    int32_t *train_u;   /* (n_train) */
    int32_t *train_i;   /* (n_train) */
    int32_t *valid;     /* (n_users) held-out item or -1 */
    int32_t *test;      /* (n_users) held-out item or -1 */
    int32_t n_cands;    /* candidates per user */
    int64_t n_ids;      /* ids read from the four files */
    int32_t *cands;     /* (n_users, n_cands); rows of users without a line are -1 */
} dataset_t;

/* Loads dir/{train,valid,test,candidates}.tsv. Returns 0, or a negative errno
 * (-ENOENT, -EBADMSG for a malformed file, -ENOMEM) with the reason in err. */
int dataset_load(dataset_t *ds, const char *dir, char *err, size_t errlen);

/* For a consumer that sizes tables by the item ids (a model's item rows):
 * 0 when n_items keeps the users' rule above (at most DATASET_TABLE_RATIO
 * times the ids in the files plus DATASET_TABLE_SLACK), else -EBADMSG with
 * the reason, dir first. The loader itself holds nothing sized by them. */
int dataset_check_items(const dataset_t *ds, const char *dir, char *err, size_t errlen);

void dataset_close(dataset_t *ds);

#endif
