/* The state-owning thread; see trainer.h. */
#include "daemon/trainer.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "io/log.h"
#include "model/pool.h"

/* The wait before a round after a failed one: doubling from the first to
 * the second, back to none after a round that did not fail. */
#define TRAINER_RETRY_MIN_MS 1000u
#define TRAINER_RETRY_MAX_MS 60000u

struct trainer {
    pthread_t thread;
    trainer_cfg_t cfg;
    staging_t *stg;
    state_t st;
    atomic_int stop;
    int final_rc;
    uint64_t since_round;   /* events applied since the last round */
    uint64_t last_round_ms; /* monotonic */
    int between_rc;         /* trainer__apply failed between epochs */
    int starved;            /* the last round found too little data; new events clear it */
    int rounds_over;        /* a round was abandoned for a shutdown: none starts again */
    uint64_t retry_at_ms;   /* monotonic: after a failed round, none starts before this */
    uint64_t backoff_ms;    /* the wait after the last failure: 1 s, doubling to 60 s */

    pthread_mutex_t mu; /* guards the fields below */
    kafka_pos_t *durable;
    int n_durable, durable_new;
    trainer_stats_t stats;
    trainer_round_t *hist; /* ring of TRAINER_HISTORY; n_hist finished rounds so far */
    uint64_t n_hist;
    trainer_live_t live;   /* pending when live_new */
    int live_new;
};

const double trainer_round_bounds[TRAINER_ROUND_BUCKETS] = { 0.1, 0.25, 0.5, 1,  2.5,
                                                             5,   10,   30,  60, 300 };

/* Takes new live settings, if any (trainer thread). */
static void trainer__take_live(trainer_t *t)
{
    pthread_mutex_lock(&t->mu);
    int fresh = t->live_new;
    trainer_live_t live = t->live;
    t->live_new = 0;
    pthread_mutex_unlock(&t->mu);
    if (!fresh)
        return;
    t->cfg.round_min_events = live.round_min_events;
    t->cfg.round_interval_ms = live.round_interval_ms;
    if (t->cfg.rounds)
        rounds_set_live(t->cfg.rounds, &live.rounds);
}

/* Publishes the state's positions as durable (after a checkpoint). */
static void trainer__publish(trainer_t *t)
{
    kafka_pos_t *pos = malloc((size_t)(t->st.n_pos ? t->st.n_pos : 1) * sizeof(*pos));
    if (pos)
        memcpy(pos, t->st.pos, (size_t)t->st.n_pos * sizeof(*pos));
    pthread_mutex_lock(&t->mu);
    if (pos) {
        free(t->durable);
        t->durable = pos;
        t->n_durable = t->st.n_pos;
        t->durable_new = 1;
    }
    pthread_mutex_unlock(&t->mu);
}

static void trainer__update_stats(trainer_t *t, uint64_t batches)
{
    pthread_mutex_lock(&t->mu);
    t->stats.batches += batches;
    t->stats.applied = t->st.applied;
    t->stats.duplicates = t->st.duplicates;
    t->stats.forgotten = t->st.forgotten;
    t->stats.skipped = t->st.skipped;
    t->stats.users = idmap_count(t->st.users);
    t->stats.items = idmap_count(t->st.items);
    t->stats.interactions = iset_count(t->st.inter);
    t->stats.state_bytes = idmap_memory(t->st.users) + idmap_memory(t->st.items) +
                           iset_memory(t->st.inter);
    pthread_mutex_unlock(&t->mu);
}

static int trainer__save_models(void *ud, checkpoint_writer_t *w)
{
    return rounds_save(ud, w);
}

