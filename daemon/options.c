/* The option table; see options.h. */
#include "daemon/options.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/config.h"
#include "io/log.h"

/* OPT_SECTION rows title the options below them (doc = the title);
 * OPT_SECRET is a string that --print-config does not show. */
typedef enum { OPT_SECTION, OPT_STR, OPT_SECRET, OPT_INT, OPT_BOOL, OPT_DOUBLE } option_type_t;

typedef struct {
    const char *name;
    option_type_t type;
    size_t offset;
    long min, max; /* OPT_INT and OPT_DOUBLE: the range; text: 1 = must not be empty */
    const char *def;
    const char *doc;
    int live; /* OPT_LIVE: SIGHUP applies a change at once */
} option_def_t;

#define OPT_LIVE 1

#define O(field) offsetof(options_t, field)

static const option_def_t option_defs[] = {
    { NULL, OPT_SECTION, 0, 0, 0, NULL, "Kafka", 0 },
    { "brokers", OPT_STR, O(brokers), 1, 0, "127.0.0.1:9092",
      "Kafka bootstrap servers, host:port[,host:port...]", 0 },
    { "topic", OPT_STR, O(topic), 1, 0, "derrd-events", "topic the interaction events come from", 0 },
    { "group", OPT_STR, O(group), 1, 0, "derrd", "Kafka consumer group", 0 },
    { "dead-letter-topic", OPT_STR, O(dead_letter_topic), 0, 0, "",
      "topic that receives invalid events with the reason in a header (empty: count and drop)", 0 },
    { "max-staged", OPT_INT, O(max_staged), 1000, 1000000000, "1000000",
      "events staged for the trainer before the partitions pause", 0 },
    { "backstop-ms", OPT_INT, O(backstop_ms), 10, 60000, "100",
      "poll Kafka at least this often, even without a wake-up", 0 },
    { "embedded-kafka", OPT_BOOL, O(embedded_kafka), 0, 1, "false",
      "start librdkafka's in-process mock cluster and use it (demo; nothing persists)", 0 },
    { "embedded-partitions", OPT_INT, O(embedded_partitions), 1, 1024, "4",
      "partitions of the topic created in the embedded cluster", 0 },

    { NULL, OPT_SECTION, 0, 0, 0, NULL, "State and checkpoints", 0 },
    { "state-dir", OPT_STR, O(state_dir), 1, 0, "/var/lib/derrd",
      "directory of the checkpoints", 0 },
    { "checkpoint-interval-ms", OPT_INT, O(checkpoint_interval_ms), 100, 86400000, "5000",
      "checkpoint at most this often while events arrive; offsets commit after each", 0 },
    { "checkpoints-keep", OPT_INT, O(checkpoints_keep), 1, 1000, "2",
      "checkpoints kept on disk (older ones are deleted)", 0 },

    { NULL, OPT_SECTION, 0, 0, 0, NULL, "Rounds and snapshots", 0 },
    { "rounds", OPT_BOOL, O(rounds), 0, 1, "true",
      "run distillation rounds and publish student snapshots (false: ingest only)", 0 },
    { "snapshot-dir", OPT_STR, O(snapshot_dir), 0, 0, "",
      "where student-<version>.dsnap files and the latest link are published (empty = "
      "<state-dir>/snapshots)", 0 },
    { "snapshot-keep", OPT_INT, O(snapshot_keep), 1, 10000, "5", "snapshots kept on disk", 0 },
    { "zstd-level", OPT_INT, O(zstd_level), 1, 19, "3", "snapshot compression level", 0 },
    { "round-min-events", OPT_INT, O(round_min_events), 1, 1000000000, "10000",
      "start a round once this many new events are applied", OPT_LIVE },
    { "round-interval-ms", OPT_INT, O(round_interval_ms), 100, 86400000, "5000",
      "or this long after the last round when anything is new; settling rounds (nothing "
      "new, quality still improving) run back to back", OPT_LIVE },
    { "min-interactions", OPT_INT, O(min_interactions), 1, 1000000000, "1000",
      "no round before the state holds this many interactions", 0 },
    { "student-epochs", OPT_INT, O(student_epochs), 1, 10000, "1",
      "DE-RRD epochs of the student per round with new events (short rounds: fresh "
      "snapshots)", 0 },
    { "round-max-samples", OPT_INT, O(round_max_samples), 0, 2000000000, "50000",
      "a round with new events trains the student on the changed users' interactions and "
      "a sample of the others, this many in all, so rounds stay short as the state grows "
      "(0 = all; settling rounds use all)", 0 },
    { "settle-epochs", OPT_INT, O(settle_epochs), 0, 100000, "10",
      "student epochs per idle round while settling (0 = student-epochs)", 0 },
    { "settle-patience", OPT_INT, O(settle_patience), 0, 1000, "8",
      "idle rounds go on until held-out NDCG@10 has not improved for this many", OPT_LIVE },
    { "threads", OPT_INT, O(threads), 1, 1024, "2", "training worker threads", 0 },
    { "train-nice", OPT_INT, O(train_nice), 0, 19, "10",
      "niceness of the trainer and its workers: training yields the CPU to the event loop "
      "and the HTTP threads (0 = the process's own)", 0 },
    { "seed", OPT_INT, O(seed), 0, LONG_MAX, "1", "random seed of the models", 0 },

    { NULL, OPT_SECTION, 0, 0, 0, NULL, "Teacher refresh", 0 },
    { "teacher-file", OPT_STR, O(teacher_file), 0, 0, "",
      "use this teacher embedding file (docs/EMBFILE.md; rows = decimal ids) instead of the "
      "built-in teacher; reloaded when it changes", 0 },
    { "teacher-epochs", OPT_INT, O(teacher_epochs), 1, 10000, "5",
      "epochs of the built-in teacher per refresh", 0 },
    { "teacher-refresh-ms", OPT_INT, O(teacher_refresh_ms), 0, 604800000, "600000",
      "refresh the built-in teacher at least this often (0 = only by growth)", OPT_LIVE },
    { "teacher-refresh-growth", OPT_DOUBLE, O(teacher_refresh_growth), 0, 1000, "1.0",
      "or when interactions grew by this share since the last refresh", OPT_LIVE },
    { "teacher-refresh-min-ms", OPT_INT, O(teacher_refresh_min_ms), 0, 604800000, "60000",
      "no growth-triggered refresh sooner than this after the last (fold-in epochs cover "
      "new users meanwhile)", OPT_LIVE },
    { "teacher-foldin-share", OPT_DOUBLE, O(teacher_foldin_share), 0, 1, "0.25",
      "between refreshes, new rows under this share of all rows are folded into the "
      "teacher by means of known rows instead of a whole epoch", 0 },

    { NULL, OPT_SECTION, 0, 0, 0, NULL, "Model sizes and distillation weights", 0 },
    { "teacher-dim", OPT_INT, O(teacher_dim), 1, 4096, "200", "built-in teacher dimension", 0 },
    { "student-dim", OPT_INT, O(student_dim), 1, 4096, "20", "student dimension", 0 },
    { "lambda-de", OPT_DOUBLE, O(lambda_de), 0, 1000, "0.01",
      "weight of Distillation Experts (0 = off)", 0 },
    { "lambda-rrd", OPT_DOUBLE, O(lambda_rrd), 0, 1000, "0.001",
      "weight of Relaxed Ranking Distillation (0 = off)", 0 },

    { NULL, OPT_SECTION, 0, 0, 0, NULL, "Evaluation and the quality gate", 0 },
    { "eval-permille", OPT_INT, O(eval_permille), 0, 1000, "250",
      "users (per 1000) whose latest interaction is held out for evaluation", 0 },
    { "eval-candidates", OPT_INT, O(eval_candidates), 20, 100000, "99",
      "sampled unobserved items each held-out item is ranked against (at least 20: with "
      "fewer, HR@10 is 1 for any model)", 0 },
    { "gate-margin", OPT_DOUBLE, O(gate_margin), 0, 1, "0.02",
      "do not publish when held-out HR@10 is this much (or two standard errors, when "
      "larger) below the last published", OPT_LIVE },

    { NULL, OPT_SECTION, 0, 0, 0, NULL, "HTTP", 0 },
    { "http", OPT_BOOL, O(http), 0, 1, "true",
      "serve the HTTP endpoints: /v1/snapshot, /metrics, /v1/status, /healthz, /readyz and "
      "the status page (false: none)", 0 },
    { "http-address", OPT_STR, O(http_address), 1, 0, "127.0.0.1",
      "address the HTTP endpoints listen on (numeric; loopback by default)", 0 },
    { "http-port", OPT_INT, O(http_port), 0, 65535, "8417",
      "HTTP port (0 = a free port the kernel picks; the \"http on\" log line names the "
      "port bound)", 0 },
    { "http-token", OPT_SECRET, O(http_token), 0, 0, "",
      "bearer token required on every endpoint but /healthz and the status page (empty = "
      "none)", 0 },
    { "http-max-connections", OPT_INT, O(http_max_connections), 1, 100000, "64",
      "HTTP connections served at once (more wait in the listen backlog)", 0 },
    { "http-timeout-s", OPT_INT, O(http_timeout_s), 1, 3600, "30",
      "close an HTTP connection idle this long; request headers must arrive within "
      "min(10, this) seconds", 0 },
    { "http-min-rate-kibps", OPT_INT, O(http_min_rate_kibps), 1, 1048576, "16",
      "a response must be sent in full within min(10, http-timeout-s) seconds plus its "
      "size at this many KiB/s, else the connection is reset (a client reading a snapshot "
      "a few bytes at a time cannot hold a connection for hours)", 0 },
    { "http-per-ip-limit", OPT_INT, O(http_per_ip_limit), 0, 100000, "16",
      "HTTP connections per client address (0 = no limit, e.g. behind a proxy)", 0 },

    { NULL, OPT_SECTION, 0, 0, 0, NULL, "Logging and process", 0 },
    { "log-level", OPT_STR, O(log_level), 1, 0, "info", "err, warning, notice, info or debug", OPT_LIVE },
    { "stats-interval-ms", OPT_INT, O(stats_interval_ms), 0, 86400000, "10000",
      "log an ingest summary this often (0 = never)", 0 },
    { "shutdown-timeout-ms", OPT_INT, O(shutdown_timeout_ms), 100, 600000, "10000",
      "bound on each shutdown step (dead letters, final commit, group leave, teardown)", 0 },
    { "exit-after-events", OPT_INT, O(exit_after_events), 0, LONG_MAX, "0",
      "benchmarks and tests: stop cleanly once this many events are applied (0 = run on)", 0 },
};

