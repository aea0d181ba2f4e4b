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
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "daemon/ingest.h"
#include "daemon/http.h"
#include "daemon/notify.h"
#include "daemon/options.h"
#include "daemon/rounds.h"
#include "daemon/staging.h"
#include "daemon/state.h"
#include "daemon/status.h"
#include "daemon/trainer.h"
#include "io/fsutil.h"
#include "io/kafka.h"
#include "io/log.h"
#include "io/proc.h"
#include "io/snapshot.h"
#include "model/gemm.h"

#define DERRD_VERSION "0.3.0"

typedef struct {
    uv_loop_t loop;
    uv_async_t wake;     /* from the trainer */
    uv_signal_t sigterm, sigint, sighup;
    int argc;       /* for SIGHUP: the configuration is read again from them */
    char **argv;
    char *config_text; /* the options as configured (before start-up fills in
                        * defaults such as the embedded brokers), for SIGHUP */
    uv_timer_t stats_timer, metrics_timer;
    uv_timer_t wd_timer;     /* WATCHDOG=1, gated by wd */
    notify_wd_t wd;          /* loop and trainer heartbeats */
    uint64_t wd_wakeups;     /* ingest drains seen by the last loop beat */
    log_ratelimit_t wd_rl;   /* "watchdog withheld" lines */
    log_ratelimit_t status_rl; /* STATUS= every 5 s */
    options_t opt;
    staging_t *stg;
    ingest_t *ingest;
    trainer_t *trainer;
    int stopping, exit_code;
    atomic_int abort_round; /* a shutdown abandons a running round */
    http_t *http;
    rounds_t *rounds; /* borrowed from main(), for the summary */
    /* /metrics, /v1/status and /readyz are answered on HTTP threads: the
     * loop renders the texts every second, the handlers copy them. */
    pthread_mutex_t metrics_mu;
    char *metrics_text, *status_text;
    char not_ready[160];   /* why /readyz says not ready ("" = ready) */
    atomic_int ready;      /* started and not stopping */
    status_t *status;
    uint64_t start_ms;     /* wall clock */
    uint64_t kafka_down_ms; /* monotonic time no broker was first seen up; 0 = up */
    uint64_t last_consumed, last_stats_ms;
} daemon_t;

static void daemon__usage(FILE *out)
{
    fprintf(out,
            "usage: derrd [--config FILE] [--OPTION VALUE]...\n"
            "       derrd [--config FILE] [--OPTION VALUE]... --check-config | --print-config\n"
            "       derrd --dump-config\n"
            "       derrd --dump-state [--state-dir DIR] [--topic T]\n"
            "\n"
            "Streams user-item interaction events from Kafka into a crash-safe state\n"
            "(checkpoints in --state-dir), committing offsets only once a checkpoint\n"
            "covers them. Invalid events go to --dead-letter-topic with the reason.\n"
            "\n"
            "Settings come from the configuration file (\"OPTION VALUE\" lines), then\n"
            "from the flags, which override the file wherever they stand.\n"
            "\n"
            "Options (also --OPTION=VALUE; in the file: OPTION VALUE):\n");
    options_print_help(out);
    fprintf(out, "\n"
                 " Configuration and other actions:\n"
                 "  --config FILE                      the configuration file (default:\n"
                 "                                     " OPTIONS_DEFAULT_FILE
                 " when it exists;\n"
                 "                                     --config \"\" reads none)\n"
                 "  --check-config                     check the file and the flags, print\n"
                 "                                     \"derrd: configuration ok\" and exit\n"
                 "  --dump-config                      print every option with its default and\n"
                 "                                     doc as an example file, and exit\n"
                 "  --print-config                     print the values in effect (file, then\n"
                 "                                     flags; secrets as <set>) and exit\n"
                 "  --dump-state                       print the newest valid checkpoint's\n"
                 "                                     interactions as user<TAB>item lines\n"
                 "  --version                          print the version and exit\n"
                 "  --help                             this text\n"
                 "\n"
                 "Exit status: 0 after a clean shutdown (SIGTERM/SIGINT), 1 on a fatal\n"
                 "error, 2 on bad usage, 78 on a bad configuration (file or flag), which\n"
                 "is reported as FILE:LINE: reason or derrd: --OPTION: reason.\n");
}

static void daemon__close_cb(uv_handle_t *h) { (void)h; }

/* A stop asked for before the loop runs (while a checkpoint loads, say) is
 * remembered and honoured as soon as the loop starts, instead of killing the
 * process with the signal's default action. */
static atomic_int daemon__early_stop; /* lock-free: safe in a handler, on any thread */
static void daemon__early_signal(int signum) { atomic_store(&daemon__early_stop, signum); }

