/*
 * Tests of io/kafka.h against librdkafka's in-process mock cluster: what the
 * consumer wrapper promises across a rebalance (docs/INGEST.md, step 4).
 * Each test starts its own cluster, so groups and topics never mix.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "io/kafka.h"
#include "test.h"

typedef struct {
    int assigned, revoked;
    int64_t got; /* messages handed over */
} test_kafka_seen_t;

static void test_kafka__assigned(void *ud, const kafka_pos_t *parts, int n)
{
    (void)parts;
    (void)n;
    ((test_kafka_seen_t *)ud)->assigned++;
}

static void test_kafka__revoked(void *ud, const kafka_pos_t *parts, int n)
{
    (void)parts;
    (void)n;
    ((test_kafka_seen_t *)ud)->revoked++;
}

static void test_kafka__msg(void *ud, const kafka_msg_t *m)
{
    (void)m;
    ((test_kafka_seen_t *)ud)->got++;
}

static kafka_consumer_t *test_kafka__consumer(const kafka_config_t *cfg, test_kafka_seen_t *seen)
{
    kafka_consumer_cbs_t cbs = { .assigned = test_kafka__assigned,
                                 .revoked = test_kafka__revoked,
                                 .ud = seen };
    kafka_consumer_t *c;
    char err[512];
    if (kafka_consumer_new(&c, cfg, "g", "t", &cbs, err, sizeof(err))) {
        test_fail(__FILE__, __LINE__, "kafka_consumer_new: %s", err);
        return NULL;
    }
    return c;
}

/* Serves a and b (b may be NULL) every 10 ms until *flag reaches want or
 * seconds pass; returns whether it did. */
static int test_kafka__serve_until(kafka_consumer_t *a, test_kafka_seen_t *sa,
                                   kafka_consumer_t *b, test_kafka_seen_t *sb, const int *flag,
                                   int want, int seconds)
{
    for (int k = 0; k < seconds * 100; k++) {
        kafka_consumer_drain(a, 1000, test_kafka__msg, sa);
        if (*flag >= want)
            return 1;
        if (b)
            kafka_consumer_drain(b, 1000, test_kafka__msg, sb);
        usleep(10 * 1000);
    }
    return 0;
}

/* Backpressure across a rebalance: the partitions are paused, revoked, and
 * the trainer catches up while none is assigned, so the resume finds
 * nothing to resume. The partitions assigned next must then flow. */
TEST_SLOW(kafka_resume_while_unassigned_leaves_the_next_assignment_flowing, 120)
{
    char err[512];
    kafka_mock_t *mock;
    REQUIRE(kafka_mock_new(&mock, 1, err, sizeof(err)) == 0);
    REQUIRE(kafka_mock_topic_create(mock, "t", 2) == 0);
    kafka_config_t *cfg = kafka_config_new();
    REQUIRE(cfg);
    REQUIRE(kafka_config_set(cfg, "bootstrap.servers", kafka_mock_bootstrap(mock), err,
                             sizeof(err)) == 0);
    REQUIRE(kafka_config_set(cfg, "session.timeout.ms", "6000", err, sizeof(err)) == 0);
    REQUIRE(kafka_config_set(cfg, "heartbeat.interval.ms", "200", err, sizeof(err)) == 0);

    test_kafka_seen_t sa = { 0 }, sb = { 0 };
    kafka_consumer_t *a = test_kafka__consumer(cfg, &sa);
    REQUIRE(a);
    CHECK(test_kafka__serve_until(a, &sa, NULL, NULL, &sa.assigned, 1, 30));
    kafka_consumer_pause(a, 1); /* the staging queue is full */

    /* A second member joins: a's partitions are revoked, then a gets one. */
    kafka_consumer_t *b = test_kafka__consumer(cfg, &sb);
    REQUIRE(b);
    CHECK(test_kafka__serve_until(a, &sa, b, &sb, &sa.revoked, 1, 30));
    kafka_lag_t lags[4];
    int unassigned = kafka_consumer_lags(a, lags, 4) == 0;
    CHECK(unassigned); /* else the resume below would not test the case */
    kafka_consumer_pause(a, 0); /* the trainer took the queue meanwhile */
    CHECK(test_kafka__serve_until(a, &sa, b, &sb, &sa.assigned, 2, 30));
    CHECK(test_kafka__serve_until(b, &sb, NULL, NULL, &sb.assigned, 1, 30));
    CHECK_EQ_INT(kafka_consumer_paused(a), 0);

    kafka_producer_t *p;
    REQUIRE(kafka_producer_new(&p, cfg, NULL, NULL, err, sizeof(err)) == 0);
    for (int k = 0; k < 100; k++)
        CHECK_EQ_INT(kafka_producer_send(p, "t", k % 2, NULL, 0, "u1\ti1", 5, NULL, 0, NULL), 0);
    CHECK_EQ_INT(kafka_producer_flush(p, 10000), 0);
    kafka_producer_free(p);

    /* Each member has one partition with 50 messages in it. */
    int got_all = 0;
    for (int k = 0; k < 1500 && !got_all; k++) {
        kafka_consumer_drain(a, 1000, test_kafka__msg, &sa);
        kafka_consumer_drain(b, 1000, test_kafka__msg, &sb);
        got_all = sa.got >= 50 && sb.got >= 50;
        usleep(10 * 1000);
    }
    if (!got_all)
        test_fail(__FILE__, __LINE__, "after the resume: %lld messages to a (not paused), "
                  "%lld to b, of 50 each", (long long)sa.got, (long long)sb.got);
    kafka_consumer_close(b, 2000);
    kafka_consumer_close(a, 2000);
    kafka_config_free(cfg);
    kafka_mock_free(mock);
}

