/*
 * kcheck: a small CLI that talks to a Kafka broker directly with librdkafka,
 * for the broker scripts, smoke tests and benchmarks in tests/kafka/.
 *
 * Build (from the repository root):
 *
 *     cc -O2 -Wall -Wextra -Werror -std=c11 -D_GNU_SOURCE tests/kafka/kcheck.c \
 *        -lrdkafka -o build/kcheck
 *
 * (tests/kafka/broker.sh builds it like that when it is missing or stale.)
 *
 * Usage: kcheck SUBCOMMAND -b BOOTSTRAP [options]; `kcheck --help` prints the
 * list. In short:
 *
 *   ready        -b B [-t SECONDS]           exit 0 once a metadata request works
 *   create-topic -b B -t TOPIC -p N          create (admin API, RF 1), wait for it
 *   produce      -b B -t TOPIC [-n N] [-x commit|abort]
 *                                            stdin lines -> messages, acks=all,
 *                                            with -x in one transaction
 *   dump         -b B -t TOPIC               every message up to the watermarks
 *   lag          -b B -t TOPIC -g GROUP      committed vs high watermark
 *   bare-consume -b B -t TOPIC -g GROUP -n N consume N messages, print JSON rate
 *
 * Every subcommand also takes -X NAME=VALUE (librdkafka properties, applied
 * last) and -T SECONDS (give up after that long without progress).
 *
 * Output formats:
 *   dump:  partition<TAB>offset<TAB>value[<TAB>name=value...] per message;
 *          '\\', '\n' and '\t' in values and header fields are written as the
 *          two-character escapes \\ \n \t, other bytes < 0x20 or >= 0x7f as \xhh.
 *   lag:   partition<TAB>committed<TAB>high_watermark per partition (committed
 *          is -1 when the group has none), then total_lag<TAB>N, where a
 *          partition without a committed offset counts high - low, and one
 *          committed past the log end counts committed - high (and is
 *          reported on stderr).
 *   bare-consume: {"messages":N,"bytes":B,"seconds":S,"seconds_with_join":J,
 *          "rate":R} where S runs from the first message to the N-th and R is
 *          (N-1)/S messages per second; J runs from subscribe to the N-th.
 *
 * Exit status: 0 success, 1 failure (message on stderr), 2 usage error.
 * librdkafka's own log lines go to stderr prefixed with "kcheck: rdkafka".
 *
 * This is test infrastructure: the daemon's Kafka code lives in io/.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#define EXIT_USAGE 2
#define DEFAULT_READY_SECONDS 30.0
#define DEFAULT_TIMEOUT_SECONDS 60.0

static const char *cmd_name = "kcheck";

/* -X name=value settings, applied last to every client this run creates. */
#define MAX_EXTRA_CONF 64
static char *extra_conf[MAX_EXTRA_CONF];
static int extra_conf_cnt;

static const char usage_text[] =
    "usage: kcheck SUBCOMMAND -b BOOTSTRAP [options]\n"
    "\n"
    "  ready        -b B [-t SECONDS]\n"
    "      Exit 0 once a metadata request lists at least one broker, 1 after\n"
    "      SECONDS (default 30).\n"
    "  create-topic -b B -t TOPIC -p PARTITIONS\n"
    "      Create TOPIC with replication factor 1 (an existing topic with the same\n"
    "      partition count is success) and wait until every partition has a leader.\n"
    "  produce      -b B -t TOPIC [-n N] [-x commit|abort]\n"
    "      Produce each line of stdin (without its newline) as one message value,\n"
    "      key NULL, acks=all; at most N lines if -n is given. Fails if any\n"
    "      delivery fails. With -x, all of them in one transaction, committed or\n"
    "      aborted at the end (its marker is then the partition's last offset).\n"
    "  dump         -b B -t TOPIC\n"
    "      Print every message below the high watermarks taken at start:\n"
    "      partition<TAB>offset<TAB>value, then <TAB>name=value per header.\n"
    "      Backslash, newline and tab are escaped as \\\\ \\n \\t.\n"
    "  lag          -b B -t TOPIC -g GROUP\n"
    "      Print partition<TAB>committed<TAB>high_watermark per partition (-1: no\n"
    "      committed offset) and total_lag<TAB>N; a committed offset past the log\n"
    "      end counts by its distance (and is reported on stderr).\n"
    "  bare-consume -b B -t TOPIC -g GROUP -n N\n"
    "      Subscribe as GROUP (auto.offset.reset=earliest, range assignor), read N\n"
    "      messages doing nothing else, print one JSON line:\n"
    "      {\"messages\",\"bytes\",\"seconds\",\"seconds_with_join\",\"rate\"}.\n"
    "      Use a fresh GROUP per run: the group commits what it read.\n"
    "\n"
    "options:\n"
    "  -b BOOTSTRAP   broker list, e.g. 127.0.0.1:9092 (required)\n"
    "  -t TOPIC       topic (for `ready`: SECONDS to wait)\n"
    "  -p PARTITIONS  partition count for create-topic\n"
    "  -g GROUP       consumer group id\n"
    "  -n N           message count\n"
    "  -x MODE        produce: one transaction, ended by commit or abort\n"
    "  -T SECONDS     give up after SECONDS without progress (default 60;\n"
    "                 all subcommands except ready)\n"
    "  -X NAME=VALUE  set a librdkafka property (repeatable; applied last, so it\n"
    "                 overrides kcheck's own settings)\n"
    "  -h, --help     this text\n";

