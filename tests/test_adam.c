/*
 * Tests of the lazy Adam in model/adam.h against its dense reference.
 *
 * Two identical tables get the same sparse gradients; one is updated lazily
 * (touched rows only, in two parts as two threads would), the other densely.
 * Gradients do not depend on the parameters, so any difference after the
 * flush is the optimizer's own approximation. Errors are measured in units
 * of lr: dense Adam moves a parameter by about lr per step, so an error of a
 * few lr over hundreds of steps is a small share of the path, while a lazy
 * path that skipped or doubled the catch-up of a gap would be off by the
 * whole momentum drift of that gap (tens of lr).
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/adam.h"
#include "model/mf.h"
#include "model/rng.h"
#include "model/scatter.h"
#include "test.h"

enum { TEST_ADAM_ROWS = 160, TEST_ADAM_COLS = 8 };

typedef struct {
    double max_err;   /* max |lazy - dense| over all parameters */
    double mean_err;
    double mean_move; /* mean |dense - initial| */
} test_adam__cmp_t;

/* How often row r gets a gradient: busy, sometimes, rarely, almost never
 * (those last only every 100 steps, so they sit idle for long stretches). */
static int test_adam__touch(rng_t *g, int32_t r, int64_t t, int64_t t0)
{
    if (t == t0)
        return 1; /* see test_adam__run: every row starts with a gradient */
    switch (r % 4) {
    case 0:
        return rng_float(g) < 0.9f;
    case 1:
        return rng_float(g) < 0.3f;
    case 2:
        return rng_float(g) < 0.03f;
    default:
        return t % 100 == 0;
    }
}

/* Runs steps t0 .. t0 + steps - 1 on a lazy and a dense table and compares
 * them after the lazy one is flushed.
 *
 * Every row gets a gradient at the first step: before its first gradient a
 * row has v = 0, and dense Adam's pure weight-decay step there is
 * lr * sign(p) (Adam normalises the L2 gradient too), while the lazy table
 * leaves it alone by design. */
static test_adam__cmp_t test_adam__run(const adam_cfg_t *cfg, int64_t t0, int64_t steps,
                                       uint64_t seed)
{
    enum { N = TEST_ADAM_ROWS * TEST_ADAM_COLS };
    static float p_lazy[N], p_dense[N], p_init[N];
    rng_t g;
    rng_init_stream(&g, seed, RNG_TEST, 0, 0);
    for (int k = 0; k < N; k++)
        p_init[k] = p_lazy[k] = p_dense[k] = 0.05f * rng_normal(&g);
    adam_table_t lazy, dense;
    test_adam__cmp_t out = { INFINITY, INFINITY, 0.0 };
    if (adam_table_init(&lazy, p_lazy, TEST_ADAM_ROWS, TEST_ADAM_COLS, cfg) < 0)
        return out;
    if (adam_table_init(&dense, p_dense, TEST_ADAM_ROWS, TEST_ADAM_COLS, cfg) < 0) {
        adam_table_close(&lazy);
        return out;
    }
    for (int64_t t = t0; t < t0 + steps; t++) {
        for (int32_t r = 0; r < TEST_ADAM_ROWS; r++) {
            if (!test_adam__touch(&g, r, t, t0))
                continue;
            float *gl = adam_table_grad(&lazy, r), *gd = adam_table_grad(&dense, r);
            for (int32_t c = 0; c < TEST_ADAM_COLS; c++) {
                /* Magnitude in [0.005, 0.015], sign biased by column, so
                 * rows drift; |p| is about 0.05, so gradients are about
                 * 100x the weight-decay term wd * |p|. */
                float mag = 0.01f * (0.5f + rng_float(&g));
                float sign = rng_float(&g) < 0.3f + 0.05f * (float)c ? 1.0f : -1.0f;
                gl[c] = gd[c] = sign * mag;
            }
        }
        adam_table_update(&lazy, t, 0, 2);
        adam_table_update(&lazy, t, 1, 2);
        adam_table_update_dense(&dense, t);
    }
    adam_table_flush(&lazy, t0 + steps - 1, 1, 2);
    adam_table_flush(&lazy, t0 + steps - 1, 0, 2);
    out.max_err = out.mean_err = 0.0;
    for (int k = 0; k < N; k++) {
        double e = fabs((double)p_lazy[k] - p_dense[k]);
        out.max_err = fmax(out.max_err, e);
        out.mean_err += e / N;
        out.mean_move += fabs((double)p_dense[k] - p_init[k]) / N;
    }
    adam_table_close(&lazy);
    adam_table_close(&dense);
    return out;
}

