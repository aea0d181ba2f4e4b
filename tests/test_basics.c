/*
 * Tests of the small building blocks: rng, ratings, pool, and the RRD
 * samplers.
 */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/pool.h"
#include "model/ratings.h"
#include "model/rng.h"
#include "model/rrd.h"
#include "test.h"

/* ---- rng ----------------------------------------------------------------- */

TEST(rng_same_seed_same_stream)
{
    rng_t a, b, c;
    rng_init(&a, 42);
    rng_init(&b, 42);
    rng_init(&c, 43);
    int diff_c = 0;
    for (int k = 0; k < 1000; k++) {
        uint64_t x = rng_next(&a), y = rng_next(&b), z = rng_next(&c);
        CHECK(x == y);
        diff_c += x != z;
    }
    CHECK(diff_c > 990);
}

TEST(rng_streams_differ)
{
    /* Nearby (purpose, a, b) must give unrelated streams, and the same
     * tuple the same stream. */
    enum { NS = 6, NDRAW = 64 };
    uint64_t draws[NS][NDRAW];
    const uint64_t keys[NS][4] = {
        { 7, RNG_TEST, 0, 0 }, { 7, RNG_TEST, 1, 0 }, { 7, RNG_TEST, 0, 1 },
        { 7, RNG_INIT, 0, 0 }, { 8, RNG_TEST, 0, 0 }, { 7, RNG_TEST, 1, 1 },
    };
    for (int s = 0; s < NS; s++) {
        rng_t r;
        rng_init_stream(&r, keys[s][0], keys[s][1], keys[s][2], keys[s][3]);
        for (int k = 0; k < NDRAW; k++)
            draws[s][k] = rng_next(&r);
    }
    for (int s = 0; s < NS; s++)
        for (int t = s + 1; t < NS; t++) {
            int same = 0;
            for (int k = 0; k < NDRAW; k++)
                same += draws[s][k] == draws[t][k];
            CHECK_EQ_INT(same, 0);
        }
    rng_t again;
    rng_init_stream(&again, 7, RNG_TEST, 1, 0);
    for (int k = 0; k < NDRAW; k++)
        CHECK(rng_next(&again) == draws[1][k]);
}

TEST(rng_below_in_range_and_uniform)
{
    rng_t r;
    rng_init_stream(&r, 1, RNG_TEST, 0, 0);
    const uint32_t ns[] = { 1, 2, 3, 7, 1000, 4294967295u };
    for (size_t q = 0; q < sizeof(ns) / sizeof(ns[0]); q++)
        for (int k = 0; k < 20000; k++) {
            uint32_t x = rng_below(&r, ns[q]);
            if (x >= ns[q]) {
                CHECK(x < ns[q]);
                break;
            }
        }
    /* Counts in 10 buckets: each near 10%, a chi-square-ish bound. */
    int count[10] = { 0 };
    const int n = 100000;
    for (int k = 0; k < n; k++)
        count[rng_below(&r, 10)]++;
    for (int b = 0; b < 10; b++)
        CHECK_NEAR(count[b], n / 10, 600); /* sd is about 95 */
    /* rng_float stays in [0, 1) and has mean 1/2. */
    double sum = 0.0;
    for (int k = 0; k < n; k++) {
        float f = rng_float(&r);
        CHECK(f >= 0.0f && f < 1.0f);
        sum += f;
    }
    CHECK_NEAR(sum / n, 0.5, 0.005);
}

TEST(rng_normal_moments)
{
    rng_t r;
    rng_init_stream(&r, 2, RNG_TEST, 0, 0);
    const int n = 200000;
    double s1 = 0.0, s2 = 0.0;
    for (int k = 0; k < n; k++) {
        double x = rng_normal(&r);
        CHECK(isfinite(x));
        s1 += x;
        s2 += x * x;
    }
    double mean = s1 / n, var = s2 / n - mean * mean;
    CHECK_NEAR(mean, 0.0, 0.01);
    CHECK_NEAR(var, 1.0, 0.02);
}