/* ---------------------------------------------------------------- helpers */

static void errmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void errmsg(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "kcheck: %s: ", cmd_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Milliseconds left until deadline, clamped to [0, cap_ms]. */
static int ms_left(double deadline, int cap_ms)
{
    double left = (deadline - now_s()) * 1000.0;
    if (left <= 0)
        return 0;
    if (left > cap_ms)
        return cap_ms;
    return (int)left;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static bool parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static bool parse_seconds(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v > 0) || v > 86400.0)
        return false;
    *out = v;
    return true;
}

/* Write n bytes of p escaped as derrd-replay --malformed-out does: '\\',
 * '\n' and '\t' as two-character escapes, any other byte below 0x20 or from
 * 0x7f up as \xhh (lowercase), so the two outputs compare byte for byte. */
static void put_escaped(FILE *f, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\\')
            fputs("\\\\", f);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c < 0x20 || c >= 0x7f)
            fprintf(f, "\\x%02x", c);
        else
            fputc(c, f);
    }
}

/* --------------------------------------------------------- rdkafka setup */

static void log_to_stderr(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    (void)level;
    fprintf(stderr, "kcheck: rdkafka %s: %s\n", fac, buf);
}

static void log_nothing(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    (void)level;
    (void)fac;
    (void)buf;
}

static bool conf_set(rd_kafka_conf_t *conf, const char *name, const char *value)
{
    char errstr[512];
    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
        errmsg("config %s=%s: %s", name, value, errstr);
        return false;
    }
    return true;
}

/* A config with the bootstrap servers and kcheck's logger; NULL on error. */
static rd_kafka_conf_t *base_conf(const char *bootstrap, bool quiet)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf_set(conf, "bootstrap.servers", bootstrap) ||
        !conf_set(conf, "client.id", "kcheck") ||
        !conf_set(conf, "allow.auto.create.topics", "false") ||
        (quiet && !conf_set(conf, "log.connection.close", "false"))) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_log_cb(conf, quiet ? log_nothing : log_to_stderr);
    return conf;
}