static void test_adam__report(const char *what, const test_adam__cmp_t *c, double lr)
{
    fprintf(stderr, "    %s: max err %.3g lr, mean err %.3g lr, mean move %.3g lr\n",
            what, c->max_err / lr, c->mean_err / lr, c->mean_move / lr);
}

TEST(adam_lazy_matches_dense_without_wd_late)
{
    /* Late in training the bias correction is constant, so with wd = 0 the
     * catch-up is the exact geometric series: only float rounding and eps
     * remain. */
    adam_cfg_t cfg = adam_cfg_default();
    cfg.wd = 0.0f;
    for (uint64_t seed = 1; seed <= 2; seed++) {
        test_adam__cmp_t c = test_adam__run(&cfg, 100001, 400, seed);
        CHECK(c.mean_move > 30.0 * cfg.lr); /* the parameters really moved */
        CHECK(c.max_err < 0.05 * cfg.lr);
        if (!(c.max_err < 0.05 * cfg.lr))
            test_adam__report("wd 0, late", &c, cfg.lr);
    }
}

TEST(adam_lazy_matches_dense_without_wd_early)
{
    /* From step 1 the bias correction changes fast; adam.h sums the
     * per-step rates of a gap from a table for the first ADAM_EXACT steps,
     * which measured within 4e-4 lr (max) and 6e-5 lr (mean) here. Holding
     * the correction constant across a gap instead cost up to a few lr. */
    adam_cfg_t cfg = adam_cfg_default();
    cfg.wd = 0.0f;
    for (uint64_t seed = 1; seed <= 2; seed++) {
        test_adam__cmp_t c = test_adam__run(&cfg, 1, 400, seed);
        CHECK(c.mean_move > 30.0 * cfg.lr);
        CHECK(c.max_err < 0.01 * cfg.lr);
        CHECK(c.mean_err < 0.002 * cfg.lr);
        if (!(c.max_err < 0.01 * cfg.lr) || !(c.mean_err < 0.002 * cfg.lr))
            test_adam__report("wd 0, early", &c, cfg.lr);
    }
}

TEST(adam_lazy_matches_dense_with_wd)
{
    /* The reference's settings (lr 1e-3, wd 1e-3). The catch-up holds p at
     * its value when the row went idle for the weight-decay pull, and takes
     * that pull's bias correction at the gap's middle; a few lr here, where gradients are
     * about 100x wd * |p|. Missing catch-ups cost tens of lr. */
    adam_cfg_t cfg = adam_cfg_default();
    for (uint64_t seed = 1; seed <= 2; seed++) {
        test_adam__cmp_t c = test_adam__run(&cfg, 1, 400, seed);
        CHECK(c.mean_move > 30.0 * cfg.lr);
        CHECK(c.max_err < 8.0 * cfg.lr);
        CHECK(c.mean_err < 1.2 * cfg.lr);
        if (!(c.max_err < 8.0 * cfg.lr) || !(c.mean_err < 1.2 * cfg.lr))
            test_adam__report("wd 1e-3, early", &c, cfg.lr);
    }
}

