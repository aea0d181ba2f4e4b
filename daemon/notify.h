/*
 * notify: the service manager's notification protocol (sd_notify(3)),
 * written by hand: each message is one datagram of NEWLINE-separated
 * VAR=VALUE lines sent to the AF_UNIX socket that $NOTIFY_SOCKET names (a
 * path, or an abstract name when it starts with '@'). Without
 * $NOTIFY_SOCKET every call is a no-op returning 0, so the daemon behaves
 * the same outside systemd.
 *
 * The watchdog gate: notify_wd_t collects heartbeats from the event loop
 * and from the trainer thread; the loop's watchdog timer (every half
 * watchdog interval) asks notify_wd_check() and sends WATCHDOG=1 only when
 * both made progress. A timer alone proves nothing: a wedged trainer with a
 * healthy loop must still let systemd restart the daemon.
 *
 * Thread-safety: notify_init() and notify_close() from one thread while no
 * other thread sends. Every other call is safe from any thread: there is
 * one socket, set up once, and sendto(2) of one datagram is atomic, so
 * messages never interleave. Nothing blocks: the socket is non-blocking and
 * a full queue at the manager's end returns -EAGAIN. Errors are returned;
 * a failed send also logs one warning a minute at most.
 */
#ifndef DERRD_NOTIFY_H
#define DERRD_NOTIFY_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Reads $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID and opens the
 * socket (closing a previous one). Returns 0, also when $NOTIFY_SOCKET is
 * unset (notifications off), or a negative errno with the reason in err:
 * -EINVAL for a malformed variable, -ENAMETOOLONG, -EAFNOSUPPORT for a
 * socket kind other than a path or '@' name, or socket(2)'s error. A bad
 * $NOTIFY_SOCKET turns notifications off; a bad $WATCHDOG_USEC or
 * $WATCHDOG_PID only the watchdog. err may be NULL. */
int notify_init(char *err, size_t errlen);

/* Closes the socket: every call is a no-op again. */
void notify_close(void);

/* 1 when notifications go to a service manager, else 0. */
int notify_enabled(void);

/* Sends msg as one datagram ("READY=1", or several "VAR=VALUE" lines).
 * Returns 0 (also when notifications are off) or a negative errno. */
int notify_send(const char *msg);

/* READY=1: start-up is complete. */
int notify_ready(void);

/* RELOADING=1 with MONOTONIC_USEC: a reload began; send READY=1 when it is
 * done. */
int notify_reloading(void);

/* STATUS=<printf text>: one line shown by `systemctl status`. Newlines in
 * the text become spaces; text beyond 1000 bytes is cut. */
int notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* STOPPING=1: an orderly shutdown began. systemd then stops the watchdog
 * and allows TimeoutStopSec= for the rest. */
int notify_stopping(void);

/* WATCHDOG=1, when the watchdog is on (else a no-op returning 0). Send it
 * only when notify_wd_check() says so. */
int notify_watchdog(void);

/* The watchdog interval in microseconds: 0 when disabled (notifications
 * off, no or a bad $WATCHDOG_USEC, or $WATCHDOG_PID names another
 * process). */
uint64_t notify_watchdog_usec(void);

/* ---- the progress gate --------------------------------------------------- */

enum { NOTIFY_WD_LOOP = 0, NOTIFY_WD_TRAINER = 1, NOTIFY_WD_SOURCES = 2 };

/* Heartbeats as CLOCK_MONOTONIC milliseconds (io/log.h log_now_ms());
 * UINT64_MAX marks a source idle. Set up with notify_wd_init(), then
 * written by notify_wd_beat/idle from any thread. */
typedef struct {
    _Atomic uint64_t beat_ms[NOTIFY_WD_SOURCES];
    uint64_t interval_ms; /* the watchdog interval */
} notify_wd_t;

/* interval_usec: notify_watchdog_usec(). Every source counts as having
 * beaten at now_ms. */
void notify_wd_init(notify_wd_t *wd, uint64_t interval_usec, uint64_t now_ms);

/* The source made progress now (notify_wd_beat) or at now_ms. */
void notify_wd_beat(notify_wd_t *wd, int source);
void notify_wd_beat_at(notify_wd_t *wd, int source, uint64_t now_ms);

/* The source is blocked waiting for work (the trainer on an empty queue):
 * it counts as fresh until its next beat. */
void notify_wd_idle(notify_wd_t *wd, int source);

/* The rule: returns 1 (send WATCHDOG=1) only when
 *   - the loop beat within the last half watchdog interval, and
 *   - the trainer beat within trainer_busy_limit_ms,
 * where a source marked idle, or stamped after now_ms (another thread's
 * clock read), counts as fresh. The trainer beats between batches,
 * checkpoints and epochs, so a long round still beats; the limit bounds the
 * longest step without a beat (give it at least the watchdog interval).
 * Returns 0 when the interval is 0. */
int notify_wd_check(const notify_wd_t *wd, uint64_t now_ms, uint64_t trainer_busy_limit_ms);

/* Milliseconds since the source last beat at now_ms; 0 when idle or
 * stamped later. For the message that says why a ping was withheld. */
uint64_t notify_wd_age(const notify_wd_t *wd, int source, uint64_t now_ms);

#endif
