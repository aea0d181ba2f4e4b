/* The daemon's /metrics and /v1/status texts; see status.h. */
#include "daemon/status.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/kafka.h"
#include "model/gemm.h"

typedef struct {
    uint64_t t_ms;     /* wall clock */
    uint64_t consumed; /* events consumed so far */
    uint64_t invalid;
    int64_t lag;
} status_sample_t;

struct status {
    char *version;
    status_sample_t rate[STATUS_RATE_SAMPLES]; /* ring; n_rate samples so far */
    uint64_t n_rate;
    trainer_round_t *rounds; /* ring of TRAINER_HISTORY; n_rounds so far */
    uint64_t n_rounds, last_round;
    trainer_round_t fetch[64];
};

status_t *status_new(const char *version)
{
    status_t *s = calloc(1, sizeof(*s));
    if (!s || !(s->version = strdup(version)) ||
        !(s->rounds = calloc(TRAINER_HISTORY, sizeof(*s->rounds)))) {
        status_free(s);
        return NULL;
    }
    return s;
}

void status_free(status_t *s)
{
    if (!s)
        return;
    free(s->version);
    free(s->rounds);
    free(s);
}

void status_sample(status_t *s, const status_in_t *in, trainer_t *t)
{
    s->rate[s->n_rate++ % STATUS_RATE_SAMPLES] =
        (status_sample_t){ in->now_ms, in->is->consumed, in->is->invalid, in->is->lag };
    int n;
    while (t && (n = trainer_history(t, s->last_round, s->fetch, 64)) > 0) {
        for (int k = 0; k < n; k++)
            s->rounds[s->n_rounds++ % TRAINER_HISTORY] = s->fetch[k];
        s->last_round = s->fetch[n - 1].r.round;
        if (n < 64)
            break;
    }
}

/* ---- Prometheus text -------------------------------------------------------------- */

static void status__family(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP derrd_%s %s\n# TYPE derrd_%s %s\n", name, help, name, type);
}

static void status__u64(FILE *f, const char *name, const char *type, const char *help,
                        uint64_t v)
{
    status__family(f, name, type, help);
    fprintf(f, "derrd_%s %llu\n", name, (unsigned long long)v);
}

static void status__dbl(FILE *f, const char *name, const char *help, double v)
{
    status__family(f, name, "gauge", help);
    if (isnan(v))
        fprintf(f, "derrd_%s NaN\n", name);
    else if (v == floor(v) && fabs(v) < 9007199254740992.0) /* counts: every digit */
        fprintf(f, "derrd_%s %.0f\n", name, v);
    else if (fabs(v) >= 1e6) /* Unix times */
        fprintf(f, "derrd_%s %.3f\n", name, v);
    else
        fprintf(f, "derrd_%s %.9g\n", name, v);
}

#define COUNTER(name, help, v) status__u64(f, name, "counter", help, (uint64_t)(v))
#define GAUGE(name, help, v) status__dbl(f, name, help, (double)(v))