TEST(adam_wd_zero_matches_tighter_than_wd)
{
    /* Late in training only the weight-decay approximation is left, and
     * without weight decay the match is near exact. With it, a row idle for
     * 100 steps drifts on weight decay alone by about 15 lr per gap, and
     * momentum moves p well away from the pre-gap value the catch-up holds
     * it at, so single parameters end up to a couple of gaps' drift off
     * (about 20 lr here); on average it stays within 2 lr. */
    adam_cfg_t with = adam_cfg_default(), without = with;
    without.wd = 0.0f;
    test_adam__cmp_t cw = test_adam__run(&with, 100001, 400, 3);
    test_adam__cmp_t c0 = test_adam__run(&without, 100001, 400, 3);
    CHECK(c0.max_err < 0.05 * with.lr);
    CHECK(cw.max_err < 40.0 * with.lr);
    CHECK(cw.mean_err < 3.0 * with.lr);
    CHECK(c0.max_err < 0.01 * cw.max_err);
    if (!(c0.max_err < 0.01 * cw.max_err) || !(cw.max_err < 40.0 * with.lr) ||
        !(cw.mean_err < 3.0 * with.lr)) {
        test_adam__report("wd 0, late", &c0, with.lr);
        test_adam__report("wd 1e-3, late", &cw, with.lr);
    }
}

TEST(adam_first_step_is_lr_times_sign)
{
    /* Adam's first step is lr * g / |g| (up to eps): a golden value. */
    float p[6] = { 0.5f, -0.5f, 0.0f, 1.0f, 2.0f, -3.0f };
    const float grad[6] = { 0.2f, -0.01f, 3.0f, -1e-3f, 0.5f, 0.5f };
    adam_table_t t;
    adam_cfg_t cfg = adam_cfg_default();
    cfg.wd = 0.0f;
    REQUIRE(adam_table_init(&t, p, 2, 3, &cfg) == 0);
    for (int32_t r = 0; r < 2; r++) {
        float *g = adam_table_grad(&t, r);
        for (int c = 0; c < 3; c++)
            g[c] = grad[r * 3 + c];
    }
    const float p0[6] = { 0.5f, -0.5f, 0.0f, 1.0f, 2.0f, -3.0f };
    adam_table_update(&t, 1, 0, 1);
    for (int k = 0; k < 6; k++)
        CHECK_NEAR(p[k], p0[k] - cfg.lr * (grad[k] > 0.0f ? 1.0f : -1.0f), 1e-6);
    /* Gradients were consumed and the rows are no longer touched. */
    for (int k = 0; k < 6; k++)
        CHECK(t.g[k] == 0.0f);
    CHECK(!t.touched[0] && !t.touched[1]);
    adam_table_close(&t);
}

TEST(adam_untouched_row_keeps_value)
{
    enum { R = 6, C = 4 };
    float p[R * C], p0[R * C];
    rng_t g;
    rng_init_stream(&g, 7, RNG_TEST, 0, 0);
    for (int k = 0; k < R * C; k++)
        p[k] = p0[k] = rng_normal(&g);
    adam_table_t t;
    adam_cfg_t cfg = adam_cfg_default();
    cfg.wd = 1e-2f; /* a large pull, which must still not reach row 3 */
    REQUIRE(adam_table_init(&t, p, R, C, &cfg) == 0);
    for (int64_t s = 1; s <= 500; s++) {
        for (int32_t r = 0; r < R; r++) {
            if (r == 3 || (r == 5 && s > 1))
                continue;
            float *gr = adam_table_grad(&t, r);
            for (int c = 0; c < C; c++)
                gr[c] = 0.1f * rng_normal(&g);
        }
        adam_table_update(&t, s, 0, 1);
        if (s % 100 == 0)
            adam_table_flush(&t, s, 0, 1);
    }
    adam_table_flush(&t, 500, 0, 1);
    CHECK(memcmp(p + 3 * C, p0 + 3 * C, C * sizeof(float)) == 0);
    /* Rows with gradients moved; row 5 (one gradient, then idle) moved on
     * its momentum and weight decay during the flushes. */
    for (int32_t r = 0; r < R; r++) {
        if (r == 3)
            continue;
        double d = 0.0;
        for (int c = 0; c < C; c++)
            d += fabs((double)p[r * C + c] - p0[r * C + c]);
        CHECK(d > 4.0 * C * cfg.lr);
    }
    adam_table_close(&t);
}

