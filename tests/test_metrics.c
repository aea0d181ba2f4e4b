/*
 * Tests of the leave-one-out metrics (metrics.h): golden values per rank,
 * averaging, and metrics_eval on hand-built models whose scores are obvious.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/metrics.h"
#include "model/mf.h"
#include "model/pool.h"
#include "model/rng.h"
#include "test.h"

/* The definitions, written out: hit when rank < K, NDCG 1/log2(rank + 2),
 * MRR 1/(rank + 1), both 0 outside the top K. */
static void test_metrics__expect(int64_t rank, int k, double *hr, double *ndcg, double *mrr)
{
    int hit = rank < k;
    *hr = hit ? 1.0 : 0.0;
    *ndcg = hit ? 1.0 / log2((double)rank + 2.0) : 0.0;
    *mrr = hit ? 1.0 / ((double)rank + 1.0) : 0.0;
}

TEST(metrics_cutoffs)
{
    CHECK_EQ_INT(METRICS_NK, 3);
    CHECK_EQ_INT(metrics_k[0], 5);
    CHECK_EQ_INT(metrics_k[1], 10);
    CHECK_EQ_INT(metrics_k[2], 20);
}

TEST(metrics_add_rank_golden)
{
    const int64_t ranks[] = { 0, 4, 5, 9, 19, 20, 100 };
    /* Hand values: ndcg at rank 0 is 1, at 4 is 1/log2(6), at 9 1/log2(11). */
    CHECK_NEAR(1.0 / log2(6.0), 0.386852807, 1e-9);
    metrics_t all;
    memset(&all, 0, sizeof(all));
    double sum_hr[3] = { 0 }, sum_ndcg[3] = { 0 }, sum_mrr[3] = { 0 };
    for (int q = 0; q < 7; q++) {
        metrics_t m;
        memset(&m, 0, sizeof(m));
        metrics_add_rank(&m, ranks[q]);
        metrics_add_rank(&all, ranks[q]);
        CHECK_EQ_INT(m.users, 1);
        for (int k = 0; k < 3; k++) {
            double hr, ndcg, mrr;
            test_metrics__expect(ranks[q], metrics_k[k], &hr, &ndcg, &mrr);
            CHECK_NEAR(m.hr[k], hr, 1e-12);
            CHECK_NEAR(m.ndcg[k], ndcg, 1e-12);
            CHECK_NEAR(m.mrr[k], mrr, 1e-12);
            sum_hr[k] += hr;
            sum_ndcg[k] += ndcg;
            sum_mrr[k] += mrr;
        }
    }
    /* Spelled out: HR@5 counts ranks 0 and 4; HR@10 adds 5 and 9; HR@20
     * adds 19; 20 and 100 never hit. */
    CHECK_NEAR(sum_hr[0], 2.0, 0);
    CHECK_NEAR(sum_hr[1], 4.0, 0);
    CHECK_NEAR(sum_hr[2], 5.0, 0);
    CHECK_NEAR(sum_mrr[0], 1.0 + 1.0 / 5.0, 1e-12);
    CHECK_NEAR(sum_mrr[1], 1.0 + 1.0 / 5.0 + 1.0 / 6.0 + 1.0 / 10.0, 1e-12);
    CHECK_NEAR(sum_ndcg[2], 1.0 + 1.0 / log2(6.0) + 1.0 / log2(7.0) + 1.0 / log2(11.0) +
                                1.0 / log2(21.0), 1e-12);
    CHECK_EQ_INT(all.users, 7);
    metrics_finish(&all);
    for (int k = 0; k < 3; k++) {
        CHECK_NEAR(all.hr[k], sum_hr[k] / 7.0, 1e-12);
        CHECK_NEAR(all.ndcg[k], sum_ndcg[k] / 7.0, 1e-12);
        CHECK_NEAR(all.mrr[k], sum_mrr[k] / 7.0, 1e-12);
    }
    CHECK_NEAR(all.hr[0], 2.0 / 7.0, 1e-12);
}

TEST(metrics_merge_and_empty_finish)
{
    metrics_t a, b, c;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    memset(&c, 0, sizeof(c));
    metrics_add_rank(&a, 1);
    metrics_add_rank(&a, 30);
    metrics_add_rank(&b, 7);
    metrics_add_rank(&c, 1);
    metrics_add_rank(&c, 30);
    metrics_add_rank(&c, 7);
    metrics_merge(&a, &b);
    CHECK_EQ_INT(a.users, 3);
    for (int k = 0; k < 3; k++) {
        CHECK_NEAR(a.hr[k], c.hr[k], 1e-12);
        CHECK_NEAR(a.ndcg[k], c.ndcg[k], 1e-12);
        CHECK_NEAR(a.mrr[k], c.mrr[k], 1e-12);
    }
    /* No users: finish leaves zeros, no NaN from 0 / 0. */
    metrics_t e;
    memset(&e, 0, sizeof(e));
    metrics_finish(&e);
    for (int k = 0; k < 3; k++)
        CHECK(e.hr[k] == 0.0 && e.ndcg[k] == 0.0 && e.mrr[k] == 0.0);
}

