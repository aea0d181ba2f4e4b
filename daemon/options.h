/*
 * options: every setting of the daemon in one table (name, type, default,
 * range, doc). Command-line flags are parsed from the table, --help is
 * printed from it, and "kafka.<key>" settings pass through to librdkafka.
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
    char *http_address, *http_token;
    long http_port;
    /* rounds and snapshots */
    int rounds;
    char *snapshot_dir, *teacher_file;
    long snapshot_keep, round_min_events, round_interval_ms, student_epochs, teacher_epochs;
    long settle_epochs, teacher_refresh_min_ms;
    long teacher_refresh_ms, teacher_dim, student_dim, eval_permille, eval_candidates;
    long min_interactions, settle_patience, threads, zstd_level, seed;
    double teacher_refresh_growth, lambda_de, lambda_rrd, gate_margin, teacher_foldin_share;
    kafka_config_t *kafka; /* kafka.* pass-through, in order given */
} options_t;

/* Fills o with the defaults. Returns 0 or -ENOMEM. */
int options_init(options_t *o);
void options_close(options_t *o);

/* Sets one option by name from text ("kafka.<key>" passes through).
 * Returns 0, or -EINVAL / -ENOENT with the reason in err. */
int options_set(options_t *o, const char *name, const char *value, char *err, size_t errlen);

/* 1 when name is a boolean option (a flag that may go without a value). */
int options_is_bool(const char *name);

/* Prints one line per option with its default and doc. */
void options_print_help(FILE *out);

#endif