/* libuv gives a signal its default action back when the last handle for it
 * closes, and the shutdown closes the loop's: a second SIGTERM or a reload
 * late in the shutdown would then end the process (setting SIG_IGN right
 * after the close left a window a storm of signals hit). These handles, on
 * a loop that never runs and is never closed, keep libuv's handler for the
 * process's life; what they receive is dropped. */
static uv_loop_t daemon__guard_loop;
static uv_signal_t daemon__guard[3];

static void daemon__guard_cb(uv_signal_t *h, int signum) { (void)h, (void)signum; }

static int daemon__guard_signals(void)
{
    static const int signums[3] = { SIGTERM, SIGINT, SIGHUP };
    if (uv_loop_init(&daemon__guard_loop))
        return -1;
    for (int k = 0; k < 3; k++)
        if (uv_signal_init(&daemon__guard_loop, &daemon__guard[k]) ||
            uv_signal_start(&daemon__guard[k], daemon__guard_cb, signums[k]))
            return -1;
    return 0;
}

/* Peak resident set size in KiB, from /proc (0 when unknown). */
static long daemon__peak_rss_kib(void)
{
    long kib = proc_status_kib("VmHWM");
    return kib > 0 ? kib : 0;
}

/* One line with the run's figures, after the final checkpoint: what the
 * ingest benchmark reads. */
static void daemon__summary(daemon_t *d, const ingest_stats_t *is)
{
    trainer_stats_t ts;
    trainer_stats(d->trainer, &ts);
    double secs = is->first_msg_ms ? (double)(log_now_ms() - is->first_msg_ms) / 1000.0 : 0.0;
    uint64_t handled = ts.applied + ts.duplicates + ts.forgotten + ts.skipped;
    double p50 = NAN, p99 = NAN;
    int64_t fresh = 0;
    if (d->rounds)
        rounds_freshness(d->rounds, &p50, &p99, &fresh);
    log_notice("summary: events=%llu seconds=%.3f rate=%.0f interactions=%lld "
               "peak_rss_kib=%ld state_kib=%llu loop_stall_max_ms=%.1f "
               "loop_stall_own_max_ms=%.1f invalid=%llu "
               "dead_lettered=%llu checkpoints=%llu rounds=%llu published=%llu "
               "fresh_users=%lld fresh_p50_ms=%.0f fresh_p99_ms=%.0f",
               (unsigned long long)handled, secs, secs > 0 ? (double)handled / secs : 0.0,
               (long long)ts.interactions, daemon__peak_rss_kib(),
               (unsigned long long)(ts.state_bytes / 1024), is->loop_lag_max_ms,
               is->loop_lag_own_max_ms,
               (unsigned long long)is->invalid, (unsigned long long)is->dead_lettered,
               (unsigned long long)ts.checkpoints, (unsigned long long)ts.rounds,
               (unsigned long long)ts.published, (long long)fresh, p50, p99);
}

static void daemon__render(daemon_t *d, const ingest_stats_t *is, const trainer_stats_t *ts);

