/* The option table; see options.h. */
#include "daemon/options.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/log.h"

typedef enum { OPT_STR, OPT_INT, OPT_BOOL, OPT_DOUBLE } option_type_t;

typedef struct {
    const char *name;
    option_type_t type;
    size_t offset;
    long min, max; /* OPT_INT and OPT_DOUBLE */
    const char *def;
    const char *doc;
} option_def_t;

#define O(field) offsetof(options_t, field)

static const option_def_t option_defs[] = {
    { "brokers", OPT_STR, O(brokers), 0, 0, "127.0.0.1:9092",
      "Kafka bootstrap servers, host:port[,host:port...]" },
    { "topic", OPT_STR, O(topic), 0, 0, "derrd-events", "topic the interaction events come from" },
    { "group", OPT_STR, O(group), 0, 0, "derrd", "Kafka consumer group" },
    { "dead-letter-topic", OPT_STR, O(dead_letter_topic), 0, 0, "",
      "topic that receives invalid events with the reason in a header (empty: count and drop)" },
    { "state-dir", OPT_STR, O(state_dir), 0, 0, "/var/lib/derrd",
      "directory of the checkpoints" },
    { "checkpoint-interval-ms", OPT_INT, O(checkpoint_interval_ms), 100, 86400000, "5000",
      "checkpoint at most this often while events arrive; offsets commit after each" },
    { "checkpoints-keep", OPT_INT, O(checkpoints_keep), 1, 1000, "2",
      "checkpoints kept on disk (older ones are deleted)" },
    { "max-staged", OPT_INT, O(max_staged), 1000, 1000000000, "1000000",
      "events staged for the trainer before the partitions pause" },
    { "backstop-ms", OPT_INT, O(backstop_ms), 10, 60000, "100",
      "poll Kafka at least this often, even without a wake-up" },
    { "stats-interval-ms", OPT_INT, O(stats_interval_ms), 0, 86400000, "10000",
      "log an ingest summary this often (0 = never)" },
    { "shutdown-timeout-ms", OPT_INT, O(shutdown_timeout_ms), 100, 600000, "10000",
      "bound on each shutdown step (dead letters, leaving the group)" },
    { "exit-after-events", OPT_INT, O(exit_after_events), 0, LONG_MAX, "0",
      "benchmarks and tests: stop cleanly once this many events are applied (0 = run on)" },
    { "log-level", OPT_STR, O(log_level), 0, 0, "info", "err, warning, notice, info or debug" },
    { "embedded-kafka", OPT_BOOL, O(embedded_kafka), 0, 1, "false",
      "start librdkafka's in-process mock cluster and use it (demo; nothing persists)" },
    { "embedded-partitions", OPT_INT, O(embedded_partitions), 1, 1024, "4",
      "partitions of the topic created in the embedded cluster" },
    { "http-address", OPT_STR, O(http_address), 0, 0, "127.0.0.1",
      "address the HTTP endpoints listen on (numeric; loopback by default)" },
    { "http-port", OPT_INT, O(http_port), 0, 65535, "8417",
      "HTTP port: /v1/snapshot, /metrics, /healthz, /readyz (0 = no HTTP)" },
    { "http-token", OPT_STR, O(http_token), 0, 0, "",
      "bearer token required on every endpoint but /healthz (empty = none)" },
    { "rounds", OPT_BOOL, O(rounds), 0, 1, "true",
      "run distillation rounds and publish student snapshots (false: ingest only)" },
    { "snapshot-dir", OPT_STR, O(snapshot_dir), 0, 0, "",
      "where student-<version>.dsnap files and the latest link are published (empty = "
      "<state-dir>/snapshots)" },
    { "snapshot-keep", OPT_INT, O(snapshot_keep), 1, 10000, "5", "snapshots kept on disk" },
    { "round-min-events", OPT_INT, O(round_min_events), 1, 1000000000, "10000",
      "start a round once this many new events are applied" },
    { "round-interval-ms", OPT_INT, O(round_interval_ms), 100, 86400000, "5000",
      "or this long after the last round when anything is new; settling rounds (nothing "
      "new, quality still improving) run back to back" },
    { "student-epochs", OPT_INT, O(student_epochs), 1, 10000, "1",
      "DE-RRD epochs of the student per round with new events (short rounds: fresh "
      "snapshots)" },
    { "settle-epochs", OPT_INT, O(settle_epochs), 0, 100000, "10",
      "student epochs per idle round while settling (0 = student-epochs)" },
    { "teacher-epochs", OPT_INT, O(teacher_epochs), 1, 10000, "5",
      "epochs of the built-in teacher per refresh" },
    { "teacher-refresh-ms", OPT_INT, O(teacher_refresh_ms), 0, 604800000, "600000",
      "refresh the built-in teacher at least this often (0 = only by growth)" },
    { "teacher-refresh-growth", OPT_DOUBLE, O(teacher_refresh_growth), 0, 1000, "1.0",
      "or when interactions grew by this share since the last refresh" },
    { "teacher-refresh-min-ms", OPT_INT, O(teacher_refresh_min_ms), 0, 604800000, "60000",
      "no growth-triggered refresh sooner than this after the last (fold-in epochs cover "
      "new users meanwhile)" },
    { "teacher-foldin-share", OPT_DOUBLE, O(teacher_foldin_share), 0, 1, "0.25",
      "between refreshes, new rows under this share of all rows are folded into the "
      "teacher by means of known rows instead of a whole epoch" },
    { "teacher-file", OPT_STR, O(teacher_file), 0, 0, "",
      "use this teacher embedding file (docs/EMBFILE.md; rows = decimal ids) instead of the "
      "built-in teacher; reloaded when it changes" },
    { "teacher-dim", OPT_INT, O(teacher_dim), 1, 4096, "200", "built-in teacher dimension" },
    { "student-dim", OPT_INT, O(student_dim), 1, 4096, "20", "student dimension" },
    { "lambda-de", OPT_DOUBLE, O(lambda_de), 0, 1000, "0.01",
      "weight of Distillation Experts (0 = off)" },
    { "lambda-rrd", OPT_DOUBLE, O(lambda_rrd), 0, 1000, "0.001",
      "weight of Relaxed Ranking Distillation (0 = off)" },
    { "eval-permille", OPT_INT, O(eval_permille), 0, 1000, "250",
      "users (per 1000) whose latest interaction is held out for evaluation" },
    { "eval-candidates", OPT_INT, O(eval_candidates), 1, 100000, "99",
      "sampled unobserved items each held-out item is ranked against" },
    { "min-interactions", OPT_INT, O(min_interactions), 1, 1000000000, "1000",
      "no round before the state holds this many interactions" },
    { "settle-patience", OPT_INT, O(settle_patience), 0, 1000, "8",
      "idle rounds go on until held-out HR@10 has not improved for this many" },
    { "gate-margin", OPT_DOUBLE, O(gate_margin), 0, 1, "0.02",
      "do not publish when held-out HR@10 is this much (or two standard errors, when "
      "larger) below the last published" },
    { "threads", OPT_INT, O(threads), 1, 1024, "2", "training worker threads" },
    { "zstd-level", OPT_INT, O(zstd_level), 1, 19, "3", "snapshot compression level" },
    { "seed", OPT_INT, O(seed), 0, LONG_MAX, "1", "random seed of the models" },
};

