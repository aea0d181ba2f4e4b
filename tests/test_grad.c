/*
 * Gradient checks by central finite differences: the analytic gradients of
 * BPR (mf.h), the Distillation Experts (experts.h) and the RRD loss (rrd.h)
 * against differences of their double-precision reference losses.
 *
 * Parameters are floats, so each check perturbs a float by about eps and
 * divides by the step actually taken ((float)(p + eps) - p), not by eps.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/experts.h"
#include "model/gemm.h"
#include "model/mf.h"
#include "model/pool.h"
#include "model/rng.h"
#include "model/rrd.h"
#include "model/scatter.h"
#include "test.h"

/* Relative tolerance of a gradient check, and the absolute floor below which
 * two gradients count as equal whatever their ratio. */
#define GRAD_RTOL 1e-2
#define GRAD_ATOL 1e-4

/* Counts a mismatch and prints the first few, so a failure says where. */
static int test_grad__compare(const char *what, int64_t idx, double analytic,
                              double numeric, double atol)
{
    double err = fabs(analytic - numeric);
    double tol = GRAD_RTOL * fmax(fabs(analytic), fabs(numeric)) + atol;
    if (err <= tol)
        return 0;
    test_fail(__FILE__, __LINE__, "%s[%lld]: analytic %.8g, numeric %.8g",
              what, (long long)idx, analytic, numeric);
    return 1;
}

/* ---- BPR ----------------------------------------------------------------- */

TEST(grad_bpr_matches_finite_differences)
{
    enum { NU = 7, NI = 11, D = 5, NT = 24 };
    for (uint64_t seed = 1; seed <= 3; seed++) {
        mf_t mf;
        REQUIRE(mf_init(&mf, NU, NI, D) == 0);
        mf_init_normal(&mf, 0.5f, seed);
        rng_t g;
        rng_init_stream(&g, seed, RNG_TEST, 1, 0);
        bpr_triple_t t[NT];
        for (int s = 0; s < NT; s++) {
            t[s].u = (int32_t)rng_below(&g, NU);
            t[s].i = (int32_t)rng_below(&g, NI);
            do
                t[s].j = (int32_t)rng_below(&g, NI);
            while (t[s].j == t[s].i);
        }
        float coef[NT];
        double loss = bpr_forward(&mf, t, NT, coef);
        CHECK(isfinite(loss) && loss > 0.0);
        /* The loss is -sum log sigmoid(x); check it and coef by hand. */
        double want = 0.0;
        for (int s = 0; s < NT; s++) {
            double x = 0.0;
            for (int c = 0; c < D; c++)
                x += (double)mf.ue[t[s].u * D + c] *
                     ((double)mf.ie[t[s].i * D + c] - mf.ie[t[s].j * D + c]);
            want += -log(1.0 / (1.0 + exp(-x)));
            CHECK_NEAR(coef[s], -1.0 / (1.0 + exp(x)), 1e-5);
        }
        CHECK_NEAR(loss, want, 1e-5 * want);

        scatter_t sc;
        scatter_init(&sc);
        REQUIRE(bpr_backward(&mf, t, NT, coef, &sc) == 0);
        CHECK_EQ_INT(sc.n, 4 * NT);
        static float grad[(NU + NI) * D];
        memset(grad, 0, sizeof(grad));
        scatter_apply_dense(&sc, grad, D);

        int bad = 0;
        const double eps = 1e-3;
        for (int64_t k = 0; k < (int64_t)(NU + NI) * D; k++) {
            float p0 = mf.params[k];
            float pp = (float)(p0 + eps), pm = (float)(p0 - eps);
            mf.params[k] = pp;
            double lp = bpr_forward(&mf, t, NT, coef);
            mf.params[k] = pm;
            double lm = bpr_forward(&mf, t, NT, coef);
            mf.params[k] = p0;
            double num = (lp - lm) / ((double)pp - pm);
            bad += test_grad__compare("bpr", k, grad[k], num, GRAD_ATOL);
        }
        CHECK_EQ_INT(bad, 0);
        /* Every entry names a row of a triple, and every triple's rows. */
        for (int64_t x = 0; x < sc.n; x++) {
            int32_t r = sc.v[x].row, s = (int32_t)(x / 4);
            CHECK(r == t[s].u || r == NU + t[s].i || r == NU + t[s].j);
        }
        scatter_close(&sc);
        mf_close(&mf);
    }
}