TEST(rng_gumbel_moments)
{
    rng_t r;
    rng_init_stream(&r, 3, RNG_TEST, 0, 0);
    enum { N = 200000 };
    float *g = malloc(N * sizeof(float));
    REQUIRE(g);
    rng_gumbel_fill(&r, g, N);
    double s1 = 0.0, s2 = 0.0;
    int finite = 1;
    for (int k = 0; k < N; k++) {
        finite &= isfinite(g[k]) != 0;
        s1 += g[k];
        s2 += (double)g[k] * g[k];
    }
    CHECK(finite);
    double mean = s1 / N, var = s2 / N - mean * mean;
    /* Euler-Mascheroni and pi^2/6; the sd of the mean is 0.003 here. */
    CHECK_NEAR(mean, 0.5772156649, 0.02);
    CHECK_NEAR(var, 1.6449340668, 0.05);
    /* The CDF exp(-exp(-x)) at a few points. */
    const double xs[] = { -1.0, 0.0, 1.0, 3.0 };
    for (int q = 0; q < 4; q++) {
        int below = 0;
        for (int k = 0; k < N; k++)
            below += g[k] <= xs[q];
        CHECK_NEAR((double)below / N, exp(-exp(-xs[q])), 0.005);
    }
    free(g);
}

TEST(rng_shuffle_is_permutation)
{
    rng_t r;
    rng_init_stream(&r, 4, RNG_TEST, 0, 0);
    const int64_t sizes[] = { 0, 1, 2, 17, 1000 };
    for (size_t q = 0; q < sizeof(sizes) / sizeof(sizes[0]); q++) {
        int64_t n = sizes[q];
        int32_t *v = malloc((size_t)(n + 1) * sizeof(int32_t));
        uint8_t *seen = calloc((size_t)(n + 1), 1);
        REQUIRE(v && seen);
        for (int64_t k = 0; k < n; k++)
            v[k] = (int32_t)k;
        rng_shuffle_i32(&r, v, n);
        int64_t moved = 0;
        for (int64_t k = 0; k < n; k++) {
            REQUIRE(v[k] >= 0 && v[k] < n);
            CHECK(!seen[v[k]]);
            seen[v[k]] = 1;
            moved += v[k] != k;
        }
        if (n == 1000)
            CHECK(moved > 900);
        free(v);
        free(seen);
    }
    /* Every position is equally likely for element 0 of a 5-vector. */
    int pos[5] = { 0 };
    for (int t = 0; t < 50000; t++) {
        int32_t v[5] = { 0, 1, 2, 3, 4 };
        rng_shuffle_i32(&r, v, 5);
        for (int k = 0; k < 5; k++)
            if (v[k] == 0)
                pos[k]++;
    }
    for (int k = 0; k < 5; k++)
        CHECK_NEAR(pos[k], 10000, 500);
}

/* ---- ratings ------------------------------------------------------------- */

