/*
 * state: what the daemon knows and must not lose: the user and item id maps,
 * the interaction set, and the next Kafka offset per partition that the
 * applied events cover. It is applied to from staged batches, saved into
 * checkpoints and restored from the newest valid one (docs/CHECKPOINT.md).
 *
 * Owned by the trainer thread once the daemon runs; not thread-safe.
 */
#ifndef DERRD_STATE_H
#define DERRD_STATE_H

#include <stdint.h>
#include <stdio.h>

#include "daemon/staging.h"
#include "io/checkpoint.h"
#include "io/kafka.h"
#include "model/idmap.h"
#include "model/iset.h"

typedef struct {
    idmap_t *users, *items;
    iset_t *inter;
    char *topic;        /* the positions below belong to it */
    kafka_pos_t *pos;   /* (n_pos) next offset per partition, sorted */
    int n_pos, pos_cap;
    uint64_t seq;       /* of the checkpoint last written or loaded */
    /* counters, kept across restarts */
    uint64_t applied, duplicates, forgotten, skipped;
    int dirty;          /* changed since the last checkpoint */
} state_t;

/* An empty state for topic. Returns 0 or -ENOMEM. */
int state_init(state_t *st, const char *topic);
void state_close(state_t *st);

/* Applies a batch in order. Returns 0, -ENOMEM, or -EINVAL for an empty or
 * over-long id (io/event refuses those first); after an error the state
 * holds the events before the failing one and the caller must stop. */
int state_apply(state_t *st, const staging_batch_t *b);

/* The next offset of partition, or -1 when the state has none. */
int64_t state_position(const state_t *st, int32_t partition);

/* More sections for a checkpoint (the models), added before it is written;
 * returns 0 or a negative errno. */
typedef int (*state_extra_save_fn)(void *ud, checkpoint_writer_t *w);
/* Reads those sections back from a verified checkpoint; an error is logged
 * and the state still loads (the models are then trained afresh). */
typedef int (*state_extra_load_fn)(void *ud, const checkpoint_t *ck, char *err, size_t errlen);

/* Writes checkpoint seq + 1 into dir, keeping the newest `keep`, with the
 * sections extra adds (may be NULL). Returns 0 or a negative errno with the
 * reason in err. */
int state_save(state_t *st, const char *dir, int keep, state_extra_save_fn extra, void *ud,
               char *err, size_t errlen);

/* Fills an empty st (just state_init'ed) from a verified checkpoint's
 * sections, checking every count, row and offset in them. Returns 0,
 * -EBADMSG with the reason in err, or -ENOMEM; on failure st holds a part
 * and is only fit for state_close(). */
int state_from_checkpoint(state_t *st, const checkpoint_t *ck, char *err, size_t errlen);

/* Replaces st with the newest valid checkpoint in dir; corrupt or torn ones
 * are logged and skipped. Returns 1 when one was loaded, 0 when dir has
 * none (st stays empty), or a negative errno (with the reason in err) when
 * every checkpoint in dir is unusable or the topic differs. */
int state_load(state_t *st, const char *dir, state_extra_load_fn extra, void *ud, char *err,
               size_t errlen);

/* Prints every interaction as "user<TAB>item" lines. Returns 0 or -EIO. */
int state_dump(const state_t *st, FILE *out);

#endif
