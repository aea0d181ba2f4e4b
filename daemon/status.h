/*
 * status: what the daemon tells about itself over HTTP, rendered on the loop
 * thread once a second from the ingest and trainer figures:
 *
 *   status_metrics()  the Prometheus text of /metrics (docs/METRICS.md has
 *                     every series; promtool check metrics accepts it)
 *   status_json()     the JSON of /v1/status, which the status page (/)
 *                     polls: quality per round, ingest rate, state, snapshot
 *
 * A status_t keeps the short history the page charts: one ingest sample a
 * second (the last STATUS_RATE_SAMPLES) and the trainer's round history.
 * Loop thread only; the texts it returns are the caller's to free.
 */
#ifndef DERRD_STATUS_H
#define DERRD_STATUS_H

#include <stdint.h>

#include "daemon/http.h"
#include "daemon/ingest.h"
#include "daemon/trainer.h"

/* Ingest samples kept for the rate chart (seconds). */
#define STATUS_RATE_SAMPLES 900

/* One second's figures, gathered by the caller. */
typedef struct {
    const ingest_stats_t *is;
    const trainer_stats_t *ts;
    const http_stats_t *hs;       /* NULL: no HTTP server */
    uint64_t now_ms;              /* wall clock */
    uint64_t start_ms;            /* wall clock at start */
    int ready;                    /* what /readyz says */
    const char *not_ready_reason; /* when not ready */
    int has_snapshot;             /* latest exists and names a snapshot */
    uint64_t snapshot_version, snapshot_mtime_ms;
    int rounds_enabled;
} status_in_t;

typedef struct status status_t;

status_t *status_new(const char *version);
void status_free(status_t *s);

/* Adds the second's ingest sample and the rounds the trainer finished since
 * the last call (t may be NULL). */
void status_sample(status_t *s, const status_in_t *in, trainer_t *t);

/* The Prometheus text (version 0.0.4) and the /v1/status JSON; NULL when
 * out of memory. */
char *status_metrics(const status_t *s, const status_in_t *in);
char *status_json(const status_t *s, const status_in_t *in);

/* The status page's HTML (daemon/status.html, built in). */
extern const char status_page_html[];
extern const unsigned long status_page_html_len;

#endif
