/*
 * librdkafka behind io/kafka.h. Facts this file relies on (librdkafka 2.0.2,
 * see ../shared/NOTES-kafka.md): offsets_store() stores .offset as given (the
 * next offset to read); the batch consume APIs mis-store offsets around
 * pause/resume, so messages come one at a time from consumer_poll; the
 * cooperative assignor hangs on close, so the eager range assignor is the
 * default; consumer_close() can block, so closing is bounded by a deadline.
 */
#include "io/kafka.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/log.h"

/* ---- config ---------------------------------------------------------------- */

struct kafka_config {
    char **keys, **vals;
    int n, cap;
};

kafka_config_t *kafka_config_new(void) { return calloc(1, sizeof(kafka_config_t)); }

void kafka_config_free(kafka_config_t *cfg)
{
    if (!cfg)
        return;
    for (int k = 0; k < cfg->n; k++) {
        free(cfg->keys[k]);
        free(cfg->vals[k]);
    }
    free(cfg->keys);
    free(cfg->vals);
    free(cfg);
}

const char *kafka_config_get(const kafka_config_t *cfg, const char *key)
{
    for (int k = cfg ? cfg->n - 1 : -1; k >= 0; k--)
        if (strcmp(cfg->keys[k], key) == 0)
            return cfg->vals[k];
    return NULL;
}

/* Properties a kafka.* setting may not change: derrd's offset handling and
 * rebalance handler rely on them (io/kafka.h). NULL value: any value. */
static const struct {
    const char *key, *value, *why;
} kafka__refused[] = {
    { "group.id", NULL, "derrd sets it (--group)" },
    { "enable.auto.offset.store", NULL,
      "derrd stores offsets itself, once its checkpoint covers them" },
    { "enable.partition.eof", NULL, "derrd sets it" },
    { "enable.auto.commit", NULL,
      "derrd relies on it to commit what it stored while no coordinator answered" },
    { "partition.assignment.strategy", "cooperative-sticky",
      "derrd's rebalance handling is eager: range or roundrobin" },
};

int kafka_config_set(kafka_config_t *cfg, const char *key, const char *value, char *err,
                     size_t errlen)
{
    for (size_t k = 0; k < sizeof(kafka__refused) / sizeof(kafka__refused[0]); k++)
        if (strcmp(key, kafka__refused[k].key) == 0 &&
            (!kafka__refused[k].value || strstr(value, kafka__refused[k].value))) {
            snprintf(err, errlen, "not settable: %s", kafka__refused[k].why);
            return -EINVAL;
        }
    /* Validate against librdkafka's own table now, so a bad key is reported
     * where it was written, not when a client is made. */
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    char why[512];
    rd_kafka_conf_res_t res = rd_kafka_conf_set(conf, key, value, why, sizeof(why));
    rd_kafka_conf_destroy(conf);
    if (res != RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "%s", why);
        return -EINVAL;
    }
    for (int k = 0; k < cfg->n; k++)
        if (strcmp(cfg->keys[k], key) == 0) {
            char *v = strdup(value);
            if (!v)
                goto nomem;
            free(cfg->vals[k]);
            cfg->vals[k] = v;
            return 0;
        }
    if (cfg->n == cfg->cap) {
        int cap = cfg->cap ? cfg->cap * 2 : 16;
        char **keys = realloc(cfg->keys, (size_t)cap * sizeof(*keys));
        if (!keys)
            goto nomem;
        cfg->keys = keys;
        char **vals = realloc(cfg->vals, (size_t)cap * sizeof(*vals));
        if (!vals)
            goto nomem;
        cfg->vals = vals;
        cfg->cap = cap;
    }
    cfg->keys[cfg->n] = strdup(key);
    cfg->vals[cfg->n] = strdup(value);
    if (!cfg->keys[cfg->n] || !cfg->vals[cfg->n]) {
        free(cfg->keys[cfg->n]);
        free(cfg->vals[cfg->n]);
        goto nomem;
    }
    cfg->n++;
    return 0;
nomem:
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
}

/* librdkafka's log lines go to ours, at the same syslog level. */
static void kafka__log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    /* One kafka.* table configures every client, so a consumer property
     * reaching the dead-letter producer (or the reverse) is expected. */
    if (strcmp(fac, "CONFWARN") == 0 &&
        (strstr(buf, "is a consumer property") || strstr(buf, "is a producer property")))
        level = LOG_LVL_DEBUG;
    log_msg(level < LOG_LVL_ERR ? LOG_LVL_ERR : level, "kafka %s: %s: %s",
            rd_kafka_name(rk), fac, buf);
}

/* A conf with cfg's pairs, then the forced pairs (NULL-terminated key,
 * value list), then the defaults (used only when cfg lacks the key). */
