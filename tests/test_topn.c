/*
 * Tests of top-N selection (topn.h) against its full-sort reference, of
 * topn_users() against per-user scoring, and of gemm against gemm_naive.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/gemm.h"
#include "model/mf.h"
#include "model/pool.h"
#include "model/ratings.h"
#include "model/rng.h"
#include "model/topn.h"
#include "test.h"

/* Random sorted, unique exclusions: each item with probability share. */
static int32_t test_topn__excl(rng_t *g, int32_t n_items, float share, int32_t *excl)
{
    int32_t n = 0;
    for (int32_t i = 0; i < n_items; i++)
        if (rng_float(g) < share)
            excl[n++] = i;
    return n;
}

/* Runs topn_select and topn_select_naive on the same input and compares
 * the lists; returns the count topn_select gave. */
static int32_t test_topn__compare(const float *scores, int32_t n_items, const int32_t *excl,
                                  int32_t n_excl, int32_t n, const char *what)
{
    float *work = malloc((size_t)n_items * sizeof(float));
    int32_t *fast = malloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t));
    int32_t *slow = malloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t));
    if (!work || !fast || !slow) {
        test_fail(__FILE__, __LINE__, "out of memory");
        free(work);
        free(fast);
        free(slow);
        return -1;
    }
    memcpy(work, scores, (size_t)n_items * sizeof(float));
    int32_t got = topn_select(work, n_items, excl, n_excl, n, fast);
    int32_t want = topn_select_naive(scores, n_items, excl, n_excl, n, slow);
    if (got != want) {
        test_fail(__FILE__, __LINE__, "%s: n_items %d n %d: %d items, naive %d", what,
                  n_items, n, got, want);
    } else {
        for (int32_t k = 0; k < got; k++)
            if (fast[k] != slow[k]) {
                test_fail(__FILE__, __LINE__, "%s: n_items %d n %d: [%d] = %d, naive %d",
                          what, n_items, n, k, fast[k], slow[k]);
                break;
            }
    }
    /* The reference itself: descending, ties by ascending id, no exclusions. */
    for (int32_t k = 0; k < want; k++) {
        int32_t i = slow[k];
        for (int32_t x = 0; x < n_excl; x++)
            if (excl[x] == i)
                test_fail(__FILE__, __LINE__, "%s: excluded item %d returned", what, i);
        if (k > 0) {
            float a = scores[slow[k - 1]], b = scores[i];
            if (!(a > b || (a == b && slow[k - 1] < i)))
                test_fail(__FILE__, __LINE__, "%s: naive order broken at %d", what, k);
        }
    }
    free(work);
    free(fast);
    free(slow);
    return got;
}

TEST(topn_select_matches_naive)
{
    rng_t g;
    rng_init_stream(&g, 1, RNG_TEST, 0, 0);
    const int32_t sizes[] = { 5000, 300 };
    const int32_t ns[] = { 500, 50, 1 };
    float *scores = malloc(5000 * sizeof(float));
    int32_t *excl = malloc(5000 * sizeof(int32_t));
    REQUIRE(scores && excl);
    for (int si = 0; si < 2; si++)
        for (int ni = 0; ni < 3; ni++)
            for (int rep = 0; rep < 6; rep++) {
                int32_t n_items = sizes[si], n = ns[ni];
                /* rep 0-1 continuous, 2-3 quantised to 16 levels (ties),
                 * 4 all equal, 5 increasing with the id. */
                for (int32_t i = 0; i < n_items; i++) {
                    float x = rng_normal(&g);
                    if (rep == 2 || rep == 3)
                        x = floorf(x * 4.0f) / 4.0f;
                    else if (rep == 4)
                        x = 0.5f;
                    else if (rep == 5)
                        x = (float)i * 1e-3f;
                    scores[i] = x;
                }
                int32_t n_excl = test_topn__excl(&g, n_items, rep % 2 ? 0.3f : 0.02f, excl);
                int32_t got = test_topn__compare(scores, n_items, excl, n_excl, n, "random");
                CHECK_EQ_INT(got, n < n_items - n_excl ? n : n_items - n_excl);
            }
    free(scores);
    free(excl);
}

