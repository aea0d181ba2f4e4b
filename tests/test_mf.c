/*
 * Tests of the student's start from a teacher: eigh() (LAPACK), the best
 * rank-k fit of the teacher's scores (mf_add_projection) against the
 * Eckart-Young bound computed from the whole score matrix, and the least
 * squares fit of new rows (mf_add_fit) against its normal equations.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/gemm.h"
#include "model/mf.h"
#include "model/rng.h"
#include "test.h"

/* <user u, item i> of m, in double. */
static double test_mf__score(const mf_t *m, int32_t u, int32_t i)
{
    double acc = 0.0;
    for (int32_t c = 0; c < m->dim; c++)
        acc += (double)m->ue[(size_t)u * m->dim + c] * m->ie[(size_t)i * m->dim + c];
    return acc;
}

/* sum over all pairs of (score_a - score_b)^2, and of score_b^2 in *norm. */
static double test_mf__sq_error(const mf_t *a, const mf_t *b, double *norm)
{
    double err = 0.0, nb = 0.0;
    for (int32_t u = 0; u < a->n_users; u++)
        for (int32_t i = 0; i < a->n_items; i++) {
            double x = test_mf__score(a, u, i), y = test_mf__score(b, u, i);
            err += (x - y) * (x - y);
            nb += y * y;
        }
    if (norm)
        *norm = nb;
    return err;
}

/* A teacher whose rows are random mixes of `rank` directions. */
static int test_mf__teacher(mf_t *t, int32_t nu, int32_t ni, int32_t dim, int32_t rank,
                            uint64_t seed)
{
    if (mf_init(t, nu, ni, dim) < 0)
        return -ENOMEM;
    rng_t g;
    rng_init(&g, seed);
    float *basis = malloc((size_t)rank * (size_t)dim * sizeof(float));
    if (!basis)
        return -ENOMEM;
    for (int32_t k = 0; k < rank * dim; k++)
        basis[k] = rng_normal(&g);
    for (int32_t r = 0; r < nu + ni; r++)
        for (int32_t q = 0; q < rank; q++) {
            float w = rng_normal(&g);
            for (int32_t c = 0; c < dim; c++)
                t->params[(size_t)r * dim + c] += w * basis[(size_t)q * dim + c];
        }
    free(basis);
    return 0;
}

TEST(eigh_decomposes_symmetric)
{
    enum { N = 7 };
    double a[N * N], orig[N * N], w[N];
    rng_t g;
    rng_init(&g, 5);
    for (int i = 0; i < N; i++)
        for (int j = 0; j <= i; j++)
            a[i * N + j] = a[j * N + i] = rng_normal(&g);
    memcpy(orig, a, sizeof(a));
    REQUIRE(eigh(a, N, w) == 0);
    for (int j = 1; j < N; j++)
        CHECK(w[j - 1] <= w[j]);
    /* Rows are orthonormal eigenvectors: A e_j = w_j e_j. */
    for (int j = 0; j < N; j++) {
        for (int l = 0; l < N; l++) {
            double dot = 0.0;
            for (int q = 0; q < N; q++)
                dot += a[j * N + q] * a[l * N + q];
            CHECK_NEAR(dot, j == l ? 1.0 : 0.0, 1e-12);
        }
        for (int q = 0; q < N; q++) {
            double ae = 0.0;
            for (int r = 0; r < N; r++)
                ae += orig[q * N + r] * a[j * N + r];
            CHECK_NEAR(ae, w[j] * a[j * N + q], 1e-12);
        }
    }
    CHECK(eigh(a, 0, w) == -EINVAL);
}

TEST(mf_projection_recovers_low_rank)
{
    /* Rank 4 in dim 10: a dim-4 student holds it exactly, and so does a
     * dim-6 one (its two extra columns get nothing). */
    mf_t t;
    REQUIRE(test_mf__teacher(&t, 40, 60, 10, 4, 1) == 0);
    for (int32_t k = 4; k <= 6; k += 2) {
        mf_t s;
        REQUIRE(mf_init(&s, 40, 60, k) == 0);
        REQUIRE(mf_add_projection(&s, &t) == 0);
        double norm, err = test_mf__sq_error(&s, &t, &norm);
        CHECK(err <= 1e-9 * norm);
        if (!(err <= 1e-9 * norm))
            fprintf(stderr, "    dim %d: squared error %.3g of %.3g\n", k, err, norm);
        mf_close(&s);
    }
    /* The teacher must have the student's users and items. */
    mf_t other;
    REQUIRE(mf_init(&other, 40, 61, 4) == 0);
    CHECK(mf_add_projection(&other, &t) == -EINVAL);
    mf_close(&other);
    mf_close(&t);
}