TEST(ratings_dedup_sort_and_lookup)
{
    const int32_t users[] = { 2, 0, 2, 0, 2, 2, 0, 3 };
    const int32_t items[] = { 5, 1, 0, 1, 3, 5, 4, 5 };
    ratings_t r;
    REQUIRE(ratings_init(&r, 4, 6, users, items, 8) == 0);
    CHECK_EQ_INT(r.n_users, 4);
    CHECK_EQ_INT(r.n_items, 6);
    CHECK_EQ_INT(r.nnz, 6);
    CHECK_EQ_INT(ratings_count(&r, 0), 2);
    CHECK_EQ_INT(ratings_count(&r, 1), 0);
    CHECK_EQ_INT(ratings_count(&r, 2), 3);
    CHECK_EQ_INT(ratings_count(&r, 3), 1);
    const int32_t want0[] = { 1, 4 }, want2[] = { 0, 3, 5 };
    for (int k = 0; k < 2; k++)
        CHECK_EQ_INT(ratings_items(&r, 0)[k], want0[k]);
    for (int k = 0; k < 3; k++)
        CHECK_EQ_INT(ratings_items(&r, 2)[k], want2[k]);
    CHECK_EQ_INT(ratings_items(&r, 3)[0], 5);
    CHECK_EQ_INT(r.row[4], 6);
    for (int32_t u = 0; u < 4; u++)
        for (int32_t i = 0; i < 6; i++) {
            bool want = false;
            for (int k = 0; k < 8; k++)
                want |= users[k] == u && items[k] == i;
            CHECK(ratings_has(&r, u, i) == want);
        }

    ratings_t t;
    REQUIRE(ratings_init_transpose(&t, &r) == 0);
    CHECK_EQ_INT(t.n_users, 6);
    CHECK_EQ_INT(t.n_items, 4);
    CHECK_EQ_INT(t.nnz, 6);
    for (int32_t i = 0; i < 6; i++) {
        const int32_t *v = ratings_items(&t, i);
        for (int32_t k = 1; k < ratings_count(&t, i); k++)
            CHECK(v[k - 1] < v[k]);
        for (int32_t u = 0; u < 4; u++)
            CHECK(ratings_has(&t, i, u) == ratings_has(&r, u, i));
    }
    CHECK_EQ_INT(ratings_count(&t, 5), 2);
    CHECK_EQ_INT(ratings_count(&t, 2), 0);
    ratings_close(&t);
    ratings_close(&r);
}

TEST(ratings_random_matches_bitmap)
{
    enum { NU = 50, NI = 70, N = 1500 };
    int32_t users[N], items[N];
    uint8_t dense[NU][NI];
    memset(dense, 0, sizeof(dense));
    rng_t g;
    rng_init_stream(&g, 5, RNG_TEST, 0, 0);
    for (int k = 0; k < N; k++) {
        users[k] = (int32_t)rng_below(&g, NU);
        items[k] = (int32_t)rng_below(&g, NI / 2) * 2; /* duplicates likely */
        dense[users[k]][items[k]] = 1;
    }
    ratings_t r;
    REQUIRE(ratings_init(&r, NU, NI, users, items, N) == 0);
    int64_t nnz = 0;
    for (int u = 0; u < NU; u++) {
        int32_t cnt = 0;
        for (int i = 0; i < NI; i++) {
            CHECK(ratings_has(&r, u, i) == (dense[u][i] != 0));
            cnt += dense[u][i];
        }
        CHECK_EQ_INT(ratings_count(&r, u), cnt);
        nnz += cnt;
        for (int32_t k = 1; k < ratings_count(&r, u); k++)
            CHECK(ratings_items(&r, u)[k - 1] < ratings_items(&r, u)[k]);
    }
    CHECK_EQ_INT(r.nnz, nnz);
    CHECK(nnz < N);
    ratings_close(&r);
}

TEST(ratings_rejects_bad_ids)
{
    ratings_t r;
    const int32_t ok_u[] = { 0, 1 }, ok_i[] = { 0, 2 };
    const int32_t bad_u1[] = { 0, 2 }, bad_u2[] = { -1, 0 };
    const int32_t bad_i1[] = { 0, 3 }, bad_i2[] = { 0, -5 };
    CHECK_EQ_INT(ratings_init(&r, 2, 3, bad_u1, ok_i, 2), -EINVAL);
    ratings_close(&r); /* must be safe after an error */
    CHECK_EQ_INT(ratings_init(&r, 2, 3, bad_u2, ok_i, 2), -EINVAL);
    ratings_close(&r);
    CHECK_EQ_INT(ratings_init(&r, 2, 3, ok_u, bad_i1, 2), -EINVAL);
    ratings_close(&r);
    CHECK_EQ_INT(ratings_init(&r, 2, 3, ok_u, bad_i2, 2), -EINVAL);
    ratings_close(&r);
    CHECK_EQ_INT(ratings_init(&r, 2, 3, ok_u, ok_i, -1), -EINVAL);
    ratings_close(&r);
    /* Empty is fine. */
    REQUIRE(ratings_init(&r, 2, 3, ok_u, ok_i, 0) == 0);
    CHECK_EQ_INT(r.nnz, 0);
    CHECK(!ratings_has(&r, 1, 2));
    ratings_close(&r);
}

