/*
 * End-to-end training on a small generated dataset: a BPR teacher learns
 * it, a DE-RRD student distils from the teacher, and a run is the same
 * whatever the thread count.
 *
 * The data: users and items fall into 8 clusters; a user's interactions
 * come mostly from its own cluster (popular items more often), the rest
 * from anywhere. One own-cluster interaction per user is held out and ranked
 * against 99 items the user never touched, so a model that learned the
 * clusters ranks the target among about 12 same-cluster candidates, while
 * chance gives HR@10 = 10 / 100.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/distill.h"
#include "model/gemm.h"
#include "model/metrics.h"
#include "model/mf.h"
#include "model/pool.h"
#include "model/ratings.h"
#include "model/rng.h"
#include "test.h"

enum {
    DATA_USERS = 300,
    DATA_ITEMS = 400,
    DATA_CLUSTERS = 8,
    DATA_PER_USER = 20,
    DATA_CANDS = 99
};

typedef struct {
    ratings_t train;
    int32_t target[DATA_USERS];
    int32_t cands[DATA_USERS * DATA_CANDS];
    loo_split_t split;
} test_distill__data_t;

/* An item of cluster c, skewed toward the cluster's first items. */
static int32_t test_distill__pick(rng_t *g, int32_t c)
{
    int32_t per = DATA_ITEMS / DATA_CLUSTERS;
    float u = rng_float(g);
    int32_t k = (int32_t)((float)per * u * u);
    return c + DATA_CLUSTERS * (k < per ? k : per - 1); /* item i is in cluster i % 8 */
}

static int test_distill__data(test_distill__data_t *x, uint64_t seed)
{
    int32_t *us = malloc(DATA_USERS * DATA_PER_USER * sizeof(int32_t));
    int32_t *is = malloc(DATA_USERS * DATA_PER_USER * sizeof(int32_t));
    uint8_t *seen = calloc(DATA_ITEMS, 1);
    if (!us || !is || !seen) {
        free(us);
        free(is);
        free(seen);
        return -ENOMEM;
    }
    rng_t g;
    rng_init_stream(&g, seed, RNG_TEST, 0xda7a, 0);
    int64_t n = 0;
    for (int32_t u = 0; u < DATA_USERS; u++) {
        int32_t c = u % DATA_CLUSTERS;
        memset(seen, 0, DATA_ITEMS);
        /* The held-out target first, then the training items. */
        int32_t t = test_distill__pick(&g, c);
        x->target[u] = t;
        seen[t] = 1;
        for (int k = 0; k < DATA_PER_USER - 1; k++) {
            int32_t i = rng_float(&g) < 0.9f ? test_distill__pick(&g, c)
                                             : (int32_t)rng_below(&g, DATA_ITEMS);
            if (seen[i])
                continue;
            seen[i] = 1;
            us[n] = u;
            is[n] = i;
            n++;
        }
        for (int k = 0; k < DATA_CANDS; k++) {
            int32_t i;
            do
                i = (int32_t)rng_below(&g, DATA_ITEMS);
            while (seen[i]);
            seen[i] = 1;
            x->cands[u * DATA_CANDS + k] = i;
        }
    }
    int rc = ratings_init(&x->train, DATA_USERS, DATA_ITEMS, us, is, n);
    free(us);
    free(is);
    free(seen);
    x->split = (loo_split_t){ DATA_USERS, DATA_CANDS, x->target, x->cands };
    return rc;
}

static distill_cfg_t test_distill__teacher_cfg(void)
{
    distill_cfg_t c = distill_cfg_default();
    c.dim = 32;
    c.adam.lr = 1e-2f;
    c.seed = 7;
    return c;
}

static distill_cfg_t test_distill__student_cfg(void)
{
    distill_cfg_t c = distill_cfg_default();
    c.dim = 8;
    c.adam.lr = 1e-2f;
    c.seed = 11;
    c.use_de = true;
    c.n_experts = 6;
    c.use_rrd = true;
    c.rrd_n = 50;
    c.rrd_k = 10;
    c.rrd_l = 10;
    return c;
}

/* Trains a teacher on x; returns it in out (a copy the caller closes). */
static int test_distill__train_teacher(const test_distill__data_t *x, pool_t *pool, int epochs,
                                       mf_t *out, distill_stats_t *first, distill_stats_t *last)
{
    distill_cfg_t cfg = test_distill__teacher_cfg();
    char err[256];
    distill_t *d = distill_new(&cfg, &x->train, NULL, pool, err, sizeof(err));
    if (!d) {
        test_fail(__FILE__, __LINE__, "distill_new: %s", err);
        return -1;
    }
    for (int e = 0; e < epochs; e++) {
        distill_stats_t st;
        if (distill_epoch(d, &st) < 0) {
            distill_free(d);
            return -1;
        }
        if (e == 0)
            *first = st;
        *last = st;
    }
    int rc = mf_init_copy(out, distill_model(d));
    distill_free(d);
    return rc;
}