/* ---- Distillation Experts ------------------------------------------------ */

typedef struct {
    int32_t n;
    float *s, *t, *weight, *gumbel;
} test_grad__de_data_t;

static void test_grad__de_data_free(test_grad__de_data_t *x)
{
    free(x->s);
    free(x->t);
    free(x->weight);
    free(x->gumbel);
}

/* The smallest |pre-activation| of any hidden unit of any expert for any
 * entity: a finite difference that crosses 0 there measures a kink, not the
 * gradient, so inputs are redrawn until this is well above the step. */
static double test_grad__de_relu_margin(const experts_t *de, const float *s, int32_t n)
{
    double margin = INFINITY;
    int32_t ds = de->ds, dh = de->dh;
    for (int32_t k = 0; k < n; k++)
        for (int32_t e = 0; e < de->n_experts; e++) {
            const float *W1 = de->ex + (size_t)e * de->ex_size, *b1 = W1 + ds * dh;
            for (int32_t j = 0; j < dh; j++) {
                double a = b1[j];
                for (int32_t c = 0; c < ds; c++)
                    a += (double)s[k * ds + c] * W1[c * dh + j];
                margin = fmin(margin, fabs(a));
            }
        }
    return margin;
}

/* Random entities for de; s is redrawn until no ReLU sits within `margin`. */
static int test_grad__de_data(test_grad__de_data_t *x, const experts_t *de, int32_t n,
                              uint64_t seed, double margin)
{
    int32_t M = de->n_experts;
    x->n = n;
    x->s = malloc((size_t)n * de->ds * sizeof(float));
    x->t = malloc((size_t)n * de->dt * sizeof(float));
    x->weight = malloc((size_t)n * sizeof(float));
    x->gumbel = malloc((size_t)n * M * sizeof(float));
    if (!x->s || !x->t || !x->weight || !x->gumbel)
        return -1;
    rng_t g;
    rng_init_stream(&g, seed, RNG_TEST, 3, 0);
    for (int32_t k = 0; k < n * de->dt; k++)
        x->t[k] = rng_normal(&g);
    for (int32_t k = 0; k < n; k++)
        x->weight[k] = 0.5f + rng_float(&g);
    rng_gumbel_fill(&g, x->gumbel, n * M);
    for (int attempt = 0; attempt < 1000; attempt++) {
        for (int32_t k = 0; k < n * de->ds; k++)
            x->s[k] = rng_normal(&g);
        if (test_grad__de_relu_margin(de, x->s, n) > margin)
            return 0;
    }
    return -1;
}

typedef struct {
    double loss;
    int64_t evaluated;
    float *grad_ex;   /* (M, ex_size) */
    float *grad_sel;  /* (sel_size) */
    float *ds;        /* (n, ds) */
    uint8_t *used;    /* (M) */
} test_grad__de_out_t;

static void test_grad__de_out_free(test_grad__de_out_t *o)
{
    free(o->grad_ex);
    free(o->grad_sel);
    free(o->ds);
    free(o->used);
}

/* Runs de_forward_backward `times` times into zeroed gradients. */
static int test_grad__de_run(const experts_t *de, const de_batch_t *b, int nthreads,
                             int times, test_grad__de_out_t *o)
{
    memset(o, 0, sizeof(*o));
    o->grad_ex = calloc((size_t)de->n_experts * de->ex_size, sizeof(float));
    o->grad_sel = calloc((size_t)de->sel_size, sizeof(float));
    o->ds = calloc((size_t)b->n * de->ds, sizeof(float));
    o->used = calloc((size_t)de->n_experts, 1);
    pool_t *pool = pool_new(nthreads);
    de_work_t *w = de_work_new();
    int rc = -1;
    if (!o->grad_ex || !o->grad_sel || !o->ds || !o->used || !pool || !w)
        goto done;
    for (int k = 0; k < times; k++)
        o->loss = de_forward_backward(de, b, w, pool, o->grad_ex, o->used,
                                      o->grad_sel, o->ds, &o->evaluated);
    rc = 0;
done:
    de_work_free(w);
    pool_free(pool);
    return rc;
}