/* Create a handle, after applying -X; takes ownership of conf in every case. */
static rd_kafka_t *new_handle(rd_kafka_type_t type, rd_kafka_conf_t *conf)
{
    char errstr[512];
    if (!conf)
        return NULL;
    for (int i = 0; i < extra_conf_cnt; i++) {
        char *eq = strchr(extra_conf[i], '=');
        *eq = '\0';
        bool ok = conf_set(conf, extra_conf[i], eq + 1);
        *eq = '=';
        if (!ok) {
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof errstr);
    if (!rk) {
        errmsg("cannot create client: %s", errstr);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

/* True (and a message) if the client has raised a fatal error. */
static bool fatal_error(rd_kafka_t *rk)
{
    char errstr[512];
    rd_kafka_resp_err_t err = rd_kafka_fatal_error(rk, errstr, sizeof errstr);
    if (!err)
        return false;
    errmsg("fatal client error %s: %s", rd_kafka_err2name(err), errstr);
    return true;
}

/*
 * Wait until the metadata of topic shows no error and a leader for every
 * partition; return the partition count, or -1 (with a message) when the
 * topic does not exist or the deadline passes.
 */
static int topic_partitions(rd_kafka_t *rk, const char *topic, double deadline)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (!rkt) {
        errmsg("topic handle %s: %s", topic, rd_kafka_err2str(rd_kafka_last_error()));
        return -1;
    }
    int result = -1;
    char why[256] = "no answer";
    for (;;) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t err =
            rd_kafka_metadata(rk, 0, rkt, &md, ms_left(deadline, 5000) + 1);
        if (err) {
            snprintf(why, sizeof why, "metadata request: %s", rd_kafka_err2str(err));
        } else {
            const struct rd_kafka_metadata_topic *mt = NULL;
            for (int i = 0; i < md->topic_cnt; i++)
                if (strcmp(md->topics[i].topic, topic) == 0)
                    mt = &md->topics[i];
            if (!mt) {
                snprintf(why, sizeof why, "topic missing from metadata");
            } else if (mt->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
                /* Also what a just-created topic says until the metadata
                 * has propagated: retry until the deadline. */
                snprintf(why, sizeof why, "topic %s does not exist", topic);
            } else if (mt->err) {
                snprintf(why, sizeof why, "topic error: %s", rd_kafka_err2str(mt->err));
            } else {
                bool all_led = mt->partition_cnt > 0;
                for (int p = 0; p < mt->partition_cnt; p++)
                    if (mt->partitions[p].err || mt->partitions[p].leader < 0) {
                        snprintf(why, sizeof why, "partition %d has no leader",
                                 mt->partitions[p].id);
                        all_led = false;
                    }
                if (all_led)
                    result = mt->partition_cnt;
            }
            rd_kafka_metadata_destroy(md);
            if (result >= 0)
                break;
        }
        if (ms_left(deadline, 1) == 0) {
            errmsg("topic %s not ready in time: %s", topic, why);
            break;
        }
        sleep_ms(ms_left(deadline, 200));
    }
    rd_kafka_topic_destroy(rkt);
    return result;
}

/* Watermarks of one partition, retrying transient errors until deadline. */
static bool watermarks(rd_kafka_t *rk, const char *topic, int32_t part, double deadline,
                       int64_t *lo, int64_t *hi)
{
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
            rk, topic, part, lo, hi, ms_left(deadline, 10000) + 1);
        if (!err)
            return true;
        if (ms_left(deadline, 1) == 0) {
            errmsg("watermarks of %s [%" PRId32 "]: %s", topic, part, rd_kafka_err2str(err));
            return false;
        }
        sleep_ms(ms_left(deadline, 200));
    }
}

/* ------------------------------------------------------------ subcommands */

struct opts {
    const char *bootstrap;
    const char *topic;  /* -t */
    const char *group;  /* -g */
    long partitions;    /* -p, 0 if unset */
    long long count;    /* -n, -1 if unset */
    double timeout_s;   /* -T */
    const char *txn;    /* -x: "commit", "abort", or NULL */
};

static int cmd_ready(const struct opts *o)
{
    double secs = DEFAULT_READY_SECONDS;
    if (o->topic && !parse_seconds(o->topic, &secs)) {
        errmsg("-t wants a number of seconds, not '%s'", o->topic);
        return EXIT_USAGE;
    }
    rd_kafka_t *rk = new_handle(RD_KAFKA_PRODUCER, base_conf(o->bootstrap, true));
    if (!rk)
        return 1;
    double deadline = now_s() + secs;
    const char *why = "no answer";
    int rc = 1;
    for (;;) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, NULL, &md, ms_left(deadline, 1000) + 1);
        if (!err) {
            int brokers = md->broker_cnt;
            rd_kafka_metadata_destroy(md);
            if (brokers > 0) {
                rc = 0;
                break;
            }
            why = "metadata lists no broker";
        } else {
            why = rd_kafka_err2str(err);
        }
        if (ms_left(deadline, 1) == 0)
            break;
        sleep_ms(ms_left(deadline, 100));
    }
    if (rc)
        errmsg("no metadata from %s within %g s: %s", o->bootstrap, secs, why);
    rd_kafka_destroy(rk);
    return rc;
}