TEST(metrics_eval_hand_built)
{
    /* dim 1: score(u, i) = ue[u] * ie[i]. Item i has embedding i, except
     * item 7, which ties with item 4. */
    enum { NU = 7, NI = 10, NC = 4 };
    mf_t mf;
    REQUIRE(mf_init(&mf, NU, NI, 1) == 0);
    for (int32_t i = 0; i < NI; i++)
        mf.ie[i] = (float)i;
    mf.ie[7] = 4.0f;
    const float ue[NU] = { 1.0f, 1.0f, -1.0f, 1.0f, 1.0f, 0.0f, 1.0f };
    for (int32_t u = 0; u < NU; u++)
        mf.ue[u] = ue[u];
    /* The split has one user more than the model: user 7 is skipped. */
    const int32_t target[NU + 1] = { 5, 2, 2, 4, -1, 3, 3, 1 };
    const int32_t cands[(NU + 1) * NC] = {
        1, 2, 3, 4,    /* u0: all below 5: rank 0 */
        1, 3, 6, 9,    /* u1: 3, 6, 9 >= 2: rank 3 */
        1, 3, 6, 9,    /* u2: scores -1, -3, -6, -9 against -2: rank 1 */
        7, 1, 2, 3,    /* u3: item 7 ties with the target: rank 1 */
        0, 1, 2, 3,    /* u4: no target, skipped */
        1, 2, 6, 9,    /* u5: everything scores 0, all tie: rank 4 */
        50, 8, 0, 1,   /* u6: item 50 is outside the model and scores 0: rank 1 */
        0, 2, 3, 4,    /* u7: beyond the model's users */
    };
    loo_split_t split = { NU + 1, NC, target, cands };
    const int64_t ranks[] = { 0, 3, 1, 1, 4, 1 };
    double hr[3] = { 0 }, ndcg[3] = { 0 }, mrr[3] = { 0 };
    for (int q = 0; q < 6; q++)
        for (int k = 0; k < 3; k++) {
            double h, n, r;
            test_metrics__expect(ranks[q], metrics_k[k], &h, &n, &r);
            hr[k] += h / 6.0;
            ndcg[k] += n / 6.0;
            mrr[k] += r / 6.0;
        }
    for (int threads = 1; threads <= 2; threads++) {
        pool_t *pool = pool_new(threads);
        REQUIRE(pool);
        metrics_t m;
        memset(&m, 0xff, sizeof(m)); /* metrics_eval must fill all of it */
        REQUIRE(metrics_eval(&mf, &split, pool, &m) == 0);
        CHECK_EQ_INT(m.users, 6);
        for (int k = 0; k < 3; k++) {
            CHECK_NEAR(m.hr[k], hr[k], 1e-12);
            CHECK_NEAR(m.ndcg[k], ndcg[k], 1e-12);
            CHECK_NEAR(m.mrr[k], mrr[k], 1e-12);
        }
        /* Written out for @5: every rank is below 5. */
        CHECK_NEAR(m.hr[0], 1.0, 1e-12);
        double mrr5 = (1.0 + 1.0 / 4.0 + 1.0 / 2.0 + 1.0 / 2.0 + 1.0 / 5.0 + 1.0 / 2.0) / 6.0;
        CHECK_NEAR(m.mrr[0], mrr5, 1e-12);
        pool_free(pool);
    }
    mf_close(&mf);
}

/* User u's target is item u; every user's candidates are items nu ..
 * nu + nc - 1. */
static void metrics_test_shared_cands(int32_t nu, int32_t nc, int32_t *target, int32_t *cands)
{
    for (int32_t u = 0; u < nu; u++) {
        target[u] = u;
        for (int32_t k = 0; k < nc; k++)
            cands[u * nc + k] = nu + k;
    }
}