typedef double (*test_grad__de_loss_fn)(const experts_t *de, const de_batch_t *b);

/* Finite differences of loss for n floats at x, against grad. */
static int test_grad__de_fd_of(test_grad__de_loss_fn loss, const char *what, experts_t *de,
                               const de_batch_t *b, float *x, int64_t n, const float *grad,
                               double atol)
{
    const double eps = 1e-3;
    int bad = 0;
    for (int64_t k = 0; k < n; k++) {
        float p0 = x[k];
        float pp = (float)(p0 + eps), pm = (float)(p0 - eps);
        x[k] = pp;
        double lp = loss(de, b);
        x[k] = pm;
        double lm = loss(de, b);
        x[k] = p0;
        double num = (lp - lm) / ((double)pp - pm);
        bad += test_grad__compare(what, k, grad[k], num, atol);
        if (bad > 10)
            break;
    }
    return bad;
}

/* The same against the reference, de_loss_naive. */
static int test_grad__de_fd(const char *what, experts_t *de, const de_batch_t *b, float *x,
                            int64_t n, const float *grad, double atol)
{
    return test_grad__de_fd_of(de_loss_naive, what, de, b, x, n, grad, atol);
}

/* The Gumbel-softmax weights of entity k, in double. */
static void test_grad__de_weights(const experts_t *de, const de_batch_t *b, int32_t k, double *w)
{
    int32_t M = de->n_experts, dt = de->dt;
    const float *Ws = de->sel, *bs = de->sel + (size_t)dt * M;
    const float *t = b->t + (size_t)k * dt;
    double mx = -INFINITY, sum = 0.0, zmax = -INFINITY, zs = 0.0;
    for (int32_t e = 0; e < M; e++) {
        double a = bs[e];
        for (int32_t c = 0; c < dt; c++)
            a += (double)t[c] * Ws[(size_t)c * M + e];
        w[e] = a;
        mx = fmax(mx, a);
    }
    for (int32_t e = 0; e < M; e++)
        sum += (w[e] = exp(w[e] - mx));
    for (int32_t e = 0; e < M; e++) {
        w[e] = (log(w[e] / sum + 1e-10) + b->gumbel[(size_t)k * M + e]) / b->temp;
        zmax = fmax(zmax, w[e]);
    }
    for (int32_t e = 0; e < M; e++)
        zs += (w[e] = exp(w[e] - zmax));
    for (int32_t e = 0; e < M; e++)
        w[e] /= zs;
}

/* Which experts entity k keeps (experts.h): the heaviest, until they hold
 * 1 - keep of the weight or max_experts of them. Writes their weights,
 * renormalised, to w (0 for the others); returns how many, and in *margin
 * how close a decision came to going the other way. */
static int32_t test_grad__de_kept(const experts_t *de, const de_batch_t *b, int32_t k, double *w,
                                  double *margin)
{
    int32_t M = de->n_experts;
    int32_t cap = b->max_experts > 0 && b->max_experts < M ? b->max_experts : M;
    int32_t order[64];
    test_grad__de_weights(de, b, k, w);
    for (int32_t e = 0; e < M; e++) {
        int32_t q = e;
        while (q > 0 && w[order[q - 1]] < w[e]) {
            order[q] = order[q - 1];
            q--;
        }
        order[q] = e;
    }
    double kept = 0.0;
    int32_t nk = 0;
    *margin = INFINITY;
    while (nk < cap && (nk == 0 || kept < 1.0 - b->keep)) {
        if (nk > 0)
            *margin = fmin(*margin, fabs(kept - (1.0 - b->keep)));
        kept += w[order[nk++]];
    }
    if (nk < M) {
        /* the last kept against the first dropped, and the stopping rule */
        *margin = fmin(*margin, w[order[nk - 1]] - w[order[nk]]);
        if (nk < cap)
            *margin = fmin(*margin, fabs(kept - (1.0 - b->keep)));
    }
    for (int32_t q = nk; q < M; q++)
        w[order[q]] = 0.0;
    for (int32_t q = 0; q < nk; q++)
        w[order[q]] /= kept;
    return nk;
}

