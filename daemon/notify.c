/* The sd_notify datagram protocol and the watchdog's progress gate; see
 * notify.h. */
#include "daemon/notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "io/buf.h"
#include "io/log.h"

#define NOTIFY_STATUS_MAX 1000       /* bytes of STATUS text kept */
#define NOTIFY_WARN_INTERVAL_MS 60000 /* one warning a minute at most */
#define NOTIFY_WD_IDLE UINT64_MAX

/* One process, one manager: the state is global, written by notify_init()
 * and notify_close() only, read by the senders. */
static struct {
    int fd; /* -1: notifications off */
    struct sockaddr_un addr;
    socklen_t addrlen;
    uint64_t watchdog_usec;
    _Atomic uint64_t warn_ms;  /* monotonic time of the last warning */
    _Atomic uint64_t failures; /* failed sends since then */
} notify__g = { .fd = -1 };

static void notify__err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void notify__err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* $NOTIFY_SOCKET -> address. Linux takes a path socket's name without the
 * NUL; an abstract one is a NUL followed by the name, its length exact. */
static int notify__address(const char *name, struct sockaddr_un *addr, socklen_t *len,
                           char *err, size_t errlen)
{
    size_t n = strlen(name);
    memset(addr, 0, sizeof(*addr));
    addr->sun_family = AF_UNIX;
    if (!strncmp(name, "vsock:", 6)) {
        notify__err(err, errlen, "NOTIFY_SOCKET=%s: only AF_UNIX sockets are supported", name);
        return -EAFNOSUPPORT;
    }
    if (name[0] != '/' && name[0] != '@') {
        notify__err(err, errlen, "NOTIFY_SOCKET=%s: neither an absolute path nor an '@' name",
                    name);
        return -EINVAL;
    }
    if (name[0] == '@' && n == 1) {
        notify__err(err, errlen, "NOTIFY_SOCKET=@: empty abstract name");
        return -EINVAL;
    }
    if (n >= sizeof(addr->sun_path)) {
        notify__err(err, errlen, "NOTIFY_SOCKET: name of %zu bytes is too long (at most %zu)",
                    n, sizeof(addr->sun_path) - 1);
        return -ENAMETOOLONG;
    }
    memcpy(addr->sun_path, name, n);
    if (name[0] == '@')
        addr->sun_path[0] = '\0';
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    return 0;
}

/* $WATCHDOG_USEC, and $WATCHDOG_PID when set: a watchdog meant for
 * another process (the variables leaked to a child) is not ours. */
static int notify__watchdog_env(uint64_t *usec, char *err, size_t errlen)
{
    *usec = 0;
    const char *u = getenv("WATCHDOG_USEC"), *p = getenv("WATCHDOG_PID");
    if (!u)
        return 0;
    uint64_t v, pid;
    if (buf_parse_dec(u, strlen(u), UINT64_MAX, &v) || v == 0) {
        notify__err(err, errlen, "WATCHDOG_USEC=%s: not a positive number of microseconds", u);
        return -EINVAL;
    }
    if (p) {
        if (buf_parse_dec(p, strlen(p), UINT64_MAX, &pid) || pid == 0) {
            notify__err(err, errlen, "WATCHDOG_PID=%s: not a process id", p);
            return -EINVAL;
        }
        if (pid != (uint64_t)getpid())
            return 0;
    }
    *usec = v;
    return 0;
}

int notify_init(char *err, size_t errlen)
{
    notify_close();
    if (err && errlen)
        err[0] = '\0';
    const char *name = getenv("NOTIFY_SOCKET");
    if (!name || !*name)
        return 0;
    struct sockaddr_un addr;
    socklen_t len;
    int rc = notify__address(name, &addr, &len, err, errlen);
    if (rc)
        return rc;
    /* Non-blocking: the loop thread sends too, and must never wait on
     * the manager. */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        rc = -errno;
        notify__err(err, errlen, "notify socket: %s", strerror(errno));
        return rc;
    }
    notify__g.fd = fd;
    notify__g.addr = addr;
    notify__g.addrlen = len;
    atomic_store(&notify__g.warn_ms, 0);
    atomic_store(&notify__g.failures, 0);
    return notify__watchdog_env(&notify__g.watchdog_usec, err, errlen);
}

void notify_close(void)
{
    if (notify__g.fd >= 0)
        close(notify__g.fd);
    notify__g.fd = -1;
    notify__g.watchdog_usec = 0;
}

int notify_enabled(void) { return notify__g.fd >= 0; }

