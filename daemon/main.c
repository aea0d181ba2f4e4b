/*
 * derrd: the daemon. Wires the libuv loop (ingest, signals, stats) to the
 * trainer thread and owns the order of start-up and shutdown:
 *
 *   start:    options -> checkpoint load -> ingest (dead-letter read-back,
 *             subscribe) -> trainer thread -> loop
 *   shutdown: stop intake -> hand over complete batches -> trainer applies
 *             them and writes the last checkpoint -> commit its positions
 *             -> leave the group -> close every handle -> uv_loop_close()
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "daemon/ingest.h"
#include "daemon/options.h"
#include "daemon/staging.h"
#include "daemon/state.h"
#include "daemon/trainer.h"
#include "io/fsutil.h"
#include "io/kafka.h"
#include "io/log.h"

#define DERRD_VERSION "0.3.0"

typedef struct {
    uv_loop_t loop;
    uv_async_t wake;     /* from the trainer */
    uv_signal_t sigterm, sigint;
    uv_timer_t stats_timer;
    options_t opt;
    staging_t *stg;
    ingest_t *ingest;
    trainer_t *trainer;
    int stopping, exit_code;
    uint64_t last_consumed, last_stats_ms;
} daemon_t;

static void daemon__usage(FILE *out)
{
    fprintf(out,
            "usage: derrd [--OPTION VALUE]...\n"
            "       derrd --dump-state [--state-dir DIR] [--topic T]\n"
            "\n"
            "Streams user-item interaction events from Kafka into a crash-safe state\n"
            "(checkpoints in --state-dir), committing offsets only once a checkpoint\n"
            "covers them. Invalid events go to --dead-letter-topic with the reason.\n"
            "\n"
            "Options (also --OPTION=VALUE):\n");
    options_print_help(out);
    fprintf(out, "\n"
                 "  --dump-state                       print the newest valid checkpoint's\n"
                 "                                     interactions as user<TAB>item lines\n"
                 "  --version                          print the version and exit\n"
                 "  --help                             this text\n"
                 "\n"
                 "Exit status: 0 after a clean shutdown (SIGTERM/SIGINT), 1 on a fatal\n"
                 "error, 2 on bad usage.\n");
}

static void daemon__close_cb(uv_handle_t *h) { (void)h; }

/* A stop asked for before the loop runs (while a checkpoint loads, say) is
 * remembered and honoured as soon as the loop starts, instead of killing the
 * process with the signal's default action. */
static volatile sig_atomic_t daemon__early_stop;
static void daemon__early_signal(int signum) { daemon__early_stop = signum; }

/* Peak resident set size in KiB, from /proc (0 when unknown). */
static long daemon__peak_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = 0;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

/* One line with the run's figures, after the final checkpoint: what the
 * ingest benchmark reads. */
static void daemon__summary(daemon_t *d, const ingest_stats_t *is)
{
    trainer_stats_t ts;
    trainer_stats(d->trainer, &ts);
    double secs = is->first_msg_ms ? (double)(log_now_ms() - is->first_msg_ms) / 1000.0 : 0.0;
    uint64_t handled = ts.applied + ts.duplicates + ts.forgotten + ts.skipped;
    log_notice("summary: events=%llu seconds=%.3f rate=%.0f interactions=%lld "
               "peak_rss_kib=%ld state_kib=%llu loop_stall_max_ms=%.1f invalid=%llu "
               "dead_lettered=%llu checkpoints=%llu",
               (unsigned long long)handled, secs, secs > 0 ? (double)handled / secs : 0.0,
               (long long)ts.interactions, daemon__peak_rss_kib(),
               (unsigned long long)(ts.state_bytes / 1024), is->loop_lag_max_ms,
               (unsigned long long)is->invalid, (unsigned long long)is->dead_lettered,
               (unsigned long long)ts.checkpoints);
}

