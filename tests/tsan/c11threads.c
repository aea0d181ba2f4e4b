/*
 * c11threads: C11 <threads.h> routed through pthreads, preloaded into
 * the ThreadSanitizer runs (`make tsan`, LD_PRELOAD; built without TSan).
 *
 * librdkafka starts its threads with thrd_create() and locks with mtx_* and
 * cnd_*. glibc implements those by calling its internal pthread functions,
 * not the pthread_* symbols that TSan intercepts (GCC 12's and clang 14's
 * runtimes have no C11-thread interceptors). A thread TSan never saw start
 * crashes in TSan's allocator at its first malloc(), and locks TSan cannot
 * see would hide the order librdkafka puts between its threads and derrd's
 * callbacks. Here each call becomes the pthread call glibc makes itself
 * (mtx_t and cnd_t are glibc's pthread_mutex_t and pthread_cond_t), through
 * the public symbols, so TSan intercepts them. In a process without TSan
 * they reach glibc unchanged.
 *
 * librdkafka's rwlocks are pthread_rwlock_* already; tests/tsan.supp has
 * TSan ignore every libc call librdkafka makes itself (called_from_lib), so
 * they are forwarded from here too, to stay visible: they publish objects
 * (topics, partitions) between librdkafka's threads, whose C11 mutexes are
 * then taken in calls from derrd's threads. pthread_setname_np too, so that
 * reports name librdkafka's threads ("rdk:broker1").
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <threads.h>

_Static_assert(sizeof(thrd_t) == sizeof(pthread_t), "thrd_t is a pthread_t");
_Static_assert(sizeof(mtx_t) == sizeof(pthread_mutex_t), "mtx_t is a pthread_mutex_t");
_Static_assert(sizeof(cnd_t) == sizeof(pthread_cond_t), "cnd_t is a pthread_cond_t");
_Static_assert(sizeof(once_flag) == sizeof(pthread_once_t), "once_flag is a pthread_once_t");

/* glibc's thrd_err_map */
static int c11__err(int e)
{
    switch (e) {
    case 0:
        return thrd_success;
    case ENOMEM:
        return thrd_nomem;
    case ETIMEDOUT:
        return thrd_timedout;
    case EBUSY:
        return thrd_busy;
    default:
        return thrd_error;
    }
}

struct c11__start {
    thrd_start_t fn;
    void *arg;
};

static void *c11__trampoline(void *p)
{
    struct c11__start s = *(struct c11__start *)p;
    free(p);
    return (void *)(intptr_t)s.fn(s.arg);
}

int thrd_create(thrd_t *thr, thrd_start_t fn, void *arg)
{
    struct c11__start *s = malloc(sizeof(*s));
    if (!s)
        return thrd_nomem;
    s->fn = fn;
    s->arg = arg;
    int e = pthread_create((pthread_t *)thr, NULL, c11__trampoline, s);
    if (e)
        free(s);
    return c11__err(e);
}

int thrd_join(thrd_t thr, int *res)
{
    void *ret = NULL;
    int e = pthread_join((pthread_t)thr, &ret);
    if (!e && res)
        *res = (int)(intptr_t)ret;
    return c11__err(e);
}

int thrd_detach(thrd_t thr) { return c11__err(pthread_detach((pthread_t)thr)); }

void thrd_exit(int res) { pthread_exit((void *)(intptr_t)res); }

int mtx_init(mtx_t *m, int type)
{
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    if (type & mtx_recursive)
        pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    int e = pthread_mutex_init((pthread_mutex_t *)m, &attr);
    pthread_mutexattr_destroy(&attr);
    return c11__err(e);
}

int mtx_lock(mtx_t *m) { return c11__err(pthread_mutex_lock((pthread_mutex_t *)m)); }

int mtx_trylock(mtx_t *m) { return c11__err(pthread_mutex_trylock((pthread_mutex_t *)m)); }

int mtx_timedlock(mtx_t *restrict m, const struct timespec *restrict ts)
{
    return c11__err(pthread_mutex_timedlock((pthread_mutex_t *)m, ts));
}

int mtx_unlock(mtx_t *m) { return c11__err(pthread_mutex_unlock((pthread_mutex_t *)m)); }

void mtx_destroy(mtx_t *m) { pthread_mutex_destroy((pthread_mutex_t *)m); }

int cnd_init(cnd_t *c) { return c11__err(pthread_cond_init((pthread_cond_t *)c, NULL)); }

int cnd_signal(cnd_t *c) { return c11__err(pthread_cond_signal((pthread_cond_t *)c)); }

int cnd_broadcast(cnd_t *c) { return c11__err(pthread_cond_broadcast((pthread_cond_t *)c)); }

int cnd_wait(cnd_t *c, mtx_t *m)
{
    return c11__err(pthread_cond_wait((pthread_cond_t *)c, (pthread_mutex_t *)m));
}

int cnd_timedwait(cnd_t *restrict c, mtx_t *restrict m, const struct timespec *restrict ts)
{
    return c11__err(pthread_cond_timedwait((pthread_cond_t *)c, (pthread_mutex_t *)m, ts));
}

void cnd_destroy(cnd_t *c) { pthread_cond_destroy((pthread_cond_t *)c); }

void call_once(once_flag *flag, void (*fn)(void)) { pthread_once((pthread_once_t *)flag, fn); }

/* The next definition of name (TSan's interceptor, else glibc's), looked up
 * once into *slot. */
static void *c11__next(void **slot, const char *name)
{
    void *fn = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (!fn) {
        fn = dlsym(RTLD_NEXT, name);
        if (!fn)
            abort();
        __atomic_store_n(slot, fn, __ATOMIC_RELEASE);
    }
    return fn;
}

#define C11__FORWARD(ret, name, params, args)                                  \
    ret name params                                                            \
    {                                                                          \
        static void *next;                                                     \
        ret(*fn) params;                                                       \
        *(void **)&fn = c11__next(&next, #name);                               \
        return fn args;                                                        \
    }

C11__FORWARD(int, pthread_rwlock_init,
             (pthread_rwlock_t *restrict l, const pthread_rwlockattr_t *restrict a), (l, a))
C11__FORWARD(int, pthread_rwlock_destroy, (pthread_rwlock_t *l), (l))
C11__FORWARD(int, pthread_rwlock_rdlock, (pthread_rwlock_t *l), (l))
C11__FORWARD(int, pthread_rwlock_wrlock, (pthread_rwlock_t *l), (l))
C11__FORWARD(int, pthread_rwlock_unlock, (pthread_rwlock_t *l), (l))
C11__FORWARD(int, pthread_setname_np, (pthread_t th, const char *name), (th, name))
