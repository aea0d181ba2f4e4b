/* The loop side of ingestion; see ingest.h. */
#include "daemon/ingest.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "io/buf.h"
#include "io/event.h"
#include "io/log.h"

/* Messages handled per loop iteration before yielding (a few ms of work). */
#define INGEST_BUDGET 4096
#define INGEST_LAG_TICK_MS 10
#define INGEST_LAG_WINDOW_MS 10000
#define INGEST_STALL_WARN_MS 100 /* a stall this long gets a log line */

#define HDR_REASON "derrd.reason"
#define HDR_TOPIC "derrd.source.topic"
#define HDR_PARTITION "derrd.source.partition"
#define HDR_OFFSET "derrd.source.offset"
#define HDR_TRUNCATED "derrd.truncated"

/* A dead letter keeps at most this much of the invalid message's value and
 * key: any broker's message size limit takes it, while a message as large
 * as the source topic allows might not fit the dead-letter topic. The
 * headers say where the whole message is. */
#define INGEST_DL_MAX_VALUE 65536
#define INGEST_DL_MAX_KEY 1024

struct ingest {
    uv_loop_t *loop;
    uv_poll_t poll;
    uv_timer_t backstop, lag_timer;
    uv_timer_t fail_timer; /* reports a failure from outside librdkafka's frames */
    uv_idle_t more;
    int open_handles;
    int pipefd[2];

    kafka_consumer_t *consumer;
    kafka_producer_t *dlq;
    char *topic, *dlq_topic;
    staging_t *stg;
    size_t max_staged;
    int backstop_ms;
    void (*fatal)(void *ud);
    void *ud;

    staging_batch_t *open;                   /* being filled */
    staging_batch_t *held_head, *held_tail;  /* sealed, waiting for dead letters */
    size_t held;                             /* events in open + held list */

    kafka_pos_t *next; /* next offset expected per partition, unsorted */
    int n_next, next_cap;
    kafka_pos_t *dl_seen; /* source positions already in the dead-letter topic, sorted */
    size_t n_dl_seen, dl_seen_cap;

    int stopping;
    uint64_t lag_last_ns;
    uint64_t lag_window_ns;  /* start of the current stall window */
    double lag_window_ms;    /* longest stall in it so far */
    int sched_fd;            /* the loop thread's /proc schedstat, -1 = none */
    uint64_t run_delay_ns;   /* its run-queue wait at the last tick */
    ingest_stats_t stats;
    log_ratelimit_t rl_invalid, rl_kafka, rl_stall;
};

/* ---- positions ------------------------------------------------------------------ */

static int64_t *ingest__next(ingest_t *in, int32_t partition)
{
    for (int k = 0; k < in->n_next; k++)
        if (in->next[k].partition == partition)
            return &in->next[k].offset;
    if (in->n_next == in->next_cap) {
        int cap = in->next_cap ? in->next_cap * 2 : 16;
        kafka_pos_t *next = realloc(in->next, (size_t)cap * sizeof(*next));
        if (!next)
            return NULL;
        in->next = next;
        in->next_cap = cap;
    }
    in->next[in->n_next] = (kafka_pos_t){ partition, -1 };
    return &in->next[in->n_next++].offset;
}