TEST(mf_projection_is_the_best_fit)
{
    /* Eckart-Young: the best rank-k fit leaves exactly the smallest
     * eigenvalues of S^T S, computed here from the whole score matrix. */
    enum { NU = 30, NI = 50, D = 12, K = 5 };
    mf_t t, s;
    REQUIRE(test_mf__teacher(&t, NU, NI, D, D, 2) == 0);
    REQUIRE(mf_init(&s, NU, NI, K) == 0);
    REQUIRE(mf_add_projection(&s, &t) == 0);
    double *sts = calloc((size_t)NI * NI, sizeof(double)), w[NI];
    REQUIRE(sts);
    for (int32_t i = 0; i < NI; i++)
        for (int32_t j = 0; j < NI; j++)
            for (int32_t u = 0; u < NU; u++)
                sts[i * NI + j] += test_mf__score(&t, u, i) * test_mf__score(&t, u, j);
    REQUIRE(eigh(sts, NI, w) == 0);
    double tail = 0.0, total = 0.0;
    for (int32_t j = 0; j < NI; j++) {
        total += w[j];
        if (j < NI - K)
            tail += w[j];
    }
    double norm, err = test_mf__sq_error(&s, &t, &norm);
    CHECK_NEAR(norm, total, 1e-4 * total);
    CHECK_NEAR(err, tail, 1e-3 * tail);
    /* And it is a fit worth having: the K leading of D directions hold most. */
    CHECK(tail < 0.8 * total);
    free(sts);
    mf_close(&s);
    mf_close(&t);
}

TEST(mf_fit_solves_least_squares)
{
    enum { NU = 30, NI = 50, D = 12, K = 5, U0 = 22, I0 = 41 };
    mf_t t, s, f;
    REQUIRE(test_mf__teacher(&t, NU, NI, D, D, 3) == 0);
    REQUIRE(mf_init(&s, NU, NI, K) == 0);
    REQUIRE(mf_add_projection(&s, &t) == 0);

    /* With every item kept, a user's fit is its projection row; with every
     * user kept, an item's. */
    REQUIRE(mf_init_copy(&f, &s) == 0);
    memset(f.ue + (size_t)U0 * K, 0, (size_t)(NU - U0) * K * sizeof(float));
    REQUIRE(mf_add_fit(&f, &t, U0, NI) == 0);
    double dmax = 0.0, smax = 0.0;
    for (size_t q = 0; q < (size_t)NU * K; q++) {
        dmax = fmax(dmax, fabs((double)f.ue[q] - s.ue[q]));
        smax = fmax(smax, fabs((double)s.ue[q]));
    }
    CHECK(dmax <= 1e-4 * smax);
    memset(f.ie + (size_t)I0 * K, 0, (size_t)(NI - I0) * K * sizeof(float));
    REQUIRE(mf_add_fit(&f, &t, NU, I0) == 0);
    dmax = smax = 0.0;
    for (size_t q = 0; q < (size_t)NI * K; q++) {
        dmax = fmax(dmax, fabs((double)f.ie[q] - s.ie[q]));
        smax = fmax(smax, fabs((double)s.ie[q]));
    }
    CHECK(dmax <= 1e-4 * smax);
    mf_close(&f);

    /* Any kept rows: the new rows meet the normal equations, the residual
     * orthogonal to every kept row of the other side. */
    mf_init_normal(&s, 1.0f, 4);
    memset(s.ue + (size_t)U0 * K, 0, (size_t)(NU - U0) * K * sizeof(float));
    memset(s.ie + (size_t)I0 * K, 0, (size_t)(NI - I0) * K * sizeof(float));
    REQUIRE(mf_init_copy(&f, &s) == 0);
    REQUIRE(mf_add_fit(&f, &t, U0, I0) == 0);
    for (size_t q = 0; q < (size_t)U0 * K; q++)
        CHECK(f.ue[q] == s.ue[q]);
    for (size_t q = 0; q < (size_t)I0 * K; q++)
        CHECK(f.ie[q] == s.ie[q]);
    double worst = 0.0, scale = 0.0;
    for (int32_t u = U0; u < NU; u++)
        for (int32_t c = 0; c < K; c++) {
            double grad = 0.0, ref = 0.0;
            for (int32_t i = 0; i < I0; i++) {
                double x = f.ie[(size_t)i * K + c];
                grad += (test_mf__score(&f, u, i) - test_mf__score(&t, u, i)) * x;
                ref += fabs(test_mf__score(&t, u, i) * x);
            }
            worst = fmax(worst, fabs(grad));
            scale = fmax(scale, ref);
        }
    for (int32_t i = I0; i < NI; i++)
        for (int32_t c = 0; c < K; c++) {
            double grad = 0.0, ref = 0.0;
            for (int32_t u = 0; u < U0; u++) {
                double x = f.ue[(size_t)u * K + c];
                grad += (test_mf__score(&f, u, i) - test_mf__score(&t, u, i)) * x;
                ref += fabs(test_mf__score(&t, u, i) * x);
            }
            worst = fmax(worst, fabs(grad));
            scale = fmax(scale, ref);
        }
    CHECK(worst <= 1e-4 * scale);
    if (!(worst <= 1e-4 * scale))
        fprintf(stderr, "    normal equations off by %.3g (scale %.3g)\n", worst, scale);
    CHECK(mf_add_fit(&f, &t, NU + 1, 0) == -EINVAL);
    mf_close(&f);
    mf_close(&s);
    mf_close(&t);
}
