/* Logging; see log.h. */
#include "io/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static atomic_int log__level = LOG_LVL_INFO;
static atomic_int log__journal = 0;

/* systemd sets JOURNAL_STREAM=<dev>:<ino> of the stream it connected; it
 * only counts when it is still our stderr. */
static int log__stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) < 0)
        return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_setup(int level, int journal)
{
    atomic_store(&log__level, level);
    atomic_store(&log__journal, journal < 0 ? log__stderr_is_journal() : journal);
}

int log_level(void) { return atomic_load(&log__level); }

int log_level_parse(const char *name)
{
    static const char *names[] = { [LOG_LVL_ERR] = "err", [LOG_LVL_WARNING] = "warning",
                                   [LOG_LVL_NOTICE] = "notice", [LOG_LVL_INFO] = "info",
                                   [LOG_LVL_DEBUG] = "debug" };
    for (int k = LOG_LVL_ERR; k <= LOG_LVL_DEBUG; k++)
        if (strcmp(name, names[k]) == 0)
            return k;
    return -1;
}

void log_msg(int level, const char *fmt, ...)
{
    if (level > atomic_load(&log__level))
        return;
    static const char *words[] = { "emerg", "alert", "crit", "error", "warning",
                                    "notice", "info", "debug" };
    char line[2048];
    int n;
    if (atomic_load(&log__journal)) {
        n = snprintf(line, sizeof(line), "<%d>", level);
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, words[level & 7]);
    }
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    /* One event, one line: a newline inside the text would split it. */
    for (size_t k = (size_t)n; k < len; k++)
        if (line[k] == '\n' || line[k] == '\r')
            line[k] = ' ';
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

uint64_t log_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

struct timespec log_deadline(uint64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

uint64_t log_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int log_ratelimit_ok(log_ratelimit_t *rl, uint64_t interval_ms, uint64_t *suppressed)
{
    uint64_t now = log_now_ms();
    if (rl->last_ms && now - rl->last_ms < interval_ms) {
        rl->dropped++;
        return 0;
    }
    rl->last_ms = now;
    if (suppressed)
        *suppressed = rl->dropped;
    rl->dropped = 0;
    return 1;
}
