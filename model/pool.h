/*
 * pool: a fixed set of worker threads that run parallel-for jobs.
 *
 * pool_run() hands out task indices 0..ntasks-1 to the workers and to the
 * calling thread, and returns when all have finished. Which worker runs which
 * task is not fixed, so a task must write only what its index owns; that is
 * how model/ stays reproducible whatever the thread count.
 *
 * A pool is driven by one thread at a time (pool_run is not re-entrant).
 * Its threads, the creating thread included, flush denormal floats to zero
 * (x86 FTZ/DAZ), which keeps training at full speed when values underflow.
 */
#ifndef DERRD_POOL_H
#define DERRD_POOL_H

typedef struct pool pool_t;

/* fn(ctx, task, worker): worker is in [0, pool_threads()) and names the
 * scratch a task may use; task is the index of the unit of work. */
typedef void (*pool_fn)(void *ctx, int task, int worker);

/* Starts nthreads - 1 helper threads (the caller is the last worker).
 * nthreads < 1 is taken as 1. Returns NULL when out of memory or threads. */
pool_t *pool_new(int nthreads);

/* The same, with the helper threads at niceness nice (> 0: lower priority
 * than the process's other threads; 0: inherited). Training is background
 * work beside a latency-bound event loop. */
pool_t *pool_new_nice(int nthreads, int nice);

/* Sets the calling thread's niceness (nice > 0; 0 does nothing). Returns 0
 * or a negative errno. */
int pool_nice_self(int nice);

/* Joins the workers. Accepts NULL. */
void pool_free(pool_t *pool);

int pool_threads(const pool_t *pool);

/* Runs fn for every task in [0, ntasks) and waits for all of them. */
void pool_run(pool_t *pool, int ntasks, pool_fn fn, void *ctx);

#endif
