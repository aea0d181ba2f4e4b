/*
 * kafka_mockctl: owns a librdkafka mock cluster in its own process and
 * injects faults into it on command, for tests/kafka/faults.sh.
 *
 *     build/kafka-mockctl [-n BROKERS] [-d]  (default 3 brokers; -d: librdkafka's
 *                                            mock debug log, every append, on stderr)
 *
 * Starts the cluster, prints "bootstrap <host:port,...>" on stdout, then
 * reads one command per line on stdin and answers each with one line on
 * stdout: "ok[ <value>]" or "error <reason>". EOF or "quit" destroys the
 * cluster and exits 0. Commands (API is a name below or a protocol ApiKey
 * number; ERR an error name as rd_kafka_err2name() spells it, e.g.
 * NOT_COORDINATOR or _TRANSPORT, or its number):
 *
 *   topic TOPIC PARTITIONS REPLICATION   create a topic
 *   leader TOPIC PARTITION BROKER        move a partition's leader
 *   coord GROUP BROKER                   move a group's coordinator
 *   err API ERR [COUNT]                  the next COUNT requests of API to any
 *                                        broker fail with ERR (cluster stack)
 *   berr BROKER API ERR [COUNT [RTT_MS]] the same, only at BROKER, answered
 *                                        after RTT_MS (broker stack, checked
 *                                        first)
 *   pending BROKER API                   "ok N": errors left on BROKER's stack
 *   clear API                            empty the cluster stack of API
 *   down BROKER | up BROKER              close and refuse connections / accept
 *                                        them again (leaders do not move)
 *   rtt BROKER MS                        delay every answer of BROKER
 *   bootstrap                            "ok <bootstrap servers>"
 *   quit
 *
 * Test infrastructure: the daemon's Kafka code lives in io/kafka.c.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

static const struct {
    const char *name;
    int16_t key;
} apis[] = {
    { "Produce", 0 },          { "Fetch", 1 },          { "ListOffsets", 2 },
    { "Metadata", 3 },         { "OffsetCommit", 8 },   { "OffsetFetch", 9 },
    { "FindCoordinator", 10 }, { "JoinGroup", 11 },     { "Heartbeat", 12 },
    { "LeaveGroup", 13 },      { "SyncGroup", 14 },     { "ApiVersion", 18 },
    { "InitProducerId", 22 },
};

static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_api(const char *s, int16_t *out)
{
    long v;
    for (size_t k = 0; s && k < sizeof(apis) / sizeof(apis[0]); k++)
        if (strcasecmp(s, apis[k].name) == 0) {
            *out = apis[k].key;
            return 0;
        }
    if (parse_long(s, 0, 1000, &v))
        return -1;
    *out = (int16_t)v;
    return 0;
}

static int parse_err(const char *s, rd_kafka_resp_err_t *out)
{
    const struct rd_kafka_err_desc *descs;
    size_t n;
    long v;
    if (!s)
        return -1;
    if (strcasecmp(s, "NOT_LEADER_OR_FOLLOWER") == 0) /* 2.0.2's table: the old name */
        s = "NOT_LEADER_FOR_PARTITION";
    if (parse_long(s, -200, 1000, &v) == 0) {
        *out = (rd_kafka_resp_err_t)v;
        return 0;
    }
    rd_kafka_get_err_descs(&descs, &n);
    for (size_t k = 0; k < n; k++)
        if (descs[k].name && strcasecmp(descs[k].name, s) == 0) {
            *out = descs[k].code;
            return 0;
        }
    return -1;
}

static int parse_broker(const char *s, int32_t *out)
{
    long v;
    if (parse_long(s, -1, 1000, &v))
        return -1;
    *out = (int32_t)v;
    return 0;
}

