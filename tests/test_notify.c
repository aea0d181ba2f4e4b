/*
 * Tests of daemon/notify.h: the sd_notify datagrams as a service manager
 * receives them, on a path socket in a mkdtemp directory and on an abstract
 * one; the no-op mode without $NOTIFY_SOCKET; $WATCHDOG_USEC and
 * $WATCHDOG_PID; malformed variables; sends from several threads; and the
 * watchdog's progress gate on synthetic timestamps.
 *
 * Each test runs in its own child process (tests/runner.c), so setting the
 * environment here does not leak into other tests.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "daemon/notify.h"
#include "io/log.h"
#include "test.h"

/* ---- helpers ------------------------------------------------------------- */

/* The manager's end: a bound datagram socket, its $NOTIFY_SOCKET value and
 * the directory that holds a path socket ("" for an abstract one). */
typedef struct {
    int fd;
    char env[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
    char dir[64];
    char path[96];
} notify_test_mgr_t;

static int notify_test_mgr_open(notify_test_mgr_t *m, int abstract)
{
    memset(m, 0, sizeof(*m));
    m->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (m->fd < 0)
        return -errno;
    /* A reader that waits, but never hangs the test. */
    struct timeval tv = { .tv_sec = 5 };
    setsockopt(m->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    socklen_t len;
    if (abstract) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        snprintf(m->env, sizeof(m->env), "@derrd-test-notify-%ld-%ld", (long)getpid(),
                 (long)ts.tv_nsec);
        size_t n = strlen(m->env);
        memcpy(a.sun_path, m->env, n);
        a.sun_path[0] = '\0';
        len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else {
        snprintf(m->dir, sizeof(m->dir), "/tmp/derrd-test-notify-XXXXXX");
        if (!mkdtemp(m->dir))
            return -errno;
        snprintf(m->path, sizeof(m->path), "%s/notify.sock", m->dir);
        snprintf(m->env, sizeof(m->env), "%s", m->path);
        snprintf(a.sun_path, sizeof(a.sun_path), "%s", m->path);
        len = (socklen_t)sizeof(a);
    }
    if (bind(m->fd, (struct sockaddr *)&a, len) < 0)
        return -errno;
    return 0;
}

static void notify_test_mgr_close(notify_test_mgr_t *m)
{
    if (m->fd >= 0)
        close(m->fd);
    m->fd = -1;
    if (m->path[0])
        unlink(m->path);
    if (m->dir[0])
        rmdir(m->dir);
    m->path[0] = m->dir[0] = '\0';
}

/* Receives one datagram into buf (NUL-terminated); its length or -1. */
static int notify_test_recv(notify_test_mgr_t *m, char *buf, size_t cap, int wait)
{
    ssize_t n = recv(m->fd, buf, cap - 1, wait ? 0 : MSG_DONTWAIT);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    return (int)n;
}

/* Sets the environment of a managed service with a 30 s watchdog. */
static void notify_test_env(const char *sock, const char *usec, const char *pid)
{
    if (sock)
        setenv("NOTIFY_SOCKET", sock, 1);
    else
        unsetenv("NOTIFY_SOCKET");
    if (usec)
        setenv("WATCHDOG_USEC", usec, 1);
    else
        unsetenv("WATCHDOG_USEC");
    if (pid)
        setenv("WATCHDOG_PID", pid, 1);
    else
        unsetenv("WATCHDOG_PID");
}

/* Every message of the protocol, read back exactly. */
static void notify_test_messages(int abstract)
{
    notify_test_mgr_t m;
    int rc = notify_test_mgr_open(&m, abstract);
    if (rc) {
        test_fail(__FILE__, __LINE__, "manager socket: %s", strerror(-rc));
        notify_test_mgr_close(&m);
        return;
    }
    char pid[32], err[256], buf[2048];
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    notify_test_env(m.env, "30000000", pid);
    CHECK_EQ_INT(notify_init(err, sizeof(err)), 0);
    CHECK(notify_enabled());
    CHECK_EQ_INT(notify_watchdog_usec(), 30000000);

    CHECK_EQ_INT(notify_ready(), 0);
    CHECK(notify_test_recv(&m, buf, sizeof(buf), 1) > 0 && !strcmp(buf, "READY=1"));
    CHECK_EQ_INT(notify_status("round %d: %s", 3, "published"), 0);
    CHECK(notify_test_recv(&m, buf, sizeof(buf), 1) > 0 &&
          !strcmp(buf, "STATUS=round 3: published"));
    CHECK_EQ_INT(notify_watchdog(), 0);
    CHECK(notify_test_recv(&m, buf, sizeof(buf), 1) > 0 && !strcmp(buf, "WATCHDOG=1"));
    CHECK_EQ_INT(notify_reloading(), 0);
    CHECK(notify_test_recv(&m, buf, sizeof(buf), 1) > 0 &&
          !strncmp(buf, "RELOADING=1\nMONOTONIC_USEC=", 27) && buf[27] >= '1' &&
          buf[27] <= '9');
    CHECK_EQ_INT(notify_stopping(), 0);
    CHECK(notify_test_recv(&m, buf, sizeof(buf), 1) > 0 && !strcmp(buf, "STOPPING=1"));
    CHECK(notify_test_recv(&m, buf, sizeof(buf), 0) < 0); /* nothing else */

    notify_close();
    CHECK(!notify_enabled());
    CHECK_EQ_INT(notify_ready(), 0);
    CHECK(notify_test_recv(&m, buf, sizeof(buf), 0) < 0);
    notify_test_mgr_close(&m);
}

/* ---- the protocol -------------------------------------------------------- */

TEST(notify_path_socket) { notify_test_messages(0); }

TEST(notify_abstract_socket) { notify_test_messages(1); }

TEST(notify_without_socket_is_a_noop)
{
    notify_test_env(NULL, "30000000", NULL);
    char err[256];
    CHECK_EQ_INT(notify_init(err, sizeof(err)), 0);
    CHECK(!notify_enabled());
    CHECK_EQ_INT(notify_watchdog_usec(), 0);
    CHECK_EQ_INT(notify_ready(), 0);
    CHECK_EQ_INT(notify_status("x %d", 1), 0);
    CHECK_EQ_INT(notify_reloading(), 0);
    CHECK_EQ_INT(notify_watchdog(), 0);
    CHECK_EQ_INT(notify_stopping(), 0);
    CHECK_EQ_INT(notify_send("READY=1"), 0);
    setenv("NOTIFY_SOCKET", "", 1); /* empty = unset */
    CHECK_EQ_INT(notify_init(NULL, 0), 0);
    CHECK(!notify_enabled());
}

/* A newline must not smuggle an assignment in; long text is cut. */
TEST(notify_status_stays_one_line)
{
    notify_test_mgr_t m;
    REQUIRE(notify_test_mgr_open(&m, 1) == 0);
    notify_test_env(m.env, NULL, NULL);
    char buf[4096], big[3000];
    REQUIRE(notify_init(NULL, 0) == 0);
    CHECK_EQ_INT(notify_status("topic %s", "x\nREADY=1\r"), 0);
    CHECK(notify_test_recv(&m, buf, sizeof(buf), 1) > 0 && !strcmp(buf, "STATUS=topic x READY=1 "));
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    CHECK_EQ_INT(notify_status("%s", big), 0);
    CHECK_EQ_INT(notify_test_recv(&m, buf, sizeof(buf), 1), 7 + 1000);
    CHECK(!strncmp(buf, "STATUS=aaa", 10));
    notify_close();
    notify_test_mgr_close(&m);
}

TEST(notify_watchdog_env)
{
    notify_test_mgr_t m;
    REQUIRE(notify_test_mgr_open(&m, 1) == 0);
    char err[256], pid[32], buf[256];

    /* No WATCHDOG_USEC: off, and WATCHDOG=1 is not sent. */
    notify_test_env(m.env, NULL, NULL);
    CHECK_EQ_INT(notify_init(err, sizeof(err)), 0);
    CHECK_EQ_INT(notify_watchdog_usec(), 0);
    CHECK_EQ_INT(notify_watchdog(), 0);
    CHECK(notify_test_recv(&m, buf, sizeof(buf), 0) < 0);

    /* WATCHDOG_USEC alone, and with our own pid. */
    notify_test_env(m.env, "5000000", NULL);
    CHECK_EQ_INT(notify_init(err, sizeof(err)), 0);
    CHECK_EQ_INT(notify_watchdog_usec(), 5000000);
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    notify_test_env(m.env, "18446744073709551615", pid);
    CHECK_EQ_INT(notify_init(err, sizeof(err)), 0);
    CHECK(notify_watchdog_usec() == UINT64_MAX);

    /* Another process's watchdog: not ours, not an error. */
    snprintf(pid, sizeof(pid), "%ld", (long)getpid() + 1);
    notify_test_env(m.env, "5000000", pid);
    CHECK_EQ_INT(notify_init(err, sizeof(err)), 0);
    CHECK_EQ_INT(notify_watchdog_usec(), 0);
    CHECK_EQ_INT(notify_watchdog(), 0);
    CHECK(notify_test_recv(&m, buf, sizeof(buf), 0) < 0);

    /* Malformed values turn the watchdog off, the rest stays on. */
    const char *bad[] = { "", "0", "-1", " 5", "5s", "abc", "99999999999999999999" };
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        notify_test_env(m.env, bad[k], NULL);
        err[0] = '\0';
        CHECK_EQ_INT(notify_init(err, sizeof(err)), -EINVAL);
        CHECK(strstr(err, "WATCHDOG_USEC") != NULL);
        CHECK_EQ_INT(notify_watchdog_usec(), 0);
        CHECK(notify_enabled());
    }
    notify_test_env(m.env, "5000000", "12x");
    CHECK_EQ_INT(notify_init(err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "WATCHDOG_PID") != NULL);
    CHECK_EQ_INT(notify_watchdog_usec(), 0);
    CHECK_EQ_INT(notify_ready(), 0);
    CHECK(notify_test_recv(&m, buf, sizeof(buf), 1) > 0 && !strcmp(buf, "READY=1"));
    notify_close();
    notify_test_mgr_close(&m);
}

TEST(notify_bad_socket_names)
{
    char err[256], longname[200];
    notify_test_env("relative/notify", NULL, NULL);
    CHECK_EQ_INT(notify_init(err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "NOTIFY_SOCKET") != NULL);
    CHECK(!notify_enabled());
    CHECK_EQ_INT(notify_ready(), 0);
    notify_test_env("@", NULL, NULL);
    CHECK_EQ_INT(notify_init(err, sizeof(err)), -EINVAL);
    notify_test_env("vsock:2:1234", NULL, NULL);
    CHECK_EQ_INT(notify_init(err, sizeof(err)), -EAFNOSUPPORT);
    longname[0] = '/';
    memset(longname + 1, 'x', sizeof(longname) - 2);
    longname[sizeof(longname) - 1] = '\0';
    notify_test_env(longname, NULL, NULL);
    CHECK_EQ_INT(notify_init(err, sizeof(err)), -ENAMETOOLONG);
    CHECK(!notify_enabled());
}

/* The manager went away: the error comes back (and is logged once). */
TEST(notify_send_failure_is_returned)
{
    log_setup(LOG_LVL_ERR - 1, 0);
    notify_test_mgr_t m;
    REQUIRE(notify_test_mgr_open(&m, 0) == 0);
    notify_test_env(m.env, "1000000", NULL);
    REQUIRE(notify_init(NULL, 0) == 0);
    char gone[sizeof(m.env)];
    snprintf(gone, sizeof(gone), "%s", m.env);
    notify_test_mgr_close(&m);
    int rc = notify_ready();
    CHECK(rc == -ENOENT || rc == -ECONNREFUSED);
    CHECK(notify_watchdog() < 0);
    notify_close();
}

typedef struct {
    int id;
    int sent;
} notify_test_sender_t;

static void *notify_test_sender(void *arg)
{
    notify_test_sender_t *s = arg;
    for (int k = 0; k < 100; k++) {
        int rc;
        while ((rc = notify_status("thread %d message %d", s->id, k)) == -EAGAIN)
            usleep(100); /* the reader is behind: the queue is full */
        s->sent += rc == 0;
    }
    return NULL;
}

/* Four threads at once: every datagram arrives whole. */
TEST(notify_from_threads)
{
    log_setup(LOG_LVL_ERR - 1, 0);
    notify_test_mgr_t m;
    REQUIRE(notify_test_mgr_open(&m, 1) == 0);
    notify_test_env(m.env, NULL, NULL);
    REQUIRE(notify_init(NULL, 0) == 0);
    pthread_t th[4];
    notify_test_sender_t snd[4];
    for (int k = 0; k < 4; k++) {
        snd[k] = (notify_test_sender_t){ .id = k };
        REQUIRE(pthread_create(&th[k], NULL, notify_test_sender, &snd[k]) == 0);
    }
    int got[4] = { 0 }, bad = 0;
    char buf[256];
    for (int n = 0; n < 400; n++) {
        if (notify_test_recv(&m, buf, sizeof(buf), 1) < 0) {
            bad++;
            break;
        }
        int id, k;
        char tail;
        if (sscanf(buf, "STATUS=thread %d message %d%c", &id, &k, &tail) == 2 && id >= 0 &&
            id < 4 && k == got[id])
            got[id]++;
        else
            bad++;
    }
    for (int k = 0; k < 4; k++) {
        pthread_join(th[k], NULL);
        CHECK_EQ_INT(snd[k].sent, 100);
        CHECK_EQ_INT(got[k], 100);
    }
    CHECK_EQ_INT(bad, 0);
    notify_close();
    notify_test_mgr_close(&m);
}

/* ---- the progress gate --------------------------------------------------- */

TEST(notify_wd_gate)
{
    notify_wd_t wd;
    const uint64_t t0 = 1000000, lim = 30000;
    notify_wd_init(&wd, 30000000, t0); /* WatchdogSec=30s */
    CHECK_EQ_INT(wd.interval_ms, 30000);
    CHECK_EQ_INT(notify_wd_check(&wd, t0, lim), 1); /* both fresh at start */

    /* The loop: within half the interval, not a millisecond more. */
    CHECK_EQ_INT(notify_wd_check(&wd, t0 + 15000, lim), 1);
    CHECK_EQ_INT(notify_wd_check(&wd, t0 + 15001, lim), 0);
    CHECK_EQ_INT(notify_wd_age(&wd, NOTIFY_WD_LOOP, t0 + 15001), 15001);
    notify_wd_beat_at(&wd, NOTIFY_WD_LOOP, t0 + 15001);
    CHECK_EQ_INT(notify_wd_check(&wd, t0 + 15001, lim), 1);

    /* The trainer: fresh within its limit; stalled beyond it, even with a
     * loop that beats. */
    notify_wd_beat_at(&wd, NOTIFY_WD_LOOP, t0 + 30000);
    CHECK_EQ_INT(notify_wd_check(&wd, t0 + 30000, lim), 1);
    notify_wd_beat_at(&wd, NOTIFY_WD_LOOP, t0 + 30001);
    CHECK_EQ_INT(notify_wd_check(&wd, t0 + 30001, lim), 0);
    CHECK_EQ_INT(notify_wd_age(&wd, NOTIFY_WD_TRAINER, t0 + 30001), 30001);
    CHECK_EQ_INT(notify_wd_check(&wd, t0 + 30001, 2 * lim), 1); /* a longer limit */
    notify_wd_beat_at(&wd, NOTIFY_WD_TRAINER, t0 + 29000);      /* between epochs */
    CHECK_EQ_INT(notify_wd_check(&wd, t0 + 30001, lim), 1);

    /* An idle trainer (waiting for work) is fresh however long it waits;
     * its next beat starts the clock again. */
    notify_wd_idle(&wd, NOTIFY_WD_TRAINER);
    notify_wd_beat_at(&wd, NOTIFY_WD_LOOP, t0 + 500000);
    CHECK_EQ_INT(notify_wd_check(&wd, t0 + 500000, lim), 1);
    CHECK_EQ_INT(notify_wd_age(&wd, NOTIFY_WD_TRAINER, t0 + 500000), 0);
    notify_wd_beat_at(&wd, NOTIFY_WD_TRAINER, t0 + 500000);
    CHECK_EQ_INT(notify_wd_check(&wd, t0 + 530001, lim), 0);

    /* A loop stalled while the trainer beats: no ping. */
    notify_wd_beat_at(&wd, NOTIFY_WD_TRAINER, t0 + 530001);
    CHECK_EQ_INT(notify_wd_check(&wd, t0 + 530001, lim), 0);

    /* A beat read from the clock after the caller's now is fresh. */
    notify_wd_beat_at(&wd, NOTIFY_WD_LOOP, t0 + 600005);
    notify_wd_beat_at(&wd, NOTIFY_WD_TRAINER, t0 + 600005);
    CHECK_EQ_INT(notify_wd_check(&wd, t0 + 600000, lim), 1);
    CHECK_EQ_INT(notify_wd_age(&wd, NOTIFY_WD_LOOP, t0 + 600000), 0);

    /* Out-of-range sources are ignored. */
    notify_wd_beat_at(&wd, NOTIFY_WD_SOURCES, 0);
    notify_wd_beat_at(&wd, -1, 0);
    CHECK_EQ_INT(notify_wd_check(&wd, t0 + 600000, lim), 1);

    /* No watchdog: never ping. */
    notify_wd_init(&wd, 0, t0);
    CHECK_EQ_INT(notify_wd_check(&wd, t0, lim), 0);
}

/* notify_wd_beat() stamps the same clock as log_now_ms(). */
TEST(notify_wd_beat_uses_the_monotonic_clock)
{
    notify_wd_t wd;
    uint64_t now = log_now_ms();
    notify_wd_init(&wd, 2000000, now - 60000); /* 2 s, beaten a minute ago */
    CHECK_EQ_INT(notify_wd_check(&wd, now, 1000), 0);
    notify_wd_beat(&wd, NOTIFY_WD_LOOP);
    notify_wd_beat(&wd, NOTIFY_WD_TRAINER);
    now = log_now_ms();
    CHECK_EQ_INT(notify_wd_check(&wd, now, 1000), 1);
    CHECK(notify_wd_age(&wd, NOTIFY_WD_LOOP, now) < 1000);
}
