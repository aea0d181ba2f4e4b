/*
 * cli: what the offline tools share: usage errors and number options that
 * exit with status 2 and the tool's name, a monotonic clock, and the JSON of
 * leave-one-out metrics (so derrd-train and derrd-snap print the same keys).
 * Only for tools/: it exits.
 */
#ifndef DERRD_CLI_H
#define DERRD_CLI_H

#include "model/metrics.h"

#define CLI_EXIT_USAGE 2

/* The name errors start with ("derrd-train", ...); set it first. */
void cli_init(const char *prog);

/* Prints "<prog>: " fmt (with arg) and a pointer to --help, exits 2. */
_Noreturn void cli_die_usage(const char *fmt, const char *arg);

/* The value of option opt, which must be an integer / number in [lo, hi];
 * else exits 2 with the reason. */
long cli_parse_long(const char *opt, const char *s, long lo, long hi);
double cli_parse_double(const char *opt, const char *s, double lo, double hi);

/* Seconds of CLOCK_MONOTONIC. */
double cli_now_s(void);

/* Prints "name": {"HR@5": ..., "NDCG@5": ..., "MRR@5": ..., ... @20} to stdout. */
void cli_json_metrics(const char *name, const metrics_t *m);

#endif