static int cmd_create_topic(const struct opts *o)
{
    char errstr[512];
    rd_kafka_t *rk = new_handle(RD_KAFKA_PRODUCER, base_conf(o->bootstrap, false));
    if (!rk)
        return 1;
    double deadline = now_s() + o->timeout_s;
    int rc = 1;
    rd_kafka_NewTopic_t *nt = NULL;
    rd_kafka_AdminOptions_t *aopts = NULL;
    rd_kafka_queue_t *q = NULL;
    rd_kafka_event_t *ev = NULL;

    nt = rd_kafka_NewTopic_new(o->topic, (int)o->partitions, 1, errstr, sizeof errstr);
    if (!nt) {
        errmsg("topic %s: %s", o->topic, errstr);
        goto out;
    }
    aopts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    if (!aopts) {
        errmsg("cannot allocate admin options");
        goto out;
    }
    int op_ms = ms_left(deadline, 60000);
    if (rd_kafka_AdminOptions_set_request_timeout(aopts, op_ms, errstr, sizeof errstr) ||
        rd_kafka_AdminOptions_set_operation_timeout(aopts, op_ms, errstr, sizeof errstr)) {
        errmsg("admin options: %s", errstr);
        goto out;
    }
    q = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, &nt, 1, aopts, q);
    while (!ev) {
        ev = rd_kafka_queue_poll(q, ms_left(deadline, 1000) + 1);
        if (ev && rd_kafka_event_type(ev) != RD_KAFKA_EVENT_CREATETOPICS_RESULT) {
            rd_kafka_event_destroy(ev); /* not ours; nothing else is queued here */
            ev = NULL;
        }
        if (!ev && ms_left(deadline, 1) == 0) {
            errmsg("no CreateTopics result within %g s", o->timeout_s);
            goto out;
        }
    }
    if (rd_kafka_event_error(ev)) {
        errmsg("CreateTopics %s: %s", o->topic, rd_kafka_event_error_string(ev));
        goto out;
    }
    size_t cnt = 0;
    const rd_kafka_topic_result_t **res =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
    if (cnt != 1) {
        errmsg("CreateTopics %s: %zu results, expected 1", o->topic, cnt);
        goto out;
    }
    rd_kafka_resp_err_t err = rd_kafka_topic_result_error(res[0]);
    if (err && err != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
        const char *s = rd_kafka_topic_result_error_string(res[0]);
        errmsg("CreateTopics %s: %s: %s", o->topic, rd_kafka_err2name(err),
               s ? s : rd_kafka_err2str(err));
        goto out;
    }
    int have = topic_partitions(rk, o->topic, deadline);
    if (have < 0)
        goto out;
    if (have != o->partitions) {
        errmsg("topic %s already exists with %d partitions, not %ld", o->topic, have,
               o->partitions);
        goto out;
    }
    rc = 0;
out:
    if (ev)
        rd_kafka_event_destroy(ev);
    if (q)
        rd_kafka_queue_destroy(q);
    if (aopts)
        rd_kafka_AdminOptions_destroy(aopts);
    if (nt)
        rd_kafka_NewTopic_destroy(nt);
    rd_kafka_destroy(rk);
    return rc;
}

struct delivery {
    long long ok, failed;
    rd_kafka_resp_err_t first_err;
};

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    struct delivery *d = opaque;
    if (m->err) {
        if (!d->failed)
            d->first_err = m->err;
        d->failed++;
    } else {
        d->ok++;
    }
}

/* One step of a transaction: true when it worked, else says why. */
static bool txn_step(const char *what, rd_kafka_error_t *e)
{
    if (!e)
        return true;
    errmsg("transaction %s: %s", what, rd_kafka_error_string(e));
    rd_kafka_error_destroy(e);
    return false;
}