/* Two tables over the same random parameters (pa, pb: R x C), and g seeded
 * for their gradients. Returns 0 or -ENOMEM. */
static int test_adam__twins(adam_table_t *a, adam_table_t *b, float *pa, float *pb, int32_t R,
                            int32_t C, uint64_t seed, rng_t *g)
{
    rng_init_stream(g, seed, RNG_TEST, 0, 0);
    for (int32_t k = 0; k < R * C; k++)
        pa[k] = pb[k] = rng_normal(g);
    adam_cfg_t cfg = adam_cfg_default();
    if (adam_table_init(a, pa, R, C, &cfg) < 0)
        return -ENOMEM;
    if (adam_table_init(b, pb, R, C, &cfg) < 0) {
        adam_table_close(a);
        return -ENOMEM;
    }
    return 0;
}

/* Steps a (updated in `parts` parts, out of order) and b (in one part) with
 * the same random gradients on a random 60% of the rows. */
static void test_adam__steps_in_parts(adam_table_t *a, adam_table_t *b, int64_t steps,
                                      int parts, rng_t *g)
{
    for (int64_t s = 1; s <= steps; s++) {
        for (int32_t r = 0; r < a->rows; r++) {
            if (rng_float(g) < 0.4f)
                continue;
            float *ga = adam_table_grad(a, r), *gb = adam_table_grad(b, r);
            for (int c = 0; c < a->cols; c++)
                ga[c] = gb[c] = 0.1f * rng_normal(g);
        }
        for (int part = parts - 1; part >= 0; part--)
            adam_table_update(a, s, part, parts);
        adam_table_update(b, s, 0, 1);
    }
}

TEST(adam_flush_is_idempotent_and_parts_agree)
{
    enum { R = 150, C = 5 }; /* three 64-row blocks, so the parts differ */
    float pa[R * C], pb[R * C];
    rng_t g;
    adam_table_t a, b;
    REQUIRE(test_adam__twins(&a, &b, pa, pb, R, C, 8, &g) == 0);
    test_adam__steps_in_parts(&a, &b, 200, 3, &g);
    CHECK(memcmp(pa, pb, sizeof(pa)) == 0);
    adam_table_flush(&a, 200, 0, 1);
    for (int part = 0; part < 4; part++)
        adam_table_flush(&b, 200, part, 4);
    CHECK(memcmp(pa, pb, sizeof(pa)) == 0);
    CHECK(memcmp(a.m, b.m, sizeof(pa)) == 0);
    CHECK(memcmp(a.v, b.v, sizeof(pa)) == 0);
    /* A second flush to the same step changes nothing. */
    float snap[R * C];
    memcpy(snap, pa, sizeof(pa));
    adam_table_flush(&a, 200, 0, 1);
    CHECK(memcmp(pa, snap, sizeof(pa)) == 0);
    for (int32_t r = 0; r < R; r++)
        CHECK_EQ_INT(a.last[r], 200);
    adam_table_close(&a);
    adam_table_close(&b);
}

TEST(adam_wide_rows_are_shared_between_parts)
{
    /* A few wide rows (the experts' tables) go to threads row by row, not
     * all to the first 64-row block's thread; the result is the same as in
     * one part. */
    enum { R = 5, C = ADAM_WIDE };
    static float pa[R * C], pb[R * C];
    rng_t g;
    adam_table_t a, b;
    REQUIRE(test_adam__twins(&a, &b, pa, pb, R, C, 9, &g) == 0);
    int owned[2] = { 0, 0 };
    for (int32_t r = 0; r < R; r++)
        owned[adam_part(&a, r, 2)]++;
    CHECK_EQ_INT(owned[0], 3);
    CHECK_EQ_INT(owned[1], 2);
    CHECK_EQ_INT(adam_part(&a, 4, 3), 1);
    test_adam__steps_in_parts(&a, &b, 30, 2, &g);
    for (int part = 0; part < 3; part++)
        adam_table_flush(&a, 30, part, 3);
    adam_table_flush(&b, 30, 0, 1);
    CHECK(memcmp(pa, pb, sizeof(pa)) == 0);
    CHECK(memcmp(a.m, b.m, sizeof(pa)) == 0);
    CHECK(memcmp(a.v, b.v, sizeof(pa)) == 0);
    adam_table_close(&a);
    adam_table_close(&b);
}

