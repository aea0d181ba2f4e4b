/* Distillation rounds; see rounds.h and docs/ROUNDS.md. */
#include "daemon/rounds.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/buf.h"
#include "io/embfile.h"
#include "io/log.h"
#include "io/snapshot.h"
#include "model/distill.h"
#include "model/gemm.h"
#include "model/metrics.h"
#include "model/mf.h"
#include "model/pool.h"
#include "model/ratings.h"
#include "model/rng.h"

/* The largest teacher dim a --teacher-file may bring (the snapshot format's
 * own limit for the student). */
#define ROUNDS_MAX_TEACHER_DIM 4096

/* Checkpoint sections of the rounds (io/checkpoint.h: 16 and up). */
enum { SEC_ROUNDS = CKPT_MODELS, SEC_TEACHER = CKPT_MODELS + 1, SEC_STUDENT = CKPT_MODELS + 2 };

/* A distill_t borrows its training matrix; the teacher and the student of a
 * round share one, so a matrix is freed only when neither holds it. */
typedef struct {
    distill_t *d;
    ratings_t *train;
} rounds_model_t;

typedef struct {
    ratings_t *train;
    int32_t n_eval;
    int32_t *eval_user;  /* (n_eval) user rows */
    int32_t *target;     /* (n_eval) held-out item rows */
    int32_t *cands;      /* (n_eval, eval_candidates) */
} rounds_data_t;

#define ROUNDS_NO_MTIME INT64_MIN /* bad_mtime_ns: no file refused */

struct rounds {
    rounds_cfg_t cfg;
    pool_t *pool;
    rounds_model_t teacher, student;
    mf_t file_teacher;          /* a teacher loaded from cfg.teacher_file */
    int64_t file_mtime_ns;      /* of the file loaded */
    int64_t bad_mtime_ns;       /* of a file refused (not retried until it changes; -1:
                                 * it was gone); ROUNDS_NO_MTIME when none was */
    mf_t saved_teacher, saved_student; /* from a checkpoint, until first used */
    int32_t saved_teacher_epochs, saved_student_epochs;

    uint64_t round, teacher_version, snapshot_version;
    uint64_t teacher_ms;        /* wall time of the last full teacher refresh */
    int64_t teacher_inter;      /* interactions at that refresh */
    double last_published_hr10; /* NaN until the first publish */
    double best_ndcg10, best_teacher_ndcg10; /* settling: best held-out NDCG@10 so far */
    int since_best, since_teacher_best;
    int (*between)(void *ud);   /* rounds_set_between_epochs() */
    void *between_ud;
    snapshot_pos_t *start_pos;  /* (n_start_pos) the state's positions when the round began */
    int n_start_pos, start_pos_cap;
    int resume;                 /* no round done yet by this process (none tried, or
                                 * each one failed): one runs even without new events
                                 * (a restart with unpublished data) */

    rounds_data_t data;         /* the last round's matrix and held-out sample */
    mf_t published;             /* the student of the last published snapshot */
    double *fresh_ms;           /* (n_fresh) first event to first publish, per user */
    int64_t n_fresh, fresh_cap;
    uint8_t *stale_round;       /* (stale_round_cap) the stale flags this round took */
    int64_t stale_round_cap;
    int32_t *sample;            /* (sample_cap) a bounded round's pairs */
    int64_t sample_cap;
    uint8_t *stale;             /* (stale_cap) user rows whose data changed since the
                                 * student's top-N lists were computed */
    int64_t stale_cap;
    uint64_t *arrival;          /* (arrival_cap) wall ms of a user row's first event */
    int64_t arrival_cap;
    int64_t published_users;    /* rows below this were in a published snapshot */
    int topn_behind;            /* how far the teacher moved since the student's top-N
                                 * lists were made (over rounds that failed after it
                                 * changed): 0 not, 1 trained, 2 refreshed in full or
                                 * loaded (every list is owed) */
};

static int rounds__cmp_double(const void *a, const void *b);

static void rounds__matrix_free(ratings_t *m)
{
    if (m) {
        ratings_close(m);
        free(m);
    }
}

/* Frees m unless the teacher or the student trains on it, or it is the last
 * round's data. */
static void rounds__release(rounds_t *r, ratings_t *m)
{
    if (m && m != r->teacher.train && m != r->student.train && m != r->data.train)
        rounds__matrix_free(m);
}

/* 1 when every parameter of m is finite. A diverged model (NaN or infinite
 * values; metrics read NaN scores as the worst) must never be published,
 * checkpointed, or trained on from. */
static int rounds__finite(const mf_t *m)
{
    size_t n = ((size_t)m->n_users + (size_t)m->n_items) * (size_t)m->dim;
    for (size_t k = 0; k < n; k++)
        if (!isfinite(m->params[k]))
            return 0;
    return 1;
}

/* Replaces a model (teacher or student) by (d, train), freeing the old one. */
static void rounds__replace(rounds_t *r, rounds_model_t *slot, distill_t *d, ratings_t *train)
{
    distill_t *old_d = slot->d;
    ratings_t *old_train = slot->train;
    slot->d = d;
    slot->train = train;
    distill_free(old_d);
    rounds__release(r, old_train);
}

static void rounds__data_close(rounds_t *r, rounds_data_t *x)
{
    ratings_t *m = x->train;
    x->train = NULL;
    rounds__release(r, m);
    free(x->eval_user);
    free(x->target);
    free(x->cands);
    *x = (rounds_data_t){ 0 };
}

rounds_t *rounds_new(const rounds_cfg_t *cfg, char *err, size_t errlen)
{
    if (cfg->teacher_dim < 1 || cfg->student_dim < 1 || cfg->student_epochs < 1 ||
        cfg->teacher_epochs < 1 || cfg->eval_candidates < 1 || cfg->threads < 1) {
        snprintf(err, errlen, "rounds: dims, epochs, candidates and threads must be >= 1");
        return NULL;
    }
    if (cfg->round_max_samples < 0) {
        snprintf(err, errlen, "rounds: round_max_samples must be >= 0");
        return NULL;
    }
    rounds_t *r = calloc(1, sizeof(*r));
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->cfg = *cfg;
    gemm_setup();
    r->pool = pool_new_nice(cfg->threads, cfg->nice);
    if (!r->pool) {
        snprintf(err, errlen, "rounds: cannot start %d worker threads", cfg->threads);
        free(r);
        return NULL;
    }
    r->last_published_hr10 = NAN;
    r->best_ndcg10 = r->best_teacher_ndcg10 = -1.0;
    r->resume = 1;
    r->bad_mtime_ns = ROUNDS_NO_MTIME; /* not 0: a file may carry the epoch as its time */
    return r;
}

void rounds_set_between_epochs(rounds_t *r, int (*fn)(void *ud), void *ud)
{
    r->between = fn;
    r->between_ud = ud;
}

void rounds_set_live(rounds_t *r, const rounds_live_t *live)
{
    r->cfg.teacher_refresh_ms = live->teacher_refresh_ms;
    r->cfg.teacher_refresh_min_ms = live->teacher_refresh_min_ms;
    r->cfg.teacher_refresh_growth = live->teacher_refresh_growth;
    r->cfg.settle_patience = live->settle_patience;
    r->cfg.gate_margin = live->gate_margin;
}