static int cmd_produce(const struct opts *o)
{
    struct delivery d = { 0, 0, RD_KAFKA_RESP_ERR_NO_ERROR };
    rd_kafka_conf_t *conf = base_conf(o->bootstrap, false);
    if (!conf)
        return 1;
    if (!conf_set(conf, "acks", "all") ||
        !conf_set(conf, "allow.auto.create.topics", "true") ||
        !conf_set(conf, "message.timeout.ms", "120000")) {
        rd_kafka_conf_destroy(conf);
        return 1;
    }
    char txn_id[64];
    snprintf(txn_id, sizeof(txn_id), "kcheck-%ld-%.0f", (long)getpid(), now_s() * 1e6);
    if (o->txn && (!conf_set(conf, "transactional.id", txn_id) ||
                   !conf_set(conf, "transaction.timeout.ms", "120000"))) {
        rd_kafka_conf_destroy(conf);
        return 1;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, &d);
    rd_kafka_t *rk = new_handle(RD_KAFKA_PRODUCER, conf);
    if (!rk)
        return 1;

    int rc = 0;
    int txn_ms = (int)(o->timeout_s * 1000);
    if (o->txn && !txn_step("init", rd_kafka_init_transactions(rk, txn_ms))) {
        rd_kafka_destroy(rk);
        return 1;
    }
    if (o->txn && !txn_step("begin", rd_kafka_begin_transaction(rk))) {
        rd_kafka_destroy(rk);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    long long sent = 0;
    ssize_t len;
    while ((o->count < 0 || sent < o->count) && (len = getline(&line, &cap, stdin)) >= 0) {
        if (len > 0 && line[len - 1] == '\n')
            len--;
        for (;;) {
            rd_kafka_resp_err_t err = rd_kafka_producev(
                rk, RD_KAFKA_V_TOPIC(o->topic), RD_KAFKA_V_VALUE(line, (size_t)len),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
            if (!err)
                break;
            if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                errmsg("produce to %s: %s", o->topic, rd_kafka_err2str(err));
                rc = 1;
                goto done;
            }
            rd_kafka_poll(rk, 100); /* queue full: serve delivery reports */
        }
        sent++;
        rd_kafka_poll(rk, 0);
    }
    if (ferror(stdin)) {
        errmsg("reading stdin: %s", strerror(errno));
        rc = 1;
    }
done:
    free(line);
    /* Flush what was queued, in steps so that a stuck broker ends in time. */
    double deadline = now_s() + o->timeout_s + 120.0;
    while (rd_kafka_outq_len(rk) > 0 && ms_left(deadline, 1) > 0)
        rd_kafka_flush(rk, ms_left(deadline, 1000) + 1);
    if (rd_kafka_outq_len(rk) > 0) {
        errmsg("%d messages still undelivered after flushing", rd_kafka_outq_len(rk));
        rc = 1;
    }
    /* Delivered (flushed) first, so an abort follows acknowledged messages. */
    if (o->txn && rc == 0 &&
        !txn_step(o->txn,
                  strcmp(o->txn, "commit") == 0 ? rd_kafka_commit_transaction(rk, txn_ms)
                                                 : rd_kafka_abort_transaction(rk, txn_ms)))
        rc = 1;
    if (fatal_error(rk))
        rc = 1;
    if (d.failed) {
        errmsg("%lld of %lld messages failed, first error: %s", d.failed, sent,
               rd_kafka_err2str(d.first_err));
        rc = 1;
    } else if (rc == 0 && d.ok != sent) {
        errmsg("%lld messages sent but %lld delivered", sent, d.ok);
        rc = 1;
    }
    rd_kafka_destroy(rk);
    return rc;
}

struct dump_part {
    int64_t lo;   /* low watermark at start */
    int64_t hi;   /* high watermark at start */
    bool started; /* consume_start_queue succeeded */
    bool done;    /* every message below hi was printed (or EOF reached) */
};

static int cmd_dump(const struct opts *o)
{
    rd_kafka_conf_t *conf = base_conf(o->bootstrap, false);
    if (!conf || !conf_set(conf, "enable.partition.eof", "true") ||
        !conf_set(conf, "enable.auto.commit", "false") ||
        !conf_set(conf, "enable.auto.offset.store", "false") ||
        /* With the default (100000) the fetcher backs off whenever the shared
         * queue is that full, and a 1M-message dump takes 4 s instead of 1 s. */
        !conf_set(conf, "queued.min.messages", "1000000") ||
        /* Finished partitions stay in the fetch request: do not let them
         * hold it 500 ms (the default) on the broker. */
        !conf_set(conf, "fetch.wait.max.ms", "50")) {
        if (conf)
            rd_kafka_conf_destroy(conf);
        return 1;
    }
    rd_kafka_t *rk = new_handle(RD_KAFKA_CONSUMER, conf);
    if (!rk)
        return 1;
    double deadline = now_s() + o->timeout_s;
    int rc = 1;
    struct dump_part *parts = NULL;
    rd_kafka_topic_t *rkt = NULL;
    rd_kafka_queue_t *q = NULL;
    int n = topic_partitions(rk, o->topic, deadline);
    if (n < 0)
        goto out;
    parts = calloc((size_t)n, sizeof *parts);
    rkt = rd_kafka_topic_new(rk, o->topic, NULL);
    q = rd_kafka_queue_new(rk);
    if (!parts || !rkt || !q) {
        errmsg("out of memory");
        goto out;
    }
    /*
     * The simple (legacy) consumer needs no group: start every partition that
     * holds messages at its low watermark, on one shared queue. Watermarks
     * first, so all partitions join the same first fetch request.
     */
    for (int p = 0; p < n; p++) {
        if (!watermarks(rk, o->topic, p, deadline, &parts[p].lo, &parts[p].hi))
            goto out;
    }
    int pending = 0;
    for (int p = 0; p < n; p++) {
        parts[p].done = parts[p].hi <= parts[p].lo;
        if (parts[p].done)
            continue;
        if (rd_kafka_consume_start_queue(rkt, p, parts[p].lo, q) == -1) {
            errmsg("start consuming %s [%d]: %s", o->topic, p,
                   rd_kafka_err2str(rd_kafka_last_error()));
            goto out;
        }
        parts[p].started = true;
        pending++;
    }

    static char outbuf[1 << 16];
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    double idle_deadline = now_s() + o->timeout_s;
    while (pending > 0) {
        rd_kafka_message_t *m = rd_kafka_consume_queue(q, ms_left(idle_deadline, 1000) + 1);
        if (!m) {
            if (fatal_error(rk))
                goto out;
            if (ms_left(idle_deadline, 1) == 0) {
                errmsg("no progress for %g s, %d partitions unfinished", o->timeout_s, pending);
                goto out;
            }
            continue;
        }
        idle_deadline = now_s() + o->timeout_s;
        int32_t p = m->partition;
        bool known = p >= 0 && p < n;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (known && !parts[p].done && m->offset >= parts[p].hi) {
                parts[p].done = true;
                pending--;
            }
        } else if (m->err) {
            errmsg("consume %s [%" PRId32 "]: %s", o->topic, p, rd_kafka_message_errstr(m));
            if (m->err == RD_KAFKA_RESP_ERR__FATAL || fatal_error(rk)) {
                rd_kafka_message_destroy(m);
                goto out;
            }
        } else if (known && !parts[p].done && m->offset < parts[p].hi) {
            printf("%" PRId32 "\t%" PRId64 "\t", p, m->offset);
            put_escaped(stdout, m->payload, m->payload ? m->len : 0);
            rd_kafka_headers_t *hdrs = NULL;
            if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
                const char *name;
                const void *val;
                size_t size;
                for (size_t i = 0; !rd_kafka_header_get_all(hdrs, i, &name, &val, &size); i++) {
                    putchar('\t');
                    put_escaped(stdout, name, strlen(name));
                    putchar('=');
                    put_escaped(stdout, val, val ? size : 0);
                }
            }
            putchar('\n');
            if (m->offset >= parts[p].hi - 1) {
                parts[p].done = true;
                pending--;
            }
        }
        rd_kafka_message_destroy(m);
    }
    if (fflush(stdout) == EOF || ferror(stdout)) {
        errmsg("writing stdout: %s", strerror(errno));
        goto out;
    }
    rc = 0;