TEST(adam_update_scatter_matches_dense_apply)
{
    /* The fused path (sum a row's scatter entries, then update) against the
     * plain one (scatter_apply_dense into g, mark the rows, update): the
     * same sums in the same order, so bit-identical, for any part count.
     * 200 rows span several 64-row blocks of adam_part(). */
    enum { R = 200, C = 7, NL = 3, NE = 150 };
    static float pa[R * C], pb[R * C], vecs[NL][NE][C];
    rng_t g;
    rng_init_stream(&g, 9, RNG_TEST, 0, 0);
    for (int k = 0; k < R * C; k++)
        pa[k] = pb[k] = 0.1f * rng_normal(&g);
    adam_table_t a, b;
    adam_cfg_t cfg = adam_cfg_default();
    REQUIRE(adam_table_init(&a, pa, R, C, &cfg) == 0);
    REQUIRE(adam_table_init(&b, pb, R, C, &cfg) == 0);
    scatter_t lists[NL];
    const scatter_t *lp[NL];
    for (int l = 0; l < NL; l++) {
        scatter_init(&lists[l]);
        lp[l] = &lists[l];
    }
    const int parts[] = { 1, 2, 3, 4 };
    int64_t step = 0;
    for (int q = 0; q < 4; q++)
        for (int rep = 0; rep < 15; rep++) {
            step++;
            for (int l = 0; l < NL; l++) {
                scatter_clear(&lists[l]);
                /* Rows cluster in the low blocks, so rows repeat in and
                 * across lists. */
                for (int x = 0; x < NE; x++) {
                    int32_t row = (int32_t)(rng_below(&g, 2) ? rng_below(&g, 40)
                                                             : rng_below(&g, R));
                    for (int c = 0; c < C; c++)
                        vecs[l][x][c] = rng_normal(&g);
                    REQUIRE(scatter_add(&lists[l], row, 0.01f * rng_normal(&g),
                                        vecs[l][x]) == 0);
                }
            }
            for (int part = parts[q] - 1; part >= 0; part--)
                REQUIRE(adam_table_gather(&a, lp, NL, part, parts[q]) == 0);
            for (int part = 0; part < parts[q]; part++)
                adam_table_apply(&a, step, part);
            for (int l = 0; l < NL; l++) {
                scatter_apply_dense(&lists[l], b.g, C);
                for (int64_t x = 0; x < lists[l].n; x++)
                    b.touched[lists[l].v[x].row] = 1;
            }
            adam_table_update(&b, step, 0, 1);
        }
    CHECK(memcmp(pa, pb, sizeof(pa)) == 0);
    CHECK(memcmp(a.m, b.m, sizeof(pa)) == 0);
    CHECK(memcmp(a.v, b.v, sizeof(pa)) == 0);
    CHECK(memcmp(a.last, b.last, R * sizeof(int64_t)) == 0);
    /* A part beyond the table's scratch is refused. */
    CHECK_EQ_INT(adam_table_gather(&a, lp, 0, ADAM_MAX_PARTS, ADAM_MAX_PARTS + 1), -EINVAL);
    for (int l = 0; l < NL; l++)
        scatter_close(&lists[l]);
    adam_table_close(&a);
    adam_table_close(&b);
}