void rounds_free(rounds_t *r)
{
    if (!r)
        return;
    rounds__data_close(r, &r->data);
    rounds__replace(r, &r->teacher, NULL, NULL);
    rounds__replace(r, &r->student, NULL, NULL);
    mf_close(&r->file_teacher);
    mf_close(&r->published);
    mf_close(&r->saved_teacher);
    mf_close(&r->saved_student);
    pool_free(r->pool);
    free(r->arrival);
    free(r->fresh_ms);
    free(r->stale);
    free(r->stale_round);
    free(r->sample);
    free(r->start_pos);
    free(r);
}

void rounds_note_user(rounds_t *r, int64_t row, uint64_t arrival_ms)
{
    if (row >= r->arrival_cap) {
        int64_t cap = r->arrival_cap ? r->arrival_cap : 1024;
        while (cap <= row)
            cap *= 2;
        uint64_t *a = realloc(r->arrival, (size_t)cap * sizeof(*a));
        if (!a)
            return; /* freshness figures only: not worth failing for */
        memset(a + r->arrival_cap, 0, (size_t)(cap - r->arrival_cap) * sizeof(*a));
        r->arrival = a;
        r->arrival_cap = cap;
    }
    if (!r->arrival[row])
        r->arrival[row] = arrival_ms;
}

void rounds_freshness(const rounds_t *r, double *p50_ms, double *p99_ms, int64_t *users)
{
    *p50_ms = *p99_ms = NAN;
    *users = r->n_fresh;
    if (r->n_fresh == 0)
        return;
    double *v = malloc((size_t)r->n_fresh * sizeof(*v));
    if (!v)
        return;
    memcpy(v, r->fresh_ms, (size_t)r->n_fresh * sizeof(*v));
    qsort(v, (size_t)r->n_fresh, sizeof(*v), rounds__cmp_double);
    *p50_ms = v[(r->n_fresh - 1) / 2];
    *p99_ms = v[(int64_t)((double)(r->n_fresh - 1) * 0.99)];
    free(v);
}

/* Grows the stale flags to cover row; returns 0 or -ENOMEM. */
static int rounds__stale_reserve(rounds_t *r, int64_t row)
{
    if (row < r->stale_cap)
        return 0;
    int64_t cap = r->stale_cap ? r->stale_cap : 1024;
    while (cap <= row)
        cap *= 2;
    uint8_t *v = realloc(r->stale, (size_t)cap);
    if (!v)
        return -ENOMEM;
    memset(v + r->stale_cap, 0, (size_t)(cap - r->stale_cap));
    r->stale = v;
    r->stale_cap = cap;
    return 0;
}

/* Moves the stale flags into stale_round (rows >= n_users: 0) and clears
 * them. Returns 0 or -ENOMEM (nothing moved). */
static int rounds__take_stale(rounds_t *r, int64_t n_users)
{
    if (n_users > r->stale_round_cap) {
        uint8_t *v = realloc(r->stale_round, (size_t)n_users);
        if (!v)
            return -ENOMEM;
        r->stale_round = v;
        r->stale_round_cap = n_users;
    }
    memset(r->stale_round, 0, (size_t)r->stale_round_cap);
    int64_t n = r->stale_cap < r->stale_round_cap ? r->stale_cap : r->stale_round_cap;
    if (n > 0) {
        memcpy(r->stale_round, r->stale, (size_t)n);
        memset(r->stale, 0, (size_t)n);
    }
    return 0;
}

/* A user whose pairs a bounded round always trains on: flagged as changed
 * (nu flags), or new since the student's last round (rows >= known). */
static inline int rounds__changed(const rounds_t *r, int32_t u, int64_t nu, int32_t known)
{
    return u >= known || (u < nu && r->stale_round[u]);
}

/* The pairs of a bounded round's student epoch e: every pair of the changed
 * users, then a uniform sample of the others, up to cfg.round_max_samples
 * in all; when the changed users alone hold more, a uniform sample of
 * theirs. Returns the count (positions in m's CSR order, in r->sample), or
 * -ENOMEM. */
