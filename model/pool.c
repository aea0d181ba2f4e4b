/* Worker pool with a generation counter; see pool.h. */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

struct pool {
    int nthreads;
    int nice;              /* the helpers' niceness (0 = inherited) */
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t work_cv;  /* a new job, or shutdown */
    pthread_cond_t done_cv;  /* the last worker left the job */
    atomic_ulong generation; /* written under mu; read without it to spin */
    atomic_int shutdown;
    /* the current job */
    pool_fn fn;
    void *ctx;
    int ntasks;
    atomic_int next;
    atomic_int active;       /* helpers still inside the current job */
};

/* Training runs thousands of short jobs back to back (several per
 * mini-batch). A worker that went to sleep on the condition variable takes
 * tens of microseconds to wake, by which time the caller has done the job
 * alone; so workers, and the caller waiting for them, first spin a little. */
enum { POOL_SPIN = 4000 };

/* Denormal floats take a slow microcode path on x86, tens of times slower
 * per operation. Training makes them: at low Gumbel-softmax temperatures the
 * selection gradients underflow, and second moments decay toward zero over
 * long idle gaps. Every thread that runs pool jobs flushes them to zero
 * (FTZ and DAZ in MXCSR); no result here depends on values below 1e-38. */
static void pool__flush_denormals(void)
{
#if defined(__SSE__)
    __builtin_ia32_ldmxcsr(__builtin_ia32_stmxcsr() | 0x8040);
#endif
}

static inline void pool__relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

struct pool__arg {
    pool_t *pool;
    int worker;
};

static void pool__drain(pool_t *pool, int worker)
{
    for (;;) {
        int task = atomic_fetch_add_explicit(&pool->next, 1, memory_order_relaxed);
        if (task >= pool->ntasks)
            return;
        pool->fn(pool->ctx, task, worker);
    }
}

static void *pool__main(void *p)
{
    struct pool__arg *arg = p;
    pool_t *pool = arg->pool;
    int worker = arg->worker;
    free(arg);
    pool__flush_denormals();
    pool_nice_self(pool->nice);
    unsigned long seen = 0;
    for (;;) {
        for (int spin = 0; spin < POOL_SPIN; spin++) {
            if (atomic_load_explicit(&pool->generation, memory_order_acquire) != seen ||
                atomic_load_explicit(&pool->shutdown, memory_order_relaxed))
                break;
            pool__relax();
        }
        pthread_mutex_lock(&pool->mu);
        while (!atomic_load(&pool->shutdown) && atomic_load(&pool->generation) == seen)
            pthread_cond_wait(&pool->work_cv, &pool->mu);
        if (atomic_load(&pool->shutdown)) {
            pthread_mutex_unlock(&pool->mu);
            break;
        }
        seen = atomic_load(&pool->generation);
        pthread_mutex_unlock(&pool->mu);
        pool__drain(pool, worker);
        pthread_mutex_lock(&pool->mu);
        if (atomic_fetch_sub(&pool->active, 1) == 1)
            pthread_cond_signal(&pool->done_cv);
        pthread_mutex_unlock(&pool->mu);
    }
    return NULL;
}

int pool_nice_self(int nice)
{
    if (nice <= 0)
        return 0;
    /* On Linux a thread's niceness is its own: PRIO_PROCESS with a thread id. */
    return setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice) == 0 ? 0 : -errno;
}

pool_t *pool_new(int nthreads) { return pool_new_nice(nthreads, 0); }

pool_t *pool_new_nice(int nthreads, int nice)
{
    if (nthreads < 1)
        nthreads = 1;
    pool_t *pool = calloc(1, sizeof(*pool));
    if (!pool)
        return NULL;
    pool->nice = nice;
    pool__flush_denormals(); /* the caller is worker 0 */
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->work_cv, NULL);
    pthread_cond_init(&pool->done_cv, NULL);
    pool->nthreads = 1; /* counts the helpers that started, plus the caller */
    pool->threads = calloc((size_t)nthreads, sizeof(pthread_t));
    if (!pool->threads)
        goto fail;
    for (int i = 0; i < nthreads - 1; i++) {
        struct pool__arg *arg = malloc(sizeof(*arg));
        if (!arg)
            goto fail;
        arg->pool = pool;
        arg->worker = i + 1;
        if (pthread_create(&pool->threads[i], NULL, pool__main, arg) != 0) {
            free(arg);
            goto fail;
        }
        pool->nthreads++;
    }
    return pool;
fail:
    pool_free(pool);
    return NULL;
}

void pool_free(pool_t *pool)
{
    if (!pool)
        return;
    if (pool->threads) {
        pthread_mutex_lock(&pool->mu);
        atomic_store(&pool->shutdown, 1);
        pthread_cond_broadcast(&pool->work_cv);
        pthread_mutex_unlock(&pool->mu);
        for (int i = 0; i < pool->nthreads - 1; i++)
            pthread_join(pool->threads[i], NULL);
    }
    pthread_mutex_destroy(&pool->mu);
    pthread_cond_destroy(&pool->work_cv);
    pthread_cond_destroy(&pool->done_cv);
    free(pool->threads);
    free(pool);
}

int pool_threads(const pool_t *pool)
{
    return pool ? pool->nthreads : 1;
}

void pool_run(pool_t *pool, int ntasks, pool_fn fn, void *ctx)
{
    if (ntasks <= 0)
        return;
    if (!pool || pool->nthreads == 1 || ntasks == 1) {
        for (int t = 0; t < ntasks; t++)
            fn(ctx, t, 0);
        return;
    }
    pthread_mutex_lock(&pool->mu);
    pool->fn = fn;
    pool->ctx = ctx;
    pool->ntasks = ntasks;
    atomic_store_explicit(&pool->next, 0, memory_order_relaxed);
    atomic_store(&pool->active, pool->nthreads - 1);
    atomic_fetch_add_explicit(&pool->generation, 1, memory_order_release);
    pthread_cond_broadcast(&pool->work_cv);
    pthread_mutex_unlock(&pool->mu);

    pool__drain(pool, 0);

    for (int spin = 0; spin < POOL_SPIN; spin++) {
        if (atomic_load_explicit(&pool->active, memory_order_acquire) == 0)
            break;
        pool__relax();
    }
    pthread_mutex_lock(&pool->mu);
    while (atomic_load(&pool->active) > 0)
        pthread_cond_wait(&pool->done_cv, &pool->mu);
    pthread_mutex_unlock(&pool->mu);
}
