/*
 * options: every setting of the daemon in one table (name, type, default,
 * range, doc). Command-line flags and the keys of the configuration file
 * (io/config.h syntax) are parsed from the table; --help, the example file
 * (--dump-config) and the effective values (--print-config) are printed
 * from it; "kafka.<key>" settings pass through to librdkafka, which checks
 * them when they are set.
 *
 * An options_t belongs to one thread at a time.
 */
#ifndef DERRD_OPTIONS_H
#define DERRD_OPTIONS_H

#include <stddef.h>
#include <stdio.h>

#include "io/kafka.h"

typedef struct {
    char *brokers, *topic, *group, *dead_letter_topic, *state_dir, *log_level;
    long checkpoint_interval_ms, checkpoints_keep, max_staged, backstop_ms;
    long stats_interval_ms, shutdown_timeout_ms, embedded_partitions, exit_after_events;
    int embedded_kafka;
    int http;
    char *http_address, *http_token;
    long http_port, http_max_connections, http_timeout_s, http_per_ip_limit;
    long http_min_rate_kibps;
    /* rounds and snapshots */
    int rounds;
    char *snapshot_dir, *teacher_file;
    long snapshot_keep, round_min_events, round_interval_ms, student_epochs, teacher_epochs;
    long round_max_samples;
    long settle_epochs, teacher_refresh_min_ms;
    long teacher_refresh_ms, teacher_dim, student_dim, eval_permille, eval_candidates;
    long min_interactions, settle_patience, threads, zstd_level, seed, train_nice;
    double teacher_refresh_growth, lambda_de, lambda_rrd, gate_margin, teacher_foldin_share;
    kafka_config_t *kafka; /* kafka.* pass-through, in order given */
    char **kafka_keys;     /* (n_kafka_keys) the keys set in kafka, for printing */
    int n_kafka_keys;
} options_t;

/* The configuration file read when --config is not given, if it exists. */
#define OPTIONS_DEFAULT_FILE "/etc/derrd/derrd.conf"

/* Fills o with the defaults. Returns 0 or -ENOMEM. */
int options_init(options_t *o);
void options_close(options_t *o);

/* Sets one option by name from text ("kafka.<key>" passes through).
 * Returns 0, or -EINVAL / -ENOENT / -ENOMEM with the reason in err; the
 * reason does not repeat the name (callers say where it came from). */
int options_set(options_t *o, const char *name, const char *value, char *err, size_t errlen);

/* Sets every key of the configuration file at path. Returns 0, or a
 * negative errno with "PATH:LINE: key: reason" (or "PATH: reason" when the
 * file cannot be read) in err. Keys set before the error stay set. */
int options_load_file(options_t *o, const char *path, char *err, size_t errlen);

/* 1 when a running daemon applies a change of name on SIGHUP (the round
 * triggers, the teacher refresh policy, the quality gate, the log level);
 * other changes wait for the next start. */
int options_is_live(const char *name);

/* 1 when name is a boolean option (a flag that may go without a value). */
int options_is_bool(const char *name);

/* 1 when name is an option of the table or "kafka.<key>" (whose key
 * librdkafka checks only when it is set). */
int options_is_known(const char *name);

/* Prints one line per option with its default and doc. */
void options_print_help(FILE *out);

/* Prints the example configuration file: a header on the syntax, then every
 * option as a commented-out default under its doc, then the kafka.*
 * pass-through. The same bytes every time (systemd/derrd.conf.example). */
void options_print_example(FILE *out);

/* Prints the values in o as a configuration file, the kafka.* keys last in
 * the order set; secrets (http-token, kafka.*password*, ...) print as
 * <set> when set. */
void options_print_values(const options_t *o, FILE *out);

/* The values of o as options_print_values() prints them, but with the
 * secrets themselves: for options_changes() to compare (a new token is a
 * change), never to show. A malloc'd text, or NULL when out of memory. */
char *options_compare_text(const options_t *o);

/* Calls fn once for each setting whose value differs between before and
 * after, two texts of options_compare_text(): after's settings in order,
 * then those only before has. fn gets the name and its "name value" lines
 * as they may be shown (a secret's value as <set>), NULL on the side where
 * the setting is absent (a kafka.* property added or removed). */
typedef void (*options_change_fn)(void *ud, const char *name, const char *before,
                                  const char *after);
void options_changes(const char *before, const char *after, options_change_fn fn, void *ud);

#endif
