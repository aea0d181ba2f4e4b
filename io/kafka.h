/*
 * kafka: the only place that speaks librdkafka. It wraps a high-level
 * consumer in a group, a producer, a bounded reader of a whole topic, and
 * librdkafka's in-process mock cluster, behind types that carry no rdkafka
 * header, so daemon/ and tools/ never include it.
 *
 * Delivery contract (docs/INGEST.md, "Guarantees, and why"): the consumer never stores an
 * offset by itself. The owner calls kafka_consumer_commit() with the
 * positions its durable state covers; auto-commit then keeps committing
 * those stored positions on its interval, on revoke and on close.
 *
 * Threads: a consumer or producer may be used from one thread at a time,
 * except kafka_producer_send(), which is thread-safe. Callbacks run inside
 * kafka_consumer_drain() / kafka_producer_poll() on the calling thread.
 */
#ifndef DERRD_KAFKA_H
#define DERRD_KAFKA_H

#include <stddef.h>
#include <stdint.h>

/* Client properties (librdkafka's names: "bootstrap.servers", "sasl.*",
 * "ssl.*", ...), applied in order when a client is made. */
typedef struct kafka_config kafka_config_t;

kafka_config_t *kafka_config_new(void);
void kafka_config_free(kafka_config_t *cfg);
/* Adds or replaces key. Returns 0, or -EINVAL with the reason (librdkafka's)
 * in err when the key or value is invalid, or -ENOMEM. Refused too: what the
 * consumer sets itself (group.id, enable.auto.offset.store,
 * enable.partition.eof, enable.auto.commit) and the cooperative assignor, which its eager
 * rebalance handling does not support. */
int kafka_config_set(kafka_config_t *cfg, const char *key, const char *value, char *err,
                     size_t errlen);
/* The value of key, or NULL. */
const char *kafka_config_get(const kafka_config_t *cfg, const char *key);

typedef struct {
    int32_t partition;
    int64_t offset; /* next offset to read */
} kafka_pos_t;

/* A received message; every pointer is valid only inside the callback. */
typedef struct kafka_msg {
    const char *topic;
    int32_t partition;
    int64_t offset;
    int64_t timestamp_ms; /* -1 when absent */
    const void *key, *value;
    size_t key_len, value_len;
    const void *impl__;
} kafka_msg_t;

/* Finds the last header called name in m. Returns 0 with its value, or
 * -ENOENT. */
int kafka_msg_header(const kafka_msg_t *m, const char *name, const void **value,
                     size_t *len);

typedef struct {
    /* Where to start reading an assigned partition: an offset >= 0, or -1
     * for the group's committed offset (or the reset policy). */
    int64_t (*start_offset)(void *ud, int32_t partition);
    /* Assignment changes, after they took effect. */
    void (*assigned)(void *ud, const kafka_pos_t *parts, int n);
    void (*revoked)(void *ud, const kafka_pos_t *parts, int n);
    /* A client error; fatal = the consumer is unusable and the process
     * should exit non-zero. */
    void (*error)(void *ud, int fatal, const char *reason);
    void *ud;
} kafka_consumer_cbs_t;

typedef struct kafka_consumer kafka_consumer_t;

/* Creates a consumer of topic in group and subscribes. cfg supplies
 * bootstrap.servers and anything else; derrd sets group.id,
 * enable.auto.offset.store=false and, unless cfg sets them,
 * auto.offset.reset=earliest and the range assignor. Returns 0 or a negative
 * errno with a reason. */
int kafka_consumer_new(kafka_consumer_t **out, const kafka_config_t *cfg, const char *group,
                       const char *topic, const kafka_consumer_cbs_t *cbs, char *err,
                       size_t errlen);

/* Makes librdkafka write one byte to fd (a non-blocking pipe) whenever the
 * consumer's queue goes from empty to non-empty. */
void kafka_consumer_io_enable(kafka_consumer_t *c, int fd);

/* Serves callbacks and hands up to max messages to fn, without blocking.
 * Returns how many messages were handed over; fewer than max means the
 * queue is empty. Errors go to cbs->error. */
typedef void (*kafka_msg_fn)(void *ud, const kafka_msg_t *m);
int kafka_consumer_drain(kafka_consumer_t *c, int max, kafka_msg_fn fn, void *ud);

/* Pauses (pause = 1) or resumes fetching on every assigned partition, and on
 * partitions assigned later while paused. */
void kafka_consumer_pause(kafka_consumer_t *c, int pause);
int kafka_consumer_paused(const kafka_consumer_t *c);