char *status_metrics(const status_t *s, const status_in_t *in)
{
    const ingest_stats_t *is = in->is;
    const trainer_stats_t *ts = in->ts;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return NULL;
    status__family(f, "build_info", "gauge",
                   "Always 1; the labels name the versions and the BLAS kernels.");
    fprintf(f, "derrd_build_info{version=\"%s\",librdkafka=\"%s\",blas=\"%s\"} 1\n",
            s->version, kafka_version(), gemm_backend());
    GAUGE("start_time_seconds", "Start time of the daemon, Unix seconds.",
          (double)in->start_ms / 1000.0);
    GAUGE("ready", "1 when /readyz answers ready.", in->ready);

    /* ingest */
    COUNTER("events_consumed_total", "Kafka messages read.", is->consumed);
    COUNTER("events_invalid_total", "Messages the codec refused.", is->invalid);
    COUNTER("events_dead_lettered_total",
            "Invalid messages acknowledged by the dead-letter topic.", is->dead_lettered);
    COUNTER("events_dead_letter_truncated_total",
            "Invalid messages dead-lettered cut to 64 KiB of value and 1 KiB of key.",
            is->dead_letter_truncated);
    COUNTER("events_redelivered_total", "Messages read again below the position and ignored.",
            is->redelivered);
    COUNTER("kafka_errors_total", "Errors reported by the Kafka client.", is->kafka_errors);
    GAUGE("kafka_brokers_up", "Broker connections up (-1 unknown).", is->brokers_up);
    status__family(f, "consumer_lag", "gauge",
                   "Messages behind the log end per assigned partition (-1 unknown).");
    for (int k = 0; k < is->n_part_lag; k++)
        fprintf(f, "derrd_consumer_lag{partition=\"%d\"} %lld\n", (int)is->part_lag[k].partition,
                (long long)is->part_lag[k].lag);
    GAUGE("consumer_paused", "1 while the partitions are paused (staging queue full).",
          is->paused);
    GAUGE("staged_events", "Events staged for the trainer.", is->staged);
    GAUGE("loop_lag_seconds", "Longest event-loop stall in the last 10 s window.",
          is->loop_lag_recent_ms / 1000.0);
    GAUGE("loop_lag_max_seconds", "Longest event-loop stall since start.",
          is->loop_lag_max_ms / 1000.0);
    GAUGE("loop_lag_own_max_seconds",
          "Longest event-loop stall since start, less the time the loop thread waited for a "
          "CPU (the loop's own work and blocking).",
          is->loop_lag_own_max_ms / 1000.0);

    /* state and checkpoints */
    GAUGE("interactions", "Interactions in the state.", ts->interactions);
    GAUGE("users", "Users in the state.", ts->users);
    GAUGE("items", "Items in the state.", ts->items);
    GAUGE("state_bytes", "Heap held by the id maps and the interaction set.", ts->state_bytes);
    COUNTER("events_applied_total", "Events applied to the state.", ts->applied);
    COUNTER("events_duplicate_total", "Events already in the state.", ts->duplicates);
    COUNTER("checkpoints_total", "Checkpoints written.", ts->checkpoints);
    COUNTER("checkpoint_failures_total", "Checkpoints that failed.", ts->checkpoint_failures);
    GAUGE("checkpoint_age_seconds", "Seconds since the last checkpoint was written (-1 none).",
          ts->last_checkpoint_ms ? (double)(in->now_ms - ts->last_checkpoint_ms) / 1000.0
                                 : -1.0);

    /* rounds */
    if (in->rounds_enabled) {
        COUNTER("rounds_total", "Distillation rounds run.", ts->rounds);
        COUNTER("rounds_failed_total", "Rounds that failed (the reason is logged).",
                ts->rounds_failed);
        COUNTER("rounds_gated_total", "Rounds whose snapshot the quality gate withheld.",
                ts->rounds_gated);
        COUNTER("snapshots_published_total", "Snapshots published.", ts->published);
        COUNTER("snapshot_publish_failures_total",
                "Snapshots that could not be written (the reason is logged).",
                ts->publish_failures);
        COUNTER("teacher_refreshes_total",
                "Full teacher refreshes (built-in teacher trained, or teacher file loaded).",
                ts->teacher_refreshes);
        COUNTER("teacher_foldins_total", "New rows folded into the teacher between refreshes.",
                ts->teacher_foldins);
        status__family(f, "round_duration_seconds", "histogram", "Duration of rounds.");
        uint64_t cum = 0;
        for (int b = 0; b <= TRAINER_ROUND_BUCKETS; b++) {
            cum += ts->round_le[b];
            if (b < TRAINER_ROUND_BUCKETS)
                fprintf(f, "derrd_round_duration_seconds_bucket{le=\"%g\"} %llu\n",
                        trainer_round_bounds[b], (unsigned long long)cum);
            else
                fprintf(f, "derrd_round_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
                        (unsigned long long)cum);
        }
        /* A counter: every digit a double holds (rate() of it needs them). */
        fprintf(f, "derrd_round_duration_seconds_sum %.15g\n"
                   "derrd_round_duration_seconds_count %llu\n",
                ts->round_seconds_sum, (unsigned long long)cum);
        const rounds_result_t *r = &ts->last_round;
        int any = ts->rounds > 0;
        GAUGE("student_hr10", "Student held-out HR@10, last round (NaN before one).",
              any ? r->hr10 : NAN);
        GAUGE("student_ndcg10", "Student held-out NDCG@10, last round (NaN before one).",
              any ? r->ndcg10 : NAN);
        GAUGE("teacher_hr10", "Teacher held-out HR@10, last round (NaN before one).",
              any ? r->teacher_hr10 : NAN);
        GAUGE("teacher_ndcg10", "Teacher held-out NDCG@10, last round (NaN before one).",
              any ? r->teacher_ndcg10 : NAN);
        GAUGE("heldout_users", "Users held out for evaluation in the last round.",
              any ? r->eval_users : 0);
        GAUGE("teacher_version", "Version of the teacher (0 none yet).",
              any ? r->teacher_version : 0);
        GAUGE("round_student_pairs",
              "Interactions per student epoch in the last round (all, or the bounded sample).",
              any ? r->student_pairs : 0);
        GAUGE("round_topn_computed", "Teacher top-N lists computed in the last round.",
              any ? r->topn_computed : 0);
        GAUGE("round_topn_filtered",
              "Teacher top-N lists of the last round reused without newly observed items.",
              any ? r->topn_filtered : 0);
    }
    GAUGE("snapshot_version", "Version of the snapshot latest points to (0 none).",
          in->has_snapshot ? in->snapshot_version : 0);
    GAUGE("snapshot_age_seconds",
          "Seconds since the snapshot latest points to was written (-1 none).",
          in->has_snapshot ? (double)((int64_t)in->now_ms - (int64_t)in->snapshot_mtime_ms) / 1000.0
                           : -1.0);

    if (in->hs) {
        const http_stats_t *hs = in->hs;
        status__family(f, "http_requests_total", "counter", "HTTP requests by status class.");
        fprintf(f, "derrd_http_requests_total{code=\"2xx\"} %llu\n"
                   "derrd_http_requests_total{code=\"304\"} %llu\n"
                   "derrd_http_requests_total{code=\"4xx\"} %llu\n"
                   "derrd_http_requests_total{code=\"5xx\"} %llu\n",
                (unsigned long long)hs->status_2xx, (unsigned long long)hs->status_304,
                (unsigned long long)hs->status_4xx, (unsigned long long)hs->status_5xx);
        COUNTER("http_response_bytes_total", "Body bytes of HTTP responses sent in full.",
                hs->bytes_sent);
        status__family(f, "http_connections_cut_total", "counter",
                       "HTTP connections the server cut for a slow client, by reason.");
        fprintf(f, "derrd_http_connections_cut_total{reason=\"header_deadline\"} %llu\n"
                   "derrd_http_connections_cut_total{reason=\"min_rate\"} %llu\n",
                (unsigned long long)hs->cut_headers, (unsigned long long)hs->cut_rate);
        COUNTER("http_idle_closed_total",
                "Kept-alive HTTP connections closed for want of a next request in time.",
                hs->cut_idle);
    }
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

#undef COUNTER
#undef GAUGE

/* ---- /v1/status JSON ---------------------------------------------------------------- */

/* A number for JSON: NaN and infinities become null. */
static void status__num(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "%.6g", v);
    else
        fputs("null", f);
}