static int trainer__checkpoint(trainer_t *t)
{
    char err[512];
    uint64_t t0 = log_now_ms();
    int rc = state_save(&t->st, t->cfg.state_dir, t->cfg.keep,
                        t->cfg.rounds ? trainer__save_models : NULL, t->cfg.rounds, err,
                        sizeof(err));
    pthread_mutex_lock(&t->mu);
    if (rc == 0) {
        t->stats.checkpoints++;
        t->stats.checkpoint_seq = t->st.seq;
        t->stats.last_checkpoint_ms = log_wall_ms();
    } else {
        t->stats.checkpoint_failures++;
    }
    pthread_mutex_unlock(&t->mu);
    if (rc == 0) {
        log_debug("checkpoint %llu written in %llu ms (%lld interactions)",
                  (unsigned long long)t->st.seq, (unsigned long long)(log_now_ms() - t0),
                  (long long)iset_count(t->st.inter));
        trainer__publish(t);
    } else {
        /* The previous checkpoint stays the newest; offsets are not
         * committed past it, so nothing is lost. Retried on the next tick. */
        log_err("checkpoint failed: %s", err);
    }
    return rc;
}

/* Applies a list of batches and frees them. */
static int trainer__apply(trainer_t *t, staging_batch_t *list)
{
    uint64_t n = 0;
    int rc = 0;
    while (list) {
        staging_batch_t *b = list;
        list = b->next;
        int64_t rows = idmap_rows(t->st.users);
        uint64_t before = t->st.applied + t->st.duplicates + t->st.forgotten + t->st.skipped;
        if (rc == 0)
            rc = state_apply(&t->st, b);
        /* Users new in this batch: their first event arrived with it. */
        for (int64_t u = rows; t->cfg.rounds && u < idmap_rows(t->st.users); u++)
            rounds_note_user(t->cfg.rounds, u, b->t_ms);
        /* Users whose interactions changed: their top-N lists go stale. */
        for (uint32_t k = 0; rc == 0 && t->cfg.rounds && k < b->n; k++)
            if (b->ev[k].op == STAGED_ADD)
                rounds_note_changed(t->cfg.rounds,
                                    idmap_find(t->st.users, staging_event_user(b, &b->ev[k]),
                                               b->ev[k].user_len));
        t->since_round += t->st.applied + t->st.duplicates + t->st.forgotten + t->st.skipped -
                          before;
        t->starved = 0;
        staging_batch_free(b);
        n++;
    }
    trainer__update_stats(t, n);
    return rc;
}

/* Between a round's epochs: apply what arrived meanwhile (no checkpoint:
 * the one after the round covers it), so staging never fills behind a long
 * round and ingestion goes on. A failure to apply abandons the round, and
 * nothing more is applied: the positions must not move past an event that
 * was not, and no checkpoint may follow (the thread stops on between_rc). */
static int trainer__between_epochs(void *ud)
{
    trainer_t *t = ud;
    if (t->between_rc)
        return 1;
    staging_batch_t *list = staging_take(t->stg, 0);
    if (!list)
        return 0;
    int rc = trainer__apply(t, list);
    if (rc != 0) {
        t->between_rc = rc;
        return 1;
    }
    t->cfg.notify(t->cfg.ud); /* queue space freed */
    return 0;
}

/* Runs a round when one is due; then checkpoints at once, so the models and
 * the positions they cover become durable together. */