TEST_SLOW(distill_teacher_and_student_learn, 240)
{
    gemm_setup();
    static test_distill__data_t x;
    REQUIRE(test_distill__data(&x, 1) == 0);
    pool_t *pool = pool_new(2);
    REQUIRE(pool);

    /* A random model is near chance. */
    metrics_t m0;
    mf_t zero;
    REQUIRE(mf_init(&zero, DATA_USERS, DATA_ITEMS, 4) == 0);
    mf_init_normal(&zero, 0.1f, 3);
    REQUIRE(metrics_eval(&zero, &x.split, pool, &m0) == 0);
    CHECK(m0.hr[1] < 0.2);
    mf_close(&zero);

    /* (a) the teacher */
    mf_t teacher;
    distill_stats_t first = { 0 }, last = { 0 };
    REQUIRE(test_distill__train_teacher(&x, pool, 40, &teacher, &first, &last) == 0);
    CHECK_EQ_INT(first.samples, x.train.nnz);
    CHECK_EQ_INT(last.epoch, 39);
    CHECK(isfinite(last.loss_bpr));
    CHECK(last.loss_bpr < 0.5 * first.loss_bpr);
    metrics_t mt;
    REQUIRE(metrics_eval(&teacher, &x.split, pool, &mt) == 0);
    CHECK_EQ_INT(mt.users, DATA_USERS);
    /* It reaches about 0.9 (NDCG 0.55) on this data. */
    CHECK(mt.hr[1] > 0.6);
    CHECK(mt.ndcg[1] > 0.3);
    if (!(last.loss_bpr < 0.5 * first.loss_bpr) || !(mt.hr[1] > 0.6) || !(mt.ndcg[1] > 0.3))
        fprintf(stderr, "    teacher: bpr %.1f -> %.1f, HR@10 %.3f NDCG@10 %.3f\n",
                first.loss_bpr, last.loss_bpr, mt.hr[1], mt.ndcg[1]);

    /* (b) a DE-RRD student from a copy of the teacher, from the paper's
     * random start: each loss has to fall on its own. */
    mf_t frozen;
    REQUIRE(mf_init_copy(&frozen, &teacher) == 0);
    distill_cfg_t scfg = test_distill__student_cfg();
    scfg.init_from_teacher = false;
    char err[256];
    distill_t *s = distill_new(&scfg, &x.train, &frozen, pool, err, sizeof(err));
    if (!s)
        fprintf(stderr, "    distill_new: %s\n", err);
    REQUIRE(s);
    distill_stats_t sf = { 0 }, sl = { 0 };
    const int epochs = 40;
    for (int e = 0; e < epochs; e++) {
        distill_stats_t st;
        REQUIRE(distill_epoch(s, &st) == 0);
        if (e == 0)
            sf = st;
        sl = st;
    }
    /* Each part of the loss falls: BPR and DE to about a fifth, RRD to
     * about a half over these 40 epochs. */
    bool falls = sl.loss_bpr < 0.5 * sf.loss_bpr && sl.loss_de < 0.5 * sf.loss_de &&
                 sl.loss_rrd < 0.8 * sf.loss_rrd;
    CHECK(falls);
    CHECK(sf.de_entities > 0 && sf.de_pairs > 0);
    CHECK(sl.de_pairs <= (int64_t)scfg.n_experts * sl.de_entities);
    CHECK(sl.temperature < sf.temperature);
    metrics_t ms;
    REQUIRE(metrics_eval(distill_model(s), &x.split, pool, &ms) == 0);
    CHECK(ms.hr[1] > 0.6);
    if (!falls || !(ms.hr[1] > 0.6))
        fprintf(stderr, "    student: bpr %.1f -> %.1f, de %.3g -> %.3g, rrd %.1f -> %.1f, "
                "HR@10 %.3f\n", sf.loss_bpr, sl.loss_bpr, sf.loss_de, sl.loss_de,
                sf.loss_rrd, sl.loss_rrd, ms.hr[1]);

    /* (c) started from the teacher's rank-8 fit, the student ranks well
     * before its first epoch, and its first epoch's losses are below the
     * random start's. */
    distill_cfg_t pcfg = test_distill__student_cfg();
    CHECK(pcfg.init_from_teacher);
    distill_t *p = distill_new(&pcfg, &x.train, &frozen, pool, err, sizeof(err));
    REQUIRE(p);
    metrics_t m0p;
    REQUIRE(metrics_eval(distill_model(p), &x.split, pool, &m0p) == 0);
    distill_stats_t pf;
    REQUIRE(distill_epoch(p, &pf) == 0);
    printf("    teacher-fit start: HR@10 %.3f before training; first epoch bpr %.1f de %.3g "
           "rrd %.1f (random start: %.1f %.3g %.1f)\n", m0p.hr[1], pf.loss_bpr, pf.loss_de,
           pf.loss_rrd, sf.loss_bpr, sf.loss_de, sf.loss_rrd);
    CHECK(m0p.hr[1] > 0.6);
    CHECK(pf.loss_bpr < 0.8 * sf.loss_bpr);
    CHECK(pf.loss_rrd < sf.loss_rrd);
    distill_free(p);

    /* The teacher is borrowed and frozen. */
    CHECK(memcmp(frozen.params, teacher.params,
                 sizeof(float) * (size_t)(DATA_USERS + DATA_ITEMS) * (size_t)teacher.dim) == 0);
    distill_free(s);
    mf_close(&frozen);
    mf_close(&teacher);
    ratings_close(&x.train);
    pool_free(pool);
}