TEST(adam_update_scatter_reads_vectors_before_any_update)
{
    /* BPR's scatter entries point into the parameter block itself (mf.h:
     * "apply them before the parameters change"). The fused update must
     * therefore read every entry before it moves any row; otherwise a row's
     * gradient mixes old and new parameters of the rows updated before it,
     * and with several parts the threads race on those rows. Reference: the
     * two phases (sum everything, then update) on a copy. */
    enum { NU = 70, NI = 90, D = 4, NT = 300 };
    mf_t fused, ref;
    REQUIRE(mf_init(&fused, NU, NI, D) == 0);
    mf_init_normal(&fused, 0.1f, 12);
    REQUIRE(mf_init_copy(&ref, &fused) == 0);
    rng_t g;
    rng_init_stream(&g, 12, RNG_TEST, 0, 0);
    static bpr_triple_t t[NT];
    static float coef[NT];
    adam_table_t ta, tb;
    adam_cfg_t cfg = adam_cfg_default();
    REQUIRE(adam_table_init(&ta, fused.params, NU + NI, D, &cfg) == 0);
    REQUIRE(adam_table_init(&tb, ref.params, NU + NI, D, &cfg) == 0);
    scatter_t sa, sb;
    scatter_init(&sa);
    scatter_init(&sb);
    const int parts[] = { 1, 2 };
    int64_t step = 0;
    for (int q = 0; q < 2; q++)
        for (int rep = 0; rep < 5; rep++) {
            step++;
            for (int s = 0; s < NT; s++) {
                t[s].u = (int32_t)rng_below(&g, NU);
                t[s].i = (int32_t)rng_below(&g, NI);
                t[s].j = (int32_t)((t[s].i + 1 + (int32_t)rng_below(&g, NI - 1)) % NI);
            }
            scatter_clear(&sa);
            scatter_clear(&sb);
            bpr_forward(&fused, t, NT, coef);
            REQUIRE(bpr_backward(&fused, t, NT, coef, &sa) == 0);
            bpr_forward(&ref, t, NT, coef);
            REQUIRE(bpr_backward(&ref, t, NT, coef, &sb) == 0);
            const scatter_t *la[1] = { &sa };
            for (int part = 0; part < parts[q]; part++)
                REQUIRE(adam_table_gather(&ta, la, 1, part, parts[q]) == 0);
            for (int part = 0; part < parts[q]; part++)
                adam_table_apply(&ta, step, part);
            scatter_apply_dense(&sb, tb.g, D);
            for (int64_t x = 0; x < sb.n; x++)
                tb.touched[sb.v[x].row] = 1;
            adam_table_update(&tb, step, 0, 1);
        }
    size_t np = (size_t)(NU + NI) * D;
    int differ = 0;
    double worst = 0.0;
    for (size_t k = 0; k < np; k++) {
        differ += fused.params[k] != ref.params[k];
        worst = fmax(worst, fabs((double)fused.params[k] - ref.params[k]));
    }
    CHECK_EQ_INT(differ, 0);
    if (differ)
        fprintf(stderr, "    %d of %zu parameters differ, by up to %.3g\n", differ, np, worst);
    scatter_close(&sa);
    scatter_close(&sb);
    adam_table_close(&ta);
    adam_table_close(&tb);
    mf_close(&fused);
    mf_close(&ref);
}

/* A streaming service reaches gaps of millions of steps for rare items: the
 * catch-up must stay finite, and rows that never had a gradient must stay
 * at their initial values (adam.h) however long the gap. */
TEST(adam_huge_gap_stays_finite)
{
    const int64_t gaps[] = { 1000, 200000, 2000000 };
    for (int q = 0; q < 3; q++) {
        float p[4] = { 0.5f, -0.5f, 0.25f, 1.0f };
        adam_table_t t;
        adam_cfg_t cfg = adam_cfg_default();
        REQUIRE(adam_table_init(&t, p, 2, 2, &cfg) == 0);
        float *g = adam_table_grad(&t, 0);
        g[0] = 0.1f;
        g[1] = -0.1f;
        adam_table_update(&t, 1, 0, 1);
        adam_table_flush(&t, gaps[q], 0, 1);
        CHECK(isfinite(p[0]) && isfinite(p[1]));
        CHECK(fabsf(p[0]) < 0.5f && fabsf(p[1]) < 0.5f);
        CHECK(p[2] == 0.25f && p[3] == 1.0f); /* never had a gradient */
        adam_table_close(&t);
    }
}