TEST(topn_select_fewer_items_than_n)
{
    rng_t g;
    rng_init_stream(&g, 2, RNG_TEST, 0, 0);
    float scores[600];
    int32_t excl[600];
    for (int32_t i = 0; i < 600; i++)
        scores[i] = rng_normal(&g);
    /* 600 items, 560 excluded, n = 100: the 40 left, all of them. */
    int32_t n_excl = 0;
    for (int32_t i = 0; i < 600; i++)
        if (i % 15 != 0)
            excl[n_excl++] = i;
    CHECK_EQ_INT(test_topn__compare(scores, 600, excl, n_excl, 100, "few"), 40);
    /* Exactly n available. */
    CHECK_EQ_INT(test_topn__compare(scores, 600, excl, n_excl, 40, "exact"), 40);
    /* Everything excluded. */
    for (int32_t i = 0; i < 600; i++)
        excl[i] = i;
    CHECK_EQ_INT(test_topn__compare(scores, 600, excl, 600, 10, "none"), 0);
    /* No exclusions, n = all items. */
    CHECK_EQ_INT(test_topn__compare(scores, 600, NULL, 0, 600, "all"), 600);
    /* n = 0 asks for nothing. */
    int32_t out[1] = { -7 };
    float copy[600];
    memcpy(copy, scores, sizeof(copy));
    CHECK_EQ_INT(topn_select(copy, 600, NULL, 0, 0, out), 0);
    CHECK_EQ_INT(out[0], -7);
}

TEST(topn_select_large_threshold_path)
{
    /* Large inputs where n is small against the items, so the sampled
     * threshold decides; also a case built so that the stride sample sees
     * only low scores (high scores sit off the stride-8 grid). */
    rng_t g;
    rng_init_stream(&g, 3, RNG_TEST, 0, 0);
    enum { NI = 12000 };
    float *scores = malloc(NI * sizeof(float));
    int32_t *excl = malloc(NI * sizeof(int32_t));
    REQUIRE(scores && excl);
    for (int rep = 0; rep < 3; rep++) {
        for (int32_t i = 0; i < NI; i++) {
            scores[i] = rng_normal(&g);
            if (rep == 1)
                scores[i] = i % 8 == 0 ? -10.0f + scores[i] : scores[i];
            if (rep == 2)
                scores[i] = i % 8 == 0 ? 10.0f + scores[i] : floorf(scores[i]);
        }
        int32_t n_excl = test_topn__excl(&g, NI, 0.02f, excl);
        const int32_t ns[] = { 1, 7, 100, 999, 5000 };
        for (int q = 0; q < 5; q++)
            test_topn__compare(scores, NI, excl, n_excl, ns[q], "large");
    }
    free(scores);
    free(excl);
}

/* Random user-item data for topn_users; returns 0 or -1. */
static int test_topn__data(mf_t *mf, ratings_t *r, int32_t nu, int32_t ni, int32_t d,
                           bool integer, uint64_t seed)
{
    if (mf_init(mf, nu, ni, d) < 0)
        return -1;
    rng_t g;
    rng_init_stream(&g, seed, RNG_TEST, 1, 0);
    int64_t np = (int64_t)(nu + ni) * d;
    for (int64_t k = 0; k < np; k++)
        /* Small integers make every dot product exact whatever the
         * summation order, and bring many ties. */
        mf->params[k] = integer ? (float)((int)rng_below(&g, 5) - 2) : rng_normal(&g);
    int64_t cap = (int64_t)nu * 40 + ni;
    int32_t *us = malloc((size_t)cap * sizeof(int32_t));
    int32_t *is = malloc((size_t)cap * sizeof(int32_t));
    if (!us || !is) {
        free(us);
        free(is);
        return -1;
    }
    int64_t n = 0;
    for (int32_t u = 0; u < nu; u++) {
        /* user 3 has nearly everything: fewer than n items remain */
        int32_t cnt = u == 3 ? ni - 5 : (int32_t)rng_below(&g, 40);
        for (int32_t k = 0; k < cnt; k++) {
            us[n] = u;
            is[n] = u == 3 ? k : (int32_t)rng_below(&g, (uint32_t)ni);
            n++;
        }
    }
    int rc = ratings_init(r, nu, ni, us, is, n);
    free(us);
    free(is);
    return rc < 0 ? -1 : 0;
}

/* Checks topn_users' rows against scoring each user and the naive select.
 * With integer embeddings the lists must be equal; with float ones,
 * sgemm and vec_dot round differently, so positions may swap between
 * near-equal scores: the scores at each position must agree instead. */