static int options__set_def(options_t *o, const option_def_t *d, const char *value, char *err,
                            size_t errlen)
{
    void *field = (char *)o + d->offset;
    if (d->type == OPT_STR) {
        char *v = strdup(value);
        if (!v) {
            snprintf(err, errlen, "out of memory");
            return -ENOMEM;
        }
        if (strcmp(d->name, "log-level") == 0 && log_level_parse(v) < 0) {
            snprintf(err, errlen, "%s: \"%s\" is not one of err, warning, notice, info, debug",
                     d->name, value);
            free(v);
            return -EINVAL;
        }
        free(*(char **)field);
        *(char **)field = v;
        return 0;
    }
    if (d->type == OPT_BOOL) {
        int b;
        if (!strcmp(value, "true") || !strcmp(value, "yes") || !strcmp(value, "1"))
            b = 1;
        else if (!strcmp(value, "false") || !strcmp(value, "no") || !strcmp(value, "0"))
            b = 0;
        else {
            snprintf(err, errlen, "%s: \"%s\" is not a boolean (true/false)", d->name, value);
            return -EINVAL;
        }
        *(int *)field = b;
        return 0;
    }
    char *end;
    errno = 0;
    if (d->type == OPT_DOUBLE) {
        double x = strtod(value, &end);
        if (errno || end == value || *end || !isfinite(x)) {
            snprintf(err, errlen, "%s: \"%s\" is not a number", d->name, value);
            return -EINVAL;
        }
        if (x < (double)d->min || x > (double)d->max) {
            snprintf(err, errlen, "%s: %g is outside [%ld, %ld]", d->name, x, d->min, d->max);
            return -EINVAL;
        }
        *(double *)field = x;
        return 0;
    }
    long v = strtol(value, &end, 10);
    if (errno || end == value || *end) {
        snprintf(err, errlen, "%s: \"%s\" is not an integer", d->name, value);
        return -EINVAL;
    }
    if (v < d->min || v > d->max) {
        snprintf(err, errlen, "%s: %ld is outside [%ld, %ld]", d->name, v, d->min, d->max);
        return -EINVAL;
    }
    *(long *)field = v;
    return 0;
}