/* A JSON string of text that the daemon made itself (reasons, versions):
 * quotes, backslashes and control characters are escaped. */
static void status__str(FILE *f, const char *v)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)v; p && *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

char *status_json(const status_t *s, const status_in_t *in)
{
    const ingest_stats_t *is = in->is;
    const trainer_stats_t *ts = in->ts;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return NULL;
    fputs("{\"version\":", f);
    status__str(f, s->version);
    fprintf(f, ",\"now_ms\":%llu,\"start_ms\":%llu,\"ready\":%s", (unsigned long long)in->now_ms,
            (unsigned long long)in->start_ms, in->ready ? "true" : "false");
    fputs(",\"not_ready_reason\":", f);
    if (in->ready || !in->not_ready_reason)
        fputs("null", f);
    else
        status__str(f, in->not_ready_reason);
    fprintf(f, ",\"ingest\":{\"consumed\":%llu,\"invalid\":%llu,\"dead_lettered\":%llu,"
               "\"lag\":%lld,\"paused\":%s,\"brokers_up\":%d,\"loop_lag_max_ms\":",
            (unsigned long long)is->consumed, (unsigned long long)is->invalid,
            (unsigned long long)is->dead_lettered, (long long)is->lag,
            is->paused ? "true" : "false", is->brokers_up);
    status__num(f, is->loop_lag_max_ms);
    /* The rate series: events per second between consecutive samples. */
    fputs(",\"rate\":[", f);
    uint64_t first = s->n_rate > STATUS_RATE_SAMPLES ? s->n_rate - STATUS_RATE_SAMPLES : 0;
    int comma = 0;
    for (uint64_t k = first + 1; k < s->n_rate; k++) {
        const status_sample_t *a = &s->rate[(k - 1) % STATUS_RATE_SAMPLES];
        const status_sample_t *b = &s->rate[k % STATUS_RATE_SAMPLES];
        if (b->t_ms <= a->t_ms)
            continue;
        double secs = (double)(b->t_ms - a->t_ms) / 1000.0;
        fprintf(f, "%s[%llu,", comma++ ? "," : "", (unsigned long long)b->t_ms);
        status__num(f, (double)(b->consumed - a->consumed) / secs);
        fprintf(f, ",%lld]", (long long)b->lag);
    }
    fprintf(f, "]},\"state\":{\"users\":%lld,\"items\":%lld,\"interactions\":%lld,"
               "\"checkpoint\":%llu},",
            (long long)ts->users, (long long)ts->items, (long long)ts->interactions,
            (unsigned long long)ts->checkpoint_seq);
    fputs("\"snapshot\":", f);
    if (in->has_snapshot)
        fprintf(f, "{\"version\":%llu,\"written_ms\":%llu}", (unsigned long long)in->snapshot_version,
                (unsigned long long)in->snapshot_mtime_ms);
    else
        fputs("null", f);
    fprintf(f, ",\"rounds_enabled\":%s,\"rounds\":[", in->rounds_enabled ? "true" : "false");
    first = s->n_rounds > TRAINER_HISTORY ? s->n_rounds - TRAINER_HISTORY : 0;
    for (uint64_t k = first; k < s->n_rounds; k++) {
        const trainer_round_t *h = &s->rounds[k % TRAINER_HISTORY];
        const rounds_result_t *r = &h->r;
        fprintf(f, "%s{\"round\":%llu,\"end_ms\":%llu,\"seconds\":", k > first ? "," : "",
                (unsigned long long)r->round, (unsigned long long)h->end_ms);
        status__num(f, r->seconds);
        fputs(",\"student_hr10\":", f);
        status__num(f, r->hr10);
        fputs(",\"student_ndcg10\":", f);
        status__num(f, r->ndcg10);
        fputs(",\"teacher_hr10\":", f);
        status__num(f, r->teacher_hr10);
        fputs(",\"teacher_ndcg10\":", f);
        status__num(f, r->teacher_ndcg10);
        fprintf(f, ",\"eval_users\":%lld,\"interactions\":%lld,\"published\":%s,\"gated\":%s,"
                   "\"snapshot_version\":%llu,\"teacher_version\":%llu}",
                (long long)r->eval_users, (long long)r->interactions,
                r->published ? "true" : "false", r->gated ? "true" : "false",
                (unsigned long long)r->snapshot_version, (unsigned long long)r->teacher_version);
    }
    fputs("]}\n", f);
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}