/* Stores pos as durable and commits it, waiting at most wait_ms for the
 * broker's answer (wait_ms < 0: not at all). While no broker or no group
 * coordinator is up (librdkafka's last statistics) it only stores:
 * auto-commit sends the stored offsets once the coordinator is back. The consumer remembers the last
 * durable position of every partition: those not assigned now are stored
 * and committed when they are assigned again (one daemon per group: another
 * member's commits could be moved back). Returns 0 or a negative errno. */
int kafka_consumer_commit(kafka_consumer_t *c, const kafka_pos_t *pos, int n, int wait_ms);

typedef struct {
    int32_t partition;
    int64_t lag; /* messages behind the log end (high watermark - position); -1 unknown */
} kafka_lag_t;

/* Lag of each assigned partition, from the last fetch: fills up to max
 * entries and returns how many (0 when nothing is assigned). */
int kafka_consumer_lags(kafka_consumer_t *c, kafka_lag_t *out, int max);

/* Connections to brokers in state UP, from librdkafka's statistics (every
 * second unless kafka.statistics.interval.ms says otherwise); -1 before the
 * first statistics or when they are off. 0 = no broker reachable. */
int kafka_consumer_brokers_up(const kafka_consumer_t *c);

/* Leaves the group (committing the stored offsets) within timeout_ms and
 * frees everything; c may be NULL. While no broker or no group coordinator
 * is up it frees at once without leaving: a commit waiting for a
 * coordinator would hold librdkafka's teardown until the group session
 * times out. */
void kafka_consumer_close(kafka_consumer_t *c, int timeout_ms);

typedef struct kafka_producer kafka_producer_t;

typedef struct {
    const char *name;
    const void *value;
    size_t len;
} kafka_header_t;

/* A delivery report for the message m (valid inside the callback only):
 * error is NULL when it was delivered, else the reason it was not. */
typedef void (*kafka_delivery_fn)(void *ud, void *msg_opaque, const kafka_msg_t *m,
                                  const char *error);

/* Creates a producer (acks=all and idempotence on unless cfg says
 * otherwise). dr may be NULL. */
int kafka_producer_new(kafka_producer_t **out, const kafka_config_t *cfg, kafka_delivery_fn dr,
                       void *ud, char *err, size_t errlen);

/* Queues one message (copied). partition -1 = the partitioner decides.
 * Returns 0, -ENOBUFS when the local queue is full (poll and retry), or
 * another negative errno. */
int kafka_producer_send(kafka_producer_t *p, const char *topic, int32_t partition,
                        const void *key, size_t key_len, const void *value, size_t len,
                        const kafka_header_t *hdrs, int n_hdrs, void *msg_opaque);

/* Queues a copy of a message given to a delivery report (same topic,
 * partition, key, value and headers), for a retry after a failure. Returns
 * 0, -EEXIST without queueing when the message may be stored already (it
 * timed out while its request was in flight: a copy could be a duplicate),
 * -ENOBUFS, or -EIO. */
int kafka_producer_resend(kafka_producer_t *p, const kafka_msg_t *m, void *msg_opaque);

/* Serves delivery reports without blocking (timeout_ms = 0) or up to
 * timeout_ms. Returns the number of events served. */
int kafka_producer_poll(kafka_producer_t *p, int timeout_ms);
/* Waits up to timeout_ms for every queued message; returns 0 or -ETIMEDOUT. */
int kafka_producer_flush(kafka_producer_t *p, int timeout_ms);
/* Messages queued and not yet reported. */
int kafka_producer_outstanding(kafka_producer_t *p);
void kafka_producer_free(kafka_producer_t *p);

/* Creates topic with n partitions (replication 1) unless it exists. */
int kafka_topic_create(const kafka_config_t *cfg, const char *topic, int partitions,
                       int timeout_ms, char *err, size_t errlen);

/* Reads every message of topic from the start of each partition to its high
 * watermark at the time of the call, without a group, handing each to fn
 * (committed messages only: transaction markers and aborted messages are
 * skipped). Returns the count or a negative errno with a reason. */
int64_t kafka_topic_read(const kafka_config_t *cfg, const char *topic, kafka_msg_fn fn,
                         void *ud, int timeout_ms, char *err, size_t errlen);

/* librdkafka's in-process mock cluster: n brokers on loopback, reachable by
 * other processes while it lives. */
typedef struct kafka_mock kafka_mock_t;
int kafka_mock_new(kafka_mock_t **out, int brokers, char *err, size_t errlen);
const char *kafka_mock_bootstrap(const kafka_mock_t *m);
int kafka_mock_topic_create(kafka_mock_t *m, const char *topic, int partitions);
void kafka_mock_free(kafka_mock_t *m);

/* librdkafka's version string. */
const char *kafka_version(void);

#endif