/* The loss with each entity's kept experts only, renormalised, in double:
 * the reference for de_forward_backward with keep > 0 or max_experts. */
static double test_grad__de_loss_pruned(const experts_t *de, const de_batch_t *b)
{
    int32_t M = de->n_experts, ds = de->ds, dt = de->dt;
    double loss = 0.0, w[64], h[64], pred[64], margin;
    for (int32_t k = 0; k < b->n; k++) {
        const float *s = b->s + (size_t)k * ds, *t = b->t + (size_t)k * dt;
        test_grad__de_kept(de, b, k, w, &margin);
        for (int32_t c = 0; c < dt; c++)
            pred[c] = 0.0;
        for (int32_t e = 0; e < M; e++)
            if (w[e] != 0.0)
                experts_apply_naive(de, e, s, w[e], h, pred);
        for (int32_t c = 0; c < dt; c++)
            loss += b->weight[k] * (t[c] - pred[c]) * (t[c] - pred[c]);
    }
    return loss;
}

TEST(grad_experts_match_finite_differences)
{
    enum { M = 4, DS = 3, DT = 6, N = 5 };
    gemm_setup();
    for (uint64_t seed = 11; seed <= 15; seed++) {
        experts_t de;
        REQUIRE(experts_init(&de, M, DS, DT, seed) == 0);
        REQUIRE(de.dh == 4);
        REQUIRE(de.ex_size == DS * 4 + 4 + 4 * DT + DT);
        REQUIRE(de.sel_size == DT * M + M);
        test_grad__de_data_t x;
        REQUIRE(test_grad__de_data(&x, &de, N, seed, 2e-2) == 0);
        de_batch_t b = { N, x.s, x.t, x.weight, x.gumbel, 0.7f, 0.0f, 0 };

        double naive = de_loss_naive(&de, &b);
        test_grad__de_out_t o1, o2;
        REQUIRE(test_grad__de_run(&de, &b, 1, 1, &o1) == 0);
        REQUIRE(test_grad__de_run(&de, &b, 2, 2, &o2) == 0);
        CHECK(isfinite(naive) && naive > 0.0);
        CHECK_NEAR(o1.loss, naive, 1e-4 * naive);
        CHECK_NEAR(o2.loss, naive, 1e-4 * naive);
        CHECK_EQ_INT(o1.evaluated, N * M);
        for (int e = 0; e < M; e++)
            CHECK_EQ_INT(o1.used[e], 1);

        /* Two calls add up; one thread or two give the same gradients. */
        int64_t nex = (int64_t)M * de.ex_size;
        int mism = 0;
        for (int64_t k = 0; k < nex; k++)
            mism += fabsf(o2.grad_ex[k] - 2.0f * o1.grad_ex[k]) >
                    1e-5f * (1.0f + fabsf(o1.grad_ex[k]));
        for (int32_t k = 0; k < de.sel_size; k++)
            mism += fabsf(o2.grad_sel[k] - 2.0f * o1.grad_sel[k]) >
                    1e-5f * (1.0f + fabsf(o1.grad_sel[k]));
        for (int32_t k = 0; k < N * DS; k++)
            mism += o2.ds[k] != o1.ds[k]; /* written, not added */
        CHECK_EQ_INT(mism, 0);

        CHECK_EQ_INT(test_grad__de_fd("grad_ex", &de, &b, de.ex, nex, o1.grad_ex,
                                      GRAD_ATOL), 0);
        CHECK_EQ_INT(test_grad__de_fd("grad_sel", &de, &b, de.sel, de.sel_size, o1.grad_sel,
                                      GRAD_ATOL), 0);
        CHECK_EQ_INT(test_grad__de_fd("ds", &de, &b, x.s, N * DS, o1.ds, GRAD_ATOL), 0);

        /* The selection gradient is not trivially zero: the Gumbel path is
         * really exercised. */
        double gsel = 0.0;
        for (int32_t k = 0; k < de.sel_size; k++)
            gsel += fabs(o1.grad_sel[k]);
        CHECK(gsel > 1e-2);

        test_grad__de_out_free(&o1);
        test_grad__de_out_free(&o2);
        test_grad__de_data_free(&x);
        experts_close(&de);
    }
}