/* Two epochs of a DE-RRD student on `threads` threads; params copied out.
 * With read_between, the model is also read after the first epoch. */
static int test_distill__epochs(const test_distill__data_t *x, const mf_t *teacher,
                                const distill_cfg_t *cfg, int threads, int read_between,
                                float *params, distill_stats_t *stats)
{
    pool_t *pool = pool_new(threads);
    if (!pool)
        return -1;
    char err[256];
    distill_t *d = distill_new(cfg, &x->train, teacher, pool, err, sizeof(err));
    int rc = -1;
    if (!d) {
        test_fail(__FILE__, __LINE__, "distill_new: %s", err);
        goto done;
    }
    for (int e = 0; e < 2; e++) {
        if (distill_epoch(d, &stats[e]) < 0)
            goto done;
        if (read_between && e == 0)
            (void)distill_model(d);
    }
    const mf_t *m = distill_model(d);
    memcpy(params, m->params,
           sizeof(float) * (size_t)(m->n_users + m->n_items) * (size_t)m->dim);
    rc = 0;
done:
    distill_free(d);
    pool_free(pool);
    return rc;
}

/* The generated data of seed, and a teacher trained on it for `epochs`. */
static int test_distill__data_and_teacher(test_distill__data_t *x, uint64_t seed, int epochs,
                                          mf_t *teacher)
{
    gemm_setup();
    if (test_distill__data(x, seed) != 0)
        return -1;
    pool_t *pool = pool_new(2);
    if (!pool)
        return -1;
    distill_stats_t first = { 0 }, last = { 0 };
    int rc = test_distill__train_teacher(x, pool, epochs, teacher, &first, &last);
    pool_free(pool);
    return rc;
}