static rd_kafka_conf_t *kafka__conf(const kafka_config_t *cfg, const char *const *forced,
                                    const char *const *defaults, char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    rd_kafka_conf_set_log_cb(conf, kafka__log_cb);
    char why[512];
    for (int k = 0; defaults && defaults[k]; k += 2)
        if (!kafka_config_get(cfg, defaults[k]) &&
            rd_kafka_conf_set(conf, defaults[k], defaults[k + 1], why, sizeof(why)) !=
                RD_KAFKA_CONF_OK)
            goto bad;
    for (int k = 0; cfg && k < cfg->n; k++)
        if (rd_kafka_conf_set(conf, cfg->keys[k], cfg->vals[k], why, sizeof(why)) !=
            RD_KAFKA_CONF_OK)
            goto bad;
    for (int k = 0; forced && forced[k]; k += 2)
        if (rd_kafka_conf_set(conf, forced[k], forced[k + 1], why, sizeof(why)) !=
            RD_KAFKA_CONF_OK)
            goto bad;
    return conf;
bad:
    snprintf(err, errlen, "kafka config: %s", why);
    rd_kafka_conf_destroy(conf);
    return NULL;
}

const char *kafka_version(void) { return rd_kafka_version_str(); }

int kafka_msg_header(const kafka_msg_t *m, const char *name, const void **value, size_t *len)
{
    rd_kafka_headers_t *hdrs;
    const rd_kafka_message_t *rkm = m->impl__;
    if (!rkm || rd_kafka_message_headers(rkm, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(hdrs, name, value, len) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return -ENOENT;
    return 0;
}

static void kafka__msg_view(const rd_kafka_message_t *rkm, kafka_msg_t *m)
{
    rd_kafka_timestamp_type_t tstype;
    *m = (kafka_msg_t){
        .topic = rd_kafka_topic_name(rkm->rkt),
        .partition = rkm->partition,
        .offset = rkm->offset,
        .timestamp_ms = rd_kafka_message_timestamp(rkm, &tstype),
        .key = rkm->key,
        .key_len = rkm->key_len,
        .value = rkm->payload,
        .value_len = rkm->len,
        .impl__ = rkm,
    };
}

/* ---- consumer ---------------------------------------------------------------- */

struct kafka_consumer {
    rd_kafka_t *rk;
    rd_kafka_queue_t *queue; /* the consumer queue, main queue forwarded to it */
    char *topic;
    kafka_consumer_cbs_t cbs;
    int paused;
    int resume_owed; /* resumed while nothing was assigned: librdkafka may still
                      * hold partitions paused from before the unassign */
    rd_kafka_topic_partition_list_t *assigned; /* current assignment, or NULL */
    /* The last durable position of every partition ever given to
     * kafka_consumer_commit(), assigned or not: stored again on each
     * assignment, because librdkafka forgets stored offsets when it
     * unassigns, and a commit that failed before a rebalance (coordinator
     * down, session lost) would otherwise never be retried. */
    rd_kafka_topic_partition_list_t *durable;
    int brokers_up;      /* from the last statistics; -1 before the first */
    int coord_up;        /* the group's coordinator known and up (1), not (0), -1 unknown */
    int sync_failed;     /* the last commit that waited for its answer got none or an error */
};

static void kafka__list_free(rd_kafka_topic_partition_list_t *l)
{
    if (l)
        rd_kafka_topic_partition_list_destroy(l);
}

static kafka_pos_t *kafka__positions(const rd_kafka_topic_partition_list_t *l, int *n)
{
    kafka_pos_t *pos = calloc((size_t)(l->cnt ? l->cnt : 1), sizeof(*pos));
    *n = pos ? l->cnt : 0;
    for (int k = 0; pos && k < l->cnt; k++)
        pos[k] = (kafka_pos_t){ l->elems[k].partition, l->elems[k].offset };
    return pos;
}

static int kafka__store_commit(kafka_consumer_t *c, rd_kafka_topic_partition_list_t *l,
                               int wait_ms);
static void kafka__destroy(kafka_consumer_t *c, int closed, int timeout_ms);

/* No broker, or no group coordinator, reachable by the last statistics
 * (served by the consumer's poll: during a shutdown they are as old as the
 * shutdown): a commit would wait for a coordinator, and librdkafka's
 * teardown with it, until the group session times out (57 s measured). */
static int kafka__no_coordinator(const kafka_consumer_t *c)
{
    return c->brokers_up == 0 || c->coord_up == 0;
}

/* After an assignment: stores and commits the durable positions of the
 * assigned partitions again (see struct kafka_consumer). */
static void kafka__recommit(kafka_consumer_t *c)
{
    if (!c->durable || !c->assigned)
        return;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(c->durable->cnt);
    for (int k = 0; k < c->durable->cnt; k++)
        if (rd_kafka_topic_partition_list_find(c->assigned, c->topic,
                                               c->durable->elems[k].partition))
            rd_kafka_topic_partition_list_add(l, c->topic, c->durable->elems[k].partition)
                ->offset = c->durable->elems[k].offset;
    if (l->cnt > 0)
        kafka__store_commit(c, l, -1);
    rd_kafka_topic_partition_list_destroy(l);
}

static void kafka__rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    kafka_consumer_t *c = opaque;
    int n;
    kafka_pos_t *pos;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        for (int k = 0; k < parts->cnt; k++) {
            int64_t off = c->cbs.start_offset ? c->cbs.start_offset(c->cbs.ud,
                                                                    parts->elems[k].partition)
                                              : -1;
            parts->elems[k].offset = off >= 0 ? off : RD_KAFKA_OFFSET_STORED;
        }
        rd_kafka_resp_err_t e = rd_kafka_assign(rk, parts);
        if (e) {
            log_err("kafka: assign failed: %s", rd_kafka_err2str(e));
            return;
        }
        /* librdkafka keeps a partition's pause across an unassign: one
         * paused before a revoke, and resumed while nothing was assigned
         * (kafka_consumer_pause had no partition to resume), would stay
         * paused for good. So that resume is made here. Only then: a
         * resume of every new assignment held librdkafka's teardown for
         * commits (tests/kafka/faults.sh, the stop with the coordinator
         * down: 10 s against 6 ms). */
        if (c->paused)
            rd_kafka_pause_partitions(rk, parts);
        else if (c->resume_owed)
            rd_kafka_resume_partitions(rk, parts);
        c->resume_owed = 0;
        kafka__list_free(c->assigned);
        c->assigned = rd_kafka_topic_partition_list_copy(parts);
        kafka__recommit(c);
        pos = kafka__positions(parts, &n);
        if (c->cbs.assigned && pos)
            c->cbs.assigned(c->cbs.ud, pos, n);
        free(pos);
    } else {
        pos = kafka__positions(parts, &n);
        if (c->cbs.revoked && pos)
            c->cbs.revoked(c->cbs.ud, pos, n);
        free(pos);
        rd_kafka_assign(rk, NULL);
        kafka__list_free(c->assigned);
        c->assigned = NULL;
        if (err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
            log_warn("kafka: rebalance: %s", rd_kafka_err2str(err));
    }
}

static void kafka__error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    kafka_consumer_t *c = opaque;
    char buf[512];
    int fatal = 0;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        fatal = 1;
        rd_kafka_fatal_error(rk, buf, sizeof(buf));
        reason = buf;
    }
    if (c->cbs.error)
        c->cbs.error(c->cbs.ud, fatal, reason);
}