TEST(grad_experts_larger_batch_chunks)
{
    /* More entities than one chunk of de_forward_backward (128), more
     * experts, and every expert kept for all 300 entities: more than one
     * block (256 pairs) per expert, so the block sums of the expert
     * gradients are exercised. The chunked and blocked passes must agree
     * with the reference and with finite differences. */
    enum { M = 7, DS = 4, DT = 8, N = 300 };
    gemm_setup();
    experts_t de;
    REQUIRE(experts_init(&de, M, DS, DT, 21) == 0);
    test_grad__de_data_t x;
    REQUIRE(test_grad__de_data(&x, &de, N, 21, 0.0) == 0);
    de_batch_t b = { N, x.s, x.t, x.weight, x.gumbel, 0.5f, 0.0f, 0 };
    double naive = de_loss_naive(&de, &b);
    test_grad__de_out_t o1, o2;
    REQUIRE(test_grad__de_run(&de, &b, 1, 1, &o1) == 0);
    REQUIRE(test_grad__de_run(&de, &b, 2, 1, &o2) == 0);
    CHECK_NEAR(o1.loss, naive, 1e-4 * naive);
    CHECK(o1.loss == o2.loss);
    CHECK(memcmp(o1.grad_ex, o2.grad_ex, sizeof(float) * M * de.ex_size) == 0);
    CHECK(memcmp(o1.grad_sel, o2.grad_sel, sizeof(float) * de.sel_size) == 0);
    CHECK(memcmp(o1.ds, o2.ds, sizeof(float) * N * DS) == 0);
    CHECK_EQ_INT(o1.evaluated, (int64_t)N * M);
    /* Spot-check the selection bias gradient, which sums over all chunks. */
    CHECK_EQ_INT(test_grad__de_fd("grad_sel_bias", &de, &b, de.sel + DT * M, M,
                             o1.grad_sel + DT * M, 1e-2), 0);
    /* The experts' gradients, which sum over blocks. */
    CHECK_EQ_INT(test_grad__de_fd("grad_ex", &de, &b, de.ex, M * de.ex_size, o1.grad_ex, 1e-2),
                 0);
    test_grad__de_out_free(&o1);
    test_grad__de_out_free(&o2);
    test_grad__de_data_free(&x);
    experts_close(&de);
}