static void daemon__shutdown(daemon_t *d, int exit_code)
{
    if (d->stopping)
        return;
    d->stopping = 1;
    d->exit_code = exit_code;
    log_notice("shutting down");
    /* Not ready from here on (the last snapshot stays served), and a
     * running round stops at its next epoch while ingestion winds down. */
    atomic_store(&d->ready, 0);
    atomic_store(&d->abort_round, 1);
    /* First: what follows blocks the loop (the trainer's last checkpoint),
     * and after STOPPING=1 systemd stops the watchdog and gives
     * TimeoutStopSec= instead. */
    notify_stopping();
    notify_status("stopping: final checkpoint, commit, leaving the group");
    uv_timer_stop(&d->wd_timer);
    /* The loop blocks from here until HTTP stops, and the metrics timer
     * renders no more: render now, so /metrics (derrd_ready) and
     * /v1/status say "not ready" as /readyz does for the whole stop. */
    if (d->status && d->ingest && d->trainer) {
        ingest_stats_t now_is;
        trainer_stats_t now_ts;
        ingest_stats(d->ingest, &now_is);
        trainer_stats(d->trainer, &now_ts);
        daemon__render(d, &now_is, &now_ts);
    }
    int timeout = (int)d->opt.shutdown_timeout_ms;
    kafka_pos_t *pos = NULL;
    int n = 0;
    ingest_stats_t is = { 0 };
    if (d->ingest) {
        ingest_stop(d->ingest, timeout);
        ingest_stats(d->ingest, &is);
        /* A SIGTERM handled before ingestion's failure report still ends
         * in failure. */
        if (is.fatal && d->exit_code == 0)
            d->exit_code = 1;
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
    uv_close((uv_handle_t *)&d->sighup, daemon__close_cb);
    /* the signals stay libuv's, and ignored, by daemon__guard_signals() */
    uv_close((uv_handle_t *)&d->stats_timer, daemon__close_cb);
    uv_close((uv_handle_t *)&d->metrics_timer, daemon__close_cb);
    uv_close((uv_handle_t *)&d->wd_timer, daemon__close_cb);
    http_stop(d->http); /* after the trainer: the last snapshot stays served until here */
    d->http = NULL;
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

/* A copy of one of the texts the loop rendered. */
static int daemon__copy_text(daemon_t *d, char *const *text, char **body, size_t *len)
{
    pthread_mutex_lock(&d->metrics_mu);
    *body = strdup(*text ? *text : "");
    pthread_mutex_unlock(&d->metrics_mu);
    if (!*body)
        return -ENOMEM;
    *len = strlen(*body);
    return 0;
}

static int daemon__metrics_cb(void *ud, char **body, size_t *len)
{
    daemon_t *d = ud;
    return daemon__copy_text(d, &d->metrics_text, body, len);
}

static int daemon__status_cb(void *ud, char **body, size_t *len)
{
    daemon_t *d = ud;
    return daemon__copy_text(d, &d->status_text, body, len);
}

static int daemon__ready_cb(void *ud, char *why, size_t whylen)
{
    daemon_t *d = ud;
    if (!atomic_load(&d->ready)) {
        snprintf(why, whylen, "starting or stopping");
        return 0;
    }
    pthread_mutex_lock(&d->metrics_mu);
    int ok = d->not_ready[0] == 0;
    snprintf(why, whylen, "%s", d->not_ready);
    pthread_mutex_unlock(&d->metrics_mu);
    return ok;
}

/* Every half watchdog interval: WATCHDOG=1 only while the loop and the
 * trainer make progress (the rule is in daemon/notify.h). The trainer may
 * spend up to twice the interval in one step without a beat (a teacher
 * epoch, a large checkpoint). */
static void daemon__watchdog_cb(uv_timer_t *h)
{
    daemon_t *d = h->data;
    uint64_t now = log_now_ms();
    /* The loop's heartbeat: this timer runs, and ingest drained Kafka since
     * the last tick (its backstop timer drains every backstop-ms, messages
     * or not). */
    ingest_stats_t is;
    ingest_stats(d->ingest, &is);
    if (is.wakeups != d->wd_wakeups) {
        d->wd_wakeups = is.wakeups;
        notify_wd_beat_at(&d->wd, NOTIFY_WD_LOOP, now);
    }
    if (notify_wd_check(&d->wd, now, 2 * d->wd.interval_ms)) {
        notify_watchdog();
        return;
    }
    uint64_t loop_ms = notify_wd_age(&d->wd, NOTIFY_WD_LOOP, now);
    uint64_t trainer_ms = notify_wd_age(&d->wd, NOTIFY_WD_TRAINER, now);
    notify_status("watchdog ping withheld: loop last progressed %llu ms ago, trainer %llu ms ago",
                  (unsigned long long)loop_ms, (unsigned long long)trainer_ms);
    if (log_ratelimit_ok(&d->wd_rl, 10000, NULL))
        log_warn("watchdog ping withheld: loop last progressed %llu ms ago, trainer %llu ms ago",
                 (unsigned long long)loop_ms, (unsigned long long)trainer_ms);
}

/* The STATUS= line of `systemctl status`. */
static void daemon__status(const ingest_stats_t *is, const trainer_stats_t *ts)
{
    if (!notify_enabled())
        return;
    char round[128] = "";
    if (ts->rounds > 0)
        snprintf(round, sizeof(round), "; round %llu, HR@10 %.4f, snapshot %llu",
                 (unsigned long long)ts->rounds, ts->last_round.hr10,
                 (unsigned long long)ts->last_round.snapshot_version);
    notify_status("running: %llu events consumed, lag %lld%s, %lld interactions, "
                  "checkpoint %llu%s", (unsigned long long)is->consumed, (long long)is->lag,
                  is->paused ? " (paused)" : "", (long long)ts->interactions,
                  (unsigned long long)ts->checkpoint_seq, round);
}

/* Readiness follows the brokers: none reachable (librdkafka's statistics
 * show no connection up) means not ready, with the reason. */
static void daemon__kafka_health(daemon_t *d, const ingest_stats_t *is, uint64_t now)
{
    char why[sizeof(d->not_ready)] = "";
    if (is->brokers_up == 0) {
        if (!d->kafka_down_ms) {
            d->kafka_down_ms = now;
            log_warn("kafka: no broker reachable; /readyz says not ready until one is "
                     "(serving the last snapshot meanwhile)");
        }
        snprintf(why, sizeof(why), "no Kafka broker reachable for %llu s",
                 (unsigned long long)((now - d->kafka_down_ms) / 1000));
    } else if (d->kafka_down_ms && is->brokers_up > 0) {
        log_notice("kafka: broker reachable again after %.1f s",
                   (double)(now - d->kafka_down_ms) / 1000.0);
        d->kafka_down_ms = 0;
    }
    pthread_mutex_lock(&d->metrics_mu);
    memcpy(d->not_ready, why, sizeof(why));
    pthread_mutex_unlock(&d->metrics_mu);
}

static void daemon__metrics_cb_timer(uv_timer_t *h)
{
    daemon_t *d = h->data;
    ingest_stats_t is;
    trainer_stats_t ts;
    ingest_stats(d->ingest, &is);
    trainer_stats(d->trainer, &ts);
    if (log_ratelimit_ok(&d->status_rl, 5000, NULL))
        daemon__status(&is, &ts);
    daemon__kafka_health(d, &is, log_now_ms());
    daemon__render(d, &is, &ts);
}

/* Renders the texts of /metrics and /v1/status from the figures given. */
static void daemon__render(daemon_t *d, const ingest_stats_t *is, const trainer_stats_t *ts)
{
    char why[sizeof(d->not_ready)];
    status_in_t in = {
        .is = is,
        .ts = ts,
        .now_ms = log_wall_ms(),
        .start_ms = d->start_ms,
        .ready = daemon__ready_cb(d, why, sizeof(why)),
        .not_ready_reason = why,
        .rounds_enabled = d->opt.rounds,
    };
    http_stats_t hs;
    if (d->http) {
        http_stats(d->http, &hs);
        in.hs = &hs;
    }
    in.has_snapshot = d->opt.rounds && snapshot_latest(d->opt.snapshot_dir, &in.snapshot_version,
                                                       &in.snapshot_mtime_ms) == 0;
    if (!d->status)
        return;
    status_sample(d->status, &in, d->trainer);
    char *metrics = status_metrics(d->status, &in), *json = status_json(d->status, &in);
    pthread_mutex_lock(&d->metrics_mu);
    if (metrics) {
        free(d->metrics_text);
        d->metrics_text = metrics;
    }
    if (json) {
        free(d->status_text);
        d->status_text = json;
    }
    pthread_mutex_unlock(&d->metrics_mu);
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
             "checkpoint %llu (failures %llu); loop stall max %.1f ms (%.1f ms its own)",
             (unsigned long long)is.consumed,
             secs > 0 ? (double)(is.consumed - d->last_consumed) / secs : 0.0,
             (unsigned long long)is.invalid, (unsigned long long)is.dead_lettered, is.staged,
             is.paused ? " (paused)" : "", (long long)is.lag, (long long)ts.interactions,
             (long long)ts.users, (long long)ts.items, (unsigned long long)ts.duplicates,
             (unsigned long long)ts.checkpoint_seq,
             (unsigned long long)ts.checkpoint_failures, is.loop_lag_max_ms,
             is.loop_lag_own_max_ms);
    d->last_consumed = is.consumed;
    d->last_stats_ms = now;
}

static int daemon__load_models(void *ud, const checkpoint_t *ck, char *err, size_t errlen)
{
    return rounds_load(ud, ck, err, errlen);
}

/* Which BLAS kernels this process runs, and why (main's restart). */
static void daemon__log_blas(int restart_rc)
{
    const char *env = getenv("OPENBLAS_CORETYPE"), *better = gemm_better_core();
    if (env)
        log_info("BLAS kernels %s (OPENBLAS_CORETYPE=%s)", gemm_backend(), env);
    else if (better)
        log_warn("BLAS kernels %s, OpenBLAS's slow generic ones, on a CPU that runs %s; "
                 "starting again with OPENBLAS_CORETYPE=%s failed (%s): set it in the "
                 "environment", gemm_backend(), better, better,
                 restart_rc == -ESTALE ? "the path it was started from names another file"
                                       : strerror(-restart_rc));
    else
        log_info("BLAS kernels %s", gemm_backend());
}

static int daemon__dump_state(const options_t *o)
{
    state_t st;
    char err[512];
    struct stat sd;
    int e = stat(o->state_dir, &sd) < 0 ? errno : S_ISDIR(sd.st_mode) ? 0 : ENOTDIR;
    if (e) {
        /* A mistyped directory is an error, not an empty state. */
        fprintf(stderr, "derrd: --state-dir %s: %s\n", o->state_dir, strerror(e));
        return 1;
    }
    if (state_init(&st, o->topic)) {
        fprintf(stderr, "derrd: out of memory\n");
        return 1;
    }
    int rc = state_load(&st, o->state_dir, NULL, NULL, err, sizeof(err));
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

#define DAEMON_EX_CONFIG 78 /* EX_CONFIG of sysexits.h: a bad configuration */

/* What the command line asks for instead of running. */
enum { DAEMON_RUN, DAEMON_CHECK_CONFIG, DAEMON_DUMP_CONFIG, DAEMON_PRINT_CONFIG,
       DAEMON_DUMP_STATE };

/* A usage or configuration error: on stderr at start (before the log is set
 * up, for the person who typed the command); in a reload, in the log at
 * error level, where an operator looks for why the reload was refused. */
static void daemon__complain(int reload, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void daemon__complain(int reload, const char *fmt, ...)
{
    char msg[1400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (reload)
        log_err("reload: %s", msg);
    else
        fprintf(stderr, "%s\n", msg);
}

/* Splits "--name[=value]" into name; -1 when the name is too long. */
static int daemon__flag_name(const char *a, char *name, size_t len, const char **eq)
{
    *eq = strchr(a + 2, '=');
    size_t nlen = *eq ? (size_t)(*eq - a - 2) : strlen(a + 2);
    if (nlen >= len)
        return -1;
    memcpy(name, a + 2, nlen);
    name[nlen] = 0;
    return 0;
}

/* Parses the command line into o: the configuration file first (--config;
 * none for --config ""; else OPTIONS_DEFAULT_FILE when it exists), then
 * every flag over it, wherever it stands. Returns -1 to run on (*dump = 1 for --dump-state), or
 * the exit status to end with: 0 after --help, --version, --check-config,
 * --dump-config or --print-config, 2 on bad usage, DAEMON_EX_CONFIG when
 * the file or a flag's value is bad. */
static int daemon__parse_args(options_t *o, int argc, char **argv, int *dump, int reload)
{
    static const char *const actions[] = { NULL, "--check-config", "--dump-config",
                                           "--print-config", "--dump-state" };
    char err[1024], name[256];
    const char *config = NULL;
    int action = DAEMON_RUN, status = 2, n_flags = 0;
    /* the flags, applied once the file is read: argv index and value */
    typedef struct {
        int arg;
        const char *value;
    } flag_t;
    flag_t *flags = calloc((size_t)argc, sizeof(*flags));
    if (!flags) {
        daemon__complain(reload, "derrd: out of memory");
        return 1;
    }
    for (int k = 1; k < argc; k++) {
        const char *a = argv[k];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            daemon__usage(stdout);
            status = 0;
            goto out;
        }
        if (!strcmp(a, "--version")) {
            printf("derrd %s (librdkafka %s, libuv %s)\n", DERRD_VERSION, kafka_version(),
                   uv_version_string());
            status = 0;
            goto out;
        }
        int act = DAEMON_RUN;
        for (int j = 1; j < (int)(sizeof(actions) / sizeof(actions[0])); j++)
            if (!strcmp(a, actions[j]))
                act = j;
        if (act != DAEMON_RUN) {
            if (action != DAEMON_RUN && action != act) {
                daemon__complain(reload, "derrd: %s and %s exclude each other", actions[action], a);
                goto out;
            }
            action = act;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            daemon__complain(reload, "derrd: unexpected argument \"%s\" (see --help)", a);
            goto out;
        }
        const char *eq, *value;
        int at = k;
        if (daemon__flag_name(a, name, sizeof(name), &eq)) {
            daemon__complain(reload, "derrd: option name too long: %s", a);
            goto out;
        }
        if (strcmp(name, "config") != 0 && !options_is_known(name)) {
            daemon__complain(reload, "derrd: --%s: unknown option (derrd --help lists them)", name);
            status = DAEMON_EX_CONFIG;
            goto out;
        }
        if (eq)
            value = eq + 1;
        else if (options_is_bool(name) && (k + 1 >= argc || !strncmp(argv[k + 1], "--", 2)))
            value = "true";
        else if (k + 1 < argc)
            value = argv[++k];
        else {
            daemon__complain(reload, "derrd: --%s needs a value", name);
            goto out;
        }
        if (!strcmp(name, "config"))
            config = value;
        else
            flags[n_flags++] = (flag_t){ at, value };
    }
    if (action == DAEMON_DUMP_CONFIG) {
        options_print_example(stdout);
        status = fflush(stdout) ? 1 : 0;
        goto out;
    }
    status = DAEMON_EX_CONFIG;
    if (!config && access(OPTIONS_DEFAULT_FILE, F_OK) == 0)
        config = OPTIONS_DEFAULT_FILE;
    if (config && *config && options_load_file(o, config, err, sizeof(err))) {
        daemon__complain(reload, "%s", err);
        goto out;
    }
    for (int k = 0; k < n_flags; k++) {
        const char *eq;
        daemon__flag_name(argv[flags[k].arg], name, sizeof(name), &eq);
        if (options_set(o, name, flags[k].value, err, sizeof(err))) {
            daemon__complain(reload, "derrd: --%s: %s", name, err);
            goto out;
        }
    }
    status = -1;
    if (action == DAEMON_CHECK_CONFIG) {
        printf("derrd: configuration ok\n");
        status = 0;
    } else if (action == DAEMON_PRINT_CONFIG) {
        options_print_values(o, stdout);
        status = fflush(stdout) ? 1 : 0;
    }
    *dump = action == DAEMON_DUMP_STATE;
out:
    free(flags);
    return status;
}

/* The live settings of o, for the trainer. */
static trainer_live_t daemon__live(const options_t *o)
{
    return (trainer_live_t){
        .round_min_events = o->round_min_events,
        .round_interval_ms = o->round_interval_ms,
        .rounds = {
            .teacher_refresh_ms = o->teacher_refresh_ms,
            .teacher_refresh_min_ms = o->teacher_refresh_min_ms,
            .teacher_refresh_growth = o->teacher_refresh_growth,
            .settle_patience = (int)o->settle_patience,
            .gate_margin = o->gate_margin,
        },
    };
}

/* What a reload changed, counted by daemon__reload_change(). */
typedef struct {
    int live, later;
} daemon_reload_t;

/* One changed setting of a reload (options_changes): logged with its old
 * value when it applies at once, else as waiting for the next start. */
static void daemon__reload_change(void *ud, const char *name, const char *before,
                                  const char *after)
{
    daemon_reload_t *rl = ud;
    if (options_is_live(name)) {
        log_notice("reload: %s (was: %s)", after ? after : name, before ? before : "unset");
        rl->live++;
    } else if (after) {
        log_notice("reload: \"%s\" takes effect at the next start", after);
        rl->later++;
    } else {
        log_notice("reload: \"%s\" removed; takes effect at the next start", before);
        rl->later++;
    }
}

/* SIGHUP: read the configuration again (file and flags). The live options
 * (options_is_live: log level, round triggers, teacher refresh policy,
 * quality gate) change at once; every other changed option is named in the
 * log as taking effect at the next start. A bad file keeps the running
 * configuration. Logs go to stderr (the journal): nothing to reopen. */
static void daemon__sighup_cb(uv_signal_t *h, int signum)
{
    (void)signum;
    daemon_t *d = h->data;
    notify_reloading();
    options_t o;
    int dump = 0;
    if (options_init(&o) == 0) {
        int status = daemon__parse_args(&o, d->argc, d->argv, &dump, 1);
        if (status != -1) {
            log_err("reload: the configuration was refused (the line before says why); "
                    "keeping the running one");
        } else {
            int level = log_level_parse(o.log_level);
            if (level >= 0 && level != log_level())
                log_setup(level, -1);
            char *now = d->config_text, *next = options_compare_text(&o);
            daemon_reload_t rl = { 0, 0 };
            /* Setting by setting: a new secret is a change too, and a
             * kafka.* property may be added or removed. */
            if (now && next)
                options_changes(now, next, daemon__reload_change, &rl);
            int live = rl.live, later = rl.later;
            if (next) {
                free(now);
                d->config_text = next;
            }
            if (live && d->trainer) {
                trainer_live_t tl = daemon__live(&o);
                trainer_reload(d->trainer, &tl);
            }
            char *lv = strdup(o.log_level);
            if (lv) {
                free(d->opt.log_level);
                d->opt.log_level = lv;
            }
            log_notice("reload: done; %d change%s applied, %d at the next start", live,
                       live == 1 ? "" : "s", later);
        }
        options_close(&o);
    }
    notify_ready();
}

int main(int argc, char **argv)
{
    /* Before any file or socket exists: OpenBLAS reads OPENBLAS_CORETYPE
     * when it loads, so naming better kernels than its generic fallback
     * takes a new start (model/gemm.h, io/proc.h). */
    int blas_rc = proc_restart_with_env(argv, "OPENBLAS_CORETYPE", gemm_better_core());
    daemon_t d = { 0 };
    d.argc = argc;
    d.argv = argv;
    pthread_mutex_init(&d.metrics_mu, NULL);
    if (options_init(&d.opt)) {
        fprintf(stderr, "derrd: out of memory\n");
        return 1;
    }
    int dump = 0;
    int status = daemon__parse_args(&d.opt, argc, argv, &dump, 0);
    if (status >= 0) {
        options_close(&d.opt);
        return status;
    }
    log_setup(log_level_parse(d.opt.log_level), -1);
    daemon__log_blas(blas_rc);
    d.config_text = options_compare_text(&d.opt);
    if (dump) {
        int rc = daemon__dump_state(&d.opt);
        free(d.config_text);
        options_close(&d.opt);
        return rc;
    }
    char nerr[256];
    if (notify_init(nerr, sizeof(nerr)))
        log_warn("systemd notify: %s", nerr); /* runs on, without it */
    notify_wd_init(&d.wd, notify_watchdog_usec(), log_now_ms());
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, daemon__early_signal);
    signal(SIGINT, daemon__early_signal);
    signal(SIGHUP, SIG_IGN); /* a reload before the loop runs has nothing to reload */

    char err[512];
    int exit_code = 1;
    kafka_mock_t *mock = NULL;
    state_t st = { 0 };
    int loop_ok = 0, lock_fd = -1;
    rounds_t *rounds = NULL;

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
    if (d.opt.rounds) {
        if (!*d.opt.snapshot_dir) {
            char *dir;
            if (asprintf(&dir, "%s/snapshots", d.opt.state_dir) < 0) {
                log_err("out of memory");
                goto done;
            }
            free(d.opt.snapshot_dir);
            d.opt.snapshot_dir = dir;
        }
        if (mkdir(d.opt.snapshot_dir, 0755) < 0 && errno != EEXIST) {
            log_err("snapshot dir %s: %s", d.opt.snapshot_dir, strerror(errno));
            goto done;
        }
        int swept = snapshot_sweep_temp(d.opt.snapshot_dir);
        if (swept > 0)
            log_notice("snapshot dir %s: removed %d temp file%s left by an interrupted publish",
                       d.opt.snapshot_dir, swept, swept == 1 ? "" : "s");
        rounds_cfg_t rc_cfg = {
            .threads = (int)d.opt.threads,
            .nice = (int)d.opt.train_nice,
            .seed = (uint64_t)d.opt.seed,
            .teacher_dim = (int)d.opt.teacher_dim,
            .student_dim = (int)d.opt.student_dim,
            .teacher_epochs = (int)d.opt.teacher_epochs,
            .student_epochs = (int)d.opt.student_epochs,
            .settle_epochs = (int)d.opt.settle_epochs,
            .round_max_samples = d.opt.round_max_samples,
            .teacher_refresh_ms = d.opt.teacher_refresh_ms,
            .teacher_refresh_growth = d.opt.teacher_refresh_growth,
            .teacher_refresh_min_ms = d.opt.teacher_refresh_min_ms,
            .teacher_foldin_share = d.opt.teacher_foldin_share,
            .teacher_file = d.opt.teacher_file,
            .lambda_de = d.opt.lambda_de,
            .lambda_rrd = d.opt.lambda_rrd,
            .eval_permille = (int)d.opt.eval_permille,
            .eval_candidates = (int)d.opt.eval_candidates,
            .min_interactions = (int)d.opt.min_interactions,
            .settle_patience = (int)d.opt.settle_patience,
            .gate_margin = d.opt.gate_margin,
            .snapshot_dir = d.opt.snapshot_dir,
            .snapshot_keep = (int)d.opt.snapshot_keep,
            .zstd_level = (int)d.opt.zstd_level,
            .abort = &d.abort_round,
            .wd = &d.wd,
        };
        if (!(rounds = rounds_new(&rc_cfg, err, sizeof(err)))) {
            log_err("%s", err);
            goto done;
        }
    }
    notify_status("loading the newest checkpoint from %s", d.opt.state_dir);
    int rc = state_load(&st, d.opt.state_dir, rounds ? daemon__load_models : NULL, rounds, err,
                        sizeof(err));
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
    notify_status("subscribing to %s as group %s", d.opt.topic, d.opt.group);
    if (ingest_start(&d.ingest, &d.loop, &icfg, d.stg, &st, err, sizeof(err))) {
        log_err("%s", err);
        goto done;
    }
    d.rounds = rounds;
    trainer_cfg_t tcfg = {
        .rounds = rounds,
        .round_min_events = d.opt.round_min_events,
        .round_interval_ms = d.opt.round_interval_ms,
        .nice = (int)d.opt.train_nice,
        .state_dir = d.opt.state_dir,
        .checkpoint_ms = (int)d.opt.checkpoint_interval_ms,
        .keep = (int)d.opt.checkpoints_keep,
        .notify = daemon__trainer_notify,
        .ud = &d,
        .wd = &d.wd,
    };
    uv_async_init(&d.loop, &d.wake, daemon__wake_cb);
    uv_signal_init(&d.loop, &d.sigterm);
    uv_signal_init(&d.loop, &d.sigint);
    uv_signal_init(&d.loop, &d.sighup);
    uv_timer_init(&d.loop, &d.stats_timer);
    uv_timer_init(&d.loop, &d.metrics_timer);
    uv_timer_init(&d.loop, &d.wd_timer);
    d.wd_timer.data = &d;
    d.wake.data = d.sigterm.data = d.sigint.data = d.stats_timer.data = &d;
    d.sighup.data = &d;
    d.metrics_timer.data = &d;
    if (trainer_start(&d.trainer, &st, d.stg, &tcfg)) {
        log_err("cannot start the trainer thread");
        daemon__shutdown(&d, 1);
    } else {
        uv_signal_start(&d.sigterm, daemon__signal_cb, SIGTERM);
        uv_signal_start(&d.sigint, daemon__signal_cb, SIGINT);
        uv_signal_start(&d.sighup, daemon__sighup_cb, SIGHUP);
        if (daemon__guard_signals())
            log_warn("cannot keep SIGTERM, SIGINT and SIGHUP handled to the end: one "
                     "late in a shutdown may end it");
        d.last_stats_ms = log_now_ms();
        d.start_ms = log_wall_ms();
        if (!(d.status = status_new(DERRD_VERSION)))
            log_warn("out of memory: /metrics and /v1/status stay empty");
        uv_timer_start(&d.metrics_timer, daemon__metrics_cb_timer, 0, 1000);
        if (d.opt.http) {
            http_cfg_t hcfg = {
                .bind = d.opt.http_address,
                .port = (uint16_t)d.opt.http_port,
                .token = d.opt.http_token,
                .max_connections = (unsigned)d.opt.http_max_connections,
                .timeout_s = (unsigned)d.opt.http_timeout_s,
                .min_rate_kibps = (unsigned)d.opt.http_min_rate_kibps,
                .per_ip_limit = (unsigned)d.opt.http_per_ip_limit,
                .snapshot_dir = d.opt.rounds ? d.opt.snapshot_dir : NULL,
                .metrics = daemon__metrics_cb,
                .status = daemon__status_cb,
                .ready = daemon__ready_cb,
                .page = status_page_html,
                .page_len = status_page_html_len,
                .ud = &d,
            };
            if (http_start(&d.http, &hcfg, err, sizeof(err))) {
                log_err("%s", err);
                daemon__shutdown(&d, 1);
            } else {
                log_notice("http on %s:%u: status page http://%s%s%s:%u/ (also /v1/snapshot, "
                           "/v1/status, /metrics, /healthz, /readyz)", d.opt.http_address,
                           http_port(d.http), strchr(d.opt.http_address, ':') ? "[" : "",
                           d.opt.http_address, strchr(d.opt.http_address, ':') ? "]" : "",
                           http_port(d.http));
            }
        }
        if (!d.stopping) { /* the HTTP server may have failed to start */
            atomic_store(&d.ready, 1);
            notify_ready();
            notify_status("running: topic %s, group %s", d.opt.topic, d.opt.group);
            uint64_t wd_ms = notify_watchdog_usec() / 1000;
            if (wd_ms > 0)
                uv_timer_start(&d.wd_timer, daemon__watchdog_cb, wd_ms / 2 ? wd_ms / 2 : 1,
                               wd_ms / 2 ? wd_ms / 2 : 1);
            if (d.opt.stats_interval_ms > 0)
                uv_timer_start(&d.stats_timer, daemon__stats_cb, (uint64_t)d.opt.stats_interval_ms,
                               (uint64_t)d.opt.stats_interval_ms);
            log_notice("derrd %s running: topic %s, group %s, state %s", DERRD_VERSION,
                       d.opt.topic, d.opt.group, d.opt.state_dir);
            int early = atomic_load(&daemon__early_stop);
            if (early)
                daemon__signal_cb(early == SIGTERM ? &d.sigterm : &d.sigint, early);
        }
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
    rounds_free(rounds);
    free(d.metrics_text);
    free(d.status_text);
    status_free(d.status);
    free(d.config_text);
    pthread_mutex_destroy(&d.metrics_mu);
    staging_free(d.stg);
    state_close(&st);
    kafka_mock_free(mock);
    options_close(&d.opt);
    notify_close();
    if (lock_fd >= 0)
        close(lock_fd);
    return exit_code;
}