out:
    for (int p = 0; parts && p < n; p++)
        if (parts[p].started && rd_kafka_consume_stop(rkt, p) == -1)
            errmsg("stop consuming %s [%d]: %s", o->topic, p,
                   rd_kafka_err2str(rd_kafka_last_error()));
    if (q)
        rd_kafka_queue_destroy(q);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    free(parts);
    rd_kafka_destroy(rk);
    return rc;
}

static int cmd_lag(const struct opts *o)
{
    rd_kafka_conf_t *conf = base_conf(o->bootstrap, false);
    if (!conf || !conf_set(conf, "group.id", o->group) ||
        !conf_set(conf, "enable.auto.commit", "false")) {
        if (conf)
            rd_kafka_conf_destroy(conf);
        return 1;
    }
    rd_kafka_t *rk = new_handle(RD_KAFKA_CONSUMER, conf);
    if (!rk)
        return 1;
    double deadline = now_s() + o->timeout_s;
    int rc = 1;
    rd_kafka_topic_partition_list_t *list = NULL;

    int n = topic_partitions(rk, o->topic, deadline);
    if (n < 0)
        goto out;
    list = rd_kafka_topic_partition_list_new(n);
    for (int p = 0; p < n; p++)
        rd_kafka_topic_partition_list_add(list, o->topic, p);
    /* The group's coordinator may still be coming up (first use creates
     * __consumer_offsets): retry until the deadline. */
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_committed(rk, list, ms_left(deadline, 10000) + 1);
        for (int i = 0; !err && i < list->cnt; i++)
            err = list->elems[i].err;
        if (!err)
            break;
        if (ms_left(deadline, 1) == 0) {
            errmsg("committed offsets of group %s: %s", o->group, rd_kafka_err2str(err));
            goto out;
        }
        sleep_ms(ms_left(deadline, 200));
    }
    long long total = 0;
    for (int i = 0; i < list->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &list->elems[i];
        int64_t lo, hi;
        if (!watermarks(rk, o->topic, tp->partition, deadline, &lo, &hi))
            goto out;
        int64_t committed = tp->offset >= 0 ? tp->offset : -1;
        /* Past the log end is a wrong commit, not negative lag: counted by
         * its distance, so it cannot cancel another partition's lag. */
        if (committed > hi)
            errmsg("partition %" PRId32 ": committed offset %" PRId64
                   " is past the log end %" PRId64,
                   tp->partition, committed, hi);
        total += committed < 0 ? hi - lo : committed > hi ? committed - hi : hi - committed;
        printf("%" PRId32 "\t%" PRId64 "\t%" PRId64 "\n", tp->partition, committed, hi);
    }
    printf("total_lag\t%lld\n", total);
    if (fflush(stdout) == EOF) {
        errmsg("writing stdout: %s", strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (list)
        rd_kafka_topic_partition_list_destroy(list);
    rd_kafka_resp_err_t cerr = rd_kafka_consumer_close(rk);
    if (cerr) {
        errmsg("closing consumer: %s", rd_kafka_err2str(cerr));
        rc = 1;
    }
    rd_kafka_destroy(rk);
    return rc;
}

/* bare-consume stores its payload byte sum here so the reads are not optimised away. */
static volatile unsigned payload_sink;

static int cmd_bare_consume(const struct opts *o)
{
    rd_kafka_conf_t *conf = base_conf(o->bootstrap, false);
    if (!conf || !conf_set(conf, "group.id", o->group) ||
        !conf_set(conf, "auto.offset.reset", "earliest") ||
        !conf_set(conf, "partition.assignment.strategy", "range")) {
        if (conf)
            rd_kafka_conf_destroy(conf);
        return 1;
    }
    rd_kafka_t *rk = new_handle(RD_KAFKA_CONSUMER, conf);
    if (!rk)
        return 1;
    int rc = 1;
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, o->topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_poll_set_consumer(rk);
    if (err) {
        errmsg("poll_set_consumer: %s", rd_kafka_err2str(err));
        goto out;
    }
    double t_join = now_s(), t_first = 0, t_last = 0;
    err = rd_kafka_subscribe(rk, topics);
    if (err) {
        errmsg("subscribe to %s: %s", o->topic, rd_kafka_err2str(err));
        goto out;
    }
    long long got = 0, bytes = 0, errors = 0;
    unsigned sum = 0; /* every payload byte is read, as a real consumer would */
    double idle_deadline = now_s() + o->timeout_s;
    while (got < o->count) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, ms_left(idle_deadline, 1000) + 1);
        if (!m) {
            if (ms_left(idle_deadline, 1) == 0) {
                errmsg("no message for %g s after %lld of %lld", o->timeout_s, got, o->count);
                goto out;
            }
            continue;
        }
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                if (errors++ < 10)
                    errmsg("consume: %s", rd_kafka_message_errstr(m));
                if (m->err == RD_KAFKA_RESP_ERR__FATAL || fatal_error(rk)) {
                    rd_kafka_message_destroy(m);
                    goto out;
                }
            }
            rd_kafka_message_destroy(m);
            continue;
        }
        const unsigned char *b = m->payload;
        for (size_t i = 0; b && i < m->len; i++)
            sum += b[i];
        bytes += (long long)m->len;
        if (got++ == 0)
            t_first = now_s();
        t_last = now_s();
        idle_deadline = t_last + o->timeout_s;
        rd_kafka_message_destroy(m);
    }
    double secs = t_last - t_first;
    double rate = secs > 0 ? (double)(got - 1) / secs : 0.0;
    printf("{\"messages\":%lld,\"bytes\":%lld,\"seconds\":%.6f,\"seconds_with_join\":%.6f,"
           "\"rate\":%.1f}\n",
           got, bytes, secs, t_last - t_join, rate);
    if (fflush(stdout) == EOF) {
        errmsg("writing stdout: %s", strerror(errno));
        goto out;
    }
    payload_sink = sum;
    rc = 0;