static void trainer__maybe_round(trainer_t *t, uint64_t *next_ckpt)
{
    rounds_t *r = t->cfg.rounds;
    if (!r || t->rounds_over)
        return;
    uint64_t now = log_now_ms();
    if (now < t->retry_at_ms)
        return;
    /* Settling (nothing new, the held-out quality still improving) runs
     * rounds back to back: the stream is quiet, the cores are free. */
    int due = t->since_round >= (uint64_t)t->cfg.round_min_events ||
              (t->since_round > 0 &&
               now - t->last_round_ms >= (uint64_t)t->cfg.round_interval_ms) ||
              (t->since_round == 0 && rounds_want_idle(r));
    if (!due)
        return;
    rounds_result_t res;
    char err[512];
    uint64_t new_events_round = t->since_round;
    log_debug("round starting: %llu new events", (unsigned long long)new_events_round);
    int rc = rounds_run(r, &t->st, new_events_round, &res, err, sizeof(err));
    t->last_round_ms = log_now_ms();
    if (rc == 1) {
        t->starved = 1; /* too little data yet: wait for more */
        return;
    }
    /* A failed round keeps its count: the next one rebuilds from the state
     * instead of reusing the last round's data. Events applied during the
     * round (between its epochs) count for the next one. */
    if (rc == 0)
        t->since_round -= new_events_round;
    pthread_mutex_lock(&t->mu);
    if (rc < 0 && rc != -ECANCELED) {
        t->stats.rounds_failed++;
        t->stats.publish_failures += res.publish_failed;
    } else if (rc == 0) {
        t->stats.rounds++;
        t->stats.rounds_gated += res.gated;
        t->stats.published += res.published;
        t->stats.teacher_refreshes += res.teacher_refreshed == 2 || res.teacher_refreshed == 3;
        t->stats.teacher_foldins += res.teacher_refreshed == 4;
        int b = 0;
        while (b < TRAINER_ROUND_BUCKETS && res.seconds > trainer_round_bounds[b])
            b++;
        t->stats.round_le[b]++;
        t->stats.round_seconds_sum += res.seconds;
        t->stats.last_round = res;
        if (t->hist)
            t->hist[t->n_hist++ % TRAINER_HISTORY] = (trainer_round_t){ log_wall_ms(), res };
    }
    pthread_mutex_unlock(&t->mu);
    if (rc == -ECANCELED && t->between_rc) {
        log_err("round %llu abandoned: applying the events that arrived during it failed: %s",
                (unsigned long long)res.round, strerror(-t->between_rc));
        return;
    }
    if (rc == -ECANCELED) {
        /* The loop asks for a shutdown (cfg.abort) before it stops this
         * thread, and winds ingestion down meanwhile: rounds started then
         * would only be abandoned in turn, back to back. */
        t->rounds_over = 1;
        if (res.round)
            log_notice("round %llu abandoned: shutting down", (unsigned long long)res.round);
        return;
    }
    if (rc < 0) {
        /* What failed (a teacher file not there yet, a full disk, memory)
         * rarely mends within milliseconds: retrying at once ran hundreds
         * of failing rounds a second, each building its data and logging. */
        t->backoff_ms = t->backoff_ms ? t->backoff_ms * 2 : TRAINER_RETRY_MIN_MS;
        if (t->backoff_ms > TRAINER_RETRY_MAX_MS)
            t->backoff_ms = TRAINER_RETRY_MAX_MS;
        t->retry_at_ms = t->last_round_ms + t->backoff_ms;
        log_err("round %llu failed: %s; the next round in %.0f s at the earliest",
                (unsigned long long)res.round, err, (double)t->backoff_ms / 1000.0);
        return;
    }
    t->backoff_ms = 0;
    t->retry_at_ms = 0;
    log_info("round %llu: %lld users, %lld items, %lld interactions; student HR@10 %.4f "
             "NDCG@10 %.4f, teacher HR@10 %.4f (%lld held out); teacher %s; %d top-N lists "
             "computed, %d filtered; student epochs on %lld pairs; %.2f s (teacher %.2f, student %.2f, "
             "eval %.2f, publish %.2f)%s%s",
             (unsigned long long)res.round, (long long)res.users, (long long)res.items,
             (long long)res.interactions, res.hr10, res.ndcg10, res.teacher_hr10,
             (long long)res.eval_users,
             res.teacher_refreshed == 4   ? "new rows folded in"
             : res.teacher_refreshed == 3 ? "loaded from file"
             : res.teacher_refreshed == 2 ? "refreshed"
             : res.teacher_refreshed      ? "trained warm"
                                          : "kept",
             res.topn_computed, res.topn_filtered, (long long)res.student_pairs, res.seconds, res.teacher_seconds, res.student_seconds, res.eval_seconds,
             res.publish_seconds,
             res.published ? "; published" : res.not_better ? "; not better, not published" : "",
             res.gated ? "; NOT published: below the quality gate" : "");
    if (res.gated)
        log_warn("round %llu: held-out HR@10 %.4f is more than %.4f below the last published "
                 "%.4f; snapshot not published", (unsigned long long)res.round, res.hr10,
                 res.gate_allowance, res.last_published_hr10);
    if (new_events_round == 0 && !rounds_want_idle(r)) {
        double p50, p99;
        int64_t n;
        rounds_freshness(r, &p50, &p99, &n);
        log_notice("rounds settled after round %llu: held-out HR@10 %.4f (teacher %.4f); "
                   "freshness over %lld users: p50 %.0f ms, p99 %.0f ms",
                   (unsigned long long)res.round, res.hr10, res.teacher_hr10, (long long)n,
                   p50, p99);
    }
    if (res.published)
        log_info("snapshot %llu published; %lld users new in it, first event to publish p50 "
                 "%.0f ms, p99 %.0f ms", (unsigned long long)res.snapshot_version,
                 (long long)res.fresh_users, res.fresh_p50_ms, res.fresh_p99_ms);
    t->st.dirty = 1;
    if (trainer__checkpoint(t) == 0)
        t->cfg.notify(t->cfg.ud);
    *next_ckpt = log_now_ms() + (uint64_t)t->cfg.checkpoint_ms;
}