static void kafka__commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    (void)rk;
    (void)offsets;
    (void)opaque;
    static log_ratelimit_t rl;
    uint64_t dropped;
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET && log_ratelimit_ok(&rl, 10000, &dropped))
        log_warn("kafka: offset commit failed: %s (retried on the next commit; %llu "
                 "similar lines suppressed)", rd_kafka_err2str(err),
                 (unsigned long long)dropped);
}

/* librdkafka's statistics (every statistics.interval.ms): counts the
 * connections in state "UP" (a reachable cluster keeps at least one, the
 * group coordinator's; none means no broker can be reached), and notes
 * whether the group has a coordinator it is connected to (cgrp "up"). */
static int kafka__stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    (void)rk;
    kafka_consumer_t *c = opaque;
    json_t *root = json_loadb(json, len, 0, NULL);
    json_t *brokers = root ? json_object_get(root, "brokers") : NULL;
    if (json_is_object(brokers)) {
        int up = 0;
        const char *name;
        json_t *b;
        json_object_foreach(brokers, name, b) {
            const char *state = json_string_value(json_object_get(b, "state"));
            up += state && strcmp(state, "UP") == 0;
        }
        c->brokers_up = up;
    }
    json_t *cgrp = root ? json_object_get(root, "cgrp") : NULL;
    const char *cstate = json_string_value(json_object_get(cgrp, "state"));
    if (cstate)
        c->coord_up = strcmp(cstate, "up") == 0;
    json_decref(root);
    return 0; /* librdkafka frees json */
}

