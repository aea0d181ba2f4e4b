/*
 * Tests of the student's start from a teacher: eigh() (LAPACK), and the
 * best rank-k fit of the teacher's scores (mf_add_projection) against the
 * exact low-rank case and the Eckart-Young bound computed from the whole
 * score matrix.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/bigmem.h"
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

TEST(bpr_forward_matches_one_triple_at_a_time)
{
    /* Every coefficient and the loss are what one vec_dot per score gives,
     * bit for bit, for an odd count and a dim that is not a multiple of 8. */
    enum { NT = 7 };
    const int32_t dims[] = { 200, 13 };
    for (int q = 0; q < 2; q++) {
        mf_t mf;
        REQUIRE(mf_init(&mf, 5, 9, dims[q]) == 0);
        mf_init_normal(&mf, 1.0f, 3 + (uint64_t)q);
        bpr_triple_t t[NT];
        for (int32_t s = 0; s < NT; s++)
            t[s] = (bpr_triple_t){ s % 5, (2 * s) % 9, (3 * s + 1) % 9 };
        float coef[NT];
        double loss = bpr_forward(&mf, t, NT, coef);
        double want_loss = 0.0;
        for (int32_t s = 0; s < NT; s++) {
            const float *pu = mf.ue + (int64_t)t[s].u * mf.dim;
            float x = vec_dot(pu, mf.ie + (int64_t)t[s].i * mf.dim, mf.dim) -
                      vec_dot(pu, mf.ie + (int64_t)t[s].j * mf.dim, mf.dim);
            double y = -(double)x; /* the loss is softplus(-x) */
            want_loss += y > 0 ? y + log1p(exp(-y)) : log1p(exp(y));
            float want = (float)(-1.0 / (1.0 + exp((double)x)));
            CHECK(memcmp(&coef[s], &want, sizeof(want)) == 0);
        }
        CHECK(loss == want_loss);
        mf_close(&mf);
    }
}

TEST(bigmem_tables_are_zeroed_and_aligned)
{
    /* Below BIGMEM_MIN a plain calloc; from it on, 2 MB aligned (so that the
     * kernel can back it with huge pages); zeroed either way. */
    const size_t sizes[] = { 0, 1, 1000, BIGMEM_MIN / sizeof(float) - 1,
                             BIGMEM_MIN / sizeof(float), 3 * (BIGMEM_MIN / sizeof(float)) + 7 };
    for (int q = 0; q < 6; q++) {
        size_t n = sizes[q];
        float *f = bigmem_zero_floats(n);
        REQUIRE(f);
        size_t m = n ? n : 1;
        size_t nonzero = 0;
        for (size_t k = 0; k < m; k++)
            nonzero += f[k] != 0.0f;
        CHECK(nonzero == 0);
        if (n * sizeof(float) >= BIGMEM_MIN)
            CHECK((uintptr_t)f % (2u << 20) == 0);
        f[m - 1] = 1.0f; /* the whole table is writable */
        free(f);
    }
    CHECK(bigmem_zero_floats(SIZE_MAX / 2) == NULL);
}