int options_init(options_t *o)
{
    *o = (options_t){ 0 };
    char err[256];
    for (size_t k = 0; k < sizeof(option_defs) / sizeof(option_defs[0]); k++)
        if (options__set_def(o, &option_defs[k], option_defs[k].def, err, sizeof(err)))
            goto fail;
    if (!(o->kafka = kafka_config_new()))
        goto fail;
    return 0;
fail:
    options_close(o);
    return -ENOMEM;
}

void options_close(options_t *o)
{
    for (size_t k = 0; k < sizeof(option_defs) / sizeof(option_defs[0]); k++)
        if (option_defs[k].type == OPT_STR)
            free(*(char **)((char *)o + option_defs[k].offset));
    kafka_config_free(o->kafka);
    *o = (options_t){ 0 };
}

int options_set(options_t *o, const char *name, const char *value, char *err, size_t errlen)
{
    if (strncmp(name, "kafka.", 6) == 0) {
        char why[512];
        int rc = kafka_config_set(o->kafka, name + 6, value, why, sizeof(why));
        if (rc)
            snprintf(err, errlen, "%s: %s", name, why);
        return rc;
    }
    for (size_t k = 0; k < sizeof(option_defs) / sizeof(option_defs[0]); k++)
        if (strcmp(option_defs[k].name, name) == 0)
            return options__set_def(o, &option_defs[k], value, err, errlen);
    snprintf(err, errlen, "unknown option \"%s\"", name);
    return -ENOENT;
}

int options_is_bool(const char *name)
{
    for (size_t k = 0; k < sizeof(option_defs) / sizeof(option_defs[0]); k++)
        if (strcmp(option_defs[k].name, name) == 0)
            return option_defs[k].type == OPT_BOOL;
    return 0;
}

void options_print_help(FILE *out)
{
    for (size_t k = 0; k < sizeof(option_defs) / sizeof(option_defs[0]); k++) {
        const option_def_t *d = &option_defs[k];
        char head[64];
        snprintf(head, sizeof(head), "--%s %s", d->name,
                 d->type == OPT_STR ? "TEXT" : d->type == OPT_BOOL ? "[BOOL]" : "N");
        fprintf(out, "  %-34s %s (default: %s%s%s)\n", head, d->doc,
                d->type == OPT_STR ? "\"" : "", d->def, d->type == OPT_STR ? "\"" : "");
    }
    fprintf(out, "  %-34s %s\n", "--kafka.KEY VALUE",
            "any librdkafka property, passed through (sasl.*, ssl.*, ...)");
}