#define OPTIONS__N (sizeof(option_defs) / sizeof(option_defs[0]))

static const option_def_t *options__find(const char *name)
{
    for (size_t k = 0; k < OPTIONS__N; k++)
        if (option_defs[k].name && strcmp(option_defs[k].name, name) == 0)
            return &option_defs[k];
    return NULL;
}

static int options__is_text(const option_def_t *d)
{
    return d->type == OPT_STR || d->type == OPT_SECRET;
}

/* Checks the text options whose values have a fixed form. */
static int options__check_text(const option_def_t *d, const char *value, char *err,
                               size_t errlen)
{
    if (d->min > 0 && !*value) {
        snprintf(err, errlen, "must not be empty");
        return -EINVAL;
    }
    if (strcmp(d->name, "log-level") == 0 && log_level_parse(value) < 0) {
        snprintf(err, errlen, "\"%s\" is not one of err, warning, notice, info, debug", value);
        return -EINVAL;
    }
    unsigned char addr[sizeof(struct in6_addr)];
    if (strcmp(d->name, "http-address") == 0 && inet_pton(AF_INET, value, addr) != 1 &&
        inet_pton(AF_INET6, value, addr) != 1) {
        snprintf(err, errlen, "\"%s\" is not a numeric IPv4 or IPv6 address", value);
        return -EINVAL;
    }
    return 0;
}