static void *trainer__main(void *arg)
{
    trainer_t *t = arg;
    int e = pool_nice_self(t->cfg.nice);
    if (e)
        log_warn("trainer: cannot lower its priority (nice %d): %s", t->cfg.nice, strerror(-e));
    uint64_t next = log_now_ms() + (uint64_t)t->cfg.checkpoint_ms;
    int rc = 0;
    while (!atomic_load(&t->stop)) {
        uint64_t now = log_now_ms(), wake = next;
        if (t->cfg.rounds && !t->rounds_over) {
            uint64_t due = UINT64_MAX;
            if (t->since_round > 0)
                due = t->last_round_ms + (uint64_t)t->cfg.round_interval_ms;
            /* A round due by its event count starts now, not when the next
             * batch or checkpoint comes (after a burst, none may come soon). */
            if ((t->since_round == 0 && rounds_want_idle(t->cfg.rounds)) ||
                (t->since_round >= (uint64_t)t->cfg.round_min_events && !t->starved))
                due = now;
            if (due != UINT64_MAX && due < t->retry_at_ms)
                due = t->retry_at_ms; /* a failed round's backoff */
            if (due < wake)
                wake = due;
        }
        int wait = wake > now ? (int)(wake - now) : 0;
        if (t->cfg.wd)
            notify_wd_idle(t->cfg.wd, NOTIFY_WD_TRAINER);
        staging_batch_t *list = staging_take(t->stg, wait ? wait : 1);
        if (t->cfg.wd)
            notify_wd_beat(t->cfg.wd, NOTIFY_WD_TRAINER);
        trainer__take_live(t);
        if (list) {
            rc = trainer__apply(t, list);
            if (rc)
                break;
            t->cfg.notify(t->cfg.ud); /* queue space freed */
        }
        if (t->cfg.wd)
            notify_wd_beat(t->cfg.wd, NOTIFY_WD_TRAINER);
        if (!atomic_load(&t->stop)) /* no new round once a shutdown is asked */
            trainer__maybe_round(t, &next);
        if (t->cfg.wd)
            notify_wd_beat(t->cfg.wd, NOTIFY_WD_TRAINER);
        if ((rc = t->between_rc) != 0)
            break;
        now = log_now_ms();
        if (now >= next) {
            if (t->st.dirty && trainer__checkpoint(t) == 0)
                t->cfg.notify(t->cfg.ud);
            next = now + (uint64_t)t->cfg.checkpoint_ms;
        }
    }
    if (rc == 0) {
        /* Stopping: the loop has handed over everything it will. */
        rc = trainer__apply(t, staging_take(t->stg, 0));
        if (rc == 0 && t->st.dirty)
            rc = trainer__checkpoint(t);
        else if (rc == 0 && t->st.seq > 0)
            trainer__publish(t); /* durable already; let the loop commit it */
    }
    if (rc) {
        /* Any failure to apply stops the daemon: the trainer would
         * otherwise be gone while the loop read on into a queue nobody
         * drains, with nothing checkpointed or committed again. */
        pthread_mutex_lock(&t->mu);
        t->stats.fatal = 1;
        pthread_mutex_unlock(&t->mu);
        log_err("trainer: applying events failed (%s); stopping", strerror(-rc));
    }
    t->final_rc = rc;
    t->cfg.notify(t->cfg.ud);
    return NULL;
}