TEST(grad_experts_pruned_match_finite_differences)
{
    /* With keep > 0 or max_experts, each entity's kept experts are
     * renormalised: a Gumbel-softmax over them, whose gradient must match
     * differences of the same loss computed directly. Noise is redrawn
     * until no kept set sits near a decision boundary, where a difference
     * would measure a jump. */
    enum { M = 5, DS = 3, DT = 6, N = 6 };
    gemm_setup();
    const struct {
        float keep;
        int32_t max_experts;
    } cases[] = { { 0.0f, 1 }, { 0.0f, 2 }, { 0.25f, 0 }, { 0.1f, 3 } };
    for (int q = 0; q < 4; q++)
        for (uint64_t seed = 51; seed <= 53; seed++) {
            experts_t de;
            REQUIRE(experts_init(&de, M, DS, DT, seed) == 0);
            test_grad__de_data_t x;
            REQUIRE(test_grad__de_data(&x, &de, N, seed, 2e-2) == 0);
            de_batch_t b = { N, x.s, x.t, x.weight, x.gumbel, 0.7f, cases[q].keep,
                             cases[q].max_experts };
            rng_t g;
            rng_init_stream(&g, seed, RNG_TEST, 4, (uint64_t)q);
            int64_t kept = 0;
            double margin = 0.0;
            for (int attempt = 0; attempt < 200 && margin < 2e-2; attempt++) {
                if (attempt > 0)
                    rng_gumbel_fill(&g, x.gumbel, N * M);
                kept = 0;
                margin = INFINITY;
                for (int32_t k = 0; k < N; k++) {
                    double w[M], mk;
                    kept += test_grad__de_kept(&de, &b, k, w, &mk);
                    margin = fmin(margin, mk);
                }
            }
            REQUIRE(margin >= 2e-2);
            test_grad__de_out_t o;
            REQUIRE(test_grad__de_run(&de, &b, 2, 1, &o) == 0);
            double want = test_grad__de_loss_pruned(&de, &b);
            CHECK_NEAR(o.loss, want, 1e-4 * want);
            CHECK_EQ_INT(o.evaluated, kept);
            if (cases[q].max_experts > 0)
                CHECK(o.evaluated <= (int64_t)N * cases[q].max_experts);
            CHECK_EQ_INT(test_grad__de_fd_of(test_grad__de_loss_pruned, "pruned grad_ex", &de, &b,
                                        de.ex, (int64_t)M * de.ex_size, o.grad_ex, GRAD_ATOL), 0);
            CHECK_EQ_INT(test_grad__de_fd_of(test_grad__de_loss_pruned, "pruned grad_sel", &de, &b,
                                        de.sel, de.sel_size, o.grad_sel, GRAD_ATOL), 0);
            CHECK_EQ_INT(test_grad__de_fd_of(test_grad__de_loss_pruned, "pruned ds", &de, &b, x.s,
                                        N * DS, o.ds, GRAD_ATOL), 0);
            /* One expert per entity: its weight is 1 whatever the
             * selection, so the selection net gets no gradient. */
            if (cases[q].max_experts == 1)
                for (int32_t k = 0; k < de.sel_size; k++)
                    CHECK_NEAR(o.grad_sel[k], 0.0, 1e-6);
            test_grad__de_out_free(&o);
            test_grad__de_data_free(&x);
            experts_close(&de);
        }
}

static double test_grad__rel_diff(const float *a, const float *b, int64_t n)
{
    double num = 0.0, den = 0.0;
    for (int64_t k = 0; k < n; k++) {
        num += ((double)a[k] - b[k]) * ((double)a[k] - b[k]);
        den += (double)b[k] * b[k];
    }
    return sqrt(num / (den > 0.0 ? den : 1.0));
}

