/*
 * log: one line per event worth logging, to stderr. Under systemd (stderr is
 * the journal) each line starts with a syslog priority prefix "<N>" that
 * journald turns into the entry's priority; otherwise lines carry a UTC
 * timestamp and a level word.
 *
 * Thread-safe: each line is formatted first and written with one write(2).
 */
#ifndef DERRD_LOG_H
#define DERRD_LOG_H

#include <stdint.h>
#include <time.h>

/* syslog priorities */
enum { LOG_LVL_ERR = 3, LOG_LVL_WARNING = 4, LOG_LVL_NOTICE = 5, LOG_LVL_INFO = 6,
       LOG_LVL_DEBUG = 7 };

/* Sets the most verbose level written (default info) and the style:
 * journal = 1 for "<N>" prefixes, 0 for timestamps, -1 to detect it from
 * $JOURNAL_STREAM matching stderr. */
void log_setup(int level, int journal);
int log_level(void);

/* Parses "err", "warning", "notice", "info", "debug"; -1 when unknown. */
int log_level_parse(const char *name);

void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...) log_msg(LOG_LVL_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARNING, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_LVL_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

/* A rate limit for repeated lines: log_ratelimit_ok() is true at most once
 * per interval; *suppressed gets the count dropped since the last true. */
typedef struct {
    uint64_t last_ms;
    uint64_t dropped;
} log_ratelimit_t;

int log_ratelimit_ok(log_ratelimit_t *rl, uint64_t interval_ms, uint64_t *suppressed);

/* Milliseconds of CLOCK_MONOTONIC and of the wall clock. */
uint64_t log_now_ms(void);
uint64_t log_wall_ms(void);

/* CLOCK_MONOTONIC ms milliseconds from now, as pthread_cond_timedwait
 * wants it of a condition variable set to that clock. */
struct timespec log_deadline(uint64_t ms);

#endif