static int options__set_def(options_t *o, const option_def_t *d, const char *value, char *err,
                            size_t errlen)
{
    void *field = (char *)o + d->offset;
    if (options__is_text(d)) {
        int rc = options__check_text(d, value, err, errlen);
        if (rc)
            return rc;
        char *v = strdup(value);
        if (!v) {
            snprintf(err, errlen, "out of memory");
            return -ENOMEM;
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
            snprintf(err, errlen, "\"%s\" is not a boolean (true/false)", value);
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
            snprintf(err, errlen, "\"%s\" is not a number", value);
            return -EINVAL;
        }
        if (x < (double)d->min || x > (double)d->max) {
            snprintf(err, errlen, "%g is outside [%ld, %ld]", x, d->min, d->max);
            return -EINVAL;
        }
        *(double *)field = x;
        return 0;
    }
    long v = strtol(value, &end, 10);
    if (errno || end == value || *end) {
        snprintf(err, errlen, "\"%s\" is not an integer", value);
        return -EINVAL;
    }
    if (v < d->min || v > d->max) {
        snprintf(err, errlen, "%ld is outside [%ld, %ld]", v, d->min, d->max);
        return -EINVAL;
    }
    *(long *)field = v;
    return 0;
}

int options_init(options_t *o)
{
    *o = (options_t){ 0 };
    char err[256];
    for (size_t k = 0; k < OPTIONS__N; k++)
        if (option_defs[k].type != OPT_SECTION &&
            options__set_def(o, &option_defs[k], option_defs[k].def, err, sizeof(err)))
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
    for (size_t k = 0; k < OPTIONS__N; k++)
        if (options__is_text(&option_defs[k]))
            free(*(char **)((char *)o + option_defs[k].offset));
    kafka_config_free(o->kafka);
    for (int k = 0; k < o->n_kafka_keys; k++)
        free(o->kafka_keys[k]);
    free(o->kafka_keys);
    *o = (options_t){ 0 };
}