int trainer_start(trainer_t **out, state_t *st, staging_t *stg, const trainer_cfg_t *cfg)
{
    trainer_t *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->cfg = *cfg;
    t->stg = stg;
    t->hist = calloc(TRAINER_HISTORY, sizeof(*t->hist)); /* NULL: no history, runs on */
    if (cfg->rounds)
        rounds_set_between_epochs(cfg->rounds, trainer__between_epochs, t);
    t->st = *st;
    *st = (state_t){ 0 };
    pthread_mutex_init(&t->mu, NULL);
    trainer__update_stats(t, 0);
    t->stats.checkpoint_seq = t->st.seq;
    t->last_round_ms = log_now_ms();
    /* The loaded checkpoint is durable: commit its positions at once. A
     * commit that failed before a crash would otherwise wait for the next
     * checkpoint, which never comes while no event arrives. */
    if (t->st.seq > 0) {
        trainer__publish(t);
        t->cfg.notify(t->cfg.ud);
    }
    int e = pthread_create(&t->thread, NULL, trainer__main, t);
    if (e) {
        *st = t->st;
        if (cfg->rounds) /* the hook would name freed memory */
            rounds_set_between_epochs(cfg->rounds, NULL, NULL);
        pthread_mutex_destroy(&t->mu);
        free(t->durable);
        free(t->hist);
        free(t);
        return -e;
    }
    *out = t;
    return 0;
}

int trainer_take_durable(trainer_t *t, kafka_pos_t **pos)
{
    int n = 0;
    *pos = NULL;
    pthread_mutex_lock(&t->mu);
    if (t->durable_new && t->n_durable > 0) {
        *pos = malloc((size_t)t->n_durable * sizeof(**pos));
        if (*pos) {
            memcpy(*pos, t->durable, (size_t)t->n_durable * sizeof(**pos));
            n = t->n_durable;
            t->durable_new = 0;
        }
    }
    pthread_mutex_unlock(&t->mu);
    return n;
}

void trainer_stats(trainer_t *t, trainer_stats_t *out)
{
    pthread_mutex_lock(&t->mu);
    *out = t->stats;
    pthread_mutex_unlock(&t->mu);
}

int trainer_history(trainer_t *t, uint64_t after, trainer_round_t *out, int max)
{
    int n = 0;
    pthread_mutex_lock(&t->mu);
    uint64_t from = t->n_hist > TRAINER_HISTORY ? t->n_hist - TRAINER_HISTORY : 0;
    if (t->n_hist - from > (uint64_t)max)
        from = t->n_hist - (uint64_t)max;
    for (uint64_t k = from; t->hist && k < t->n_hist; k++)
        if (t->hist[k % TRAINER_HISTORY].r.round > after)
            out[n++] = t->hist[k % TRAINER_HISTORY];
    pthread_mutex_unlock(&t->mu);
    return n;
}

void trainer_reload(trainer_t *t, const trainer_live_t *live)
{
    pthread_mutex_lock(&t->mu);
    t->live = *live;
    t->live_new = 1;
    pthread_mutex_unlock(&t->mu);
    staging_wake(t->stg);
}

int trainer_stop(trainer_t *t)
{
    atomic_store(&t->stop, 1);
    staging_wake(t->stg);
    pthread_join(t->thread, NULL);
    return t->final_rc;
}

void trainer_free(trainer_t *t)
{
    if (!t)
        return;
    state_close(&t->st);
    free(t->durable);
    free(t->hist);
    pthread_mutex_destroy(&t->mu);
    free(t);
}