/* One command; writes the answer line (without newline) into ans. */
static void run(rd_kafka_mock_cluster_t *mc, char *line, char *ans, size_t anslen)
{
    char *argv[8];
    int argc = 0;
    for (char *tok = strtok(line, " \t\r\n"); tok && argc < 8; tok = strtok(NULL, " \t\r\n"))
        argv[argc++] = tok;
    snprintf(ans, anslen, "ok");
    if (argc == 0)
        return;
    const char *cmd = argv[0];
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR, inj;
    int32_t b;
    int16_t api;
    long n = 1, x, rtt = 0;

    if (strcmp(cmd, "topic") == 0 && argc == 4 && parse_long(argv[2], 1, 10000, &n) == 0 &&
        parse_long(argv[3], 1, 100, &x) == 0) {
        e = rd_kafka_mock_topic_create(mc, argv[1], (int)n, (int)x);
    } else if (strcmp(cmd, "leader") == 0 && argc == 4 && parse_long(argv[2], 0, 10000, &x) == 0 &&
               parse_broker(argv[3], &b) == 0) {
        e = rd_kafka_mock_partition_set_leader(mc, argv[1], (int32_t)x, b);
    } else if (strcmp(cmd, "coord") == 0 && argc == 3 && parse_broker(argv[2], &b) == 0) {
        e = rd_kafka_mock_coordinator_set(mc, "group", argv[1], b);
    } else if (strcmp(cmd, "err") == 0 && (argc == 3 || argc == 4) &&
               parse_api(argv[1], &api) == 0 && parse_err(argv[2], &inj) == 0 &&
               (argc == 3 || parse_long(argv[3], 1, 100000, &n) == 0)) {
        rd_kafka_resp_err_t *errs = malloc((size_t)n * sizeof(*errs));
        if (!errs) {
            snprintf(ans, anslen, "error out of memory");
            return;
        }
        for (long k = 0; k < n; k++)
            errs[k] = inj;
        rd_kafka_mock_push_request_errors_array(mc, api, (size_t)n, errs);
        free(errs);
    } else if (strcmp(cmd, "berr") == 0 && argc >= 4 && argc <= 6 &&
               parse_broker(argv[1], &b) == 0 && parse_api(argv[2], &api) == 0 &&
               parse_err(argv[3], &inj) == 0 &&
               (argc < 5 || parse_long(argv[4], 1, 100000, &n) == 0) &&
               (argc < 6 || parse_long(argv[5], 0, 600000, &rtt) == 0)) {
        for (long k = 0; k < n && !e; k++)
            e = rd_kafka_mock_broker_push_request_error_rtts(mc, b, api, 1, inj, (int)rtt);
    } else if (strcmp(cmd, "pending") == 0 && argc == 3 && parse_broker(argv[1], &b) == 0 &&
               parse_api(argv[2], &api) == 0) {
        size_t cnt = 0;
        e = rd_kafka_mock_broker_error_stack_cnt(mc, b, api, &cnt);
        if (!e) {
            snprintf(ans, anslen, "ok %zu", cnt);
            return;
        }
    } else if (strcmp(cmd, "clear") == 0 && argc == 2 && parse_api(argv[1], &api) == 0) {
        rd_kafka_mock_clear_request_errors(mc, api);
    } else if (strcmp(cmd, "down") == 0 && argc == 2 && parse_broker(argv[1], &b) == 0) {
        e = rd_kafka_mock_broker_set_down(mc, b);
    } else if (strcmp(cmd, "up") == 0 && argc == 2 && parse_broker(argv[1], &b) == 0) {
        e = rd_kafka_mock_broker_set_up(mc, b);
    } else if (strcmp(cmd, "rtt") == 0 && argc == 3 && parse_broker(argv[1], &b) == 0 &&
               parse_long(argv[2], 0, 600000, &x) == 0) {
        e = rd_kafka_mock_broker_set_rtt(mc, b, (int)x);
    } else if (strcmp(cmd, "bootstrap") == 0 && argc == 1) {
        snprintf(ans, anslen, "ok %s", rd_kafka_mock_cluster_bootstraps(mc));
        return;
    } else {
        snprintf(ans, anslen, "error bad command: %s (argc %d)", cmd, argc);
        return;
    }
    if (e)
        snprintf(ans, anslen, "error %s", rd_kafka_err2name(e));
}

int main(int argc, char **argv)
{
    int brokers = 3, debug = 0, opt;
    while ((opt = getopt(argc, argv, "n:dh")) != -1) {
        if (opt == 'n' && atoi(optarg) > 0) {
            brokers = atoi(optarg);
        } else if (opt == 'd') {
            debug = 1;
        } else {
            fprintf(stderr, "usage: kafka-mockctl [-n BROKERS] [-d]; commands on stdin (see "
                            "tests/kafka/kafka_mockctl.c)\n");
            return opt == 'h' ? 0 : 2;
        }
    }
    char why[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* The owning handle only keeps the cluster alive; keep it quiet. */
    if (debug)
        rd_kafka_conf_set(conf, "debug", "mock", why, sizeof(why));
    else
        rd_kafka_conf_set(conf, "log_level", "3", why, sizeof(why));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (!rk) {
        fprintf(stderr, "kafka-mockctl: %s\n", why);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (!mc) {
        fprintf(stderr, "kafka-mockctl: could not start %d mock brokers\n", brokers);
        rd_kafka_destroy(rk);
        return 1;
    }
    printf("bootstrap %s\n", rd_kafka_mock_cluster_bootstraps(mc));
    fflush(stdout);
    char line[1024], ans[1200];
    while (fgets(line, sizeof(line), stdin)) {
        char *p = line;
        while (isspace((unsigned char)*p))
            p++;
        if (strncmp(p, "quit", 4) == 0)
            break;
        if (*p == '#' || !*p)
            continue;
        char echo[1024];
        snprintf(echo, sizeof(echo), "%s", p);
        echo[strcspn(echo, "\r\n")] = 0;
        run(mc, p, ans, sizeof(ans));
        fprintf(stderr, "kafka-mockctl: %s -> %s\n", echo, ans);
        printf("%s\n", ans);
        fflush(stdout);
    }
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}