/* ---- pool ---------------------------------------------------------------- */

typedef struct {
    atomic_int *hits;
    atomic_int bad_worker;
    int nthreads;
} test_basics__pool_ctx_t;

static void test_basics__pool_task(void *ctx, int task, int worker)
{
    test_basics__pool_ctx_t *c = ctx;
    if (worker < 0 || worker >= c->nthreads)
        atomic_fetch_add(&c->bad_worker, 1);
    atomic_fetch_add(&c->hits[task], 1);
}

TEST(pool_runs_each_task_once)
{
    const int threads[] = { 1, 2, 4 };
    const int ntasks[] = { 0, 1, 3, 1000 };
    atomic_int *hits = malloc(1000 * sizeof(atomic_int));
    REQUIRE(hits);
    for (int q = 0; q < 3; q++) {
        pool_t *pool = pool_new(threads[q]);
        REQUIRE(pool);
        CHECK_EQ_INT(pool_threads(pool), threads[q]);
        /* Many jobs in a row: a worker left over from one job must not
         * run tasks of the next twice. */
        for (int rep = 0; rep < 50; rep++)
            for (int t = 0; t < 4; t++) {
                for (int k = 0; k < 1000; k++)
                    atomic_init(&hits[k], 0);
                test_basics__pool_ctx_t c = { hits, 0, threads[q] };
                pool_run(pool, ntasks[t], test_basics__pool_task, &c);
                int wrong = 0;
                for (int k = 0; k < 1000; k++)
                    wrong += atomic_load(&hits[k]) != (k < ntasks[t] ? 1 : 0);
                CHECK_EQ_INT(wrong, 0);
                CHECK_EQ_INT(atomic_load(&c.bad_worker), 0);
            }
        pool_free(pool);
    }
    CHECK_EQ_INT(pool_threads(NULL), 1);
    pool_free(NULL);
    pool_t *p0 = pool_new(0);
    REQUIRE(p0);
    CHECK_EQ_INT(pool_threads(p0), 1);
    pool_free(p0);
    free(hits);
}

/* ---- RRD samplers -------------------------------------------------------- */

TEST(rrd_sample_interesting_order_and_weights)
{
    enum { NTOP = 60, K = 5, DRAWS = 40000 };
    int32_t top[NTOP];
    for (int r = 0; r < NTOP; r++)
        top[r] = 1000 + 7 * r; /* item ids that reveal the rank */
    float sf[NTOP];
    int32_t si[NTOP], out[NTOP];
    rng_t g;
    rng_init_stream(&g, 6, RNG_TEST, 0, 0);
    static int freq[NTOP];
    memset(freq, 0, sizeof(freq));
    int bad = 0;
    for (int d = 0; d < DRAWS; d++) {
        int32_t got = rrd_sample_interesting(&g, top, NTOP, K, 10.0f, sf, si, out);
        if (got != K) {
            bad++;
            continue;
        }
        for (int k = 0; k < K; k++) {
            int32_t rank = (out[k] - 1000) / 7;
            if (rank < 0 || rank >= NTOP || top[rank] != out[k]) {
                bad++;
                break;
            }
            if (k > 0 && out[k] <= out[k - 1]) /* ascending rank, distinct */
                bad++;
            freq[rank]++;
        }
    }
    CHECK_EQ_INT(bad, 0);
    /* exp(-r/10): rank 0 is picked far more often than rank 30. */
    CHECK(freq[0] > 3 * freq[30]);
    CHECK(freq[0] > DRAWS / 5);
    for (int r = 0; r + 10 < NTOP; r += 10)
        CHECK(freq[r] > freq[r + 10]);

    /* With K = 1 the draw is categorical with p(r) ~ exp(-r / temp). */
    const float temp = 4.0f;
    memset(freq, 0, sizeof(freq));
    double z = 0.0;
    for (int r = 0; r < NTOP; r++)
        z += exp(-r / (double)temp);
    for (int d = 0; d < DRAWS; d++) {
        REQUIRE(rrd_sample_interesting(&g, top, NTOP, 1, temp, sf, si, out) == 1);
        freq[(out[0] - 1000) / 7]++;
    }
    for (int r = 0; r < 8; r++) {
        double p = exp(-r / (double)temp) / z;
        double sd = sqrt(p * (1.0 - p) / DRAWS);
        CHECK_NEAR((double)freq[r] / DRAWS, p, 5.0 * sd + 1e-3);
    }
}