static void test_topn__check_users(const mf_t *mf, const ratings_t *r, const int32_t *list,
                                   int32_t n_list, int32_t n, const int32_t *out, bool exact)
{
    float *sc = malloc((size_t)mf->n_items * sizeof(float));
    int32_t *want = malloc((size_t)n * sizeof(int32_t));
    if (!sc || !want) {
        test_fail(__FILE__, __LINE__, "out of memory");
        free(sc);
        free(want);
        return;
    }
    int bad = 0;
    for (int32_t k = 0; k < n_list && bad < 5; k++) {
        int32_t u = list ? list[k] : k;
        const float *pu = mf->ue + (int64_t)u * mf->dim;
        for (int32_t i = 0; i < mf->n_items; i++)
            sc[i] = vec_dot(pu, mf->ie + (int64_t)i * mf->dim, mf->dim);
        int32_t got = topn_select_naive(sc, mf->n_items, ratings_items(r, u),
                                        ratings_count(r, u), n, want);
        const int32_t *o = out + (int64_t)k * n;
        for (int32_t x = 0; x < n; x++) {
            if (x >= got) {
                if (o[x] != -1) {
                    test_fail(__FILE__, __LINE__, "user %d [%d]: %d, want padding", u, x, o[x]);
                    bad++;
                }
                continue;
            }
            if (o[x] < 0 || o[x] >= mf->n_items || ratings_has(r, u, o[x])) {
                test_fail(__FILE__, __LINE__, "user %d [%d]: bad item %d", u, x, o[x]);
                bad++;
                break;
            }
            bool ok = exact ? o[x] == want[x] : fabsf(sc[o[x]] - sc[want[x]]) <= 1e-4f;
            if (!ok) {
                test_fail(__FILE__, __LINE__, "user %d [%d]: item %d (%g), naive %d (%g)", u,
                          x, o[x], sc[o[x]], want[x], sc[want[x]]);
                bad++;
                break;
            }
        }
    }
    free(sc);
    free(want);
}

TEST(topn_users_matches_naive)
{
    gemm_setup();
    pool_t *pool = pool_new(2);
    REQUIRE(pool);
    /* 150 users span three 64-user blocks; 700 items take the threshold
     * path for small n. */
    enum { NU = 150, NI = 700, D = 6 };
    for (int variant = 0; variant < 2; variant++) {
        bool integer = variant == 0;
        mf_t mf;
        ratings_t r;
        REQUIRE(test_topn__data(&mf, &r, NU, NI, D, integer, 10 + (uint64_t)variant) == 0);
        const int32_t ns[] = { 1, 40, 120 };
        for (int q = 0; q < 3; q++) {
            int32_t n = ns[q];
            int32_t *out = malloc((size_t)NU * n * sizeof(int32_t));
            REQUIRE(out);
            REQUIRE(topn_users(&mf, &r, NULL, NU, n, pool, out) == 0);
            test_topn__check_users(&mf, &r, NULL, NU, n, out, integer);
            /* user 3 has 5 unobserved items left */
            if (n > 5)
                CHECK_EQ_INT(out[3 * n + 5], -1);
            /* A list: some users, out of order, one twice. */
            int32_t list[70];
            rng_t g;
            rng_init_stream(&g, 20, RNG_TEST, (uint64_t)q, (uint64_t)variant);
            for (int k = 0; k < 70; k++)
                list[k] = (int32_t)rng_below(&g, NU);
            list[69] = list[0];
            list[1] = 3;
            REQUIRE(topn_users(&mf, &r, list, 70, n, pool, out) == 0);
            test_topn__check_users(&mf, &r, list, 70, n, out, integer);
            CHECK(memcmp(out, out + 69 * n, (size_t)n * sizeof(int32_t)) == 0);
            free(out);
        }
        ratings_close(&r);
        mf_close(&mf);
    }
    pool_free(pool);
}

TEST(topn_users_thread_count_invariant)
{
    gemm_setup();
    enum { NU = 200, NI = 900, D = 8, N = 50 };
    mf_t mf;
    ratings_t r;
    REQUIRE(test_topn__data(&mf, &r, NU, NI, D, false, 30) == 0);
    int32_t *a = malloc((size_t)NU * N * sizeof(int32_t));
    int32_t *b = malloc((size_t)NU * N * sizeof(int32_t));
    REQUIRE(a && b);
    pool_t *p1 = pool_new(1), *p3 = pool_new(3);
    REQUIRE(p1 && p3);
    REQUIRE(topn_users(&mf, &r, NULL, NU, N, p1, a) == 0);
    REQUIRE(topn_users(&mf, &r, NULL, NU, N, p3, b) == 0);
    CHECK(memcmp(a, b, (size_t)NU * N * sizeof(int32_t)) == 0);
    pool_free(p1);
    pool_free(p3);
    free(a);
    free(b);
    ratings_close(&r);
    mf_close(&mf);
}

