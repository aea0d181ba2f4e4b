/*
 * Tests of daemon/status.c: the /metrics text and the /v1/status JSON made
 * from hand-filled figures. (tests/service.sh runs promtool on a live
 * daemon's text; these pin the values, the histogram and the JSON's edge
 * cases.)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/status.h"
#include "model/gemm.h"
#include "test.h"

/* 1 when text has line as a whole line. */
static int status_test_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = strstr(text, line); p; p = strstr(p + 1, line))
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == 0))
            return 1;
    return 0;
}

static void status_test_fill(ingest_stats_t *is, trainer_stats_t *ts)
{
    memset(is, 0, sizeof(*is));
    memset(ts, 0, sizeof(*ts));
    is->consumed = 12345;
    is->invalid = 7;
    is->dead_lettered = 6;
    is->dead_letter_truncated = 2;
    is->lag = 5;
    is->n_part_lag = 2;
    is->part_lag[0] = (kafka_lag_t){ 0, 2 };
    is->part_lag[1] = (kafka_lag_t){ 3, -1 };
    is->brokers_up = 1;
    is->loop_lag_recent_ms = 12.5;
    is->loop_lag_max_ms = 40;
    is->loop_lag_own_max_ms = 7.5;
    ts->interactions = 12345678;
    ts->rounds = 3;
    ts->teacher_refreshes = 1;
    ts->round_le[0] = 1;                      /* <= 0.1 s */
    ts->round_le[3] = 1;                      /* <= 1 s */
    ts->round_le[TRAINER_ROUND_BUCKETS] = 1;  /* > 300 s */
    ts->round_seconds_sum = 400.55;
    ts->last_round.hr10 = 0.25;
    ts->last_round.ndcg10 = NAN;
    ts->last_round.teacher_hr10 = 0.5;
    ts->last_round.teacher_ndcg10 = 0.125;
    ts->last_round.student_pairs = 50000;
    ts->last_round.topn_computed = 12;
    ts->last_round.topn_filtered = 3456;
}

TEST(status_metrics_values)
{
    ingest_stats_t is;
    trainer_stats_t ts;
    status_test_fill(&is, &ts);
    status_t *s = status_new("9.9.9");
    REQUIRE(s);
    status_in_t in = { .is = &is, .ts = &ts, .now_ms = 1700000010000, .start_ms = 1700000000250,
                       .ready = 1, .has_snapshot = 1, .snapshot_version = 42,
                       .snapshot_mtime_ms = 1700000007500, .rounds_enabled = 1 };
    char *m = status_metrics(s, &in);
    REQUIRE(m);
    CHECK(strstr(m, "\nderrd_build_info{version=\"9.9.9\",librdkafka=\"") != NULL);
    char blas[96];
    snprintf(blas, sizeof(blas), "\",blas=\"%s\"} 1\n", gemm_backend());
    CHECK(strstr(m, blas) != NULL);
    CHECK(status_test_line(m, "derrd_start_time_seconds 1700000000.250"));
    CHECK(status_test_line(m, "derrd_events_consumed_total 12345"));
    CHECK(status_test_line(m, "derrd_interactions 12345678")); /* every digit */
    CHECK(status_test_line(m, "derrd_events_dead_lettered_total 6"));
    CHECK(status_test_line(m, "derrd_events_dead_letter_truncated_total 2"));
    CHECK(status_test_line(m, "derrd_consumer_lag{partition=\"0\"} 2"));
    CHECK(status_test_line(m, "derrd_consumer_lag{partition=\"3\"} -1"));
    CHECK(status_test_line(m, "derrd_loop_lag_seconds 0.0125"));
    CHECK(status_test_line(m, "derrd_loop_lag_own_max_seconds 0.0075"));
    CHECK(status_test_line(m, "derrd_teacher_refreshes_total 1"));
    /* cumulative buckets, +Inf = count */
    CHECK(status_test_line(m, "derrd_round_duration_seconds_bucket{le=\"0.1\"} 1"));
    CHECK(status_test_line(m, "derrd_round_duration_seconds_bucket{le=\"0.5\"} 1"));
    CHECK(status_test_line(m, "derrd_round_duration_seconds_bucket{le=\"1\"} 2"));
    CHECK(status_test_line(m, "derrd_round_duration_seconds_bucket{le=\"300\"} 2"));
    CHECK(status_test_line(m, "derrd_round_duration_seconds_bucket{le=\"+Inf\"} 3"));
    CHECK(status_test_line(m, "derrd_round_duration_seconds_count 3"));
    CHECK(status_test_line(m, "derrd_round_duration_seconds_sum 400.55"));
    CHECK(status_test_line(m, "derrd_student_hr10 0.25"));
    CHECK(status_test_line(m, "derrd_student_ndcg10 NaN"));
    CHECK(status_test_line(m, "derrd_teacher_ndcg10 0.125"));
    CHECK(status_test_line(m, "derrd_round_student_pairs 50000"));
    CHECK(status_test_line(m, "derrd_round_topn_computed 12"));
    CHECK(status_test_line(m, "derrd_round_topn_filtered 3456"));
    CHECK(status_test_line(m, "derrd_snapshot_version 42"));
    CHECK(status_test_line(m, "derrd_snapshot_age_seconds 2.5"));
    /* every family has HELP and TYPE, each once */
    CHECK(strstr(m, "# TYPE derrd_round_duration_seconds histogram\n") != NULL);
    const char *p = m;
    int types = 0, helps = 0;
    while ((p = strstr(p, "\n# TYPE ")))
        types++, p++;
    p = m;
    while ((p = strstr(p, "# HELP ")))
        helps++, p++;
    CHECK_EQ_INT(types, helps);
    free(m);

    /* Without rounds: no round series; without a snapshot: -1 age. */
    in.rounds_enabled = 0;
    in.has_snapshot = 0;
    m = status_metrics(s, &in);
    REQUIRE(m);
    CHECK(strstr(m, "derrd_rounds_total") == NULL);
    CHECK(status_test_line(m, "derrd_snapshot_version 0"));
    CHECK(status_test_line(m, "derrd_snapshot_age_seconds -1"));
    free(m);
    status_free(s);
}