int kafka_consumer_new(kafka_consumer_t **out, const kafka_config_t *cfg, const char *group,
                       const char *topic, const kafka_consumer_cbs_t *cbs, char *err,
                       size_t errlen)
{
    *out = NULL;
    kafka_consumer_t *c = calloc(1, sizeof(*c));
    if (!c || !(c->topic = strdup(topic))) {
        free(c);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    c->cbs = *cbs;
    c->brokers_up = -1;
    c->coord_up = -1;
    const char *forced[] = { "group.id", group, "enable.auto.offset.store", "false",
                             "enable.partition.eof", "false", NULL };
    const char *defaults[] = { "auto.offset.reset", "earliest",
                               "partition.assignment.strategy", "range",
                               "enable.auto.commit", "true",
                               "auto.commit.interval.ms", "1000",
                               /* 2.0.2 backs off fetching for a second once
                                * this many messages wait locally (the knob
                                * for that pause came in 2.4.0); let the byte
                                * limit, queued.max.messages.kbytes, rule. */
                               "queued.min.messages", "1000000",
                               /* for kafka_consumer_brokers_up() */
                               "statistics.interval.ms", "1000", NULL };
    rd_kafka_conf_t *conf = kafka__conf(cfg, forced, defaults, err, errlen);
    if (!conf)
        goto fail;
    rd_kafka_conf_set_opaque(conf, c);
    rd_kafka_conf_set_stats_cb(conf, kafka__stats_cb);
    rd_kafka_conf_set_rebalance_cb(conf, kafka__rebalance_cb);
    rd_kafka_conf_set_error_cb(conf, kafka__error_cb);
    rd_kafka_conf_set_offset_commit_cb(conf, kafka__commit_cb);
    char why[512];
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
    if (!c->rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(err, errlen, "kafka consumer: %s", why);
        goto fail;
    }
    rd_kafka_poll_set_consumer(c->rk);
    c->queue = rd_kafka_queue_get_consumer(c->rk);
    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(sub, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(c->rk, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    if (e) {
        snprintf(err, errlen, "kafka subscribe %s: %s", topic, rd_kafka_err2str(e));
        goto fail;
    }
    *out = c;
    return 0;
fail:
    if (c->queue)
        rd_kafka_queue_destroy(c->queue);
    if (c->rk)
        rd_kafka_destroy_flags(c->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    free(c->topic);
    free(c);
    return -EINVAL;
}

void kafka_consumer_io_enable(kafka_consumer_t *c, int fd)
{
    /* A pipe takes the 1-byte payload; an eventfd would need 8. */
    static const char one = 'k';
    rd_kafka_queue_io_event_enable(c->queue, fd, &one, 1);
}

int kafka_consumer_drain(kafka_consumer_t *c, int max, kafka_msg_fn fn, void *ud)
{
    int n = 0;
    while (n < max) {
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(c->rk, 0);
        if (!rkm)
            break;
        if (rkm->err) {
            if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF && c->cbs.error)
                c->cbs.error(c->cbs.ud, rkm->err == RD_KAFKA_RESP_ERR__FATAL,
                             rd_kafka_message_errstr(rkm));
            rd_kafka_message_destroy(rkm);
            continue;
        }
        kafka_msg_t m;
        kafka__msg_view(rkm, &m);
        fn(ud, &m);
        rd_kafka_message_destroy(rkm);
        n++;
    }
    return n;
}

void kafka_consumer_pause(kafka_consumer_t *c, int pause)
{
    if (c->paused == !!pause)
        return;
    c->paused = !!pause;
    if (!c->assigned || c->assigned->cnt == 0) {
        c->resume_owed = !pause; /* made on the next assignment */
        return;
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_copy(c->assigned);
    rd_kafka_resp_err_t e = pause ? rd_kafka_pause_partitions(c->rk, l)
                                  : rd_kafka_resume_partitions(c->rk, l);
    if (e)
        log_warn("kafka: %s: %s", pause ? "pause" : "resume", rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_destroy(l);
}

int kafka_consumer_paused(const kafka_consumer_t *c) { return c->paused; }

int kafka_consumer_commit(kafka_consumer_t *c, const kafka_pos_t *pos, int n, int wait_ms)
{
    if (!c->durable && !(c->durable = rd_kafka_topic_partition_list_new(n ? n : 1)))
        return -ENOMEM;
    for (int k = 0; k < n; k++) {
        if (pos[k].offset < 0)
            continue;
        rd_kafka_topic_partition_t *d =
            rd_kafka_topic_partition_list_find(c->durable, c->topic, pos[k].partition);
        if (!d)
            d = rd_kafka_topic_partition_list_add(c->durable, c->topic, pos[k].partition);
        d->offset = pos[k].offset;
    }
    if (!c->assigned)
        return 0; /* kept in c->durable: committed on the next assignment */
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n ? n : 1);
    for (int k = 0; k < n; k++) {
        if (pos[k].offset < 0 ||
            !rd_kafka_topic_partition_list_find(c->assigned, c->topic, pos[k].partition))
            continue;
        rd_kafka_topic_partition_list_add(l, c->topic, pos[k].partition)->offset =
            pos[k].offset;
    }
    int rc = kafka__store_commit(c, l, wait_ms);
    rd_kafka_topic_partition_list_destroy(l);
    return rc;
}

/* Commits l, waiting at most wait_ms for the result: rd_kafka_commit's own
 * synchronous form waits without bound (for a coordinator, during a broker
 * outage up to session.timeout.ms), which a shutdown cannot afford. */
static rd_kafka_resp_err_t kafka__commit_wait(kafka_consumer_t *c,
                                              rd_kafka_topic_partition_list_t *l, int wait_ms)
{
    rd_kafka_queue_t *q = rd_kafka_queue_new(c->rk);
    if (!q)
        return RD_KAFKA_RESP_ERR__FAIL;
    rd_kafka_resp_err_t e = rd_kafka_commit_queue(c->rk, l, q, NULL, NULL);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
        e = RD_KAFKA_RESP_ERR__TIMED_OUT;
        uint64_t deadline = log_now_ms() + (uint64_t)wait_ms;
        for (;;) {
            uint64_t now = log_now_ms();
            if (now >= deadline)
                break;
            uint64_t left = deadline - now;
            rd_kafka_event_t *ev = rd_kafka_queue_poll(q, left < 100 ? (int)left : 100);
            if (!ev)
                continue;
            int done = rd_kafka_event_type(ev) == RD_KAFKA_EVENT_OFFSET_COMMIT;
            if (done)
                e = rd_kafka_event_error(ev);
            rd_kafka_event_destroy(ev);
            if (done)
                break;
        }
    }
    rd_kafka_queue_destroy(q); /* a late result holds its own reference */
    return e;
}

/* Stores l's offsets and commits them; wait_ms < 0: without waiting. */
static int kafka__store_commit(kafka_consumer_t *c, rd_kafka_topic_partition_list_t *l,
                               int wait_ms)
{
    int rc = 0;
    if (l->cnt > 0) {
        rd_kafka_resp_err_t e = rd_kafka_offsets_store(c->rk, l);
        for (int k = 0; k < l->cnt; k++)
            if (l->elems[k].err && l->elems[k].err != RD_KAFKA_RESP_ERR__STATE)
                e = l->elems[k].err;
        if (e && e != RD_KAFKA_RESP_ERR__STATE) {
            log_warn("kafka: offset store: %s", rd_kafka_err2str(e));
            rc = -EIO;
        }
        if (kafka__no_coordinator(c))
            return rc; /* stored: auto-commit sends it once a coordinator is back */
        e = wait_ms < 0 ? rd_kafka_commit(c->rk, l, 1) : kafka__commit_wait(c, l, wait_ms);
        if (wait_ms >= 0)
            c->sync_failed = e && e != RD_KAFKA_RESP_ERR__NO_OFFSET;
        if (e && e != RD_KAFKA_RESP_ERR__NO_OFFSET) {
            if (wait_ms >= 0)
                log_warn("kafka: commit: %s%s", rd_kafka_err2str(e),
                         e == RD_KAFKA_RESP_ERR__TIMED_OUT
                             ? " (not confirmed in time; a restart reads from the checkpoint's "
                               "positions anyway)"
                             : "");
            rc = -EIO;
        }
    }
    return rc;
}

int kafka_consumer_lags(kafka_consumer_t *c, kafka_lag_t *out, int max)
{
    if (!c->assigned)
        return 0;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_copy(c->assigned);
    int known = rd_kafka_position(c->rk, l) == RD_KAFKA_RESP_ERR_NO_ERROR;
    int n = 0;
    for (int k = 0; k < l->cnt && n < max; k++, n++) {
        int64_t lo, hi;
        out[n] = (kafka_lag_t){ l->elems[k].partition, -1 };
        if (known &&
            rd_kafka_get_watermark_offsets(c->rk, c->topic, l->elems[k].partition, &lo, &hi) ==
                RD_KAFKA_RESP_ERR_NO_ERROR &&
            hi >= 0) {
            /* No position until the first fetch after an assignment: then
             * the offset it was assigned from, or the log start. */
            int64_t at = l->elems[k].offset >= 0            ? l->elems[k].offset
                         : c->assigned->elems[k].offset >= 0 ? c->assigned->elems[k].offset
                                                             : lo;
            out[n].lag = hi > at ? hi - at : 0;
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
    return n;
}

int kafka_consumer_brokers_up(const kafka_consumer_t *c) { return c->brokers_up; }

void kafka_consumer_close(kafka_consumer_t *c, int timeout_ms)
{
    if (!c)
        return;
    int closed = 0;
    if (kafka__no_coordinator(c) || c->sync_failed) {
        log_notice("kafka: %s: not leaving the group (its membership times out; a restart "
                   "reads from the checkpoint's positions)",
                   c->sync_failed            ? "the last commit went unanswered"
                   : c->brokers_up == 0     ? "no broker reachable"
                                             : "no group coordinator reachable");
        kafka__destroy(c, 0, timeout_ms);
        return;
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(c->rk);
    rd_kafka_error_t *e = rd_kafka_consumer_close_queue(c->rk, q);
    if (e) {
        log_warn("kafka: close: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    } else {
        uint64_t deadline = log_now_ms() + (uint64_t)timeout_ms;
        while (!(closed = rd_kafka_consumer_closed(c->rk)) && log_now_ms() < deadline) {
            /* Serves the rebalance callback of the final revoke. */
            rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 100);
            if (!ev)
                continue;
            if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE)
                kafka__rebalance_cb(c->rk, rd_kafka_event_error(ev),
                                    rd_kafka_event_topic_partition_list(ev), c);
            rd_kafka_event_destroy(ev);
        }
        if (!closed)
            log_warn("kafka: consumer did not close within %d ms; leaving the group to "
                     "time out", timeout_ms);
    }
    rd_kafka_queue_destroy(q);
    kafka__destroy(c, closed, timeout_ms);
}

/* librdkafka's teardown, on a thread of its own: it waits for commits that
 * have no coordinator until the group session times out, whatever the
 * destroy flags (45 s by default, more with static membership), which a
 * shutdown cannot afford. The last of the thread and its caller to let go
 * frees it. */
typedef struct {
    kafka_consumer_t *c;
    int flags;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, abandoned;
} kafka_teardown_t;

static void kafka__consumer_free(kafka_consumer_t *c)
{
    kafka__list_free(c->assigned);
    kafka__list_free(c->durable);
    free(c->topic);
    free(c);
}

static void kafka__teardown_free(kafka_teardown_t *t)
{
    kafka__consumer_free(t->c);
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

static void *kafka__teardown(void *arg)
{
    kafka_teardown_t *t = arg;
    rd_kafka_destroy_flags(t->c->rk, t->flags);
    pthread_mutex_lock(&t->mu);
    t->done = 1;
    int abandoned = t->abandoned;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    if (abandoned)
        kafka__teardown_free(t);
    return NULL;
}

static void kafka__destroy(kafka_consumer_t *c, int closed, int timeout_ms)
{
    rd_kafka_queue_destroy(c->queue);
    int flags = closed ? 0 : RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE;
    kafka_teardown_t *t = calloc(1, sizeof(*t));
    pthread_condattr_t ca;
    pthread_t th;
    int ok = t && pthread_condattr_init(&ca) == 0;
    if (ok) {
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        ok = pthread_cond_init(&t->cv, &ca) == 0;
        pthread_condattr_destroy(&ca);
        if (ok && pthread_mutex_init(&t->mu, NULL) != 0) {
            pthread_cond_destroy(&t->cv);
            ok = 0;
        }
    }
    if (ok) {
        t->c = c;
        t->flags = flags;
        ok = pthread_create(&th, NULL, kafka__teardown, t) == 0;
        if (!ok) {
            pthread_cond_destroy(&t->cv);
            pthread_mutex_destroy(&t->mu);
        }
    }
    if (!ok) { /* no thread: unbounded, but done */
        free(t);
        rd_kafka_destroy_flags(c->rk, flags);
        kafka__consumer_free(c);
        return;
    }
    struct timespec until = log_deadline((uint64_t)timeout_ms);
    pthread_mutex_lock(&t->mu);
    while (!t->done && pthread_cond_timedwait(&t->cv, &t->mu, &until) != ETIMEDOUT)
        ;
    int done = t->done;
    t->abandoned = !done;
    pthread_mutex_unlock(&t->mu);
    if (done) {
        pthread_join(th, NULL);
        kafka__teardown_free(t);
    } else {
        pthread_detach(th);
        log_warn("kafka: librdkafka's teardown did not end within %d ms (commits waiting for "
                 "a group coordinator); going on without it", timeout_ms);
    }
}

/* ---- producer ------------------------------------------------------------------ */

struct kafka_producer {
    rd_kafka_t *rk;
    kafka_delivery_fn dr;
    void *ud;
};

static void kafka__dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque)
{
    (void)rk;
    kafka_producer_t *p = opaque;
    if (!p->dr)
        return;
    kafka_msg_t m;
    kafka__msg_view(rkm, &m);
    p->dr(p->ud, rkm->_private, &m, rkm->err ? rd_kafka_err2str(rkm->err) : NULL);
}

int kafka_producer_new(kafka_producer_t **out, const kafka_config_t *cfg, kafka_delivery_fn dr,
                       void *ud, char *err, size_t errlen)
{
    *out = NULL;
    kafka_producer_t *p = calloc(1, sizeof(*p));
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    p->dr = dr;
    p->ud = ud;
    const char *defaults[] = { "enable.idempotence", "true", "acks", "all", "linger.ms", "5",
                               NULL };
    rd_kafka_conf_t *conf = kafka__conf(cfg, NULL, defaults, err, errlen);
    if (!conf) {
        free(p);
        return -EINVAL;
    }
    rd_kafka_conf_set_opaque(conf, p);
    rd_kafka_conf_set_dr_msg_cb(conf, kafka__dr_cb);
    char why[512];
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (!p->rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(err, errlen, "kafka producer: %s", why);
        free(p);
        return -EINVAL;
    }
    *out = p;
    return 0;
}

int kafka_producer_send(kafka_producer_t *p, const char *topic, int32_t partition,
                        const void *key, size_t key_len, const void *value, size_t len,
                        const kafka_header_t *hdrs, int n_hdrs, void *msg_opaque)
{
    rd_kafka_headers_t *h = NULL;
    if (n_hdrs > 0) {
        h = rd_kafka_headers_new((size_t)n_hdrs);
        for (int k = 0; k < n_hdrs; k++)
            rd_kafka_header_add(h, hdrs[k].name, -1, hdrs[k].value, (ssize_t)hdrs[k].len);
    }
    rd_kafka_resp_err_t e = rd_kafka_producev(
        p->rk, RD_KAFKA_V_TOPIC(topic),
        RD_KAFKA_V_PARTITION(partition < 0 ? RD_KAFKA_PARTITION_UA : partition),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(key, key_len),
        RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_OPAQUE(msg_opaque),
        RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
    if (e) {
        if (h)
            rd_kafka_headers_destroy(h); /* owned by the message only on success */
        return e == RD_KAFKA_RESP_ERR__QUEUE_FULL ? -ENOBUFS
               : e == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ? -EMSGSIZE
                                                          : -EIO;
    }
    return 0;
}

int kafka_producer_resend(kafka_producer_t *p, const kafka_msg_t *m, void *msg_opaque)
{
    const rd_kafka_message_t *rkm = m->impl__;
    rd_kafka_headers_t *h = NULL, *copy = NULL;
    /* Timed out in flight: the broker may have stored it, so a copy could
     * be a second one. */
    if (rkm && rd_kafka_message_status(rkm) == RD_KAFKA_MSG_STATUS_POSSIBLY_PERSISTED)
        return -EEXIST;
    if (rkm && rd_kafka_message_headers(rkm, &h) == RD_KAFKA_RESP_ERR_NO_ERROR)
        copy = rd_kafka_headers_copy(h);
    rd_kafka_resp_err_t e = rd_kafka_producev(
        p->rk, RD_KAFKA_V_TOPIC(m->topic), RD_KAFKA_V_PARTITION(m->partition),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(m->key, m->key_len),
        RD_KAFKA_V_VALUE((void *)m->value, m->value_len), RD_KAFKA_V_OPAQUE(msg_opaque),
        RD_KAFKA_V_HEADERS(copy), RD_KAFKA_V_END);
    if (e && copy)
        rd_kafka_headers_destroy(copy);
    return e == RD_KAFKA_RESP_ERR_NO_ERROR ? 0 : e == RD_KAFKA_RESP_ERR__QUEUE_FULL ? -ENOBUFS : -EIO;
}

int kafka_producer_poll(kafka_producer_t *p, int timeout_ms)
{
    return rd_kafka_poll(p->rk, timeout_ms);
}

int kafka_producer_flush(kafka_producer_t *p, int timeout_ms)
{
    return rd_kafka_flush(p->rk, timeout_ms) == RD_KAFKA_RESP_ERR_NO_ERROR ? 0 : -ETIMEDOUT;
}

int kafka_producer_outstanding(kafka_producer_t *p) { return rd_kafka_outq_len(p->rk); }

void kafka_producer_free(kafka_producer_t *p)
{
    if (!p)
        return;
    rd_kafka_destroy(p->rk);
    free(p);
}

/* ---- admin and whole-topic reads ----------------------------------------------------- */

int kafka_topic_create(const kafka_config_t *cfg, const char *topic, int partitions,
                       int timeout_ms, char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = kafka__conf(cfg, NULL, NULL, err, errlen);
    if (!conf)
        return -EINVAL;
    char why[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(err, errlen, "kafka admin: %s", why);
        return -EINVAL;
    }
    int rc = 0;
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, partitions, 1, why, sizeof(why));
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opt = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    if (!nt) {
        snprintf(err, errlen, "create topic %s: %s", topic, why);
        rc = -EINVAL;
        goto done;
    }
    rd_kafka_AdminOptions_set_request_timeout(opt, timeout_ms, why, sizeof(why));
    rd_kafka_CreateTopics(rk, &nt, 1, opt, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, timeout_ms + 1000);
    if (!ev) {
        snprintf(err, errlen, "create topic %s: timed out", topic);
        rc = -ETIMEDOUT;
        goto done;
    }
    if (rd_kafka_event_error(ev)) {
        snprintf(err, errlen, "create topic %s: %s", topic, rd_kafka_event_error_string(ev));
        rc = -EIO;
    } else {
        size_t n;
        const rd_kafka_topic_result_t **res =
            rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
        for (size_t k = 0; k < n; k++) {
            rd_kafka_resp_err_t e = rd_kafka_topic_result_error(res[k]);
            if (e && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
                snprintf(err, errlen, "create topic %s: %s", topic,
                         rd_kafka_topic_result_error_string(res[k]));
                rc = -EIO;
            }
        }
    }
    rd_kafka_event_destroy(ev);
done:
    if (nt)
        rd_kafka_NewTopic_destroy(nt);
    rd_kafka_AdminOptions_destroy(opt);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    return rc;
}

int64_t kafka_topic_read(const kafka_config_t *cfg, const char *topic, kafka_msg_fn fn,
                         void *ud, int timeout_ms, char *err, size_t errlen)
{
    /* No group: a consumer that assigns every partition by hand and commits
     * nothing, so reading never disturbs anyone's offsets. The end-of-partition
     * event ends a partition whose last offsets are no message: a transaction
     * marker, or aborted messages (read_committed skips both). */
    const char *forced[] = { "group.id", "derrd-topic-reader", "enable.auto.commit", "false",
                             "enable.partition.eof", "true", NULL };
    rd_kafka_conf_t *conf = kafka__conf(cfg, forced, NULL, err, errlen);
    if (!conf)
        return -EINVAL;
    char why[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(err, errlen, "kafka reader: %s", why);
        return -EINVAL;
    }
    int64_t count = 0;
    int64_t *end = NULL;
    rd_kafka_topic_partition_list_t *l = NULL;
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);
    if (e || md->topic_cnt != 1 || md->topics[0].err) {
        snprintf(err, errlen, "read %s: metadata: %s", topic,
                 rd_kafka_err2str(e ? e : md->topic_cnt ? md->topics[0].err
                                                        : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC));
        count = e == RD_KAFKA_RESP_ERR__TIMED_OUT ? -ETIMEDOUT : -EIO;
        if (!e && md->topic_cnt == 1 &&
            md->topics[0].err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
            count = -ENOENT;
        goto done;
    }
    int np = md->topics[0].partition_cnt;
    end = calloc((size_t)(np ? np : 1), sizeof(*end));
    if (!end) {
        snprintf(err, errlen, "read %s: out of memory", topic);
        count = -ENOMEM;
        goto done;
    }
    l = rd_kafka_topic_partition_list_new(np ? np : 1);
    int pending = 0; /* partitions not read to their end yet */
    for (int k = 0; k < np; k++) {
        int32_t part = md->topics[0].partitions[k].id;
        int64_t lo, hi;
        e = rd_kafka_query_watermark_offsets(rk, topic, part, &lo, &hi, timeout_ms);
        if (e) {
            snprintf(err, errlen, "read %s [%d]: watermarks: %s", topic, part,
                     rd_kafka_err2str(e));
            count = -EIO;
            goto done;
        }
        end[k] = hi > lo ? hi : -1;
        if (hi > lo) {
            rd_kafka_topic_partition_list_add(l, topic, part)->offset = lo;
            pending++;
        }
    }
    if (pending == 0)
        goto done;
    rd_kafka_assign(rk, l);
    uint64_t deadline = log_now_ms() + (uint64_t)timeout_ms;
    while (pending > 0) {
        if (log_now_ms() > deadline) {
            snprintf(err, errlen, "read %s: timed out with %d partitions unread", topic,
                     pending);
            count = -ETIMEDOUT;
            goto done;
        }
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(rk, 100);
        if (!rkm)
            continue;
        int k = 0;
        while (k < np && md->topics[0].partitions[k].id != rkm->partition)
            k++;
        if (k < np && end[k] >= 0 && rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF &&
            rkm->offset >= end[k]) {
            end[k] = -1;
            pending--;
        } else if (!rkm->err && k < np && rkm->offset < end[k]) {
            kafka_msg_t m;
            kafka__msg_view(rkm, &m);
            fn(ud, &m);
            count++;
            /* The last offset below the watermark ends the partition
             * (compacted topics have gaps, so count offsets, not messages). */
            if (rkm->offset + 1 >= end[k]) {
                end[k] = -1;
                pending--;
            }
        }
        rd_kafka_message_destroy(rkm);
    }
done:
    if (md)
        rd_kafka_metadata_destroy(md);
    free(end);
    kafka__list_free(l);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return count;
}

/* ---- mock cluster ------------------------------------------------------------------- */

struct kafka_mock {
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mc;
};

/* The handle that hosts the mock cluster never connects to a broker, so
 * librdkafka's warning that it has no bootstrap.servers says nothing. */
static void kafka__mock_log_cb(const rd_kafka_t *rk, int level, const char *fac,
                               const char *buf)
{
    if (strcmp(fac, "CONFWARN") == 0 && strstr(buf, "bootstrap.servers` configured"))
        level = LOG_LVL_DEBUG;
    kafka__log_cb(rk, level, fac, buf);
}

int kafka_mock_new(kafka_mock_t **out, int brokers, char *err, size_t errlen)
{
    *out = NULL;
    kafka_mock_t *m = calloc(1, sizeof(*m));
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, kafka__mock_log_cb);
    char why[512];
    m->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (!m->rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(err, errlen, "mock cluster: %s", why);
        free(m);
        return -EINVAL;
    }
    /* The cluster's thread takes the signal mask of the thread that starts
     * it, and librdkafka 2.0.2 lets it die when a signal interrupts its
     * poll ("Mock cluster failed to poll"); rd_kafka_mock_cluster_destroy
     * then waits for it forever. A SIGTERM at the wrong moment hung derrd
     * after "stopped cleanly" (embedded.sh's signal storm, once in a few
     * runs). Its thread is started with every signal blocked, as
     * rd_kafka_new does for its own. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    m->mc = rd_kafka_mock_cluster_new(m->rk, brokers);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!m->mc) {
        snprintf(err, errlen, "mock cluster: could not start %d brokers", brokers);
        rd_kafka_destroy(m->rk);
        free(m);
        return -EIO;
    }
    *out = m;
    return 0;
}

const char *kafka_mock_bootstrap(const kafka_mock_t *m)
{
    return rd_kafka_mock_cluster_bootstraps(m->mc);
}

int kafka_mock_topic_create(kafka_mock_t *m, const char *topic, int partitions)
{
    return rd_kafka_mock_topic_create(m->mc, topic, partitions, 1) ? -EIO : 0;
}

void kafka_mock_free(kafka_mock_t *m)
{
    if (!m)
        return;
    rd_kafka_mock_cluster_destroy(m->mc);
    rd_kafka_destroy(m->rk);
    free(m);
}