TEST(rrd_sample_interesting_short_lists)
{
    /* A list padded with -1, and K at least the list: all of it in order. */
    const int32_t top[8] = { 9, 4, 7, 2, -1, -1, -1, -1 };
    float sf[8];
    int32_t si[8], out[8];
    rng_t g;
    rng_init_stream(&g, 7, RNG_TEST, 0, 0);
    int32_t got = rrd_sample_interesting(&g, top, 8, 6, 10.0f, sf, si, out);
    REQUIRE(got == 4);
    for (int k = 0; k < 4; k++)
        CHECK_EQ_INT(out[k], top[k]);
    /* K smaller than the valid part: only valid entries, distinct, in order. */
    for (int d = 0; d < 200; d++) {
        got = rrd_sample_interesting(&g, top, 8, 3, 1.0f, sf, si, out);
        REQUIRE(got == 3);
        int pos_prev = -1;
        for (int k = 0; k < 3; k++) {
            int pos = -1;
            for (int r = 0; r < 4; r++)
                if (top[r] == out[k])
                    pos = r;
            CHECK(pos > pos_prev);
            pos_prev = pos;
        }
    }
}

TEST(rrd_sample_uninteresting_respects_taken)
{
    enum { NT = 300 };
    uint64_t taken[(NT + 63) / 64];
    rng_t g;
    rng_init_stream(&g, 8, RNG_TEST, 0, 0);
    int32_t out[NT];
    const int32_t Ls[] = { 1, 10, 40 };
    /* Sparse, then dense taken sets (the dense one forces the scan path). */
    const int dens[] = { 10, 90, 99 };
    for (int q = 0; q < 3; q++)
        for (int rep = 0; rep < 100; rep++) {
            memset(taken, 0, sizeof(taken));
            uint8_t was[NT];
            int64_t n_taken = 0;
            for (int x = 0; x < NT; x++) {
                was[x] = (int)rng_below(&g, 100) < dens[q];
                if (was[x]) {
                    taken[x >> 6] |= 1ULL << (x & 63);
                    n_taken++;
                }
            }
            int32_t L = Ls[rep % 3];
            int64_t free_n = NT - n_taken;
            int32_t got = rrd_sample_uninteresting(&g, NT, taken, n_taken, L, out);
            CHECK_EQ_INT(got, free_n < L ? free_n : L);
            uint8_t dup[NT];
            memset(dup, 0, sizeof(dup));
            for (int k = 0; k < got; k++) {
                REQUIRE(out[k] >= 0 && out[k] < NT);
                CHECK(!was[out[k]]);
                CHECK(!dup[out[k]]);
                dup[out[k]] = 1;
                /* its bit is set now */
                CHECK(taken[out[k] >> 6] & (1ULL << (out[k] & 63)));
            }
        }
    /* Roughly uniform over the free targets. */
    memset(taken, 0, sizeof(taken));
    for (int x = 0; x < NT; x += 2)
        taken[x >> 6] |= 1ULL << (x & 63);
    int cnt[NT];
    memset(cnt, 0, sizeof(cnt));
    for (int d = 0; d < 30000; d++) {
        REQUIRE(rrd_sample_uninteresting(&g, NT, taken, NT / 2, 1, out) == 1);
        cnt[out[0]]++;
        taken[out[0] >> 6] &= ~(1ULL << (out[0] & 63));
    }
    for (int x = 0; x < NT; x++) {
        if (x % 2 == 0)
            CHECK_EQ_INT(cnt[x], 0);
        else
            CHECK_NEAR(cnt[x], 200, 70); /* sd is about 14 */
    }
}
