/*
 * rounds: incremental distillation rounds, run on the trainer thread. A round
 * takes the state as it is (ingestion goes on into the staging queue):
 *
 *   1. builds the training matrix from the interaction set, holding out each
 *      sampled user's latest interaction (leave-one-out on the stream);
 *   2. grows the models to the id maps' rows (rows never change meaning);
 *   3. refreshes the teacher when due: trains the built-in BPR teacher warm,
 *      or loads a teacher file (io/embfile, rows = decimal external ids);
 *   4. computes the teacher's top-N lists for RRD (in distill_new);
 *   5. runs warm-started DE-RRD epochs on the student;
 *   6. evaluates student and teacher on the held-out sample;
 *   7. publishes a snapshot when the quality gate passes.
 * The trainer then writes the checkpoint, with the models.
 *
 * When no new events arrive, idle rounds go on training while the held-out
 * HR@10 still improves (patience in rounds), so the student settles.
 *
 * Not thread-safe: the trainer thread owns a rounds_t.
 */
#ifndef DERRD_ROUNDS_H
#define DERRD_ROUNDS_H

#include <stdatomic.h>
#include <stdint.h>

#include "daemon/notify.h"
#include "daemon/state.h"
#include "io/buf.h"
#include "io/checkpoint.h"

typedef struct {
    int threads;                 /* CPU worker pool */
    int nice;                    /* the pool's helper threads' niceness (0 = inherited) */
    uint64_t seed;
    int teacher_dim, student_dim;
    int teacher_epochs;          /* per teacher refresh */
    int student_epochs;          /* per round with new events */
    int settle_epochs;           /* per idle round, while settling */
    long round_max_samples;      /* a round with new events trains its student epochs
                                  * on at most this many pairs (0 = all) */
    long teacher_refresh_ms;     /* refresh at least this often ... */
    double teacher_refresh_growth; /* ... or when interactions grew by this share */
    long teacher_refresh_min_ms; /* but not sooner than this after the last one */
    double teacher_foldin_share; /* fewer new rows than this share: fold in by means */
    const char *teacher_file;    /* "" = built-in teacher; else reload on change */
    double lambda_de, lambda_rrd;
    int eval_permille;           /* share of users held out for evaluation */
    int eval_candidates;         /* sampled unobserved candidates per held-out user */
    int min_interactions;        /* no round below this many */
    int settle_patience;         /* idle rounds without improvement before stopping */
    double gate_margin;          /* publish unless HR@10 < last published - margin
                                  * (or - 2 standard errors, when larger) */
    const char *snapshot_dir;
    int snapshot_keep, zstd_level;
    /* Polled between epochs: non-zero abandons the round (-ECANCELED), so a
     * shutdown waits for one epoch at most; and no round begins once it is
     * set. May be NULL. */
    const atomic_int *abort;
    notify_wd_t *wd; /* NULL, or the watchdog gate: beaten between epochs */
} rounds_cfg_t;

typedef struct {
    uint64_t round, teacher_version, snapshot_version;
    int published, gated;
    int publish_failed;          /* the round failed writing its snapshot (disk full, ...) */
    int not_better;              /* settling round no better than the last published */
    int teacher_refreshed;    /* 0 kept, 1 trained warm or grown, 2 full refresh, 3 loaded,
                               * 4 new rows folded in by means */
    double seconds, teacher_seconds, student_seconds, eval_seconds, publish_seconds;
    double hr10, ndcg10, teacher_hr10, teacher_ndcg10, last_published_hr10;
    double gate_allowance;       /* the drop the gate allowed this round */
    int64_t eval_users, users, items, interactions;
    int32_t student_epochs_total, teacher_epochs_total;
    int32_t topn_computed;       /* teacher top-N lists computed (the rest reused) */
    int32_t topn_filtered;       /* reused lists that dropped newly observed items */
    int64_t student_pairs;       /* pairs per student epoch (all, or the bounded sample) */
    /* Freshness: users published for the first time by this round, and the
     * time from their first event to this publish (ms). */
    int64_t fresh_users;
    double fresh_p50_ms, fresh_p99_ms, fresh_max_ms;
} rounds_result_t;

typedef struct rounds rounds_t;

/* The settings a running daemon may change (SIGHUP): the teacher refresh
 * policy, settling and the quality gate. Same meaning as in rounds_cfg_t. */
typedef struct {
    long teacher_refresh_ms, teacher_refresh_min_ms;
    double teacher_refresh_growth;
    int settle_patience;
    double gate_margin;
} rounds_live_t;

/* fn(ud) runs on the round's thread between the student's epochs: the
 * trainer applies the events that arrived meanwhile, so a long round never
 * holds ingestion up. It may change the state a round reads (rows and
 * interactions added or erased) but not free it; the round trained on the
 * data as it was at its start, and its snapshot says so (its Kafka
 * positions are those of the start). A non-zero return abandons the round
 * (-ECANCELED), as a shutdown does. NULL: nothing runs. */
void rounds_set_between_epochs(rounds_t *r, int (*fn)(void *ud), void *ud);

/* Applies new live settings; they count from the next round. */
void rounds_set_live(rounds_t *r, const rounds_live_t *live);

/* Returns NULL on bad settings or out of memory, with the reason in err. */
rounds_t *rounds_new(const rounds_cfg_t *cfg, char *err, size_t errlen);
void rounds_free(rounds_t *r);

/* Notes when a user row first got an event (for the freshness figures). */
void rounds_note_user(rounds_t *r, int64_t row, uint64_t arrival_ms);

/* Notes that user row's interactions changed: its teacher top-N list is
 * recomputed in the next round (the others are reused between full teacher
 * refreshes). */
void rounds_note_changed(rounds_t *r, int64_t row);

/* Freshness over every user published so far: the time from a user's first
 * event to the first published snapshot holding it, p50 and p99 in ms, and
 * how many users that covers. */
void rounds_freshness(const rounds_t *r, double *p50_ms, double *p99_ms, int64_t *users);

/* 1 when an idle round (no new events) is still worth running: while the
 * held-out quality improves, and after start until a round did not fail
 * (a restart resumes training on the checkpoint's data without waiting for
 * new events). */
int rounds_want_idle(const rounds_t *r);

/* Runs one round on st (read only). new_events: events applied since the
 * last round. Returns 0 (see out->published), 1 when there is too little data
 * for a round, or a negative errno with the reason in err: -ECANCELED when
 * the round was abandoned, or not begun because cfg.abort was already set. */
int rounds_run(rounds_t *r, const state_t *st, uint64_t new_events, rounds_result_t *out,
               char *err, size_t errlen);

/* Checkpoint sections for the models and round counters, and their
 * restore: a restarted daemon warm-starts from them. */
int rounds_save(rounds_t *r, checkpoint_writer_t *w);
int rounds_load(rounds_t *r, const checkpoint_t *ck, char *err, size_t errlen);

#endif