static void daemon__shutdown(daemon_t *d, int exit_code)
{
    if (d->stopping)
        return;
    d->stopping = 1;
    d->exit_code = exit_code;
    log_notice("shutting down");
    int timeout = (int)d->opt.shutdown_timeout_ms;
    kafka_pos_t *pos = NULL;
    int n = 0;
    ingest_stats_t is = { 0 };
    if (d->ingest) {
        ingest_stop(d->ingest, timeout);
        ingest_stats(d->ingest, &is);
    }
    if (d->trainer) {
        if (trainer_stop(d->trainer) != 0 && d->exit_code == 0)
            d->exit_code = 1;
        n = trainer_take_durable(d->trainer, &pos);
        daemon__summary(d, &is);
    }
    if (d->ingest)
        ingest_close(d->ingest, pos, n, timeout);
    d->ingest = NULL;
    free(pos);
    uv_close((uv_handle_t *)&d->wake, daemon__close_cb);
    uv_close((uv_handle_t *)&d->sigterm, daemon__close_cb);
    uv_close((uv_handle_t *)&d->sigint, daemon__close_cb);
    uv_close((uv_handle_t *)&d->stats_timer, daemon__close_cb);
}

static void daemon__fatal(void *ud)
{
    daemon_t *d = ud;
    daemon__shutdown(d, 1);
}

/* The trainer has news: durable positions, freed queue space, or a fatal
 * error. uv_async coalesces, so look at everything each time. */
static void daemon__wake_cb(uv_async_t *h)
{
    daemon_t *d = h->data;
    if (d->stopping)
        return;
    kafka_pos_t *pos;
    int n = trainer_take_durable(d->trainer, &pos);
    if (n > 0)
        ingest_commit(d->ingest, pos, n);
    free(pos);
    ingest_kick(d->ingest);
    trainer_stats_t ts;
    trainer_stats(d->trainer, &ts);
    if (ts.fatal) {
        daemon__shutdown(d, 1);
        return;
    }
    uint64_t handled = ts.applied + ts.duplicates + ts.forgotten + ts.skipped;
    if (d->opt.exit_after_events > 0 && handled >= (uint64_t)d->opt.exit_after_events) {
        log_notice("%llu events applied (--exit-after-events)", (unsigned long long)handled);
        daemon__shutdown(d, 0);
    }
}

static void daemon__trainer_notify(void *ud)
{
    daemon_t *d = ud;
    uv_async_send(&d->wake);
}

static void daemon__signal_cb(uv_signal_t *h, int signum)
{
    daemon_t *d = h->data;
    log_notice("received %s", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    daemon__shutdown(d, 0);
}

static void daemon__stats_cb(uv_timer_t *h)
{
    daemon_t *d = h->data;
    ingest_stats_t is;
    trainer_stats_t ts;
    ingest_stats(d->ingest, &is);
    trainer_stats(d->trainer, &ts);
    uint64_t now = log_now_ms();
    double secs = (double)(now - d->last_stats_ms) / 1000.0;
    log_info("ingest: consumed %llu (%.0f/s), invalid %llu, dead-lettered %llu, staged %zu%s, "
             "lag %lld; state: %lld interactions, %lld users, %lld items, duplicates %llu; "
             "checkpoint %llu (failures %llu); loop stall max %.1f ms",
             (unsigned long long)is.consumed,
             secs > 0 ? (double)(is.consumed - d->last_consumed) / secs : 0.0,
             (unsigned long long)is.invalid, (unsigned long long)is.dead_lettered, is.staged,
             is.paused ? " (paused)" : "", (long long)is.lag, (long long)ts.interactions,
             (long long)ts.users, (long long)ts.items, (unsigned long long)ts.duplicates,
             (unsigned long long)ts.checkpoint_seq,
             (unsigned long long)ts.checkpoint_failures, is.loop_lag_max_ms);
    d->last_consumed = is.consumed;
    d->last_stats_ms = now;
}

static int daemon__dump_state(const options_t *o)
{
    state_t st;
    char err[512];
    if (state_init(&st, o->topic)) {
        fprintf(stderr, "derrd: out of memory\n");
        return 1;
    }
    int rc = state_load(&st, o->state_dir, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "derrd: %s\n", err);
        state_close(&st);
        return 1;
    }
    if (rc == 0)
        fprintf(stderr, "derrd: no checkpoint in %s\n", o->state_dir);
    else
        fprintf(stderr, "derrd: checkpoint %llu: %lld interactions, %lld users, %lld items\n",
                (unsigned long long)st.seq, (long long)iset_count(st.inter),
                (long long)idmap_count(st.users), (long long)idmap_count(st.items));
    rc = state_dump(&st, stdout) ? 1 : 0;
    state_close(&st);
    return rc;
}