TEST_SLOW(distill_same_result_any_thread_count, 240)
{
    static test_distill__data_t x;
    mf_t teacher;
    REQUIRE(test_distill__data_and_teacher(&x, 2, 3, &teacher) == 0);

    /* The user- and item-side variants, both sides at once, and a batch that
     * is not a multiple of the chunks. */
    const rrd_variant_t variants[] = { RRD_PAPER, RRD_ITEM, RRD_NOSAMPLE, RRD_IR };
    for (int q = 0; q < 4; q++) {
        distill_cfg_t cfg = test_distill__student_cfg();
        cfg.rrd_variant = variants[q];
        cfg.batch = 300;
        if (q == 1) {
            /* the cost knobs: sampled entities and anchors, pruned experts */
            cfg.de_sample = 0.5f;
            cfg.rrd_sample = 0.5f;
            cfg.de_keep = 0.05f;
            cfg.de_max_experts = 2;
        }
        if (q == 2) {
            /* every other unobserved item, on half the anchors; DE on every
             * other step */
            cfg.rrd_sample = 0.5f;
            cfg.de_every = 2;
        }
        if (q == 3)
            cfg.rrd_sample = 0.5f; /* both sides pick anchors */
        size_t np = (size_t)(DATA_USERS + DATA_ITEMS) * (size_t)cfg.dim;
        float *a = malloc(np * sizeof(float)), *b = malloc(np * sizeof(float));
        float *c = malloc(np * sizeof(float));
        REQUIRE(a && b && c);
        distill_stats_t sa[2], sb[2], sc[2];
        REQUIRE(test_distill__epochs(&x, &teacher, &cfg, 1, 0, a, sa) == 0);
        REQUIRE(test_distill__epochs(&x, &teacher, &cfg, 2, 0, b, sb) == 0);
        REQUIRE(test_distill__epochs(&x, &teacher, &cfg, 3, 0, c, sc) == 0);
        int same_ab = memcmp(a, b, np * sizeof(float)) == 0;
        int same_ac = memcmp(a, c, np * sizeof(float)) == 0;
        CHECK(same_ab);
        CHECK(same_ac);
        for (int e = 0; e < 2; e++) {
            CHECK(sa[e].loss_bpr == sb[e].loss_bpr && sa[e].loss_bpr == sc[e].loss_bpr);
            CHECK(sa[e].loss_de == sb[e].loss_de && sa[e].loss_de == sc[e].loss_de);
            CHECK(sa[e].loss_rrd == sb[e].loss_rrd && sa[e].loss_rrd == sc[e].loss_rrd);
            CHECK(sa[e].de_pairs == sb[e].de_pairs);
            if (q == 1)
                CHECK(sa[e].de_pairs <= 2 * sa[e].de_entities);
            CHECK(isfinite(sa[e].loss_bpr) && isfinite(sa[e].loss_de) &&
                  isfinite(sa[e].loss_rrd));
            CHECK(sa[e].loss_rrd > 0.0);
            CHECK(sa[e].loss_rrd_item == sb[e].loss_rrd_item &&
                  sa[e].loss_rrd_item == sc[e].loss_rrd_item);
            /* only RRD_IR has an item side of its own */
            CHECK(q == 3 ? sa[e].loss_rrd_item > 0.0 : sa[e].loss_rrd_item == 0.0);
        }
        if (!same_ab || !same_ac)
            fprintf(stderr, "    variant %d differs across thread counts\n", (int)variants[q]);
        /* A different seed gives a different model. */
        cfg.seed++;
        REQUIRE(test_distill__epochs(&x, &teacher, &cfg, 2, 0, c, sc) == 0);
        CHECK(memcmp(a, c, np * sizeof(float)) != 0);
        free(a);
        free(b);
        free(c);
    }
    mf_close(&teacher);
    ratings_close(&x.train);
}

/* Reading the model (an evaluation, a snapshot) after a whole epoch must
 * not change what the next epoch computes, so that derrd-train
 * --eval-every leaves the trajectory alone: lazy Adam's catch-up of a gap
 * in two parts is not quite the catch-up in one. (Epochs on a sample,
 * distill_epoch_on, leave the catch-up to the read: distill.h.) */
TEST_SLOW(distill_reading_leaves_training_alone, 120)
{
    static test_distill__data_t x;
    mf_t teacher;
    REQUIRE(test_distill__data_and_teacher(&x, 4, 3, &teacher) == 0);
    distill_cfg_t cfg = test_distill__student_cfg();
    cfg.batch = 300;
    cfg.de_every = 2; /* the experts have idle steps too */
    size_t np = (size_t)(DATA_USERS + DATA_ITEMS) * (size_t)cfg.dim;
    float *a = malloc(np * sizeof(float)), *b = malloc(np * sizeof(float));
    REQUIRE(a && b);
    distill_stats_t sa[2], sb[2];
    REQUIRE(test_distill__epochs(&x, &teacher, &cfg, 2, 0, a, sa) == 0);
    REQUIRE(test_distill__epochs(&x, &teacher, &cfg, 2, 1, b, sb) == 0);
    CHECK(memcmp(a, b, np * sizeof(float)) == 0);
    CHECK(sa[1].loss_bpr == sb[1].loss_bpr && sa[1].loss_de == sb[1].loss_de &&
          sa[1].loss_rrd == sb[1].loss_rrd);
    free(a);
    free(b);
    mf_close(&teacher);
    ratings_close(&x.train);
}

/* One epoch of a student on x with distill_epoch_on(pos, n) (pos NULL: a
 * whole distill_epoch); the params before and after are copied out. */
static int test_distill__epoch_on(const test_distill__data_t *x, const mf_t *teacher,
                                  const distill_cfg_t *cfg, const int32_t *pos, int64_t n,
                                  float *before, float *after, distill_stats_t *st)
{
    pool_t *pool = pool_new(2);
    if (!pool)
        return -1;
    char err[256];
    distill_t *d = distill_new(cfg, &x->train, teacher, pool, err, sizeof(err));
    int rc = -1;
    if (!d) {
        test_fail(__FILE__, __LINE__, "distill_new: %s", err);
        goto done;
    }
    const mf_t *m = distill_model(d);
    size_t np = sizeof(float) * (size_t)(m->n_users + m->n_items) * (size_t)m->dim;
    memcpy(before, m->params, np);
    rc = pos ? distill_epoch_on(d, pos, n, st) : distill_epoch(d, st);
    if (rc == 0) {
        m = distill_model(d);
        memcpy(after, m->params, np);
    }
done:
    distill_free(d);
    pool_free(pool);
    return rc;
}

