/*
 * ingest: the loop side of the event path. It owns the Kafka consumer and the
 * dead-letter producer, wakes on librdkafka's queue through a pipe and a
 * uv_poll_t (plus a backstop timer), decodes and validates each message, and
 * hands batches of staged events to the trainer through the staging queue.
 *
 * Invariants:
 *  - the loop never blocks: draining yields after a budget and resumes on the
 *    next iteration; a full staging queue pauses the partitions;
 *  - an invalid event's offset is handed over only after its dead-letter
 *    copy is acknowledged, so a crash can re-send it but never lose it, and
 *    copies already in the dead-letter topic are not sent twice (they are
 *    read back at start);
 *  - offsets are committed only from ingest_commit(), with the positions of
 *    a durable checkpoint.
 *
 * Loop thread only.
 */
#ifndef DERRD_INGEST_H
#define DERRD_INGEST_H

#include <stddef.h>
#include <stdint.h>

#include "daemon/staging.h"
#include "daemon/state.h"
#include "io/kafka.h"

typedef struct {
    const char *topic, *group;
    const char *dead_letter_topic; /* NULL or "" = count and drop */
    const kafka_config_t *kafka;   /* borrowed for ingest_start only */
    size_t max_staged;             /* events staged before partitions pause */
    int backstop_ms;               /* poll at least this often */
    void (*fatal)(void *ud);       /* a fatal Kafka error: stop the daemon */
    void *ud;
} ingest_cfg_t;

/* Partitions whose lag ingest_stats() reports one by one. */
#define INGEST_LAG_PARTS 64

typedef struct {
    uint64_t consumed;       /* messages read (redeliveries excluded) */
    uint64_t invalid;        /* refused by the codec */
    uint64_t dead_lettered;  /* acknowledged by the dead-letter topic */
    uint64_t dead_letter_retries, dead_letter_skipped; /* resent; already there */
    uint64_t dead_letter_truncated; /* sent cut to the dead-letter size limit */
    uint64_t redelivered;    /* messages below the position, ignored */
    uint64_t kafka_errors, pauses;
    uint64_t wakeups;
    uint64_t first_msg_ms;   /* monotonic time of the first message, 0 = none */
    size_t staged;           /* events in the queue plus those held here */
    int paused;
    int64_t lag;             /* summed over the partitions, -1 unknown */
    kafka_lag_t part_lag[INGEST_LAG_PARTS]; /* per assigned partition (the first ones) */
    int n_part_lag;
    int brokers_up;          /* connections up (kafka_consumer_brokers_up), -1 unknown */
    double loop_lag_max_ms;  /* longest loop stall seen */
    double loop_lag_own_max_ms; /* longest, less the loop thread's wait for a CPU */
    double loop_lag_recent_ms; /* longest in the last complete 10 s window */
    int fatal;               /* a fatal Kafka error happened */
} ingest_stats_t;

typedef struct ingest ingest_t;
struct uv_loop_s; /* libuv's uv_loop_t, kept out of this header */

/* Creates the consumer (subscribed) and the dead-letter producer, and reads
 * the dead-letter topic back. st gives the starting positions (not kept).
 * Blocks while reading back; call before the loop runs. Returns 0 or a
 * negative errno with the reason. */
int ingest_start(ingest_t **out, struct uv_loop_s *loop, const ingest_cfg_t *cfg, staging_t *stg,
                 const state_t *st, char *err, size_t errlen);

/* Commits durable positions (from the trainer). */
void ingest_commit(ingest_t *in, const kafka_pos_t *pos, int n);

/* The trainer took batches: resume the partitions when there is room. */
void ingest_kick(ingest_t *in);

void ingest_stats(ingest_t *in, ingest_stats_t *out);

/* Stops reading, waits up to timeout_ms for outstanding dead-letter
 * deliveries, and hands every complete batch to the staging queue. Returns
 * the number of events it could not hand over (their offsets are then not
 * covered, and they are read again after a restart). */
size_t ingest_stop(ingest_t *in, int timeout_ms);

/* Commits pos, waiting up to timeout_ms for the broker's answer, leaves the
 * group within timeout_ms, closes the loop handles and frees in once they
 * are closed (run the loop after). */
void ingest_close(ingest_t *in, const kafka_pos_t *pos, int n, int timeout_ms);

#endif