/* ---- gemm ---------------------------------------------------------------- */

TEST(gemm_matches_naive)
{
    gemm_setup();
    rng_t g;
    rng_init_stream(&g, 40, RNG_TEST, 0, 0);
    const int dims[][3] = { { 7, 13, 5 }, { 33, 17, 29 }, { 1, 9, 1 }, { 65, 3, 130 } };
    const float betas[] = { 0.0f, 0.5f };
    for (int q = 0; q < 4; q++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int bi = 0; bi < 2; bi++) {
                    int m = dims[q][0], n = dims[q][1], k = dims[q][2];
                    /* Leading dimensions with padding; the pad must survive. */
                    int ar = ta ? k : m, ac = ta ? m : k;
                    int br = tb ? n : k, bc = tb ? k : n;
                    int lda = ac + 3, ldb = bc + 1, ldc = n + 2;
                    float *a = malloc((size_t)ar * lda * sizeof(float));
                    float *b = malloc((size_t)br * ldb * sizeof(float));
                    float *c1 = malloc((size_t)m * ldc * sizeof(float));
                    float *c2 = malloc((size_t)m * ldc * sizeof(float));
                    REQUIRE(a && b && c1 && c2);
                    for (int x = 0; x < ar * lda; x++)
                        a[x] = rng_normal(&g);
                    for (int x = 0; x < br * ldb; x++)
                        b[x] = rng_normal(&g);
                    for (int x = 0; x < m * ldc; x++)
                        c1[x] = c2[x] = rng_normal(&g);
                    /* NaN in C must not leak through beta = 0. */
                    if (betas[bi] == 0.0f)
                        c1[0] = c2[0] = NAN;
                    gemm(ta, tb, m, n, k, 0.7f, a, lda, b, ldb, betas[bi], c1, ldc);
                    gemm_naive(ta, tb, m, n, k, 0.7f, a, lda, b, ldb, betas[bi], c2, ldc);
                    int bad = 0;
                    for (int i = 0; i < m; i++)
                        for (int j = 0; j < ldc; j++) {
                            float x = c1[i * ldc + j], y = c2[i * ldc + j];
                            if (j >= n)
                                bad += memcmp(&x, &y, sizeof(float)) != 0;
                            else
                                bad += !(fabsf(x - y) <= 1e-5f * (float)k + 1e-5f * fabsf(y));
                        }
                    if (bad)
                        test_fail(__FILE__, __LINE__, "gemm %dx%dx%d ta %d tb %d beta %g: %d bad",
                                  m, n, k, ta, tb, (double)betas[bi], bad);
                    free(a);
                    free(b);
                    free(c1);
                    free(c2);
                }
}

TEST(gemm_naive_golden)
{
    /* [1 2; 3 4] x [5 6; 7 8] = [19 22; 43 50], and the transposes. */
    const float a[4] = { 1, 2, 3, 4 }, b[4] = { 5, 6, 7, 8 };
    float c[4];
    gemm_naive(false, false, 2, 2, 2, 1.0f, a, 2, b, 2, 0.0f, c, 2);
    CHECK(c[0] == 19 && c[1] == 22 && c[2] == 43 && c[3] == 50);
    gemm_naive(true, false, 2, 2, 2, 1.0f, a, 2, b, 2, 0.0f, c, 2); /* A^T B */
    CHECK(c[0] == 26 && c[1] == 30 && c[2] == 38 && c[3] == 44);
    gemm_naive(false, true, 2, 2, 2, 1.0f, a, 2, b, 2, 0.0f, c, 2); /* A B^T */
    CHECK(c[0] == 17 && c[1] == 23 && c[2] == 39 && c[3] == 53);
    c[0] = 1.0f;
    gemm_naive(true, true, 2, 2, 2, 2.0f, a, 2, b, 2, 1.0f, c, 2); /* 2 A^T B^T + C */
    CHECK(c[0] == 2 * 23 + 1 && c[3] == 2 * 46 + 53);
    gemm_setup();
    gemm(true, true, 2, 2, 2, 1.0f, a, 2, b, 2, 0.0f, c, 2);
    CHECK(c[0] == 23 && c[1] == 31 && c[2] == 34 && c[3] == 46);
}