/* ---- dead-letter retries -------------------------------------------------- */

typedef struct {
    kafka_producer_t *p;
    int reports, failed, possibly_persisted, resend_rc;
} test_kafka_dr_t;

/* What ingest__delivered does with a failed dead letter: send it again. */
static void test_kafka__dr(void *ud, void *opaque, const kafka_msg_t *m, const char *error)
{
    (void)opaque;
    test_kafka_dr_t *dr = ud;
    dr->reports++;
    if (!error)
        return;
    dr->failed++;
    dr->possibly_persisted +=
        rd_kafka_message_status(m->impl__) == RD_KAFKA_MSG_STATUS_POSSIBLY_PERSISTED;
    dr->resend_rc = kafka_producer_resend(dr->p, m, NULL);
}

static void test_kafka__count_x(void *ud, const kafka_msg_t *m)
{
    *(int *)ud += m->value_len == 1 && memcmp(m->value, "x", 1) == 0;
}

/* A dead letter whose delivery report is a timeout while its request was in
 * flight may be in the topic already: the broker took it, its answer came
 * too late. Sending it again puts it there twice, and the restart's
 * read-back cannot undo that (docs/INGEST.md: exactly once). */
TEST_SLOW(kafka_resend_never_duplicates_a_possibly_persisted_message, 120)
{
    char err[512];
    rd_kafka_conf_t *hconf = rd_kafka_conf_new();
    rd_kafka_t *host = rd_kafka_new(RD_KAFKA_PRODUCER, hconf, err, sizeof(err));
    REQUIRE(host);
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(host, 1);
    REQUIRE(mc);
    REQUIRE(rd_kafka_mock_topic_create(mc, "dl", 1, 1) == 0);
    kafka_config_t *cfg = kafka_config_new();
    REQUIRE(cfg);
    REQUIRE(kafka_config_set(cfg, "bootstrap.servers", rd_kafka_mock_cluster_bootstraps(mc), err,
                             sizeof(err)) == 0);
    REQUIRE(kafka_config_set(cfg, "message.timeout.ms", "1500", err, sizeof(err)) == 0);
    test_kafka_dr_t dr = { 0 };
    REQUIRE(kafka_producer_new(&dr.p, cfg, test_kafka__dr, &dr, err, sizeof(err)) == 0);
    /* Connected, with a producer id, before the slow answer. */
    CHECK_EQ_INT(kafka_producer_send(dr.p, "dl", 0, NULL, 0, "w", 1, NULL, 0, NULL), 0);
    CHECK_EQ_INT(kafka_producer_flush(dr.p, 10000), 0);
    CHECK_EQ_INT(dr.failed, 0);

    /* The broker stores the next produce request, and answers in 4 s. */
    REQUIRE(rd_kafka_mock_broker_push_request_error_rtts(mc, 1, 0 /* Produce */, 1,
                                                         RD_KAFKA_RESP_ERR_NO_ERROR,
                                                         4000) == 0);
    CHECK_EQ_INT(kafka_producer_send(dr.p, "dl", 0, NULL, 0, "x", 1, NULL, 0, NULL), 0);
    for (int k = 0; k < 1000 && dr.reports < 2; k++)
        kafka_producer_poll(dr.p, 10);
    CHECK_EQ_INT(dr.failed, 1);
    CHECK_EQ_INT(dr.possibly_persisted, 1);
    CHECK_EQ_INT(dr.resend_rc, -EEXIST); /* ingest then stops; its restart reads back */
    kafka_producer_flush(dr.p, 10000);
    kafka_producer_free(dr.p);

    int copies = 0;
    int64_t n = kafka_topic_read(cfg, "dl", test_kafka__count_x, &copies, 10000, err, sizeof(err));
    CHECK(n >= 1);
    if (copies > 1)
        test_fail(__FILE__, __LINE__, "%d copies of the dead letter in the topic (resend: %d)",
                  copies, dr.resend_rc);
    kafka_config_free(cfg);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(host);
}