out:
    rd_kafka_topic_partition_list_destroy(topics);
    err = rd_kafka_consumer_close(rk);
    if (err) {
        errmsg("closing consumer: %s", rd_kafka_err2str(err));
        rc = 1;
    }
    rd_kafka_destroy(rk);
    return rc;
}

/* ------------------------------------------------------------------- main */

struct subcommand {
    const char *name;
    int (*run)(const struct opts *);
    bool need_topic, need_group, need_partitions, need_count;
};

static const struct subcommand subcommands[] = {
    { "ready", cmd_ready, false, false, false, false },
    { "create-topic", cmd_create_topic, true, false, true, false },
    { "produce", cmd_produce, true, false, false, false },
    { "dump", cmd_dump, true, false, false, false },
    { "lag", cmd_lag, true, true, false, false },
    { "bare-consume", cmd_bare_consume, true, true, false, true },
};

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "kcheck: %s: ", cmd_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(kcheck --help for usage)\n", stderr);
    return EXIT_USAGE;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    const struct subcommand *sc = NULL;
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        if (strcmp(argv[1], subcommands[i].name) == 0)
            sc = &subcommands[i];
    if (!sc)
        return usage_error("unknown subcommand '%s'", argv[1]);
    cmd_name = sc->name;

    struct opts o = { NULL, NULL, NULL, 0, -1, DEFAULT_TIMEOUT_SECONDS, NULL };
    int c;
    long v;
    optind = 2;
    while ((c = getopt_long(argc, argv, "b:t:p:g:n:T:X:x:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'b': o.bootstrap = optarg; break;
        case 't': o.topic = optarg; break;
        case 'g': o.group = optarg; break;
        case 'p':
            if (!parse_long(optarg, 1, 100000, &v))
                return usage_error("-p wants a partition count 1..100000, not '%s'", optarg);
            o.partitions = v;
            break;
        case 'n':
            if (!parse_long(optarg, sc->run == cmd_bare_consume ? 1 : 0, LONG_MAX, &v))
                return usage_error("-n wants a message count, not '%s'", optarg);
            o.count = v;
            break;
        case 'T':
            if (!parse_seconds(optarg, &o.timeout_s))
                return usage_error("-T wants a number of seconds, not '%s'", optarg);
            break;
        case 'X':
            if (!strchr(optarg, '=') || optarg[0] == '=')
                return usage_error("-X wants NAME=VALUE, not '%s'", optarg);
            if (extra_conf_cnt == MAX_EXTRA_CONF)
                return usage_error("more than %d -X settings", MAX_EXTRA_CONF);
            extra_conf[extra_conf_cnt++] = optarg;
            break;
        case 'x':
            if (sc->run != cmd_produce ||
                (strcmp(optarg, "commit") != 0 && strcmp(optarg, "abort") != 0))
                return usage_error("-x wants commit or abort (produce only), not '%s'", optarg);
            o.txn = optarg;
            break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: return usage_error("bad option");
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    if (!o.bootstrap || !*o.bootstrap)
        return usage_error("-b BOOTSTRAP is required");
    if (sc->need_topic && (!o.topic || !*o.topic))
        return usage_error("-t TOPIC is required");
    if (sc->need_group && (!o.group || !*o.group))
        return usage_error("-g GROUP is required");
    if (sc->need_partitions && o.partitions == 0)
        return usage_error("-p PARTITIONS is required");
    if (sc->need_count && o.count < 0)
        return usage_error("-n N is required");
    return sc->run(&o);
}