TEST(grad_experts_pruning_is_accurate)
{
    enum { M = 8, DS = 4, DT = 8, N = 60 };
    gemm_setup();
    experts_t de;
    REQUIRE(experts_init(&de, M, DS, DT, 31) == 0);
    test_grad__de_data_t x;
    REQUIRE(test_grad__de_data(&x, &de, N, 31, 0.0) == 0);
    de_batch_t full = { N, x.s, x.t, x.weight, x.gumbel, 0.05f, 0.0f, 0 };
    de_batch_t pruned = full;
    pruned.keep = 1e-3f;
    test_grad__de_out_t of, op;
    REQUIRE(test_grad__de_run(&de, &full, 2, 1, &of) == 0);
    REQUIRE(test_grad__de_run(&de, &pruned, 2, 1, &op) == 0);
    /* At temperature 0.05 the weights are close to one-hot. (keep = 0 may
     * itself skip experts whose weight is below float rounding.) */
    CHECK(op.evaluated < N * M / 2);
    CHECK(op.evaluated >= N);
    CHECK(of.evaluated >= op.evaluated);
    CHECK_NEAR(of.loss, de_loss_naive(&de, &full), 1e-4 * of.loss);
    /* Skipped experts weigh below keep: a loss change and gradient errors of
     * that order (1e-3), not more. */
    CHECK_NEAR(op.loss, of.loss, 1e-3 * of.loss);
    double dex = test_grad__rel_diff(op.grad_ex, of.grad_ex, (int64_t)M * de.ex_size);
    double dsel = test_grad__rel_diff(op.grad_sel, of.grad_sel, de.sel_size);
    double dds = test_grad__rel_diff(op.ds, of.ds, (int64_t)N * DS);
    CHECK(dex < 2e-3);
    CHECK(dsel < 1e-2);
    CHECK(dds < 2e-3);
    if (dex >= 2e-3 || dsel >= 1e-2 || dds >= 2e-3)
        fprintf(stderr, "    pruned vs full: ex %.3g sel %.3g ds %.3g\n", dex, dsel, dds);
    /* The experts that got no pair got no gradient and are not marked. */
    for (int e = 0; e < M; e++) {
        double norm = 0.0;
        for (int32_t k = 0; k < de.ex_size; k++)
            norm += fabs(op.grad_ex[(size_t)e * de.ex_size + k]);
        CHECK(op.used[e] || norm == 0.0);
    }
    test_grad__de_out_free(&of);
    test_grad__de_out_free(&op);
    test_grad__de_data_free(&x);
    experts_close(&de);
}

/* ---- RRD ----------------------------------------------------------------- */

/* Checks the gradient gr of rrd_loss at s (K interesting, then L
 * uninteresting scores) against central differences of the formula, step
 * eps; returns how many coordinates are off (each reported) or not finite. */
static int test_grad__rrd_fd(const char *what, float *s, int K, int L, const float *gr,
                             double eps, double atol)
{
    int bad = 0;
    for (int k = 0; k < K + L; k++) {
        float p0 = s[k], pp = (float)(p0 + eps), pm = (float)(p0 - eps);
        s[k] = pp;
        double lp = rrd_loss_naive(s, K, s + K, L);
        s[k] = pm;
        double lm = rrd_loss_naive(s, K, s + K, L);
        s[k] = p0;
        bad += !isfinite(gr[k]) ||
               test_grad__compare(what, k, gr[k], (lp - lm) / ((double)pp - pm), atol);
    }
    return bad;
}

TEST(grad_rrd_matches_finite_differences)
{
    enum { K = 5, L = 7 };
    rng_t g;
    rng_init_stream(&g, 41, RNG_TEST, 0, 0);
    for (int rep = 0; rep < 20; rep++) {
        float s[K + L], gr[K + L];
        for (int k = 0; k < K + L; k++)
            s[k] = 2.0f * rng_normal(&g);
        double loss = rrd_loss(s, K, s + K, L, gr, gr + K);
        double naive = rrd_loss_naive(s, K, s + K, L);
        CHECK(isfinite(loss));
        CHECK_NEAR(loss, naive, 1e-6 * fabs(naive) + 1e-9);
        CHECK_EQ_INT(test_grad__rrd_fd("rrd", s, K, L, gr, 1e-3, 1e-4), 0);
        /* The loss is invariant to a common shift, so the gradient sums to 0. */
        double sum = 0.0;
        for (int k = 0; k < K + L; k++)
            sum += gr[k];
        CHECK_NEAR(sum, 0.0, 1e-5);
    }
}

/* Scores spread wider than one common shift allows (a teacher on another
 * scale, a diverging student): the loss and its gradient stay finite and
 * right, against the formula in double and its finite differences. Before
 * the log-domain path, a spread of 88 gave a zero loss with the gradient's
 * sign wrong, and 89 NaN. */
