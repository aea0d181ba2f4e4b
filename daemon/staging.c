/* The hand-off queue between loop and trainer; see staging.h. */
#include "daemon/staging.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "io/log.h"

staging_batch_t *staging_batch_new(void) { return calloc(1, sizeof(staging_batch_t)); }

void staging_batch_free(staging_batch_t *b)
{
    if (!b)
        return;
    free(b->ev);
    free(b->arena);
    free(b);
}

int staging_batch_add(staging_batch_t *b, staged_op_t op, int32_t partition, int64_t offset,
                      const char *user, size_t user_len, const char *item, size_t item_len)
{
    if (user_len > UINT16_MAX || item_len > UINT16_MAX)
        return -EINVAL;
    if (b->n == b->cap) {
        uint32_t cap = b->cap ? b->cap * 2 : 256;
        staged_event_t *ev = realloc(b->ev, cap * sizeof(*ev));
        if (!ev)
            return -ENOMEM;
        b->ev = ev;
        b->cap = cap;
    }
    size_t need = user_len + item_len;
    if (need > b->arena_cap - b->used) {
        size_t cap = b->arena_cap ? b->arena_cap : 8192;
        while (cap - b->used < need)
            cap *= 2;
        char *arena = realloc(b->arena, cap);
        if (!arena)
            return -ENOMEM;
        b->arena = arena;
        b->arena_cap = cap;
    }
    if (b->n == 0)
        b->t_ms = log_wall_ms();
    staged_event_t *e = &b->ev[b->n++];
    *e = (staged_event_t){ .op = (uint8_t)op, .user_len = (uint16_t)user_len,
                           .item_len = (uint16_t)item_len, .partition = partition,
                           .offset = offset, .str = b->used };
    if (user_len)
        memcpy(b->arena + b->used, user, user_len);
    if (item_len)
        memcpy(b->arena + b->used + user_len, item, item_len);
    b->used += need;
    return 0;
}

struct staging {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    staging_batch_t *head, *tail;
    size_t depth;
    int woken;
};

staging_t *staging_new(void)
{
    staging_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    return s;
}

void staging_free(staging_t *s)
{
    if (!s)
        return;
    while (s->head) {
        staging_batch_t *b = s->head;
        s->head = b->next;
        staging_batch_free(b);
    }
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

void staging_push(staging_t *s, staging_batch_t *b)
{
    b->next = NULL;
    pthread_mutex_lock(&s->mu);
    if (s->tail)
        s->tail->next = b;
    else
        s->head = b;
    s->tail = b;
    s->depth += b->n;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

staging_batch_t *staging_take(staging_t *s, int timeout_ms)
{
    pthread_mutex_lock(&s->mu);
    if (!s->head && timeout_ms > 0 && !s->woken) {
        struct timespec ts = log_deadline((uint64_t)timeout_ms);
        while (!s->head && !s->woken)
            if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT)
                break;
    }
    s->woken = 0;
    staging_batch_t *list = s->head;
    s->head = s->tail = NULL;
    s->depth = 0;
    pthread_mutex_unlock(&s->mu);
    return list;
}

void staging_wake(staging_t *s)
{
    pthread_mutex_lock(&s->mu);
    s->woken = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

size_t staging_depth(staging_t *s)
{
    pthread_mutex_lock(&s->mu);
    size_t d = s->depth;
    pthread_mutex_unlock(&s->mu);
    return d;
}