/* Passes key to librdkafka, which checks it, and remembers its name. */
static int options__set_kafka(options_t *o, const char *key, const char *value, char *err,
                              size_t errlen)
{
    int rc = kafka_config_set(o->kafka, key, value, err, errlen);
    if (rc)
        return rc;
    for (int k = 0; k < o->n_kafka_keys; k++)
        if (strcmp(o->kafka_keys[k], key) == 0)
            return 0;
    char **keys = realloc(o->kafka_keys, (size_t)(o->n_kafka_keys + 1) * sizeof(*keys));
    if (!keys)
        goto nomem;
    o->kafka_keys = keys;
    if (!(keys[o->n_kafka_keys] = strdup(key)))
        goto nomem;
    o->n_kafka_keys++;
    return 0;
nomem:
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
}

int options_set(options_t *o, const char *name, const char *value, char *err, size_t errlen)
{
    if (strncmp(name, "kafka.", 6) == 0)
        return options__set_kafka(o, name + 6, value, err, errlen);
    const option_def_t *d = options__find(name);
    if (!d) {
        snprintf(err, errlen, "unknown option (derrd --help lists them)");
        return -ENOENT;
    }
    return options__set_def(o, d, value, err, errlen);
}

static int options__file_cb(void *ud, const char *file, int line, const char *key,
                            const char *value, char *err, size_t errlen)
{
    (void)file;
    (void)line;
    char why[768];
    int rc = options_set(ud, key, value, why, sizeof(why));
    if (rc)
        snprintf(err, errlen, "%s: %s", key, why);
    return rc;
}

int options_load_file(options_t *o, const char *path, char *err, size_t errlen)
{
    return config_read_file(path, options__file_cb, o, err, errlen);
}

int options_is_live(const char *name)
{
    const option_def_t *d = options__find(name);
    return d && d->live;
}

int options_is_bool(const char *name)
{
    const option_def_t *d = options__find(name);
    return d && d->type == OPT_BOOL;
}