/* The histogram's _sum is a counter: every digit a scrape can tell from the
 * last one must be there. A daemon whose rounds ran back to back for two
 * weeks has a sum of some 1.2e6 s; "%.6g" printed it as 1.23457e+06, so
 * rate(_sum) moved in steps of 10 s and the mean round duration
 * (rate(_sum) / rate(_count)) read 0 or tens of seconds by turns. */
TEST(status_metrics_round_sum_keeps_its_digits)
{
    ingest_stats_t is;
    trainer_stats_t ts;
    status_test_fill(&is, &ts);
    ts.round_seconds_sum = 1234567.891;
    status_t *s = status_new("9.9.9");
    REQUIRE(s);
    status_in_t in = { .is = &is, .ts = &ts, .now_ms = 1700000010000, .start_ms = 1700000000250,
                       .ready = 1, .rounds_enabled = 1 };
    char *m = status_metrics(s, &in);
    REQUIRE(m);
    if (!status_test_line(m, "derrd_round_duration_seconds_sum 1234567.891")) {
        const char *p = strstr(m, "derrd_round_duration_seconds_sum ");
        test_fail(__FILE__, __LINE__, "the sum is printed as \"%.*s\"",
                  p ? (int)strcspn(p, "\n") : 0, p ? p : "");
    }
    free(m);
    ts.round_seconds_sum = 400.55; /* and a small one stays as it was */
    m = status_metrics(s, &in);
    REQUIRE(m);
    CHECK(status_test_line(m, "derrd_round_duration_seconds_sum 400.55"));
    free(m);
    status_free(s);
}

TEST(status_json_rate_and_escaping)
{
    ingest_stats_t is;
    trainer_stats_t ts;
    status_test_fill(&is, &ts);
    status_t *s = status_new("1\"\\\n");
    REQUIRE(s);
    status_in_t in = { .is = &is, .ts = &ts, .now_ms = 1000, .start_ms = 0, .ready = 0,
                       .not_ready_reason = "no \"broker\"", .rounds_enabled = 1 };
    status_sample(s, &in, NULL); /* one sample: no rate yet */
    char *j = status_json(s, &in);
    REQUIRE(j);
    CHECK(strstr(j, "\"version\":\"1\\\"\\\\\\u000a\"") != NULL);
    CHECK(strstr(j, "\"ready\":false,\"not_ready_reason\":\"no \\\"broker\\\"\"") != NULL);
    CHECK(strstr(j, "\"rate\":[]") != NULL);
    CHECK(strstr(j, "\"snapshot\":null") != NULL);
    CHECK(strstr(j, "\"rounds\":[]") != NULL);
    free(j);
    /* Two seconds later, 4,000 more events: 2,000/s. */
    is.consumed += 4000;
    in.now_ms = 3000;
    status_sample(s, &in, NULL);
    j = status_json(s, &in);
    REQUIRE(j);
    CHECK(strstr(j, "\"rate\":[[3000,2000,5]]") != NULL);
    free(j);
    /* The ring keeps the last STATUS_RATE_SAMPLES samples. */
    for (int k = 0; k < STATUS_RATE_SAMPLES + 10; k++) {
        in.now_ms += 1000;
        status_sample(s, &in, NULL);
    }
    j = status_json(s, &in);
    REQUIRE(j);
    int points = 0;
    const char *rate = strstr(j, "\"rate\":[");
    REQUIRE(rate);
    const char *end = strstr(rate, "]]");
    REQUIRE(end);
    for (const char *p = rate; p < end; p++)
        points += *p == '[' && p[1] != '[';
    CHECK_EQ_INT(points, STATUS_RATE_SAMPLES - 1);
    free(j);
    status_free(s);
}