TEST(metrics_eval_untrained_model_is_worst)
{
    /* All-zero embeddings: every candidate ties with the target, so every
     * user gets rank n_cands, and with 99 candidates nothing is a hit. */
    enum { NU = 20, NI = 200, NC = 99 };
    mf_t mf;
    REQUIRE(mf_init(&mf, NU, NI, 4) == 0);
    int32_t target[NU], *cands = malloc(NU * NC * sizeof(int32_t));
    REQUIRE(cands);
    metrics_test_shared_cands(NU, NC, target, cands);
    loo_split_t split = { NU, NC, target, cands };
    pool_t *pool = pool_new(1);
    REQUIRE(pool);
    metrics_t m;
    REQUIRE(metrics_eval(&mf, &split, pool, &m) == 0);
    CHECK_EQ_INT(m.users, NU);
    for (int k = 0; k < 3; k++)
        CHECK(m.hr[k] == 0.0 && m.ndcg[k] == 0.0 && m.mrr[k] == 0.0);
    /* No users at all. */
    loo_split_t none = { 0, NC, target, cands };
    REQUIRE(metrics_eval(&mf, &none, pool, &m) == 0);
    CHECK_EQ_INT(m.users, 0);
    CHECK(m.hr[1] == 0.0);
    pool_free(pool);
    free(cands);
    mf_close(&mf);
}

/* A diverged model scores 0, never 1: NaN in the user's row (so the
 * target's score) or in every candidate's row ranks the target last, on
 * the direct path and through a plan. Before, NaN compared false with
 * everything and put every target first: HR 1. */
TEST(metrics_eval_nan_scores_are_worst)
{
    enum { NU = 6, NI = 60, NC = 20 };
    int32_t target[NU], cands[NU * NC];
    metrics_test_shared_cands(NU, NC, target, cands);
    loo_split_t split = { NU, NC, target, cands };
    pool_t *pool = pool_new(2);
    REQUIRE(pool);
    metrics_plan_t *plan = metrics_plan_new(&split);
    REQUIRE(plan);
    for (int variant = 0; variant < 3; variant++) {
        mf_t mf;
        REQUIRE(mf_init(&mf, NU, NI, 4) == 0);
        for (int64_t k = 0; k < (int64_t)(NU + NI) * 4; k++)
            mf.params[k] = 0.01f * (float)(k % 7);
        if (variant == 0) /* every user row NaN */
            for (int64_t k = 0; k < (int64_t)NU * 4; k++)
                mf.ue[k] = NAN;
        else if (variant == 1) /* every item row NaN */
            for (int64_t k = 0; k < (int64_t)NI * 4; k++)
                mf.ie[k] = NAN;
        else /* the candidates' rows only */
            for (int64_t k = (int64_t)NU * 4; k < (int64_t)NI * 4; k++)
                mf.ie[k] = NAN;
        metrics_t m, mp;
        REQUIRE(metrics_eval(&mf, &split, pool, &m) == 0);
        REQUIRE(metrics_eval_plan(&mf, &split, plan, pool, &mp) == 0);
        for (int k = 0; k < 3; k++)
            if (m.hr[k] != 0.0 || mp.hr[k] != 0.0 || m.ndcg[k] != 0.0 || mp.ndcg[k] != 0.0)
                test_fail(__FILE__, __LINE__, "variant %d, K index %d: HR %g / %g, NDCG %g / %g",
                          variant, k, m.hr[k], mp.hr[k], m.ndcg[k], mp.ndcg[k]);
        mf_close(&mf);
    }
    metrics_plan_free(plan);
    pool_free(pool);
}