int options_is_known(const char *name)
{
    return strncmp(name, "kafka.", 6) == 0 || options__find(name) != NULL;
}

void options_print_help(FILE *out)
{
    for (size_t k = 0; k < OPTIONS__N; k++) {
        const option_def_t *d = &option_defs[k];
        if (d->type == OPT_SECTION) {
            fprintf(out, "\n %s:\n", d->doc);
            continue;
        }
        char head[64];
        snprintf(head, sizeof(head), "--%s %s", d->name,
                 options__is_text(d)       ? "TEXT"
                 : d->type == OPT_BOOL     ? "[BOOL]"
                 : d->type == OPT_DOUBLE   ? "X"
                                           : "N");
        fprintf(out, "  %-34s %s (default: %s%s%s%s)\n", head, d->doc,
                options__is_text(d) ? "\"" : "", d->def, options__is_text(d) ? "\"" : "",
                d->live ? "; SIGHUP applies" : "");
    }
    fprintf(out, "\n librdkafka:\n  %-34s %s\n", "--kafka.KEY VALUE",
            "any librdkafka property, passed through (sasl.*, ssl.*, ...)");
}

/* ---- printing in the file's syntax ---------------------------------------------- */

#define OPTIONS__WIDTH 78

/* Writes text as "# " comment lines no wider than OPTIONS__WIDTH (a longer
 * word gets a line of its own), then tail, unbroken, on the last line when
 * it fits there, else on a line of its own. */
static void options__put_comment(FILE *out, const char *text, const char *tail)
{
    const size_t width = OPTIONS__WIDTH - 2;
    size_t last = 0;
    while (*text) {
        size_t n = strlen(text);
        if (n > width) {
            n = width;
            while (n > 0 && text[n] != ' ')
                n--;
            if (n == 0)
                while (text[n] && text[n] != ' ')
                    n++;
        }
        fprintf(out, "# %.*s", (int)n, text);
        last = n;
        text += n;
        while (*text == ' ')
            text++;
        if (*text)
            fputc('\n', out);
    }
    if (*tail && last && last + 1 + strlen(tail) <= width)
        fprintf(out, " %s\n", tail);
    else if (*tail)
        fprintf(out, "%s# %s\n", last ? "\n" : "", tail);
    else if (last)
        fputc('\n', out);
}

/* Writes value so that io/config reads it back unchanged: bare when it can
 * be, else quoted. */
static void options__put_value(FILE *out, const char *v)
{
    int bare = *v != 0;
    for (const unsigned char *c = (const unsigned char *)v; *c; c++) {
        if (*c < 0x20 || *c == 0x7F) {
            fputs("<not shown: control characters>", out);
            return;
        }
        if (*c == ' ' || *c == '#' || *c == '"' || *c == '\\')
            bare = 0;
    }
    if (bare) {
        fputs(v, out);
        return;
    }
    fputc('"', out);
    for (const char *c = v; *c; c++) {
        if (*c == '"' || *c == '\\')
            fputc('\\', out);
        fputc(*c, out);
    }
    fputc('"', out);
}

static void options__put_section(FILE *out, const char *title)
{
    char line[OPTIONS__WIDTH + 1];
    int n = snprintf(line, sizeof(line), "# ---- %s ", title);
    if (n < 0 || n > OPTIONS__WIDTH)
        n = OPTIONS__WIDTH;
    memset(line + n, '-', (size_t)(OPTIONS__WIDTH - n));
    line[OPTIONS__WIDTH] = 0;
    fprintf(out, "\n%s\n", line);
}

