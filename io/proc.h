/*
 * proc: process-level helpers.
 */
#ifndef DERRD_PROC_H
#define DERRD_PROC_H

/* Starts this program again (the path it was started from, same arguments,
 * same pid, same process name) with the environment variable name set to
 * value, unless value is NULL or name is already set: an operator's own
 * setting always wins, and the second start does not start a third. For
 * settings a library reads when it loads (OPENBLAS_CORETYPE), so call it
 * first thing in main, before any file or socket exists. Returns only when
 * it did not start again: 0 when there was nothing to do, -ESTALE when that
 * path names another file than this program's (replaced since, or the
 * program was run by naming the dynamic loader), another -errno when
 * /proc/self/exe, setenv or execv failed (the process goes on as it is).
 * When the path is gone, /proc/self/exe is started (named "exe"). */
int proc_restart_with_env(char *const argv[], const char *name, const char *value);

/* A "kB" field of /proc/self/status ("VmHWM", "VmSize", ...) in KiB, or -1
 * when there is no such file or field. */
long proc_status_kib(const char *field);

#endif