TEST_SLOW(distill_epoch_on_a_sample, 120)
{
    static test_distill__data_t x;
    mf_t teacher;
    REQUIRE(test_distill__data_and_teacher(&x, 5, 2, &teacher) == 0);

    int64_t nnz = x.train.nnz;
    int32_t *pos = malloc((size_t)nnz * sizeof(int32_t));
    size_t np = (size_t)(DATA_USERS + DATA_ITEMS) * 8;
    float *b0 = malloc(np * sizeof(float)), *a0 = malloc(np * sizeof(float));
    float *b1 = malloc(np * sizeof(float)), *a1 = malloc(np * sizeof(float));
    REQUIRE(pos && b0 && a0 && b1 && a1);
    const rrd_variant_t variants[] = { RRD_PAPER, RRD_ITEM, RRD_IR };
    for (int q = 0; q < 3; q++) {
        distill_cfg_t cfg = test_distill__student_cfg();
        cfg.rrd_variant = variants[q];
        cfg.batch = 300;
        REQUIRE(cfg.dim == 8);
        /* Every position in order: the whole epoch, bit for bit. */
        for (int64_t k = 0; k < nnz; k++)
            pos[k] = (int32_t)k;
        distill_stats_t s0, s1;
        REQUIRE(test_distill__epoch_on(&x, &teacher, &cfg, NULL, 0, b0, a0, &s0) == 0);
        REQUIRE(test_distill__epoch_on(&x, &teacher, &cfg, pos, nnz, b1, a1, &s1) == 0);
        CHECK(memcmp(a0, a1, np * sizeof(float)) == 0);
        CHECK(s0.loss_bpr == s1.loss_bpr && s0.loss_rrd == s1.loss_rrd &&
              s0.loss_de == s1.loss_de && s0.samples == s1.samples);

        /* The pairs of the first 30 users. DE on every step, so the
         * sample's two steps have a DE term. */
        cfg.de_every = 1;
        int64_t n = x.train.row[30];
        REQUIRE(test_distill__epoch_on(&x, &teacher, &cfg, pos, n, b1, a1, &s1) == 0);
        CHECK_EQ_INT(s1.samples, n);
        CHECK(s1.loss_bpr > 0.0 && s1.loss_rrd > 0.0 && s1.loss_de > 0.0);
        size_t split = (size_t)30 * 8, users_end = (size_t)DATA_USERS * 8;
        CHECK(memcmp(b1, a1, split * sizeof(float)) != 0);
        /* The paper's RRD ranks items for users: no other user row moves
         * (an item side ranks every user, so there they do). */
        if (variants[q] == RRD_PAPER)
            CHECK(memcmp(b1 + split, a1 + split, (users_end - split) * sizeof(float)) == 0);
        /* RRD terms for the sample's 30 users only, of 300. */
        CHECK(s1.loss_rrd < s0.loss_rrd * 0.5);
    }
    /* Out of range: refused, nothing trained. */
    distill_cfg_t cfg = test_distill__student_cfg();
    distill_stats_t s;
    pos[0] = (int32_t)nnz;
    CHECK(test_distill__epoch_on(&x, &teacher, &cfg, pos, 1, b1, a1, &s) == -EINVAL);
    pos[0] = -1;
    CHECK(test_distill__epoch_on(&x, &teacher, &cfg, pos, 1, b1, a1, &s) == -EINVAL);
    pos[0] = 0;
    CHECK(test_distill__epoch_on(&x, &teacher, &cfg, pos, nnz + 1, b1, a1, &s) == -EINVAL);
    free(pos);
    free(b0);
    free(a0);
    free(b1);
    free(a1);
    mf_close(&teacher);
    ratings_close(&x.train);
}

