/* OpenBLAS wrapper; cblas.h is included here and nowhere else. */
#include "gemm.h"

#include <cblas.h>

void gemm_setup(void)
{
    openblas_set_num_threads(1);
}

const char *gemm_backend(void)
{
    return openblas_get_corename();
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