static int ingest__pos_cmp(const void *a, const void *b)
{
    const kafka_pos_t *x = a, *y = b;
    if (x->partition != y->partition)
        return x->partition < y->partition ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int ingest__dl_seen(const ingest_t *in, int32_t partition, int64_t offset)
{
    kafka_pos_t key = { partition, offset };
    return in->n_dl_seen &&
           bsearch(&key, in->dl_seen, in->n_dl_seen, sizeof(key), ingest__pos_cmp) != NULL;
}

/* ---- hand-off --------------------------------------------------------------------- */

static void ingest__fail_cb(uv_timer_t *h)
{
    ingest_t *in = h->data;
    if (in->fatal)
        in->fatal(in->ud);
}

/* Ingestion stops at once: no message is handled after this one, so no
 * later offset covers what failed. The owner hears of it on the next loop
 * turn: its shutdown destroys the Kafka clients, which must not happen
 * inside their own callbacks (the consumer would wait forever for the
 * message being handled). */
static void ingest__fail(ingest_t *in, const char *what)
{
    if (in->stats.fatal)
        return;
    log_err("ingest: %s; stopping", what);
    in->stats.fatal = 1;
    if (in->open_handles > 0)
        uv_timer_start(&in->fail_timer, ingest__fail_cb, 0, 0);
}

static void ingest__flow(ingest_t *in)
{
    size_t total = staging_depth(in->stg) + in->held;
    int paused = kafka_consumer_paused(in->consumer);
    if (!paused && total >= in->max_staged) {
        kafka_consumer_pause(in->consumer, 1);
        in->stats.pauses++;
        log_info("ingest: %zu events staged, pausing the partitions until the trainer catches "
                 "up", total);
    } else if (paused && total < in->max_staged / 2 && !in->stopping) {
        kafka_consumer_pause(in->consumer, 0);
    }
}

/* Moves the open batch to the held list, then hands over every batch at the
 * head of the list whose dead letters are all acknowledged, in order. */
static void ingest__release(ingest_t *in)
{
    if (in->open && in->open->n > 0) {
        if (in->held_tail)
            in->held_tail->next = in->open;
        else
            in->held_head = in->open;
        in->held_tail = in->open;
        in->open = NULL;
    }
    while (in->held_head && in->held_head->dlq_pending == 0) {
        staging_batch_t *b = in->held_head;
        in->held_head = b->next;
        if (!in->held_head)
            in->held_tail = NULL;
        in->held -= b->n;
        staging_push(in->stg, b);
    }
    if (!in->open && !(in->open = staging_batch_new()))
        ingest__fail(in, "out of memory");
    ingest__flow(in);
}

/* ---- messages ---------------------------------------------------------------------- */

/* Returns 0 once the dead letter is queued (or was sent before a crash),
 * -1 when it cannot be: then ingestion has failed, and the message must not
 * be staged, so that its offset is never covered. */
static int ingest__dead_letter(ingest_t *in, const kafka_msg_t *m, const char *why)
{
    if (ingest__dl_seen(in, m->partition, m->offset)) {
        in->stats.dead_letter_skipped++; /* sent before a crash */
        return 0;
    }
    char part[16], off[24], cut[64];
    snprintf(part, sizeof(part), "%" PRId32, m->partition);
    snprintf(off, sizeof(off), "%" PRId64, m->offset);
    size_t vlen = m->value_len < INGEST_DL_MAX_VALUE ? m->value_len : INGEST_DL_MAX_VALUE;
    size_t klen = m->key_len < INGEST_DL_MAX_KEY ? m->key_len : INGEST_DL_MAX_KEY;
    kafka_header_t h[] = {
        { HDR_REASON, why, strlen(why) },
        { HDR_TOPIC, in->topic, strlen(in->topic) },
        { HDR_PARTITION, part, strlen(part) },
        { HDR_OFFSET, off, strlen(off) },
        { HDR_TRUNCATED, cut, 0 },
    };
    int nh = 4;
    if (vlen < m->value_len || klen < m->key_len) {
        /* "value V key K": the original sizes in bytes. */
        h[nh++].len = (size_t)snprintf(cut, sizeof(cut), "value %zu key %zu", m->value_len,
                                       m->key_len);
        in->stats.dead_letter_truncated++;
    }
    for (int tries = 0;; tries++) {
        int rc = kafka_producer_send(in->dlq, in->dlq_topic, -1, m->key, klen, m->value, vlen,
                                     h, nh, in->open);
        if (rc == 0)
            break;
        if (rc != -ENOBUFS || tries == 100) {
            char what[160];
            snprintf(what, sizeof(what), "cannot queue a dead letter of %zu bytes: %s%s",
                     vlen + klen, strerror(-rc),
                     rc == -EMSGSIZE ? " (kafka.message.max.bytes is below it)" : "");
            ingest__fail(in, what);
            return -1;
        }
        /* The local queue is full (a long broker outage): serve reports
         * for a moment. Rare, bounded, and only for invalid events. */
        kafka_producer_poll(in->dlq, 10);
    }
    in->open->dlq_pending++;
    return 0;
}

static void ingest__on_msg(void *ud, const kafka_msg_t *m)
{
    ingest_t *in = ud;
    if (!in->open || in->stats.fatal)
        return;
    int64_t *next = ingest__next(in, m->partition);
    if (!next) {
        ingest__fail(in, "out of memory");
        return;
    }
    if (*next >= 0 && m->offset < *next) {
        in->stats.redelivered++; /* fetched again after a pause or rebalance */
        return;
    }
    *next = m->offset + 1;
    if (!in->stats.consumed++)
        in->stats.first_msg_ms = log_now_ms();

    event_t ev;
    char why[160];
    int rc = event_decode(m->value, m->value_len, &ev, why, sizeof(why));
    if (rc == -ENOMEM) {
        ingest__fail(in, "out of memory decoding an event");
        return;
    }
    if (rc == 0) {
        rc = staging_batch_add(in->open, ev.op == EVENT_FORGET ? STAGED_FORGET : STAGED_ADD,
                               m->partition, m->offset, ev.user, ev.user_len, ev.item,
                               ev.item_len);
    } else {
        in->stats.invalid++;
        uint64_t dropped;
        if (log_ratelimit_ok(&in->rl_invalid, 5000, &dropped))
            log_warn("ingest: invalid event at %s [%" PRId32 "] offset %" PRId64 ": %s%s "
                     "(%" PRIu64 " more since the last such line)", m->topic, m->partition,
                     m->offset, why, in->dlq ? "; dead-lettered" : "", dropped);
        if (in->dlq && ingest__dead_letter(in, m, why) < 0)
            return;
        rc = staging_batch_add(in->open, STAGED_SKIP, m->partition, m->offset, NULL, 0, NULL,
                               0);
    }
    if (rc < 0) {
        ingest__fail(in, "out of memory staging an event");
        return;
    }
    in->held++;
}

static void ingest__more_cb(uv_idle_t *h);

static void ingest__drain(ingest_t *in)
{
    if (in->stopping || in->stats.fatal)
        return;
    in->stats.wakeups++;
    int n = kafka_consumer_drain(in->consumer, INGEST_BUDGET, ingest__on_msg, in);
    if (in->dlq)
        kafka_producer_poll(in->dlq, 0);
    ingest__release(in);
    /* A full budget means more is queued, and librdkafka will not signal
     * the pipe again until the queue has been empty: come back next turn. */
    if (n == INGEST_BUDGET)
        uv_idle_start(&in->more, ingest__more_cb);
    else
        uv_idle_stop(&in->more);
}

static void ingest__more_cb(uv_idle_t *h) { ingest__drain(h->data); }

static void ingest__poll_cb(uv_poll_t *h, int status, int events)
{
    (void)events;
    ingest_t *in = h->data;
    char buf[256];
    if (status == 0)
        while (read(in->pipefd[0], buf, sizeof(buf)) > 0)
            ;
    ingest__drain(in);
}

static void ingest__backstop_cb(uv_timer_t *h) { ingest__drain(h->data); }

/* The loop thread's time spent runnable but waiting for a CPU, in ns
 * (schedstat's second field); the last value when the kernel does not say. */
static uint64_t ingest__run_delay_ns(ingest_t *in)
{
    char buf[96];
    if (in->sched_fd < 0)
        return in->run_delay_ns;
    ssize_t n = pread(in->sched_fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0)
        return in->run_delay_ns;
    buf[n] = 0;
    unsigned long long run_ns, wait_ns;
    if (sscanf(buf, "%llu %llu", &run_ns, &wait_ns) != 2)
        return in->run_delay_ns;
    return wait_ns;
}

/* A short repeating timer: how late it fires is how long the loop stalled.
 * The part of a stall the loop thread spent waiting for a CPU (other
 * processes, or derrd's own threads, had both cores) is counted apart: the
 * rest is the loop's own work or blocking. */
static void ingest__lag_cb(uv_timer_t *h)
{
    ingest_t *in = h->data;
    uint64_t now = uv_hrtime();
    uint64_t run_delay = ingest__run_delay_ns(in);
    if (in->lag_last_ns) {
        double late = (double)(now - in->lag_last_ns) / 1e6 - INGEST_LAG_TICK_MS;
        if (late < 0)
            late = 0;
        double waited = run_delay > in->run_delay_ns
                            ? (double)(run_delay - in->run_delay_ns) / 1e6 : 0.0;
        double own = late > waited ? late - waited : 0.0;
        if (late > in->stats.loop_lag_max_ms)
            in->stats.loop_lag_max_ms = late;
        if (own > in->stats.loop_lag_own_max_ms)
            in->stats.loop_lag_own_max_ms = own;
        if (late > in->lag_window_ms)
            in->lag_window_ms = late;
        uint64_t dropped;
        if (late >= INGEST_STALL_WARN_MS && log_ratelimit_ok(&in->rl_stall, 10000, &dropped))
            log_warn("ingest: the event loop stalled %.0f ms, %.0f ms of it waiting for a CPU "
                     "(%" PRIu64 " more such stalls since the last such line)", late, waited,
                     dropped);
    }
    in->run_delay_ns = run_delay;
    /* The recent figure: the longest stall of the last full window. */
    if (now - in->lag_window_ns >= (uint64_t)INGEST_LAG_WINDOW_MS * 1000000) {
        in->stats.loop_lag_recent_ms = in->lag_window_ms;
        in->lag_window_ms = 0;
        in->lag_window_ns = now;
    }
    in->lag_last_ns = now;
}

/* ---- Kafka callbacks ------------------------------------------------------------- */

static void ingest__delivered(void *ud, void *opaque, const kafka_msg_t *m, const char *error)
{
    ingest_t *in = ud;
    staging_batch_t *b = opaque;
    if (!error) {
        b->dlq_pending--;
        in->stats.dead_lettered++;
        return;
    }
    /* librdkafka already retried for message.timeout.ms; try again, so an
     * invalid event is never dropped while its offset moves on. */
    int rc = kafka_producer_resend(in->dlq, m, b);
    if (rc == -EEXIST) {
        /* Timed out in flight, it may be in the topic already, and a copy
         * could be a second one. Its event's offset stays uncovered: the
         * restart reads the topic back and sends it only if it is not. */
        char what[200];
        snprintf(what, sizeof(what), "a dead letter to %s timed out in flight (%s) and may be "
                 "there already; the restart sends it only if it is not", in->dlq_topic, error);
        ingest__fail(in, what);
        return;
    }
    if (rc < 0) {
        ingest__fail(in, "cannot re-queue a dead letter");
        return;
    }
    in->stats.dead_letter_retries++;
    uint64_t dropped;
    if (log_ratelimit_ok(&in->rl_kafka, 5000, &dropped))
        log_warn("ingest: dead letter to %s not delivered (%s); retrying", in->dlq_topic,
                 error);
}

static int64_t ingest__start_offset(void *ud, int32_t partition)
{
    ingest_t *in = ud;
    int64_t *next = ingest__next(in, partition);
    return next ? *next : -1;
}

static void ingest__assigned(void *ud, const kafka_pos_t *parts, int n)
{
    (void)ud;
    for (int k = 0; k < n; k++) {
        if (parts[k].offset >= 0)
            log_info("ingest: assigned partition %" PRId32 " from offset %" PRId64,
                     parts[k].partition, parts[k].offset);
        else
            log_info("ingest: assigned partition %" PRId32 " from the group's committed offset",
                     parts[k].partition);
    }
}

static void ingest__revoked(void *ud, const kafka_pos_t *parts, int n)
{
    (void)ud;
    log_info("ingest: %d partitions revoked", n);
    (void)parts;
}

static void ingest__kafka_error(void *ud, int fatal, const char *reason)
{
    ingest_t *in = ud;
    in->stats.kafka_errors++;
    if (fatal) {
        log_err("ingest: fatal Kafka error: %s", reason);
        ingest__fail(in, "the consumer cannot go on");
        return;
    }
    uint64_t dropped;
    if (log_ratelimit_ok(&in->rl_kafka, 10000, &dropped))
        log_warn("ingest: kafka: %s (%" PRIu64 " similar lines suppressed)", reason, dropped);
}

/* ---- dead-letter read-back ---------------------------------------------------------- */

typedef struct {
    ingest_t *in;
    const state_t *st;
    int oom; /* a position could not be kept: its dead letter would go twice */
} ingest_readback_t;

/* A header derrd wrote as "%lld" (anyone may write to the topic, so only
 * that form is taken), at most max. */
static int ingest__header_i64(const kafka_msg_t *m, const char *name, int64_t max, int64_t *out)
{
    const void *v;
    size_t len;
    uint64_t x;
    if (kafka_msg_header(m, name, &v, &len) || buf_parse_dec(v, len, (uint64_t)max, &x))
        return -1;
    *out = (int64_t)x;
    return 0;
}

static void ingest__readback_cb(void *ud, const kafka_msg_t *m)
{
    ingest_readback_t *rb = ud;
    ingest_t *in = rb->in;
    const void *t;
    size_t tlen;
    int64_t part, off;
    if (kafka_msg_header(m, HDR_TOPIC, &t, &tlen) || tlen != strlen(in->topic) ||
        memcmp(t, in->topic, tlen) != 0 || ingest__header_i64(m, HDR_PARTITION, INT32_MAX, &part) ||
        ingest__header_i64(m, HDR_OFFSET, INT64_MAX, &off))
        return;
    /* Only events the checkpoint does not cover can be read again. */
    if (off < state_position(rb->st, (int32_t)part))
        return;
    if (in->n_dl_seen == in->dl_seen_cap) {
        size_t cap = in->dl_seen_cap ? in->dl_seen_cap * 2 : 256;
        kafka_pos_t *v = realloc(in->dl_seen, cap * sizeof(*v));
        if (!v) {
            rb->oom = 1;
            return;
        }
        in->dl_seen = v;
        in->dl_seen_cap = cap;
    }
    in->dl_seen[in->n_dl_seen++] = (kafka_pos_t){ (int32_t)part, off };
}

/* ---- lifecycle -------------------------------------------------------------------------- */

int ingest_start(ingest_t **out, struct uv_loop_s *loop, const ingest_cfg_t *cfg, staging_t *stg,
                 const state_t *st, char *err, size_t errlen)
{
    *out = NULL;
    if (errlen > 0)
        err[0] = '\0'; /* the failure path below tells "no reason yet" by it */
    ingest_t *in = calloc(1, sizeof(*in));
    if (!in) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    in->loop = loop;
    in->stg = stg;
    in->max_staged = cfg->max_staged ? cfg->max_staged : 1;
    in->backstop_ms = cfg->backstop_ms > 0 ? cfg->backstop_ms : 100;
    in->fatal = cfg->fatal;
    in->ud = cfg->ud;
    in->pipefd[0] = in->pipefd[1] = -1;
    in->sched_fd = -1;
    in->topic = strdup(cfg->topic);
    in->open = staging_batch_new();
    int rc = -ENOMEM;
    if (!in->topic || !in->open) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (int k = 0; k < st->n_pos; k++) {
        int64_t *next = ingest__next(in, st->pos[k].partition);
        if (!next)
            goto fail;
        *next = st->pos[k].offset;
    }
    if (cfg->dead_letter_topic && *cfg->dead_letter_topic) {
        if (!(in->dlq_topic = strdup(cfg->dead_letter_topic)))
            goto fail;
        rc = kafka_producer_new(&in->dlq, cfg->kafka, ingest__delivered, in, err, errlen);
        if (rc)
            goto fail;
        ingest_readback_t rb = { in, st, 0 };
        int64_t n = kafka_topic_read(cfg->kafka, in->dlq_topic, ingest__readback_cb, &rb,
                                     60000, err, errlen);
        if (n < 0 && n != -ENOENT) {
            rc = (int)n;
            goto fail;
        }
        if (rb.oom) {
            snprintf(err, errlen, "dead-letter topic %s: out of memory reading it back",
                     in->dlq_topic);
            rc = -ENOMEM;
            goto fail;
        }
        if (in->n_dl_seen > 1)
            qsort(in->dl_seen, in->n_dl_seen, sizeof(*in->dl_seen), ingest__pos_cmp);
        log_info("ingest: dead-letter topic %s read back: %lld messages, %zu after the "
                 "checkpoint", in->dlq_topic, (long long)(n < 0 ? 0 : n), in->n_dl_seen);
    }
    kafka_consumer_cbs_t cbs = {
        .start_offset = ingest__start_offset,
        .assigned = ingest__assigned,
        .revoked = ingest__revoked,
        .error = ingest__kafka_error,
        .ud = in,
    };
    rc = kafka_consumer_new(&in->consumer, cfg->kafka, cfg->group, cfg->topic, &cbs, err,
                            errlen);
    if (rc)
        goto fail;
    if (pipe2(in->pipefd, O_NONBLOCK | O_CLOEXEC) < 0) {
        rc = -errno;
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        goto fail;
    }
    kafka_consumer_io_enable(in->consumer, in->pipefd[1]);

    uv_poll_init(loop, &in->poll, in->pipefd[0]);
    uv_timer_init(loop, &in->backstop);
    uv_timer_init(loop, &in->lag_timer);
    uv_timer_init(loop, &in->fail_timer);
    uv_idle_init(loop, &in->more);
    in->poll.data = in->backstop.data = in->lag_timer.data = in->fail_timer.data = in;
    in->more.data = in;
    in->open_handles = 5;
    uv_poll_start(&in->poll, UV_READABLE, ingest__poll_cb);
    uv_timer_start(&in->backstop, ingest__backstop_cb, (uint64_t)in->backstop_ms,
                   (uint64_t)in->backstop_ms);
    /* The loop runs on this thread. Without schedstat (not Linux, or a
     * kernel without it) every stall counts as the loop's own. */
    in->sched_fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
    uv_timer_start(&in->lag_timer, ingest__lag_cb, INGEST_LAG_TICK_MS, INGEST_LAG_TICK_MS);
    *out = in;
    return 0;
fail:
    if (rc == -ENOMEM && !*err)
        snprintf(err, errlen, "out of memory");
    kafka_consumer_close(in->consumer, 1000);
    kafka_producer_free(in->dlq);
    for (int k = 0; k < 2; k++)
        if (in->pipefd[k] >= 0)
            close(in->pipefd[k]);
    staging_batch_free(in->open);
    free(in->next);
    free(in->dl_seen);
    free(in->topic);
    free(in->dlq_topic);
    free(in);
    return rc;
}

void ingest_commit(ingest_t *in, const kafka_pos_t *pos, int n)
{
    kafka_consumer_commit(in->consumer, pos, n, -1);
}

void ingest_kick(ingest_t *in) { ingest__flow(in); }

void ingest_stats(ingest_t *in, ingest_stats_t *out)
{
    in->stats.staged = staging_depth(in->stg) + in->held;
    in->stats.paused = kafka_consumer_paused(in->consumer);
    kafka_lag_t lags[1024];
    int n = kafka_consumer_lags(in->consumer, lags, 1024);
    in->stats.lag = n > 0 ? 0 : -1;
    for (int k = 0; k < n && in->stats.lag >= 0; k++)
        in->stats.lag = lags[k].lag >= 0 ? in->stats.lag + lags[k].lag : -1;
    in->stats.n_part_lag = n < INGEST_LAG_PARTS ? n : INGEST_LAG_PARTS;
    memcpy(in->stats.part_lag, lags, (size_t)in->stats.n_part_lag * sizeof(lags[0]));
    in->stats.brokers_up = kafka_consumer_brokers_up(in->consumer);
    *out = in->stats;
}

size_t ingest_stop(ingest_t *in, int timeout_ms)
{
    in->stopping = 1;
    uv_poll_stop(&in->poll);
    uv_timer_stop(&in->backstop);
    uv_idle_stop(&in->more);
    ingest__release(in);
    uint64_t deadline = log_now_ms() + (uint64_t)timeout_ms;
    while (in->held_head && log_now_ms() < deadline) {
        kafka_producer_poll(in->dlq, 50);
        ingest__release(in);
    }
    if (in->held)
        log_warn("ingest: %zu events wait for dead-letter acknowledgements; they will be "
                 "read again after the restart", in->held);
    return in->held;
}

static void ingest__closed_cb(uv_handle_t *h)
{
    ingest_t *in = h->data;
    if (--in->open_handles > 0)
        return;
    for (int k = 0; k < 2; k++)
        if (in->pipefd[k] >= 0)
            close(in->pipefd[k]);
    if (in->sched_fd >= 0)
        close(in->sched_fd);
    while (in->held_head) {
        staging_batch_t *b = in->held_head;
        in->held_head = b->next;
        staging_batch_free(b);
    }
    staging_batch_free(in->open);
    free(in->next);
    free(in->dl_seen);
    free(in->topic);
    free(in->dlq_topic);
    free(in);
}

void ingest_close(ingest_t *in, const kafka_pos_t *pos, int n, int timeout_ms)
{
    if (n > 0)
        kafka_consumer_commit(in->consumer, pos, n, timeout_ms);
    kafka_consumer_close(in->consumer, timeout_ms);
    in->consumer = NULL;
    if (in->dlq) {
        kafka_producer_flush(in->dlq, 1000);
        kafka_producer_free(in->dlq);
        in->dlq = NULL;
    }
    uv_close((uv_handle_t *)&in->poll, ingest__closed_cb);
    uv_close((uv_handle_t *)&in->backstop, ingest__closed_cb);
    uv_close((uv_handle_t *)&in->lag_timer, ingest__closed_cb);
    uv_close((uv_handle_t *)&in->fail_timer, ingest__closed_cb);
    uv_close((uv_handle_t *)&in->more, ingest__closed_cb);
}