TEST(distill_new_rejects_bad_settings)
{
    static test_distill__data_t x;
    REQUIRE(test_distill__data(&x, 3) == 0);
    pool_t *pool = pool_new(1);
    REQUIRE(pool);
    mf_t teacher, small;
    REQUIRE(mf_init(&teacher, DATA_USERS, DATA_ITEMS, 4) == 0);
    REQUIRE(mf_init(&small, DATA_USERS - 1, DATA_ITEMS, 4) == 0);
    char err[256];
    distill_cfg_t ok = test_distill__student_cfg();
    distill_t *d = distill_new(&ok, &x.train, &teacher, pool, err, sizeof(err));
    CHECK(d != NULL);
    distill_free(d);

    distill_cfg_t c = ok;
    err[0] = 0;
    CHECK(distill_new(&c, &x.train, NULL, pool, err, sizeof(err)) == NULL); /* no teacher */
    CHECK(err[0] != 0);
    CHECK(distill_new(&c, &x.train, &small, pool, err, sizeof(err)) == NULL);
    c = ok;
    c.dim = 0;
    CHECK(distill_new(&c, &x.train, &teacher, pool, err, sizeof(err)) == NULL);
    c = ok;
    c.adam.lr = 0.0f;
    CHECK(distill_new(&c, &x.train, &teacher, pool, err, sizeof(err)) == NULL);
    c = ok;
    c.rrd_k = c.rrd_n + 1;
    CHECK(distill_new(&c, &x.train, &teacher, pool, err, sizeof(err)) == NULL);
    c = ok;
    c.de_sample = 0.0f;
    CHECK(distill_new(&c, &x.train, &teacher, pool, err, sizeof(err)) == NULL);
    c = ok;
    c.n_experts = 0;
    CHECK(distill_new(&c, &x.train, &teacher, pool, err, sizeof(err)) == NULL);
    c = ok;
    c.rrd_variant = RRD_IR;
    c.rrd_item_k = c.rrd_n + 1; /* the item side's K is checked too */
    CHECK(distill_new(&c, &x.train, &teacher, pool, err, sizeof(err)) == NULL);
    c.rrd_item_k = 5;
    c.lambda_rrd_item = -1.0f;
    CHECK(distill_new(&c, &x.train, &teacher, pool, err, sizeof(err)) == NULL);
    c.lambda_rrd_item = 5e-4f;
    d = distill_new(&c, &x.train, &teacher, pool, err, sizeof(err));
    CHECK(d != NULL);
    distill_free(d);
    /* Without DE and RRD no teacher is needed. */
    c = test_distill__teacher_cfg();
    d = distill_new(&c, &x.train, NULL, pool, err, sizeof(err));
    CHECK(d != NULL);
    distill_free(d);
    distill_free(NULL);
    mf_close(&teacher);
    mf_close(&small);
    ratings_close(&x.train);
    pool_free(pool);
}

/* Streaming rounds: a student trained on the first users, warm-started into a
 * model over all users, keeps its rows and experts and learns on from there. */
TEST_SLOW(distill_warm_start_grows_and_continues, 240)
{
    test_distill__data_t x;
    REQUIRE(test_distill__data(&x, 5) == 0);
    pool_t *pool = pool_new(2);
    REQUIRE(pool);
    mf_t teacher;
    distill_stats_t t0, t1;
    REQUIRE(test_distill__train_teacher(&x, pool, 30, &teacher, &t0, &t1) == 0);

    /* The first 200 users' pairs: an earlier, smaller stream. */
    enum { EARLY = 200 };
    int64_t n_early = x.train.row[EARLY];
    int32_t *us = malloc((size_t)n_early * sizeof(int32_t));
    REQUIRE(us);
    for (int32_t u = 0; u < EARLY; u++)
        for (int64_t k = x.train.row[u]; k < x.train.row[u + 1]; k++)
            us[k] = u;
    ratings_t early;
    REQUIRE(ratings_init(&early, EARLY, DATA_ITEMS, us, x.train.col, n_early) == 0);
    free(us);
    mf_t early_teacher = teacher; /* the first EARLY user rows of the same teacher */
    early_teacher.n_users = EARLY;
    early_teacher.ie = teacher.ie;

    /* A model to be warm started starts at random (distill.h). */
    distill_cfg_t cfg = test_distill__student_cfg();
    cfg.init_from_teacher = false;
    char err[256];
    distill_t *d1 = distill_new(&cfg, &early, &early_teacher, pool, err, sizeof(err));
    REQUIRE(d1);
    distill_stats_t st;
    for (int e = 0; e < 10; e++)
        REQUIRE(distill_epoch(d1, &st) == 0);
    mf_t before;
    REQUIRE(mf_init_copy(&before, distill_model(d1)) == 0);

    distill_t *d2 = distill_new(&cfg, &x.train, &teacher, pool, err, sizeof(err));
    distill_t *fresh = distill_new(&cfg, &x.train, &teacher, pool, err, sizeof(err));
    REQUIRE(d2 && fresh);
    CHECK(distill_warm_start(d2, d1) == 0);
    CHECK_EQ_INT(distill_epochs(d2), 10);
    const mf_t *m2 = distill_model(d2);
    CHECK(memcmp(m2->ue, before.ue, (size_t)EARLY * (size_t)cfg.dim * sizeof(float)) == 0);
    CHECK(memcmp(m2->ie, before.ie, (size_t)DATA_ITEMS * (size_t)cfg.dim * sizeof(float)) == 0);
    /* Rows beyond the early users keep their own initialisation. */
    CHECK(memcmp(m2->ue + EARLY * cfg.dim, distill_model(fresh)->ue + EARLY * cfg.dim,
                 (size_t)(DATA_USERS - EARLY) * (size_t)cfg.dim * sizeof(float)) == 0);
    distill_free(d1);

    /* One epoch on: the warm model is far ahead of a fresh one. */
    distill_stats_t sw, sf;
    REQUIRE(distill_epoch(d2, &sw) == 0);
    REQUIRE(distill_epoch(fresh, &sf) == 0);
    printf("    after one more epoch: bpr loss warm %.1f fresh %.1f\n", sw.loss_bpr, sf.loss_bpr);
    CHECK(sw.loss_bpr < 0.95 * sf.loss_bpr);
    metrics_t mw, mfr;
    REQUIRE(metrics_eval(distill_model(d2), &x.split, pool, &mw) == 0);
    REQUIRE(metrics_eval(distill_model(fresh), &x.split, pool, &mfr) == 0);
    printf("    HR@10 warm %.3f fresh %.3f\n", mw.hr[1], mfr.hr[1]);
    CHECK(mw.hr[1] > mfr.hr[1] + 0.05);

    /* Only before the first epoch, and only between equal dims. */
    CHECK(distill_warm_start(d2, fresh) == -EINVAL);
    distill_cfg_t other = cfg;
    other.dim = cfg.dim + 1;
    distill_t *d3 = distill_new(&other, &x.train, &teacher, pool, err, sizeof(err));
    REQUIRE(d3);
    CHECK(distill_warm_start(d3, fresh) == -EINVAL);

    distill_free(d3);
    distill_free(fresh);
    distill_free(d2);
    mf_close(&before);
    ratings_close(&early);
    mf_close(&teacher);
    ratings_close(&x.train);
    pool_free(pool);
}