TEST(metrics_eval_random_matches_direct_ranking)
{
    /* 600 users span several chunks; ranks computed here with the same
     * vec_dot, metrics averaged here, and one thread or three agree exactly. */
    enum { NU = 600, NI = 300, D = 3, NC = 30 };
    mf_t mf;
    REQUIRE(mf_init(&mf, NU, NI, D) == 0);
    mf_init_normal(&mf, 1.0f, 5);
    int32_t *target = malloc(NU * sizeof(int32_t));
    int32_t *cands = malloc(NU * NC * sizeof(int32_t));
    REQUIRE(target && cands);
    rng_t g;
    rng_init_stream(&g, 50, RNG_TEST, 0, 0);
    double hr[3] = { 0 }, ndcg[3] = { 0 }, mrr[3] = { 0 };
    int64_t users = 0;
    for (int32_t u = 0; u < NU; u++) {
        target[u] = u % 11 == 0 ? -1 : (int32_t)rng_below(&g, NI);
        for (int k = 0; k < NC; k++)
            cands[u * NC + k] = (int32_t)rng_below(&g, NI);
        if (target[u] < 0)
            continue;
        const float *pu = mf.ue + (int64_t)u * D;
        float st = vec_dot(pu, mf.ie + (int64_t)target[u] * D, D);
        int64_t rank = 0;
        for (int k = 0; k < NC; k++)
            rank += vec_dot(pu, mf.ie + (int64_t)cands[u * NC + k] * D, D) >= st;
        for (int k = 0; k < 3; k++) {
            double h, n, r;
            test_metrics__expect(rank, metrics_k[k], &h, &n, &r);
            hr[k] += h;
            ndcg[k] += n;
            mrr[k] += r;
        }
        users++;
    }
    loo_split_t split = { NU, NC, target, cands };
    metrics_t m1, m3;
    pool_t *p1 = pool_new(1), *p3 = pool_new(3);
    REQUIRE(p1 && p3);
    REQUIRE(metrics_eval(&mf, &split, p1, &m1) == 0);
    REQUIRE(metrics_eval(&mf, &split, p3, &m3) == 0);
    CHECK_EQ_INT(m1.users, users);
    for (int k = 0; k < 3; k++) {
        CHECK_NEAR(m1.hr[k], hr[k] / (double)users, 1e-9);
        CHECK_NEAR(m1.ndcg[k], ndcg[k] / (double)users, 1e-9);
        CHECK_NEAR(m1.mrr[k], mrr[k] / (double)users, 1e-9);
    }
    CHECK(memcmp(&m1, &m3, sizeof(m1)) == 0);
    /* A random model is near chance: HR@10 about 10 / 31. */
    CHECK(m1.hr[1] > 0.2 && m1.hr[1] < 0.45);
    pool_free(p1);
    pool_free(p3);
    free(target);
    free(cands);
    mf_close(&mf);
}

TEST(metrics_plan_matches_direct_evaluation)
{
    /* The plan regroups the pairs by item; every score and rank must stay
     * the same, bit for bit, for any dim (200: the teacher's; 13: a tail
     * that is not a multiple of 8), with skipped users, candidates outside
     * the model, and 1200 users: two full blocks and a partial one. Each
     * item has tens of pairs in a block, scored four at a time, and a
     * remainder. */
    enum { NU = 1200, NI = 400, NC = 37 };
    int32_t *target = malloc(NU * sizeof(int32_t));
    int32_t *cands = malloc(NU * NC * sizeof(int32_t));
    REQUIRE(target && cands);
    rng_t g;
    rng_init_stream(&g, 51, RNG_TEST, 0, 0);
    for (int32_t u = 0; u < NU; u++) {
        target[u] = u % 13 == 0 ? -1 : (int32_t)rng_below(&g, NI);
        for (int k = 0; k < NC; k++)
            cands[u * NC + k] = (int32_t)rng_below(&g, NI);
    }
    cands[5] = -3;        /* below 0: scores 0 */
    cands[NC * 300] = NI + 9; /* beyond the model's items */
    loo_split_t split = { NU, NC, target, cands };
    metrics_plan_t *plan = metrics_plan_new(&split);
    REQUIRE(plan);
    pool_t *p1 = pool_new(1), *p2 = pool_new(2);
    REQUIRE(p1 && p2);
    const int32_t dims[] = { 200, 20, 13, 1 };
    for (int q = 0; q < 4; q++) {
        mf_t mf;
        /* the model has fewer users than the split: the last 50 are skipped */
        REQUIRE(mf_init(&mf, NU - 50, NI, dims[q]) == 0);
        mf_init_normal(&mf, 1.0f, 7 + (uint64_t)q);
        if (dims[q] == 1)
            for (int32_t i = 0; i < NI; i++)
                mf.ie[i] = (float)(i % 5); /* many ties */
        metrics_t direct, planned1, planned2;
        REQUIRE(metrics_eval(&mf, &split, p1, &direct) == 0);
        REQUIRE(metrics_eval_plan(&mf, &split, plan, p1, &planned1) == 0);
        REQUIRE(metrics_eval_plan(&mf, &split, plan, p2, &planned2) == 0);
        CHECK(memcmp(&direct, &planned1, sizeof(direct)) == 0);
        CHECK(memcmp(&direct, &planned2, sizeof(direct)) == 0);
        CHECK(direct.users > 500 && direct.hr[2] > 0.0);
        mf_close(&mf);
    }
    /* The test split shares the candidates, so it shares the plan. */
    loo_split_t other = { NU, NC, target + 0, cands };
    mf_t mf;
    REQUIRE(mf_init(&mf, NU, NI, 4) == 0);
    metrics_t m;
    CHECK(metrics_eval_plan(&mf, &other, plan, p1, &m) == 0);
    /* A plan for other candidates is refused. */
    loo_split_t shorter = { NU, NC - 1, target, cands };
    CHECK(metrics_eval_plan(&mf, &shorter, plan, p1, &m) == -EINVAL);
    loo_split_t fewer = { NU - 1, NC, target, cands };
    CHECK(metrics_eval_plan(&mf, &fewer, plan, p1, &m) == -EINVAL);
    /* No plan: the direct path. */
    CHECK(metrics_eval_plan(&mf, &split, NULL, p1, &m) == 0);
    mf_close(&mf);
    metrics_plan_free(plan);
    metrics_plan_free(NULL);
    pool_free(p1);
    pool_free(p2);
    free(target);
    free(cands);
}