/* A manager that stops listening must not flood the journal: the first
 * failure is logged, then one line a minute with the count. */
static void notify__warn(const char *msg, int rc)
{
    uint64_t now = log_now_ms();
    uint64_t last = atomic_load(&notify__g.warn_ms);
    atomic_fetch_add(&notify__g.failures, 1);
    if (last && now - last < NOTIFY_WARN_INTERVAL_MS)
        return;
    if (!atomic_compare_exchange_strong(&notify__g.warn_ms, &last, now ? now : 1))
        return; /* another thread warns */
    uint64_t n = atomic_exchange(&notify__g.failures, 0);
    int first = (int)strcspn(msg, "\n");
    log_warn("systemd notify: cannot send %.*s: %s (%llu failed sends since the last warning)",
             first, msg, strerror(-rc), (unsigned long long)n);
}

int notify_send(const char *msg)
{
    int fd = notify__g.fd;
    if (fd < 0)
        return 0;
    size_t len = strlen(msg);
    ssize_t w;
    do
        w = sendto(fd, msg, len, MSG_NOSIGNAL | MSG_DONTWAIT,
                   (const struct sockaddr *)&notify__g.addr, notify__g.addrlen);
    while (w < 0 && errno == EINTR);
    int rc = w < 0 ? -errno : (size_t)w != len ? -EIO : 0;
    if (rc)
        notify__warn(msg, rc);
    return rc;
}

int notify_ready(void) { return notify_send("READY=1"); }

int notify_stopping(void) { return notify_send("STOPPING=1"); }

int notify_reloading(void)
{
    if (notify__g.fd < 0)
        return 0;
    /* systemd matches the reload to this timestamp (Type=notify-reload);
     * older versions ignore the line. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char msg[64];
    snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000u);
    return notify_send(msg);
}

int notify_status(const char *fmt, ...)
{
    if (notify__g.fd < 0)
        return 0;
    char msg[sizeof("STATUS=") + NOTIFY_STATUS_MAX];
    memcpy(msg, "STATUS=", sizeof("STATUS=") - 1);
    char *text = msg + sizeof("STATUS=") - 1;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, NOTIFY_STATUS_MAX + 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    /* A newline would start a new assignment (a topic name could say
     * READY=1): keep the status one line. */
    for (char *c = text; *c; c++)
        if (*c == '\n' || *c == '\r')
            *c = ' ';
    return notify_send(msg);
}

int notify_watchdog(void)
{
    if (notify__g.fd < 0 || notify__g.watchdog_usec == 0)
        return 0;
    return notify_send("WATCHDOG=1");
}

uint64_t notify_watchdog_usec(void) { return notify__g.fd >= 0 ? notify__g.watchdog_usec : 0; }

/* ---- the progress gate ------------------------------------------------------ */

void notify_wd_init(notify_wd_t *wd, uint64_t interval_usec, uint64_t now_ms)
{
    wd->interval_ms = interval_usec / 1000u;
    for (int s = 0; s < NOTIFY_WD_SOURCES; s++)
        atomic_init(&wd->beat_ms[s], now_ms);
}

void notify_wd_beat_at(notify_wd_t *wd, int source, uint64_t now_ms)
{
    if (source >= 0 && source < NOTIFY_WD_SOURCES)
        atomic_store_explicit(&wd->beat_ms[source], now_ms, memory_order_relaxed);
}

void notify_wd_beat(notify_wd_t *wd, int source) { notify_wd_beat_at(wd, source, log_now_ms()); }

void notify_wd_idle(notify_wd_t *wd, int source)
{
    notify_wd_beat_at(wd, source, NOTIFY_WD_IDLE);
}

uint64_t notify_wd_age(const notify_wd_t *wd, int source, uint64_t now_ms)
{
    if (source < 0 || source >= NOTIFY_WD_SOURCES)
        return 0;
    /* The gate only reads a clock value; relaxed is enough. */
    uint64_t beat = atomic_load_explicit(&wd->beat_ms[source], memory_order_relaxed);
    return beat == NOTIFY_WD_IDLE || beat >= now_ms ? 0 : now_ms - beat;
}

int notify_wd_check(const notify_wd_t *wd, uint64_t now_ms, uint64_t trainer_busy_limit_ms)
{
    if (wd->interval_ms == 0)
        return 0;
    if (notify_wd_age(wd, NOTIFY_WD_LOOP, now_ms) > wd->interval_ms / 2)
        return 0;
    return notify_wd_age(wd, NOTIFY_WD_TRAINER, now_ms) <= trainer_busy_limit_ms;
}