static int64_t rounds__sample(rounds_t *r, const ratings_t *m, int e)
{
    int64_t cap = r->cfg.round_max_samples;
    if (cap > m->nnz)
        cap = m->nnz;
    if (cap > r->sample_cap) {
        int32_t *v = realloc(r->sample, (size_t)cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        r->sample = v;
        r->sample_cap = cap;
    }
    rng_t g;
    rng_init_stream(&g, r->cfg.seed, RNG_ROUND_SAMPLE, r->round, (uint64_t)e);
    int64_t nu = m->n_users < r->stale_round_cap ? m->n_users : r->stale_round_cap;
    int32_t known = r->student.train ? r->student.train->n_users : 0;
    int64_t changed = 0;
    for (int32_t u = 0; u < m->n_users; u++)
        if (rounds__changed(r, u, nu, known))
            changed += m->row[u + 1] - m->row[u];
    /* Selection sampling (Knuth's algorithm S) over the pairs of each kind,
     * changed or not: a pair is taken with probability want / left. */
    int64_t want_changed = changed < cap ? changed : cap;
    int64_t want_other = cap - want_changed, n = 0;
    int64_t left_changed = changed, left_other = m->nnz - changed;
    for (int32_t u = 0; u < m->n_users; u++) {
        int is_changed = rounds__changed(r, u, nu, known);
        int64_t *want = is_changed ? &want_changed : &want_other;
        int64_t *left = is_changed ? &left_changed : &left_other;
        int64_t k = m->row[u], end = m->row[u + 1];
        for (; k < end && *want > 0; k++, (*left)--) {
            if (*want == *left ||
                (double)(rng_next(&g) >> 11) * 0x1.0p-53 * (double)*left < (double)*want) {
                r->sample[n++] = (int32_t)k;
                (*want)--;
            }
        }
        *left -= end - k; /* the pairs skipped once the kind was complete */
    }
    return n;
}

/* A failed round gives the flags it took back. */
static void rounds__give_back_stale(rounds_t *r)
{
    for (int64_t k = 0; k < r->stale_round_cap; k++)
        if (r->stale_round[k] && rounds__stale_reserve(r, k) == 0)
            r->stale[k] = 1;
}

void rounds_note_changed(rounds_t *r, int64_t row)
{
    if (row >= 0 && rounds__stale_reserve(r, row) == 0)
        r->stale[row] = 1;
}

int rounds_want_idle(const rounds_t *r)
{
    if (r->resume)
        return 1;
    if (!r->student.d)
        return 0;
    return r->since_best < r->cfg.settle_patience ||
           (!*r->cfg.teacher_file && r->since_teacher_best < r->cfg.settle_patience);
}

/* ---- the round's data ---------------------------------------------------------- */

/* Whether user row u is in the held-out sample: a fixed hash of the row, so
 * the sample is the same users from round to round. */
static int rounds__held_out(const rounds_t *r, int64_t u)
{
    uint64_t h = (uint64_t)u * 0x9e3779b97f4a7c15ULL ^ r->cfg.seed;
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 29;
    return (int)(h % 1000) < r->cfg.eval_permille;
}



static int rounds__data(rounds_t *r, const state_t *st, rounds_data_t *x)
{
    *x = (rounds_data_t){ 0 };
    int64_t n_users = idmap_rows(st->users), n_items = idmap_rows(st->items);
    int64_t nnz = iset_count(st->inter);
    if (n_users > INT32_MAX || n_items > INT32_MAX)
        return -EOVERFLOW;
    int32_t *us = malloc((size_t)(nnz ? nnz : 1) * sizeof(int32_t));
    int32_t *is = malloc((size_t)(nnz ? nnz : 1) * sizeof(int32_t));
    int64_t cap_eval = 1024;
    x->eval_user = malloc((size_t)cap_eval * sizeof(int32_t));
    x->target = malloc((size_t)cap_eval * sizeof(int32_t));
    x->train = calloc(1, sizeof(*x->train));
    int rc = -ENOMEM;
    if (!us || !is || !x->eval_user || !x->target || !x->train)
        goto done;
    int64_t n = 0;
    int64_t users_seen = iset_users(st->inter);
    for (int64_t u = 0; u < users_seen; u++) {
        int32_t k;
        const int32_t *items = iset_items(st->inter, u, &k);
        /* Leave-one-out on the stream: the user's latest interaction. */
        int held = k >= 3 && rounds__held_out(r, u);
        for (int32_t j = 0; j < k - held; j++) {
            us[n] = (int32_t)u;
            is[n] = items[j];
            n++;
        }
        if (!held)
            continue;
        if (x->n_eval == cap_eval) {
            cap_eval *= 2;
            int32_t *a = realloc(x->eval_user, (size_t)cap_eval * sizeof(int32_t));
            if (!a)
                goto done;
            x->eval_user = a;
            int32_t *b = realloc(x->target, (size_t)cap_eval * sizeof(int32_t));
            if (!b)
                goto done;
            x->target = b;
        }
        x->eval_user[x->n_eval] = (int32_t)u;
        x->target[x->n_eval] = items[k - 1];
        x->n_eval++;
    }
    if (ratings_init(x->train, (int32_t)n_users, (int32_t)n_items, us, is, n) < 0)
        goto done;
    /* Candidates: sampled items the user never interacted with, drawn from a
     * stream of (seed, user row), so they change only as items arrive. */
    int32_t nc = r->cfg.eval_candidates;
    x->cands = malloc((size_t)(x->n_eval ? x->n_eval : 1) * (size_t)nc * sizeof(int32_t));
    if (!x->cands)
        goto done;
    for (int32_t e = 0; e < x->n_eval; e++) {
        rng_t g;
        rng_init_stream(&g, r->cfg.seed, RNG_EVAL, (uint64_t)x->eval_user[e], 0);
        for (int32_t c = 0; c < nc; c++) {
            int32_t i = -1;
            for (int tries = 0; tries < 64 && i < 0; tries++) {
                int32_t pick = (int32_t)rng_below(&g, (uint32_t)n_items);
                if (!iset_has(st->inter, x->eval_user[e], pick))
                    i = pick;
            }
            /* A user who has nearly every item: the next unseen item from a
             * random start, never a seen one (the held-out target is among
             * those); with none at all, -1, which ranks as a score of 0. */
            if (i < 0) {
                int32_t start = (int32_t)rng_below(&g, (uint32_t)n_items);
                for (int32_t k = 0; k < n_items && i < 0; k++) {
                    int32_t pick = (start + k) % n_items;
                    if (!iset_has(st->inter, x->eval_user[e], pick))
                        i = pick;
                }
            }
            x->cands[(int64_t)e * nc + c] = i;
        }
    }
    rc = 0;
done:
    free(us);
    free(is);
    if (rc)
        rounds__data_close(r, x);
    return rc;
}

/* Held-out metrics of model m on the sample: m's rows of the sampled users
 * gathered into a small model of their own, so the split stays (n_eval). */
static int rounds__eval(rounds_t *r, const mf_t *m, const rounds_data_t *x, metrics_t *out)
{
    memset(out, 0, sizeof(*out));
    if (x->n_eval == 0)
        return 0;
    float *ue = malloc((size_t)x->n_eval * (size_t)m->dim * sizeof(float));
    if (!ue)
        return -ENOMEM;
    /* A user beyond m's rows (m is an older model) gets a zero row: every
     * candidate ties, the worst rank, as a model that cannot serve it. */
    for (int32_t e = 0; e < x->n_eval; e++) {
        float *dst = ue + (size_t)e * (size_t)m->dim;
        if (x->eval_user[e] < m->n_users)
            memcpy(dst, m->ue + (size_t)x->eval_user[e] * (size_t)m->dim,
                   (size_t)m->dim * sizeof(float));
        else
            memset(dst, 0, (size_t)m->dim * sizeof(float));
    }
    mf_t view = { .n_users = x->n_eval, .n_items = m->n_items, .dim = m->dim, .params = ue,
                  .ue = ue, .ie = m->ie };
    loo_split_t split = { x->n_eval, r->cfg.eval_candidates, x->target, x->cands };
    int rc = metrics_eval(&view, &split, r->pool, out);
    free(ue);
    return rc;
}

/* Asked between epochs: also the trainer's heartbeat in a long round. */
/* Before each epoch: the watchdog beat, the between-epochs hook (events
 * that arrived are applied), and 1 when a shutdown abandons the round. */
static int rounds__aborted(const rounds_t *r)
{
    if (r->cfg.wd)
        notify_wd_beat(r->cfg.wd, NOTIFY_WD_TRAINER);
    if (r->between && r->between(r->between_ud))
        return 1;
    return r->cfg.abort && atomic_load(r->cfg.abort);
}

/* ---- the teacher ------------------------------------------------------------------- */

static distill_cfg_t rounds__teacher_cfg(const rounds_t *r)
{
    distill_cfg_t c = distill_cfg_default();
    c.dim = r->cfg.teacher_dim;
    c.seed = r->cfg.seed ^ 0x7eac;
    return c;
}

static distill_cfg_t rounds__student_cfg(const rounds_t *r)
{
    distill_cfg_t c = distill_cfg_default();
    c.dim = r->cfg.student_dim;
    c.seed = r->cfg.seed ^ 0x57d;
    c.use_de = r->cfg.lambda_de > 0;
    c.lambda_de = (float)r->cfg.lambda_de;
    c.use_rrd = r->cfg.lambda_rrd > 0;
    c.lambda_rrd = (float)r->cfg.lambda_rrd;
    /* The paper's random start, not the teacher's fit that derrd-train
     * starts from: a stream's teacher is refreshed rarely and ranks far
     * below the student between refreshes, and students started from its
     * fit ranked worse all through the stream (bench/RESULTS.md, "The
     * teacher's fit in the daemon"). */
    c.init_from_teacher = false;
    return c;
}

/* Loads cfg.teacher_file when it changed, mapping its rows to ours: the
 * file's row k is the entity whose external id is the decimal k (the ids of
 * the shared dataset format and of `derrd-train --save`). Returns 1 when a
 * new teacher was loaded, 2 when the teacher only grew to new ids (the same
 * file mapped again, or the old teacher grown with zero rows), 0 when
 * unchanged, or a negative errno; a bad file keeps the old teacher. */
/* Extends the loaded teacher to the current tables with zero rows (new ids
 * the file has no row for). Returns 0 or -ENOMEM. */
static int rounds__grow_file_teacher(rounds_t *r, int64_t n_users, int64_t n_items)
{
    mf_t *old = &r->file_teacher, m;
    if (mf_init(&m, (int32_t)n_users, (int32_t)n_items, old->dim) < 0)
        return -ENOMEM;
    int64_t nu = old->n_users < n_users ? old->n_users : n_users;
    int64_t ni = old->n_items < n_items ? old->n_items : n_items;
    memcpy(m.ue, old->ue, (size_t)nu * (size_t)old->dim * sizeof(float));
    memcpy(m.ie, old->ie, (size_t)ni * (size_t)old->dim * sizeof(float));
    mf_close(old);
    *old = m;
    return 0;
}

static int rounds__load_teacher_file(rounds_t *r, const state_t *st, char *err, size_t errlen)
{
    int64_t n_users = idmap_rows(st->users), n_items = idmap_rows(st->items);
    int grew = r->file_teacher.ue &&
               (r->file_teacher.n_users != n_users || r->file_teacher.n_items != n_items);
    struct stat sb;
    int64_t mtime = -1;
    int rc = 0;
    if (stat(r->cfg.teacher_file, &sb) < 0) {
        rc = -errno;
        snprintf(err, errlen, "teacher file %s: %s", r->cfg.teacher_file, strerror(errno));
    } else {
        mtime = (int64_t)sb.st_mtim.tv_sec * 1000000000LL + sb.st_mtim.tv_nsec;
        if (r->file_teacher.ue && mtime == r->file_mtime_ns && !grew)
            return 0;
    }
    embfile_t ef;
    if (r->file_teacher.ue && mtime == r->bad_mtime_ns)
        rc = 1; /* refused before and unchanged (or still gone): do not log it again */
    else if (rc == 0)
        rc = embfile_read(r->cfg.teacher_file, &ef, err, errlen);
    if (rc == 0 && ef.dim > ROUNDS_MAX_TEACHER_DIM) {
        /* The file's tables may be tiny, the state's are not: a dim the
         * file can afford could need terabytes over the state's rows. */
        snprintf(err, errlen, "teacher file %s: dim %u, over the %d a teacher may have",
                 r->cfg.teacher_file, ef.dim, ROUNDS_MAX_TEACHER_DIM);
        free(ef.rows);
        rc = -EINVAL;
    }
    if (rc != 0) {
        /* Keep the teacher loaded before, grown to the tables with zero
         * rows for new ids. */
        if (rc < 0)
            r->bad_mtime_ns = mtime;
        if (r->file_teacher.ue && grew && rounds__grow_file_teacher(r, n_users, n_items) < 0) {
            snprintf(err, errlen, "out of memory");
            return -ENOMEM;
        }
        if (rc == 1)
            return grew ? 2 : 0;
        return rc;
    }
    mf_t m;
    if (mf_init(&m, (int32_t)n_users, (int32_t)n_items, (int32_t)ef.dim) < 0) {
        free(ef.rows);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    int64_t mapped = 0;
    for (int side = 0; side < 2; side++) {
        const idmap_t *ids = side ? st->items : st->users;
        int64_t rows = side ? n_items : n_users, file_rows = side ? ef.n_items : ef.n_users;
        float *dst = side ? m.ie : m.ue;
        const float *src = ef.rows + (side ? (size_t)ef.n_users * ef.dim : 0);
        for (int64_t k = 0; k < rows; k++) {
            size_t len;
            const char *key = idmap_key(ids, k, &len);
            uint64_t v;
            if (!key || file_rows == 0 || buf_parse_dec(key, len, (uint64_t)file_rows - 1, &v))
                continue; /* not in the file: a zero row */
            memcpy(dst + (size_t)k * ef.dim, src + (size_t)v * ef.dim, ef.dim * sizeof(float));
            mapped++;
        }
    }
    free(ef.rows);
    /* The same file read again for new ids: the known rows are as they were. */
    int same = r->file_teacher.ue && mtime == r->file_mtime_ns;
    mf_close(&r->file_teacher);
    r->file_teacher = m;
    r->file_mtime_ns = mtime;
    r->bad_mtime_ns = ROUNDS_NO_MTIME; /* a refusal after this one is news again */
    if (same)
        return 2;
    log_notice("rounds: teacher loaded from %s: dim %d, %lld of %lld rows mapped",
               r->cfg.teacher_file, m.dim, (long long)mapped, (long long)(n_users + n_items));
    return 1;
}

/* Trains the built-in teacher `epochs` warm epochs on x. */
static int rounds__train_teacher(rounds_t *r, rounds_data_t *x, int epochs, char *err,
                                 size_t errlen)
{
    distill_cfg_t c = rounds__teacher_cfg(r);
    distill_t *d = distill_new(&c, x->train, NULL, r->pool, err, errlen);
    if (!d)
        return -EINVAL;
    int rc = 0;
    if (r->teacher.d)
        rc = distill_warm_start(d, r->teacher.d);
    else if (r->saved_teacher.ue)
        rc = distill_warm_start_rows(d, &r->saved_teacher, r->saved_teacher_epochs);
    for (int e = 0; rc == 0 && e < epochs; e++) {
        distill_stats_t s;
        rc = rounds__aborted(r) ? -ECANCELED : distill_epoch(d, &s);
    }
    if (rc) {
        distill_free(d);
        snprintf(err, errlen, "teacher training: %s", strerror(-rc));
        return rc;
    }
    rounds__replace(r, &r->teacher, d, x->train); /* shared with the student below */
    mf_close(&r->saved_teacher);
    return 0;
}

/* Grows the built-in teacher to x's tables without an epoch: a new user's
 * row is the mean of the known rows of the items it interacted with, a new
 * item's the mean of its known users' rows; rows with nothing known stay 0.
 * For rounds that bring only a few new ids, where a whole fold-in epoch
 * would hold up every new user's first snapshot. */
static int rounds__foldin_mean(rounds_t *r, rounds_data_t *x, char *err, size_t errlen)
{
    const mf_t *old = distill_model(r->teacher.d);
    const ratings_t *t = x->train;
    int32_t dim = old->dim, ou = old->n_users, oi = old->n_items;
    mf_t g;
    int32_t *cnt = calloc((size_t)(t->n_items > t->n_users ? t->n_items : t->n_users) + 1,
                          sizeof(int32_t));
    if (!cnt || mf_init(&g, t->n_users, t->n_items, dim) < 0) {
        free(cnt);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    memcpy(g.ue, old->ue, (size_t)ou * (size_t)dim * sizeof(float));
    memcpy(g.ie, old->ie, (size_t)oi * (size_t)dim * sizeof(float));
    for (int32_t u = ou; u < t->n_users; u++) {
        float *row = g.ue + (size_t)u * dim;
        int32_t n = 0;
        for (int64_t k = t->row[u]; k < t->row[u + 1]; k++)
            if (t->col[k] < oi) {
                const float *v = old->ie + (size_t)t->col[k] * dim;
                for (int32_t j = 0; j < dim; j++)
                    row[j] += v[j];
                n++;
            }
        for (int32_t j = 0; n > 0 && j < dim; j++)
            row[j] /= (float)n;
    }
    for (int32_t u = 0; u < ou && u < t->n_users; u++)
        for (int64_t k = t->row[u]; k < t->row[u + 1]; k++) {
            int32_t i = t->col[k];
            if (i < oi)
                continue;
            float *row = g.ie + (size_t)i * dim;
            const float *v = old->ue + (size_t)u * dim;
            for (int32_t j = 0; j < dim; j++)
                row[j] += v[j];
            cnt[i]++;
        }
    for (int32_t i = oi; i < t->n_items; i++)
        for (int32_t j = 0; cnt[i] > 0 && j < dim; j++)
            g.ie[(size_t)i * dim + j] /= (float)cnt[i];
    free(cnt);
    distill_cfg_t c = rounds__teacher_cfg(r);
    distill_t *d = distill_new(&c, t, NULL, r->pool, err, errlen);
    int rc = d ? distill_warm_start_rows(d, &g, distill_epochs(r->teacher.d)) : -EINVAL;
    mf_close(&g);
    if (rc) {
        distill_free(d);
        return rc;
    }
    rounds__replace(r, &r->teacher, d, x->train);
    return 0;
}

/* ---- publish ------------------------------------------------------------------- */

static int rounds__cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int rounds__publish(rounds_t *r, const state_t *st, const mf_t *m,
                           rounds_result_t *out, char *err, size_t errlen)
{
    int64_t nu = m->n_users, ni = m->n_items;
    const char **uid = malloc((size_t)(nu ? nu : 1) * sizeof(*uid));
    uint16_t *ulen = malloc((size_t)(nu ? nu : 1) * sizeof(*ulen));
    const char **iid = malloc((size_t)(ni ? ni : 1) * sizeof(*iid));
    uint16_t *ilen = malloc((size_t)(ni ? ni : 1) * sizeof(*ilen));
    int rc = -ENOMEM;
    if (!uid || !ulen || !iid || !ilen) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    for (int64_t k = 0; k < nu; k++) {
        size_t len;
        const char *key = idmap_key(st->users, k, &len);
        /* A user without interactions now (erased) is published without id. */
        int32_t cnt;
        iset_items(st->inter, k, &cnt);
        uid[k] = key && cnt > 0 ? key : "";
        ulen[k] = key && cnt > 0 ? (uint16_t)len : 0;
    }
    for (int64_t k = 0; k < ni; k++) {
        size_t len;
        const char *key = idmap_key(st->items, k, &len);
        iid[k] = key ? key : "";
        ilen[k] = key ? (uint16_t)len : 0;
    }
    uint64_t now = log_wall_ms();
    /* Above the last version the checkpoint knows and the one latest names:
     * a crash between a publish and its checkpoint leaves a version the
     * checkpoint does not know, and with the wall clock stepped back since,
     * the next one could repeat it (a client holding that ETag would get
     * 304 for different bytes) or go below it. */
    uint64_t floor = r->snapshot_version, on_disk = 0, mtime;
    int lrc = snapshot_latest(r->cfg.snapshot_dir, &on_disk, &mtime);
    if ((lrc == 0 || lrc == -ENOENT) && on_disk > floor)
        floor = on_disk;
    uint64_t version = floor + 1 > now ? floor + 1 : now;
    snapshot_desc_t desc = {
        .version = version,
        .created_ms = now,
        .teacher_version = r->teacher_version,
        .round = r->round,
        .dim = m->dim,
        .n_users = nu,
        .n_items = ni,
        .user_emb = m->ue,
        .item_emb = m->ie,
        .user_ids = uid,
        .user_id_len = ulen,
        .item_ids = iid,
        .item_id_len = ilen,
        .topic = st->topic,
        .pos = r->start_pos,
        .n_pos = r->n_start_pos,
        .quality = { out->hr10, out->ndcg10, out->teacher_hr10, out->teacher_ndcg10,
                     out->eval_users },
    };
    rc = snapshot_publish(r->cfg.snapshot_dir, &desc, r->cfg.zstd_level, r->cfg.snapshot_keep,
                          err, errlen);
    if (rc < 0)
        goto done;
    r->snapshot_version = version;
    out->snapshot_version = version;
    /* Freshness of the users this snapshot publishes for the first time. */
    uint64_t done_ms = log_wall_ms();
    int64_t to = nu < r->arrival_cap ? nu : r->arrival_cap;
    int64_t from = r->published_users < 0 ? 0 : r->published_users;
    double *lat = malloc((size_t)(to > from ? to - from : 1) * sizeof(double));
    int64_t n = 0;
    for (int64_t k = from; lat && k < to; k++)
        if (r->arrival[k] && ulen[k])
            lat[n++] = (double)(done_ms > r->arrival[k] ? done_ms - r->arrival[k] : 0);
    if (n > 0 && r->n_fresh + n > r->fresh_cap) {
        int64_t cap = r->fresh_cap ? r->fresh_cap : 4096;
        while (cap < r->n_fresh + n)
            cap *= 2;
        double *v = realloc(r->fresh_ms, (size_t)cap * sizeof(*v));
        if (v) {
            r->fresh_ms = v;
            r->fresh_cap = cap;
        }
    }
    if (n > 0 && r->n_fresh + n <= r->fresh_cap) {
        memcpy(r->fresh_ms + r->n_fresh, lat, (size_t)n * sizeof(*lat));
        r->n_fresh += n;
    }
    if (n > 0) {
        qsort(lat, (size_t)n, sizeof(*lat), rounds__cmp_double);
        out->fresh_p50_ms = lat[(n - 1) / 2];
        out->fresh_p99_ms = lat[(int64_t)((double)(n - 1) * 0.99)];
        out->fresh_max_ms = lat[n - 1];
    }
    out->fresh_users = n;
    free(lat);
    r->published_users = nu;
done:
    free(uid);
    free(ulen);
    free(iid);
    free(ilen);
    return rc;
}

/* ---- a round ------------------------------------------------------------------------- */

/* Trains the built-in teacher for the round: a full refresh when due, a
 * fold-in epoch when only the tables grew, settling epochs in idle rounds,
 * nothing otherwise. In an idle round whose teacher already trains on the
 * current matrix, the epochs continue in place. Sets *changed. */
static int rounds__teacher(rounds_t *r, rounds_data_t *x, int64_t nnz, uint64_t new_events,
                           rounds_result_t *out, int *changed, char *err, size_t errlen)
{
    *changed = 0;
    uint64_t now = log_wall_ms();
    /* A refresh time ahead of the clock (the clock was set back, or a
     * checkpoint says so) counts as just now, not as ages ago. */
    uint64_t since = now > r->teacher_ms ? now - r->teacher_ms : 0;
    int full = !r->teacher.d && !r->saved_teacher.ue;
    full |= r->cfg.teacher_refresh_ms > 0 && since >= (uint64_t)r->cfg.teacher_refresh_ms;
    /* Growth alone refreshes at most every teacher_refresh_min_ms: a young,
     * fast-growing stream would otherwise retrain the teacher every round
     * and keep new users waiting for their first snapshot. */
    full |= r->teacher_inter > 0 &&
            (double)nnz >= (1.0 + r->cfg.teacher_refresh_growth) * (double)r->teacher_inter &&
            since >= (uint64_t)r->cfg.teacher_refresh_min_ms;
    int settling = new_events == 0 && r->since_teacher_best < r->cfg.settle_patience;
    const mf_t *prev = r->teacher.d ? distill_model(r->teacher.d) : &r->saved_teacher;
    int grew = prev->n_users != x->train->n_users || prev->n_items != x->train->n_items;
    int epochs = full || settling ? r->cfg.teacher_epochs : grew ? 1 : 0;
    if (!r->teacher.d && epochs == 0)
        epochs = 1; /* restored rows need a distill_t to train the student against */
    if (epochs == 0)
        return 0;
    int rc = 0;
    /* Few new ids: fold them in by means instead of a whole epoch. */
    int64_t rows = (int64_t)x->train->n_users + x->train->n_items;
    int64_t fresh_rows = rows - (int64_t)prev->n_users - prev->n_items;
    if (!full && !settling && r->teacher.d && fresh_rows >= 0 &&
        (double)fresh_rows < r->cfg.teacher_foldin_share * (double)rows) {
        if ((rc = rounds__foldin_mean(r, x, err, errlen)) < 0)
            return rc;
        r->teacher_version++;
        *changed = 1;
        out->teacher_refreshed = 4;
        return 0;
    }
    if (r->teacher.d && r->teacher.train == x->train) {
        for (int e = 0; rc == 0 && e < epochs; e++) {
            distill_stats_t s;
            rc = rounds__aborted(r) ? -ECANCELED : distill_epoch(r->teacher.d, &s);
        }
        if (rc) {
            snprintf(err, errlen, "teacher training: %s", strerror(-rc));
            return rc;
        }
    } else if ((rc = rounds__train_teacher(r, x, epochs, err, errlen)) < 0) {
        return rc;
    }
    r->teacher_version++;
    *changed = 1;
    out->teacher_refreshed = 1 + full;
    if (full) {
        r->teacher_ms = now;
        r->teacher_inter = nnz;
    }
    return 0;
}

int rounds_run(rounds_t *r, const state_t *st, uint64_t new_events, rounds_result_t *out,
               char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->hr10 = out->ndcg10 = out->teacher_hr10 = out->teacher_ndcg10 = NAN;
    if (r->cfg.abort && atomic_load(r->cfg.abort)) {
        snprintf(err, errlen, "shutting down");
        return -ECANCELED; /* asked before the round began: none starts */
    }
    int64_t nnz = iset_count(st->inter);
    if (nnz < r->cfg.min_interactions) {
        r->resume = 0; /* nothing to resume: new events start the next round */
        return 1;
    }
    /* The positions the round's data covers: events applied between its
     * epochs are not in it. */
    if (st->n_pos > r->start_pos_cap) {
        snapshot_pos_t *p = realloc(r->start_pos, (size_t)st->n_pos * sizeof(*p));
        if (!p) {
            snprintf(err, errlen, "out of memory");
            return -ENOMEM;
        }
        r->start_pos = p;
        r->start_pos_cap = st->n_pos;
    }
    for (int k = 0; k < st->n_pos; k++)
        r->start_pos[k] = (snapshot_pos_t){ st->pos[k].partition, st->pos[k].offset };
    r->n_start_pos = st->n_pos;
    /* The stale flags this round's data answers for: taken now, so users
     * whose data changes during the round (between its epochs) stay
     * flagged for the next one; given back when the round fails. */
    int taken = rounds__take_stale(r, idmap_rows(st->users)) == 0;
    if (!taken) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    uint64_t t0 = log_now_ms();
    /* An idle round (nothing new since the last one) reuses the last data
     * and, when the teacher stays, the student's distill_t itself: its top-N
     * lists and optimiser state are still right. */
    int reuse = new_events == 0 && r->student.d && r->data.train == r->student.train;
    rounds_data_t fresh = { 0 };
    int rc;
    if (!reuse && (rc = rounds__data(r, st, &fresh)) < 0) {
        snprintf(err, errlen, "round data: %s", strerror(-rc));
        goto fail; /* the flags taken go back */
    }
    rounds_data_t *x = reuse ? &r->data : &fresh;
    r->round++;
    out->round = r->round;
    out->users = x->train->n_users;
    out->items = x->train->n_items;
    out->interactions = nnz;
    out->eval_users = x->n_eval;

    uint64_t tt = log_now_ms();
    const mf_t *teacher;
    int teacher_changed = 0;
    if (*r->cfg.teacher_file) {
        /* 1: (re)loaded; 2: the old teacher grown to new ids; <0: refused. */
        rc = rounds__load_teacher_file(r, st, err, errlen);
        if (rc < 0 && (!r->file_teacher.ue || rc == -ENOMEM))
            goto fail;
        if (rc < 0)
            log_err("rounds: %s; keeping the teacher loaded before", err);
        if (rc > 0) {
            r->teacher_version++;
            out->teacher_refreshed = rc == 1 ? 3 : 1;
            teacher_changed = 1;
        }
        teacher = &r->file_teacher;
        if (teacher->n_users != x->train->n_users || teacher->n_items != x->train->n_items) {
            snprintf(err, errlen, "the teacher file does not cover the current tables");
            rc = -EINVAL;
            goto fail;
        }
    } else {
        if ((rc = rounds__teacher(r, x, nnz, new_events, out, &teacher_changed, err, errlen)) < 0)
            goto fail;
        teacher = distill_model(r->teacher.d);
        if (!rounds__finite(teacher)) {
            /* Dropped: the next round trains a teacher afresh. */
            rounds__replace(r, &r->teacher, NULL, NULL);
            mf_close(&r->saved_teacher);
            snprintf(err, errlen, "the teacher diverged (values not finite after training); "
                     "it is dropped and trained afresh next round");
            rc = -EDOM;
            goto fail;
        }
    }
    out->teacher_seconds = (double)(log_now_ms() - tt) / 1000.0;
    /* Owed until a student with new lists is kept: a round that fails after
     * its teacher changed leaves the lists of the teacher before. */
    int moved = out->teacher_refreshed == 2 || out->teacher_refreshed == 3 ? 2
                : out->teacher_refreshed == 1                            ? 1
                                                                          : 0;
    if (moved > r->topn_behind)
        r->topn_behind = moved;

    /* The student: warm DE-RRD epochs against the teacher. */
    uint64_t ts = log_now_ms();
    distill_t *sd = r->student.d;
    rc = 0;
    if (!reuse || teacher_changed || r->topn_behind) {
        distill_cfg_t sc = rounds__student_cfg(r);
        /* Between full refreshes, with new events, the lists of users
         * without new data are reused: a fold-in epoch moves the teacher a
         * little, and recomputing every list would make every round, and
         * every new user's wait for a snapshot, longer. */
        int reuse_topn = new_events > 0 && r->student.d && r->topn_behind < 2 &&
                         x->train->n_users <= r->stale_round_cap;
        /* When the teacher's rows did not move (kept, or new rows folded
         * in), a changed user's list needs no new pass over the items: its
         * newly observed items leave it, and the rest is still the
         * teacher's ranking. After a teacher epoch they are computed. */
        if (reuse_topn && r->topn_behind == 0)
            for (int64_t u = 0; u < x->train->n_users; u++)
                if (r->stale_round[u])
                    r->stale_round[u] = DISTILL_LIST_FILTER;
        sd = distill_new_reusing(&sc, x->train, teacher, r->pool,
                                 reuse_topn ? r->student.d : NULL,
                                 reuse_topn ? r->stale_round : NULL, err, errlen);
        if (sd) {
            out->topn_computed = distill_topn_computed(sd);
            out->topn_filtered = distill_topn_filtered(sd);
        }
        if (!sd) {
            rc = -EINVAL;
            goto fail;
        }
        if (r->student.d)
            rc = distill_warm_start(sd, r->student.d);
        else if (r->saved_student.ue)
            rc = distill_warm_start_rows(sd, &r->saved_student, r->saved_student_epochs);
    }
    int epochs = new_events == 0 && r->cfg.settle_epochs > 0 ? r->cfg.settle_epochs
                                                              : r->cfg.student_epochs;
    /* With new events, the student's epochs cover the changed users and a
     * sample of the rest, so a round's cost does not grow with the state;
     * settling rounds go over everything. */
    int bounded = new_events > 0 && r->cfg.round_max_samples > 0 &&
                  x->train->nnz > r->cfg.round_max_samples;
    out->student_pairs = x->train->nnz; /* a bounded epoch says its own below */
    for (int e = 0; rc == 0 && e < epochs; e++) {
        distill_stats_t s;
        if (rounds__aborted(r)) {
            rc = -ECANCELED;
        } else if (bounded) {
            int64_t n = rounds__sample(r, x->train, e);
            rc = n < 0 ? (int)n : distill_epoch_on(sd, r->sample, n, &s);
            out->student_pairs = n;
        } else {
            rc = distill_epoch(sd, &s);
        }
    }
    if (rc == 0 && !rounds__finite(distill_model(sd)))
        rc = -EDOM;
    if (rc == -EDOM) {
        /* Never kept: a round trained in place (an idle one) spoiled the
         * last student itself, so the next starts from the one last
         * published, or afresh. */
        if (sd == r->student.d) {
            int32_t ep = distill_epochs(sd);
            rounds__replace(r, &r->student, NULL, NULL);
            sd = NULL;
            mf_close(&r->saved_student);
            if (r->published.ue && mf_init_copy(&r->saved_student, &r->published) == 0)
                r->saved_student_epochs = ep;
        }
        snprintf(err, errlen, "the student diverged (values not finite after training); the "
                 "last good student stays");
    }
    if (rc) {
        if (sd != r->student.d)
            distill_free(sd);
        if (rc != -ECANCELED && rc != -EDOM)
            snprintf(err, errlen, "student training: %s", strerror(-rc));
        goto fail;
    }
    if (sd != r->student.d) {
        rounds__replace(r, &r->student, sd, x->train);
        mf_close(&r->saved_student);
        taken = 0; /* the new lists are kept: the flags taken are spent */
        r->topn_behind = 0;
    }
    if (!reuse) { /* the round's data becomes the last data */
        ratings_t *keep = fresh.train;
        fresh.train = NULL;
        rounds__data_close(r, &r->data);
        r->data = fresh;
        r->data.train = keep;
        x = &r->data;
    }
    out->student_seconds = (double)(log_now_ms() - ts) / 1000.0;
    out->student_epochs_total = distill_epochs(sd);
    out->teacher_epochs_total = r->teacher.d ? distill_epochs(r->teacher.d) : 0;

    /* Held-out quality of both. */
    uint64_t te = log_now_ms();
    const mf_t *student = distill_model(sd);
    metrics_t ms, mt;
    if ((rc = rounds__eval(r, student, x, &ms)) < 0 ||
        (rc = rounds__eval(r, teacher, x, &mt)) < 0) {
        snprintf(err, errlen, "evaluation: out of memory");
        goto fail;
    }
    out->eval_seconds = (double)(log_now_ms() - te) / 1000.0;
    if (x->n_eval > 0) {
        out->hr10 = ms.hr[1];
        out->ndcg10 = ms.ndcg[1];
        out->teacher_hr10 = mt.hr[1];
        out->teacher_ndcg10 = mt.ndcg[1];
        /* Settling follows NDCG@10, which moves with every rank, not only
         * across the cut-off: on ~1,000 held-out users it is far less noisy
         * than HR@10, so settling stops when training stops helping, not on
         * a lucky round. */
        if (ms.ndcg[1] > r->best_ndcg10 + 1e-9) {
            r->best_ndcg10 = ms.ndcg[1];
            r->since_best = 0;
        } else {
            r->since_best++;
        }
        if (mt.ndcg[1] > r->best_teacher_ndcg10 + 1e-9) {
            r->best_teacher_ndcg10 = mt.ndcg[1];
            r->since_teacher_best = 0;
        } else if (!teacher_changed || new_events == 0) {
            r->since_teacher_best++;
        }
    }
    if (new_events > 0) /* new data: worth settling again */
        r->since_best = r->since_teacher_best = 0;

    /* The gate, then publish. */
    /* The gate allows the margin or twice the sampling noise of HR@10 on
     * this many held-out users, whichever is larger: on a small sample one
     * user moves HR@10 by more than the margin, and withholding a snapshot
     * for noise only keeps new users out of it. */
    /* Compared on this round's sample: the held-out users change as users
     * arrive, so the last published student is scored again on the same
     * users (after a restart, only its recorded figure is known). */
    out->last_published_hr10 = r->last_published_hr10;
    if (r->published.ue && x->n_eval > 0) {
        metrics_t mp;
        if (rounds__eval(r, &r->published, x, &mp) == 0)
            out->last_published_hr10 = mp.hr[1];
    }
    double p = out->last_published_hr10, allow = r->cfg.gate_margin;
    if (x->n_eval > 0 && !isnan(p) && p > 0 && p < 1) {
        double noise = 2.0 * sqrt(p * (1.0 - p) / (double)x->n_eval);
        allow = noise > allow ? noise : allow;
    }
    out->gate_allowance = allow;
    if (!isnan(p) && !isnan(out->hr10) && out->hr10 < p - allow) {
        out->gated = 1;
    } else if (new_events == 0 && x->train->n_users <= r->published_users && !isnan(p) &&
               !isnan(out->hr10) && out->hr10 <= p) {
        /* Settling on unchanged data: publish improvements only, so the
         * snapshot left when the rounds settle is the best one seen. Users
         * no snapshot holds yet (a restart's checkpoint may have them) are
         * not unchanged data: the gate alone decides. */
        out->not_better = 1;
    } else {
        uint64_t tp = log_now_ms();
        rc = rounds__publish(r, st, student, out, err, errlen);
        if (rc < 0) {
            out->publish_failed = 1;
            goto fail_keep; /* the round's training stands; publish next time */
        }
        out->published = 1;
        if (!isnan(out->hr10))
            r->last_published_hr10 = out->hr10;
        mf_t keep;
        if (mf_init_copy(&keep, student) == 0) {
            mf_close(&r->published);
            r->published = keep;
        }
        out->publish_seconds = (double)(log_now_ms() - tp) / 1000.0;
    }
    if (taken) /* no lists were made this round */
        rounds__give_back_stale(r);
    out->teacher_version = r->teacher_version;
    out->snapshot_version = r->snapshot_version;
    out->seconds = (double)(log_now_ms() - t0) / 1000.0;
    r->resume = 0; /* a round did not fail: none is owed any more */
    return 0;
fail:
    if (taken)
        rounds__give_back_stale(r);
    if (!reuse)
        rounds__data_close(r, &fresh);
    return rc < 0 ? rc : -EIO;
fail_keep:
    out->seconds = (double)(log_now_ms() - t0) / 1000.0;
    return rc;
}

/* ---- checkpoint ------------------------------------------------------------------------ */

static void rounds__put_mf(buf_t *b, const mf_t *m, int32_t epochs)
{
    buf_put_u32(b, (uint32_t)m->n_users);
    buf_put_u32(b, (uint32_t)m->n_items);
    buf_put_u32(b, (uint32_t)m->dim);
    buf_put_u32(b, (uint32_t)epochs);
    /* float32, little-endian on every platform derrd builds for (x86-64,
     * aarch64); checked at load by the section CRC and a finite test. */
    buf_put(b, m->params, (size_t)(m->n_users + m->n_items) * (size_t)m->dim * sizeof(float));
}

int rounds_save(rounds_t *r, checkpoint_writer_t *w)
{
    buf_t *b = checkpoint_writer_section(w, SEC_ROUNDS);
    if (!b)
        return -EINVAL;
    buf_put_u64(b, r->round);
    buf_put_u64(b, r->teacher_version);
    buf_put_u64(b, r->snapshot_version);
    buf_put_u64(b, r->teacher_ms);
    buf_put_u64(b, (uint64_t)r->teacher_inter);
    double lp = r->last_published_hr10;
    uint64_t bits;
    memcpy(&bits, &lp, sizeof(bits));
    buf_put_u64(b, bits);
    buf_put_u64(b, (uint64_t)r->published_users);
    const mf_t *t = r->teacher.d ? distill_model(r->teacher.d)
                                 : r->saved_teacher.ue ? &r->saved_teacher : NULL;
    const mf_t *s = r->student.d ? distill_model(r->student.d)
                                 : r->saved_student.ue ? &r->saved_student : NULL;
    if (t && !*r->cfg.teacher_file)
        rounds__put_mf(checkpoint_writer_section(w, SEC_TEACHER), t,
                       r->teacher.d ? distill_epochs(r->teacher.d) : r->saved_teacher_epochs);
    if (s)
        rounds__put_mf(checkpoint_writer_section(w, SEC_STUDENT), s,
                       r->student.d ? distill_epochs(r->student.d) : r->saved_student_epochs);
    return 0;
}

static int rounds__get_mf(const checkpoint_t *ck, uint32_t id, mf_t *m, int32_t *epochs,
                          char *err, size_t errlen)
{
    const unsigned char *p;
    size_t len;
    if (checkpoint_section(ck, id, &p, &len))
        return 0;
    cursor_t c;
    cursor_init(&c, p, len);
    uint32_t nu = cursor_u32(&c), ni = cursor_u32(&c), dim = cursor_u32(&c), ep = cursor_u32(&c);
    uint64_t floats = ((uint64_t)nu + ni) * dim;
    if (c.err || nu > INT32_MAX || ni > INT32_MAX || dim == 0 || dim > 4096 ||
        ep > INT32_MAX || floats * sizeof(float) != cursor_left(&c)) {
        snprintf(err, errlen, "model section %u: sizes do not match its %zu bytes", id, len);
        return -EBADMSG;
    }
    if (mf_init(m, (int32_t)nu, (int32_t)ni, (int32_t)dim) < 0) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    memcpy(m->params, cursor_take(&c, floats * sizeof(float)), floats * sizeof(float));
    for (uint64_t k = 0; k < floats; k++)
        if (!isfinite(m->params[k])) {
            mf_close(m);
            snprintf(err, errlen, "model section %u: a non-finite value", id);
            return -EBADMSG;
        }
    *epochs = (int32_t)ep;
    return 1;
}

int rounds_load(rounds_t *r, const checkpoint_t *ck, char *err, size_t errlen)
{
    const unsigned char *p;
    size_t len;
    if (checkpoint_section(ck, SEC_ROUNDS, &p, &len))
        return 0; /* a checkpoint from before any round */
    cursor_t c;
    cursor_init(&c, p, len);
    uint64_t round = cursor_u64(&c), tv = cursor_u64(&c), sv = cursor_u64(&c);
    uint64_t tms = cursor_u64(&c), tinter = cursor_u64(&c), bits = cursor_u64(&c);
    uint64_t pub = cursor_u64(&c);
    if (c.err) {
        snprintf(err, errlen, "rounds section truncated");
        return -EBADMSG;
    }
    /* The checksums say the file is what was written, not that it was
     * written by derrd: values later code indexes or counts with are
     * checked. (Versions are wall-clock ms, far below 2^62.) */
    double hr;
    memcpy(&hr, &bits, sizeof(hr));
    if (pub > INT32_MAX || tinter > INT64_MAX || sv >= (1ull << 62) || tv >= (1ull << 62) ||
        !(isnan(hr) || (hr >= 0.0 && hr <= 1.0))) {
        snprintf(err, errlen, "rounds section: a value out of range (users published %" PRIu64
                 ", interactions %" PRIu64 ", versions %" PRIu64 "/%" PRIu64 ", HR@10 %g)",
                 pub, tinter, sv, tv, hr);
        return -EBADMSG;
    }
    mf_t t = { 0 }, s = { 0 };
    int32_t te = 0, se = 0;
    int rc = rounds__get_mf(ck, SEC_TEACHER, &t, &te, err, errlen);
    if (rc >= 0)
        rc = rounds__get_mf(ck, SEC_STUDENT, &s, &se, err, errlen);
    if (rc < 0 || (s.ue && s.dim != r->cfg.student_dim) ||
        (t.ue && t.dim != r->cfg.teacher_dim)) {
        if (rc >= 0)
            snprintf(err, errlen, "saved model dims differ from the configured ones");
        mf_close(&t);
        mf_close(&s);
        return rc < 0 ? rc : -EINVAL;
    }
    r->round = round;
    r->teacher_version = tv;
    r->snapshot_version = sv;
    r->teacher_ms = tms;
    r->teacher_inter = (int64_t)tinter;
    memcpy(&r->last_published_hr10, &bits, sizeof(bits));
    r->published_users = (int64_t)pub;
    mf_close(&r->saved_teacher);
    mf_close(&r->saved_student);
    r->saved_teacher = t;
    r->saved_teacher_epochs = te;
    r->saved_student = s;
    r->saved_student_epochs = se;
    log_notice("rounds: resuming after round %llu from the checkpoint: teacher %llu (%d epochs) "
               "and student (%d epochs) restored, last snapshot %llu", (unsigned long long)round,
               (unsigned long long)tv, (int)te, (int)se, (unsigned long long)sv);
    return 0;
}