/* Streaming rounds reuse the teacher's top-N lists of users whose data did
 * not change: reused lists are copied exactly, stale and new ones are
 * computed, and they match a full computation. */
TEST_SLOW(distill_topn_reuse_matches_full, 120)
{
    test_distill__data_t x;
    REQUIRE(test_distill__data(&x, 9) == 0);
    pool_t *pool = pool_new(2);
    REQUIRE(pool);
    mf_t teacher;
    distill_stats_t t0, t1;
    REQUIRE(test_distill__train_teacher(&x, pool, 10, &teacher, &t0, &t1) == 0);
    distill_cfg_t cfg = test_distill__student_cfg();
    char err[256];
    distill_t *full = distill_new(&cfg, &x.train, &teacher, pool, err, sizeof(err));
    REQUIRE(full);
    CHECK_EQ_INT(distill_topn_computed(full), DATA_USERS);
    uint8_t stale[DATA_USERS] = { 0 };
    for (int u = 0; u < DATA_USERS; u += 7)
        stale[u] = 1;
    distill_t *re = distill_new_reusing(&cfg, &x.train, &teacher, pool, full, stale, err,
                                        sizeof(err));
    REQUIRE(re);
    CHECK_EQ_INT(distill_topn_computed(re), (DATA_USERS + 6) / 7);
    CHECK(memcmp(distill_topn(re), distill_topn(full),
                 (size_t)DATA_USERS * (size_t)cfg.rrd_n * sizeof(int32_t)) == 0);
    /* With a different teacher, the stale lists follow it and the others
     * stay as they were. */
    mf_t other;
    REQUIRE(mf_init_copy(&other, &teacher) == 0);
    mf_init_normal(&other, 0.1f, 99);
    distill_t *moved = distill_new_reusing(&cfg, &x.train, &other, pool, full, stale, err,
                                           sizeof(err));
    distill_t *fresh = distill_new(&cfg, &x.train, &other, pool, err, sizeof(err));
    REQUIRE(moved && fresh);
    size_t row = (size_t)cfg.rrd_n * sizeof(int32_t);
    int stale_ok = 1, kept_ok = 1;
    for (int u = 0; u < DATA_USERS; u++) {
        const int32_t *want = stale[u] ? distill_topn(fresh) : distill_topn(full);
        if (memcmp(distill_topn(moved) + (size_t)u * cfg.rrd_n, want + (size_t)u * cfg.rrd_n,
                   row) != 0)
            *(stale[u] ? &stale_ok : &kept_ok) = 0;
    }
    CHECK(stale_ok);
    CHECK(kept_ok);

    /* Filtering: users 7, 21, 35, ... observe the items at ranks 0 and 3 of
     * their lists. With the teacher unchanged, each filtered list is the
     * fresh list's prefix (its last two places are empty); the other lists
     * are as they were. Users 0, 14, 28, ... observe six of their top 50,
     * more than a tenth: theirs are computed again, equal to the fresh ones. */
    int64_t nnz = x.train.nnz, n2 = 0;
    int32_t *us = malloc((size_t)(nnz + 6 * DATA_USERS) * sizeof(int32_t));
    int32_t *is = malloc((size_t)(nnz + 6 * DATA_USERS) * sizeof(int32_t));
    REQUIRE(us && is);
    int32_t n_many = 0;
    for (int32_t u = 0; u < DATA_USERS; u++) {
        for (int64_t k = x.train.row[u]; k < x.train.row[u + 1]; k++) {
            us[n2] = u;
            is[n2++] = x.train.col[k];
        }
        if (!stale[u])
            continue;
        const int32_t *top = distill_topn(full) + (size_t)u * cfg.rrd_n;
        int many = u % 14 == 0;
        n_many += many;
        for (int r = 0; r < (many ? 6 : 2); r++) {
            us[n2] = u;
            is[n2++] = top[many ? r : 3 * r];
        }
    }
    REQUIRE(cfg.rrd_n == 50);
    ratings_t more;
    REQUIRE(ratings_init(&more, DATA_USERS, DATA_ITEMS, us, is, n2) == 0);
    free(us);
    free(is);
    uint8_t filter[DATA_USERS];
    for (int u = 0; u < DATA_USERS; u++)
        filter[u] = stale[u] ? DISTILL_LIST_FILTER : DISTILL_LIST_KEEP;
    distill_t *filt = distill_new_reusing(&cfg, &more, &teacher, pool, full, filter, err,
                                          sizeof(err));
    distill_t *fresh2 = distill_new(&cfg, &more, &teacher, pool, err, sizeof(err));
    REQUIRE(filt && fresh2);
    CHECK_EQ_INT(distill_topn_computed(filt), n_many);
    CHECK_EQ_INT(distill_topn_filtered(filt), (DATA_USERS + 6) / 7 - n_many);
    int filt_ok = 1;
    size_t N = (size_t)cfg.rrd_n;
    for (int u = 0; u < DATA_USERS; u++) {
        const int32_t *got = distill_topn(filt) + (size_t)u * N;
        const int32_t *want = distill_topn(fresh2) + (size_t)u * N;
        int shortened = stale[u] && u % 14 != 0;
        size_t keep = shortened ? N - 2 : N;
        if (memcmp(got, want, keep * sizeof(int32_t)) != 0 ||
            (shortened && (got[N - 2] != -1 || got[N - 1] != -1)))
            filt_ok = 0;
    }
    CHECK(n_many > 0);
    CHECK(filt_ok);
    /* Shortness adds up across rounds: two more items of each shortened
     * list observed, filtering filt's lists leaves them four short (kept);
     * four more, six short (computed again). */
    for (int extra = 2; extra <= 4; extra += 2) {
        int64_t n3 = 0;
        int32_t *u3 = malloc((size_t)(more.nnz + 4 * DATA_USERS) * sizeof(int32_t));
        int32_t *i3 = malloc((size_t)(more.nnz + 4 * DATA_USERS) * sizeof(int32_t));
        REQUIRE(u3 && i3);
        int32_t n_short = 0;
        for (int32_t u = 0; u < DATA_USERS; u++) {
            for (int64_t k = more.row[u]; k < more.row[u + 1]; k++) {
                u3[n3] = u;
                i3[n3++] = more.col[k];
            }
            if (!stale[u] || u % 14 == 0)
                continue;
            n_short++;
            const int32_t *top = distill_topn(full) + (size_t)u * N;
            const int ranks[4] = { 1, 2, 4, 5 };
            for (int r = 0; r < extra; r++) {
                u3[n3] = u;
                i3[n3++] = top[ranks[r]];
            }
        }
        ratings_t again;
        REQUIRE(ratings_init(&again, DATA_USERS, DATA_ITEMS, u3, i3, n3) == 0);
        free(u3);
        free(i3);
        distill_t *f2 = distill_new_reusing(&cfg, &again, &teacher, pool, filt, filter, err,
                                            sizeof(err));
        REQUIRE(f2);
        CHECK_EQ_INT(distill_topn_computed(f2), extra == 2 ? 0 : n_short);
        distill_free(f2);
        ratings_close(&again);
    }
    distill_free(fresh2);
    distill_free(filt);
    ratings_close(&more);
    distill_free(fresh);
    distill_free(moved);
    distill_free(re);
    distill_free(full);
    mf_close(&other);
    mf_close(&teacher);
    ratings_close(&x.train);
    pool_free(pool);
}