static int daemon__parse_args(options_t *o, int argc, char **argv, int *dump)
{
    char err[512];
    for (int k = 1; k < argc; k++) {
        const char *a = argv[k];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            daemon__usage(stdout);
            exit(0);
        }
        if (!strcmp(a, "--version")) {
            printf("derrd %s (librdkafka %s, libuv %s)\n", DERRD_VERSION, kafka_version(),
                   uv_version_string());
            exit(0);
        }
        if (!strcmp(a, "--dump-state")) {
            *dump = 1;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "derrd: unexpected argument \"%s\" (see --help)\n", a);
            return -EINVAL;
        }
        char name[256];
        const char *value;
        const char *eq = strchr(a + 2, '=');
        size_t nlen = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (nlen >= sizeof(name)) {
            fprintf(stderr, "derrd: option name too long: %s\n", a);
            return -EINVAL;
        }
        memcpy(name, a + 2, nlen);
        name[nlen] = 0;
        if (eq)
            value = eq + 1;
        else if (options_is_bool(name) && (k + 1 >= argc || !strncmp(argv[k + 1], "--", 2)))
            value = "true";
        else if (k + 1 < argc)
            value = argv[++k];
        else {
            fprintf(stderr, "derrd: --%s needs a value\n", name);
            return -EINVAL;
        }
        if (options_set(o, name, value, err, sizeof(err))) {
            fprintf(stderr, "derrd: %s\n", err);
            return -EINVAL;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    daemon_t d = { 0 };
    if (options_init(&d.opt)) {
        fprintf(stderr, "derrd: out of memory\n");
        return 1;
    }
    int dump = 0;
    if (daemon__parse_args(&d.opt, argc, argv, &dump)) {
        options_close(&d.opt);
        return 2;
    }
    log_setup(log_level_parse(d.opt.log_level), -1);
    if (dump) {
        int rc = daemon__dump_state(&d.opt);
        options_close(&d.opt);
        return rc;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, daemon__early_signal);
    signal(SIGINT, daemon__early_signal);

    char err[512];
    int exit_code = 1;
    kafka_mock_t *mock = NULL;
    state_t st = { 0 };
    int loop_ok = 0, lock_fd = -1;

    if (mkdir(d.opt.state_dir, 0750) < 0 && errno != EEXIST) {
        log_err("state dir %s: %s", d.opt.state_dir, strerror(errno));
        goto done;
    }
    lock_fd = fsutil_lock_dir(d.opt.state_dir, err, sizeof(err));
    if (lock_fd < 0) {
        log_err("state dir: %s", err);
        goto done;
    }
    if (d.opt.embedded_kafka) {
        if (kafka_mock_new(&mock, 1, err, sizeof(err))) {
            log_err("embedded Kafka: %s", err);
            goto done;
        }
        kafka_mock_topic_create(mock, d.opt.topic, (int)d.opt.embedded_partitions);
        if (*d.opt.dead_letter_topic)
            kafka_mock_topic_create(mock, d.opt.dead_letter_topic, 1);
        free(d.opt.brokers);
        d.opt.brokers = strdup(kafka_mock_bootstrap(mock));
        log_notice("embedded Kafka (librdkafka mock cluster, in memory) at %s; topic %s",
                   d.opt.brokers, d.opt.topic);
    }
    if (!kafka_config_get(d.opt.kafka, "bootstrap.servers") &&
        kafka_config_set(d.opt.kafka, "bootstrap.servers", d.opt.brokers, err, sizeof(err))) {
        log_err("brokers: %s", err);
        goto done;
    }

    if (state_init(&st, d.opt.topic)) {
        log_err("out of memory");
        goto done;
    }
    int rc = state_load(&st, d.opt.state_dir, err, sizeof(err));
    if (rc < 0) {
        log_err("%s", err);
        goto done;
    }
    if (rc == 0)
        log_notice("no checkpoint in %s: starting empty", d.opt.state_dir);
    else
        log_notice("checkpoint %llu loaded: %lld interactions, %lld users, %lld items, "
                   "%d partitions", (unsigned long long)st.seq, (long long)iset_count(st.inter),
                   (long long)idmap_count(st.users), (long long)idmap_count(st.items), st.n_pos);

    if (uv_loop_init(&d.loop) || !(d.stg = staging_new())) {
        log_err("cannot create the event loop");
        goto done;
    }
    loop_ok = 1;
    ingest_cfg_t icfg = {
        .topic = d.opt.topic,
        .group = d.opt.group,
        .dead_letter_topic = d.opt.dead_letter_topic,
        .kafka = d.opt.kafka,
        .max_staged = (size_t)d.opt.max_staged,
        .backstop_ms = (int)d.opt.backstop_ms,
        .fatal = daemon__fatal,
        .ud = &d,
    };
    if (ingest_start(&d.ingest, &d.loop, &icfg, d.stg, &st, err, sizeof(err))) {
        log_err("%s", err);
        goto done;
    }
    trainer_cfg_t tcfg = {
        .state_dir = d.opt.state_dir,
        .checkpoint_ms = (int)d.opt.checkpoint_interval_ms,
        .keep = (int)d.opt.checkpoints_keep,
        .notify = daemon__trainer_notify,
        .ud = &d,
    };
    uv_async_init(&d.loop, &d.wake, daemon__wake_cb);
    uv_signal_init(&d.loop, &d.sigterm);
    uv_signal_init(&d.loop, &d.sigint);
    uv_timer_init(&d.loop, &d.stats_timer);
    d.wake.data = d.sigterm.data = d.sigint.data = d.stats_timer.data = &d;
    if (trainer_start(&d.trainer, &st, d.stg, &tcfg)) {
        log_err("cannot start the trainer thread");
        daemon__shutdown(&d, 1);
    } else {
        uv_signal_start(&d.sigterm, daemon__signal_cb, SIGTERM);
        uv_signal_start(&d.sigint, daemon__signal_cb, SIGINT);
        d.last_stats_ms = log_now_ms();
        if (d.opt.stats_interval_ms > 0)
            uv_timer_start(&d.stats_timer, daemon__stats_cb, (uint64_t)d.opt.stats_interval_ms,
                           (uint64_t)d.opt.stats_interval_ms);
        log_notice("derrd %s running: topic %s, group %s, state %s", DERRD_VERSION,
                   d.opt.topic, d.opt.group, d.opt.state_dir);
        if (daemon__early_stop)
            daemon__signal_cb(daemon__early_stop == SIGTERM ? &d.sigterm : &d.sigint,
                              daemon__early_stop);
    }
    uv_run(&d.loop, UV_RUN_DEFAULT);
    exit_code = d.exit_code;
done:
    if (loop_ok) {
        uv_run(&d.loop, UV_RUN_DEFAULT);
        if (uv_loop_close(&d.loop) != 0) {
            log_err("event loop closed with handles still open");
            exit_code = exit_code ? exit_code : 1;
        }
    }
    if (exit_code == 0)
        log_notice("stopped cleanly");
    trainer_free(d.trainer);
    staging_free(d.stg);
    state_close(&st);
    kafka_mock_free(mock);
    options_close(&d.opt);
    if (lock_fd >= 0)
        close(lock_fd);
    return exit_code;
}
