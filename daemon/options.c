/* The option table; see options.h. */
#include "daemon/options.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "io/log.h"

typedef enum { OPT_STR, OPT_INT, OPT_BOOL } option_type_t;

typedef struct {
    const char *name;
    option_type_t type;
    size_t offset;
    long min, max;
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
                 d->type == OPT_STR ? "TEXT" : d->type == OPT_INT ? "N" : "[BOOL]");
        fprintf(out, "  %-34s %s (default: %s%s%s)\n", head, d->doc,
                d->type == OPT_STR ? "\"" : "", d->def, d->type == OPT_STR ? "\"" : "");
    }
    fprintf(out, "  %-34s %s\n", "--kafka.KEY VALUE",
            "any librdkafka property, passed through (sasl.*, ssl.*, ...)");
}
