/* OpenBLAS wrapper; cblas.h is included here and nowhere else. */
#include "gemm.h"

#include <cblas.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* LAPACK (Fortran calling convention), from OpenBLAS. */
extern void dsyev_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda,
                   double *w, double *work, const int *lwork, int *info);

void gemm_setup(void)
{
    openblas_set_num_threads(1);
}

const char *gemm_backend(void)
{
    return openblas_get_corename();
}

const char *gemm_better_core(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (strcmp(openblas_get_corename(), "Prescott") != 0)
        return NULL;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return "Haswell";
#endif
    return NULL;
}

void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
          const float *a, int lda, const float *b, int ldb, float beta,
          float *c, int ldc)
{
    if (m <= 0 || n <= 0)
        return;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda,
                b, ldb, beta, c, ldc);
}

void gemm_naive(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                const float *a, int lda, const float *b, int ldb, float beta,
                float *c, int ldc)
{
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
            double acc = 0.0;
            for (int p = 0; p < k; p++) {
                float x = trans_a ? a[p * lda + i] : a[i * lda + p];
                float y = trans_b ? b[j * ldb + p] : b[p * ldb + j];
                acc += (double)x * y;
            }
            float prev = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
            c[i * ldc + j] = alpha * (float)acc + prev;
        }
    }
}

int eigh(double *a, int n, double *w)
{
    if (n < 1)
        return -EINVAL;
    int info = 0, lwork = -1;
    double query = 0.0;
    dsyev_("V", "U", &n, a, &n, w, &query, &lwork, &info);
    if (info != 0)
        return -EINVAL;
    lwork = (int)query;
    double *work = malloc((size_t)lwork * sizeof(double));
    if (!work)
        return -ENOMEM;
    /* Column j of the column-major result is eigenvector j: row j here. */
    dsyev_("V", "U", &n, a, &n, w, work, &lwork, &info);
    free(work);
    return info == 0 ? 0 : info < 0 ? -EINVAL : -EDOM;
}