static metrics_t test_metrics__valid(double h5, double h10, double h20, double n10)
{
    metrics_t m;
    memset(&m, 0, sizeof(m));
    m.hr[0] = h5;
    m.hr[1] = h10;
    m.hr[2] = h20;
    m.ndcg[1] = n10;
    m.users = 100;
    return m;
}

TEST(metrics_select_hr_per_k_with_rounding)
{
    /* The authors' protocol: each K follows its own best valid HR@K,
     * compared after rounding to 4 places, strictly; any K improving resets
     * the patience count. */
    metrics_select_t s;
    metrics_select_init(&s, METRICS_SELECT_HR);
    CHECK_EQ_INT(s.last, -1);
    const struct {
        double h5, h10, h20;
        unsigned mask;
        int since;
    } steps[] = {
        { 0.10, 0.20, 0.30, 7, 0 },      /* e0: the first is best for all */
        { 0.12, 0.20, 0.30, 1, 0 },      /* e1: HR@5 only */
        { 0.11, 0.25, 0.30, 2, 0 },      /* e2: HR@10 only */
        { 0.12, 0.25, 0.30, 0, 1 },      /* e3: ties do not count */
        { 0.12004, 0.25, 0.29, 0, 2 },   /* e4: 0.12004 rounds to 0.1200 */
        { 0.12006, 0.25, 0.30, 1, 0 },   /* e5: 0.12006 rounds to 0.1201 */
        { 0.05, 0.10, 0.30004, 0, 1 },   /* e6: rounds to 0.3000 */
        { 0.05, 0.10, 0.31, 4, 0 },      /* e7: HR@20 only */
    };
    for (int e = 0; e < 8; e++) {
        metrics_t v = test_metrics__valid(steps[e].h5, steps[e].h10, steps[e].h20, 0.5 - e * 0.01);
        unsigned got = metrics_select_update(&s, &v, e);
        if (got != steps[e].mask)
            test_fail(__FILE__, __LINE__, "epoch %d: mask %u, want %u", e, got, steps[e].mask);
        CHECK_EQ_INT(s.since, steps[e].since);
    }
    CHECK_EQ_INT(s.best_epoch[0], 5);
    CHECK_EQ_INT(s.best_epoch[1], 2);
    CHECK_EQ_INT(s.best_epoch[2], 7);
    CHECK_EQ_INT(s.last, 7);
    /* Each K keeps the whole valid metrics of its epoch. */
    CHECK(s.valid[0].hr[0] == 0.12006 && s.valid[0].hr[1] == 0.25);
    CHECK(s.valid[1].hr[1] == 0.25 && s.valid[1].hr[0] == 0.11);
    CHECK(s.valid[2].hr[2] == 0.31);
}

TEST(metrics_select_ndcg10_moves_all_k_together)
{
    metrics_select_t s;
    metrics_select_init(&s, METRICS_SELECT_NDCG10);
    const double n10[] = { 0.30, 0.29, 0.300001, 0.300001, 0.2 };
    const unsigned want[] = { 7, 0, 7, 0, 0 };
    for (int e = 0; e < 5; e++) {
        /* HR@K rising every epoch does not matter under this rule. */
        metrics_t v = test_metrics__valid(0.1 + e * 0.01, 0.2 + e * 0.01, 0.3 + e * 0.01, n10[e]);
        unsigned got = metrics_select_update(&s, &v, e);
        if (got != want[e])
            test_fail(__FILE__, __LINE__, "epoch %d: mask %u, want %u", e, got, want[e]);
    }
    CHECK_EQ_INT(s.since, 2);
    CHECK_EQ_INT(s.last, 2);
    for (int k = 0; k < METRICS_NK; k++) {
        CHECK_EQ_INT(s.best_epoch[k], 2);
        CHECK(s.valid[k].ndcg[1] == 0.300001);
    }
}