static const char options__example_head[] =
    "# derrd configuration file (" OPTIONS_DEFAULT_FILE ", or derrd --config FILE).\n"
    "#\n"
    "# Generated by `derrd --dump-config`: every option with its default,\n"
    "# commented out. One setting a line: an option name, whitespace, a value.\n"
    "# The names are those of `derrd --help` without the leading \"--\", and a\n"
    "# flag on the command line overrides the same key here. Blank lines and\n"
    "# lines starting with \"#\" are ignored, and so is the rest of a line from a\n"
    "# \"#\" that follows whitespace. Quote a value (\"...\") to keep spaces at its\n"
    "# ends or a \"#\" after a space; inside quotes write \\\" and \\\\. \"\" is the\n"
    "# empty value. Each key may appear once.\n"
    "#\n"
    "# `derrd --check-config` checks the file (and the flags) and exits: 0 when\n"
    "# they are valid, 78 with FILE:LINE: reason when not. `derrd --print-config`\n"
    "# prints the values in effect. Keep the file readable by derrd only when it\n"
    "# holds the HTTP token or a Kafka password.\n";

static const char options__example_kafka[] =
    "\n"
    "# Any librdkafka property passes through unchanged as kafka.<property>\n"
    "# (librdkafka's CONFIGURATION.md lists them) to the consumer and the\n"
    "# producers; librdkafka checks each when the file is loaded.\n"
    "# kafka.bootstrap.servers, when set, wins over brokers. Refused: group.id,\n"
    "# enable.auto.offset.store, enable.auto.commit, enable.partition.eof (derrd\n"
    "# sets them) and the cooperative-sticky assignor. SASL over TLS, e.g.:\n"
    "#\n"
    "# kafka.security.protocol SASL_SSL\n"
    "# kafka.sasl.mechanisms SCRAM-SHA-512\n"
    "# kafka.sasl.username derrd\n"
    "# kafka.sasl.password secret\n"
    "# kafka.ssl.ca.location /etc/derrd/kafka-ca.pem\n";

void options_print_example(FILE *out)
{
    fputs(options__example_head, out);
    for (size_t k = 0; k < OPTIONS__N; k++) {
        const option_def_t *d = &option_defs[k];
        if (d->type == OPT_SECTION) {
            options__put_section(out, d->doc);
            continue;
        }
        char range[96] = "";
        if (d->type == OPT_INT && d->max == LONG_MAX)
            snprintf(range, sizeof(range), "(integer >= %ld)", d->min);
        else if (d->type == OPT_INT)
            snprintf(range, sizeof(range), "(integer in [%ld, %ld])", d->min, d->max);
        else if (d->type == OPT_DOUBLE)
            snprintf(range, sizeof(range), "(number in [%ld, %ld])", d->min, d->max);
        else if (d->type == OPT_BOOL)
            snprintf(range, sizeof(range), "(true or false)");
        else if (d->type == OPT_SECRET)
            snprintf(range, sizeof(range), "(secret: --print-config shows <set>)");
        if (d->live && *range)
            snprintf(range + strlen(range) - 1, sizeof(range) - strlen(range) + 1,
                     "; SIGHUP applies)");
        else if (d->live)
            snprintf(range, sizeof(range), "(SIGHUP applies)");
        fputc('\n', out);
        options__put_comment(out, d->doc, range);
        fprintf(out, "# %s ", d->name);
        options__put_value(out, d->def);
        fputc('\n', out);
    }
    options__put_section(out, "librdkafka pass-through");
    fputs(options__example_kafka, out);
}

/* librdkafka properties that hold credentials. */
static int options__kafka_secret(const char *key)
{
    return strstr(key, "password") || strstr(key, "secret") ||
           strcmp(key, "ssl.key.pem") == 0 || strcmp(key, "sasl.oauthbearer.config") == 0;
}