TEST(grad_rrd_wide_score_spread)
{
    enum { K = 6, L = 9 };
    rng_t g;
    rng_init_stream(&g, 43, RNG_TEST, 0, 0);
    const float spreads[] = { 85.0f, 90.0f, 200.0f, 600.0f };
    for (int q = 0; q < 4; q++)
        for (int rep = 0; rep < 10; rep++) {
            float s[K + L], gr[K + L];
            for (int k = 0; k < K + L; k++)
                s[k] = (rng_float(&g) - 0.5f) * spreads[q];
            s[rep % (K + L)] = 0.5f * spreads[q]; /* the spread reached */
            s[(rep + 3) % (K + L)] = -0.5f * spreads[q];
            double loss = rrd_loss(s, K, s + K, L, gr, gr + K);
            double naive = rrd_loss_naive(s, K, s + K, L);
            CHECK(isfinite(loss));
            CHECK_NEAR(loss, naive, 1e-6 * fabs(naive) + 1e-6);
            CHECK_EQ_INT(test_grad__rrd_fd("rrd wide", s, K, L, gr, 1e-2, 1e-3), 0);
        }
}

TEST(grad_rrd_edge_sizes)
{
    /* K = 1, L = 0: the only item is trivially first; loss and gradient 0. */
    float s1 = 3.5f, g1 = 99.0f;
    CHECK_NEAR(rrd_loss(&s1, 1, NULL, 0, &g1, NULL), 0.0, 1e-12);
    CHECK_NEAR(g1, 0.0, 1e-7);
    /* K = 2, L = 0: -log sigmoid(s0 - s1). */
    float s2[2] = { 0.3f, 1.1f }, g2[2];
    double l2 = rrd_loss(s2, 2, NULL, 0, g2, NULL);
    CHECK_NEAR(l2, log1p(exp(1.1 - 0.3)), 1e-6);
    CHECK_NEAR(g2[0], -1.0 / (1.0 + exp(0.3 - 1.1)), 1e-6);
    CHECK_NEAR(g2[0] + g2[1], 0.0, 1e-6);
    /* K = 1, L = 3: softmax cross-entropy of the one interesting item. */
    float s3 = 0.5f, u3[3] = { -0.2f, 0.9f, 0.1f }, gs3, gu3[3];
    double l3 = rrd_loss(&s3, 1, u3, 3, &gs3, gu3);
    double z = exp(0.5) + exp(-0.2) + exp(0.9) + exp(0.1);
    CHECK_NEAR(l3, -(0.5 - log(z)), 1e-6);
    CHECK_NEAR(gs3, -1.0 + exp(0.5) / z, 1e-6);
    for (int l = 0; l < 3; l++)
        CHECK_NEAR(gu3[l], exp((double)u3[l]) / z, 1e-6);
}

TEST(grad_rrd_stable_with_huge_scores)
{
    enum { K = 6, L = 9 };
    rng_t g;
    rng_init_stream(&g, 42, RNG_TEST, 0, 0);
    const float shifts[] = { 1000.0f, -1000.0f, 80.0f, 5000.0f };
    for (int q = 0; q < 4; q++)
        for (int rep = 0; rep < 10; rep++) {
            float big[K + L], back[K + L], gb[K + L], gs[K + L];
            for (int k = 0; k < K + L; k++) {
                /* Interesting items near the shift, uninteresting about 10
                 * lower: 1000 and 990 in the brief's example. */
                float base = k < K ? 0.0f : -10.0f;
                big[k] = shifts[q] + base + 3.0f * rng_normal(&g);
                /* Exact: both are within a factor 2 of each other. */
                back[k] = big[k] - shifts[q];
            }
            double lb = rrd_loss(big, K, big + K, L, gb, gb + K);
            double ls = rrd_loss(back, K, back + K, L, gs, gs + K);
            double naive = rrd_loss_naive(back, K, back + K, L);
            CHECK(isfinite(lb));
            CHECK_NEAR(lb, naive, 1e-5 * fabs(naive) + 1e-6);
            CHECK_NEAR(ls, naive, 1e-6 * fabs(naive) + 1e-9);
            int bad = 0;
            for (int k = 0; k < K + L; k++)
                bad += !isfinite(gb[k]) || fabs(gb[k] - gs[k]) > 1e-5;
            CHECK_EQ_INT(bad, 0);
        }
}
