/*
 * trainer: the thread that owns the daemon's state. It takes staged batches
 * off the loop's queue, applies them, and writes a checkpoint when one is due
 * (and a last one when stopped). After each durable checkpoint it hands the
 * positions that checkpoint covers back to the loop, which commits them to
 * Kafka: nothing is committed that a crash could lose.
 *
 * (Training rounds join this thread with the rounds issue.)
 *
 * trainer_start/stop come from one thread; trainer_take_durable and
 * trainer_stats are safe from any thread.
 */
#ifndef DERRD_TRAINER_H
#define DERRD_TRAINER_H

#include <stdint.h>

#include "daemon/notify.h"
#include "daemon/rounds.h"
#include "daemon/staging.h"
#include "daemon/state.h"

typedef struct {
    const char *state_dir;
    int checkpoint_ms;  /* interval between checkpoints while data changes */
    int keep;           /* checkpoints kept on disk */
    /* Called on the trainer thread after new durable positions, after a
     * batch was taken (queue space freed), and on a fatal error. */
    void (*notify)(void *ud);
    void *ud;
    /* Rounds (NULL = ingest only), borrowed: a round starts after
     * round_min_events new events, or round_interval_ms after the last one
     * when there is anything new (or the student is still settling). */
    rounds_t *rounds;
    long round_min_events, round_interval_ms;
    int nice;           /* the thread's niceness (0 = inherited) */
    /* NULL, or the watchdog gate: the thread marks itself idle while it
     * waits for batches and beats after each step. */
    notify_wd_t *wd;
} trainer_cfg_t;

/* Upper bounds (seconds) of the round-duration histogram's buckets; a last
 * bucket counts the rest (+Inf). */
#define TRAINER_ROUND_BUCKETS 10
extern const double trainer_round_bounds[TRAINER_ROUND_BUCKETS];

typedef struct {
    uint64_t batches, applied, duplicates, forgotten, skipped;
    uint64_t checkpoints, checkpoint_failures, checkpoint_seq;
    uint64_t last_checkpoint_ms; /* wall clock; 0 = none yet */
    int64_t users, items, interactions;
    uint64_t state_bytes;        /* heap of the id maps and the interaction set */
    int fatal;                   /* the thread stopped on an error */
    uint64_t rounds, rounds_failed, rounds_gated, published;
    uint64_t publish_failures;   /* snapshots that could not be written (in rounds_failed too) */
    uint64_t teacher_refreshes;  /* full refreshes and teacher files loaded */
    uint64_t teacher_foldins;    /* new rows folded in between refreshes */
    uint64_t round_le[TRAINER_ROUND_BUCKETS + 1]; /* rounds by duration (not cumulative) */
    double round_seconds_sum;
    rounds_result_t last_round;  /* valid when rounds > 0 */
} trainer_stats_t;

/* One finished round, for the status page. */
typedef struct {
    uint64_t end_ms;             /* wall clock */
    rounds_result_t r;
} trainer_round_t;

/* Rounds kept for trainer_history(). */
#define TRAINER_HISTORY 512

/* The settings a running daemon may change (SIGHUP): the round triggers,
 * plus what rounds_set_live() takes. */
typedef struct {
    long round_min_events, round_interval_ms;
    rounds_live_t rounds;
} trainer_live_t;

typedef struct trainer trainer_t;

/* Starts the thread. The state moves into the trainer (*st is zeroed).
 * Returns 0 or a negative errno. */
int trainer_start(trainer_t **out, state_t *st, staging_t *stg, const trainer_cfg_t *cfg);

/* Positions covered by the newest durable checkpoint, when they changed
 * since the last call: returns n > 0 and a malloc'd array in *pos (caller
 * frees), else 0. */
int trainer_take_durable(trainer_t *t, kafka_pos_t **pos);

void trainer_stats(trainer_t *t, trainer_stats_t *out);

/* Copies the newest finished rounds (at most max, oldest first) whose
 * round number is above after; returns how many. Any thread. */
int trainer_history(trainer_t *t, uint64_t after, trainer_round_t *out, int max);

/* New live settings, applied by the trainer thread before its next round
 * decision. Any thread. */
void trainer_reload(trainer_t *t, const trainer_live_t *live);

/* Applies whatever is still queued, writes a final checkpoint when anything
 * changed, and joins the thread. Returns 0 when the final state is durable,
 * else a negative errno. t stays valid for trainer_take_durable/stats until
 * trainer_free(). */
int trainer_stop(trainer_t *t);
void trainer_free(trainer_t *t);

#endif
