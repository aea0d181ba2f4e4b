/*
 * staging: decoded events on their way from the loop thread to the trainer
 * thread. The loop fills a batch, then hands it over whole; the trainer takes
 * every queued batch at once, in order.
 *
 * The queue never blocks and never refuses: the loop watches staging_depth()
 * and pauses the Kafka partitions when it reaches its bound, so the bound
 * holds without ever stalling the loop or dropping an event.
 *
 * A batch belongs to one thread at a time; staging_t is thread-safe.
 */
#ifndef DERRD_STAGING_H
#define DERRD_STAGING_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    STAGED_ADD = 1,    /* user, item */
    STAGED_FORGET = 2, /* user */
    STAGED_SKIP = 3,   /* an invalid event: only its offset counts */
} staged_op_t;

typedef struct {
    uint8_t op;
    uint16_t user_len, item_len;
    int32_t partition;
    int64_t offset;
    uint64_t str; /* user bytes then item bytes, at arena + str */
} staged_event_t;

typedef struct staging_batch {
    struct staging_batch *next;
    staged_event_t *ev;
    uint32_t n, cap;
    char *arena;
    size_t used, arena_cap;
    int dlq_pending; /* dead-letter deliveries still outstanding (loop side) */
    uint64_t t_ms;   /* wall time of its first event (freshness figures) */
} staging_batch_t;

staging_batch_t *staging_batch_new(void);
void staging_batch_free(staging_batch_t *b);
/* Appends an event, copying the ids. Returns 0 or -ENOMEM. */
int staging_batch_add(staging_batch_t *b, staged_op_t op, int32_t partition, int64_t offset,
                      const char *user, size_t user_len, const char *item, size_t item_len);

/* The event's ids in the batch's arena; NULL for an event without ids (a
 * SKIP), whose batch may have no arena at all. */
static inline const char *staging_event_user(const staging_batch_t *b, const staged_event_t *e)
{
    return b->arena ? b->arena + e->str : NULL;
}
static inline const char *staging_event_item(const staging_batch_t *b, const staged_event_t *e)
{
    return b->arena ? b->arena + e->str + e->user_len : NULL;
}

typedef struct staging staging_t;

staging_t *staging_new(void);
void staging_free(staging_t *s); /* frees queued batches too */

/* Queues b (ownership passes to the queue). */
void staging_push(staging_t *s, staging_batch_t *b);

/* Takes every queued batch, oldest first, as a list linked by ->next;
 * waits up to timeout_ms for one (0 = do not wait). NULL when none, or
 * after staging_wake(). */
staging_batch_t *staging_take(staging_t *s, int timeout_ms);

/* Wakes a waiting staging_take(). */
void staging_wake(staging_t *s);

/* Events queued and not yet taken. */
size_t staging_depth(staging_t *s);

#endif