/* Prints the values; show_secrets only for comparing, never for a person. */
static void options__print(const options_t *o, FILE *out, int show_secrets)
{
    fputs("# derrd: the configuration in effect (file, then flags); secrets show as <set>\n",
          out);
    for (size_t k = 0; k < OPTIONS__N; k++) {
        const option_def_t *d = &option_defs[k];
        const void *field = (const char *)o + d->offset;
        if (d->type == OPT_SECTION)
            continue;
        fprintf(out, "%s ", d->name);
        if (d->type == OPT_SECRET)
            options__put_value(out, show_secrets || !**(char *const *)field
                                        ? *(char *const *)field : "<set>");
        else if (d->type == OPT_STR)
            options__put_value(out, *(char *const *)field);
        else if (d->type == OPT_BOOL)
            fputs(*(const int *)field ? "true" : "false", out);
        else if (d->type == OPT_INT)
            fprintf(out, "%ld", *(const long *)field);
        else {
            /* the shortest text that reads back as the same double */
            double x = *(const double *)field;
            char num[64];
            for (int digits = 1; digits <= 17; digits++) {
                snprintf(num, sizeof(num), "%.*g", digits, x);
                if (strtod(num, NULL) == x)
                    break;
            }
            fputs(num, out);
        }
        fputc('\n', out);
    }
    for (int k = 0; k < o->n_kafka_keys; k++) {
        const char *v = kafka_config_get(o->kafka, o->kafka_keys[k]);
        fprintf(out, "kafka.%s ", o->kafka_keys[k]);
        options__put_value(out, !show_secrets && options__kafka_secret(o->kafka_keys[k])
                                    ? "<set>" : v ? v : "");
        fputc('\n', out);
    }
}

void options_print_values(const options_t *o, FILE *out) { options__print(o, out, 0); }

char *options_compare_text(const options_t *o)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return NULL;
    options__print(o, f, 1);
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

/* 1 when the setting name holds a credential (--print-config shows <set>). */
static int options__is_secret(const char *name)
{
    if (strncmp(name, "kafka.", 6) == 0)
        return options__kafka_secret(name + 6);
    const option_def_t *d = options__find(name);
    return d && d->type == OPT_SECRET;
}

/* The line of text (a text of options__print) that sets name, or NULL;
 * *len: its length without the newline. */
static const char *options__line_of(const char *text, const char *name, size_t nlen,
                                    size_t *len)
{
    for (const char *l = text; l && *l;) {
        const char *nl = strchr(l, '\n');
        size_t n = nl ? (size_t)(nl - l) : strlen(l);
        if (l[0] != '#' && n > nlen && l[nlen] == ' ' && memcmp(l, name, nlen) == 0) {
            *len = n;
            return l;
        }
        l = nl ? nl + 1 : NULL;
    }
    return NULL;
}

/* The line as it may be shown: a secret's value as <set>. */
static char *options__shown(const char *line, size_t len, const char *name)
{
    char *out;
    size_t nlen = strcspn(line, " ");
    if (options__is_secret(name) && !(len == nlen + 3 && memcmp(line + nlen, " \"\"", 3) == 0)) {
        if (asprintf(&out, "%.*s <set>", (int)nlen, line) < 0)
            return NULL;
        return out;
    }
    return strndup(line, len);
}

/* One side's settings against the other's: fn for each that differs (or,
 * with only_missing, for each the other side lacks). */
static void options__diff(const char *from, const char *to, int only_missing, int from_is_after,
                          options_change_fn fn, void *ud)
{
    for (const char *l = from; l && *l;) {
        const char *nl = strchr(l, '\n');
        size_t n = nl ? (size_t)(nl - l) : strlen(l);
        size_t nlen = strcspn(l, " \n");
        if (l[0] != '#' && nlen < n) {
            char *name = strndup(l, nlen);
            size_t olen = 0;
            const char *other = name ? options__line_of(to, name, nlen, &olen) : NULL;
            if (name && (other ? !only_missing && (olen != n || memcmp(other, l, n) != 0)
                               : 1)) {
                char *mine = options__shown(l, n, name);
                char *theirs = other ? options__shown(other, olen, name) : NULL;
                if (mine && (theirs || !other))
                    fn(ud, name, from_is_after ? theirs : mine, from_is_after ? mine : theirs);
                free(mine);
                free(theirs);
            }
            free(name);
        }
        l = nl ? nl + 1 : NULL;
    }
}

void options_changes(const char *before, const char *after, options_change_fn fn, void *ud)
{
    options__diff(after, before, 0, 1, fn, ud);
    options__diff(before, after, 1, 0, fn, ud);
}
