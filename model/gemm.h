/*
 * gemm: the one door to BLAS. Row-major single-precision matrix products,
 * C = alpha * op(A) * op(B) + beta * C, where op(X) is X or its transpose.
 *
 * model/ parallelises on its own worker pool, so gemm_setup() pins OpenBLAS
 * to one thread per call; every call is then safe from any worker thread.
 * gemm_naive() is the plain triple loop the BLAS path is tested against.
 * eigh() is the one LAPACK routine model/ uses (OpenBLAS ships LAPACK).
 */
#ifndef DERRD_GEMM_H
#define DERRD_GEMM_H

#include <stdbool.h>

/* Call once before the first gemm(). */
void gemm_setup(void);

/* The name of the kernel set OpenBLAS picked for this CPU ("SkylakeX",
 * "Haswell", ...). "Prescott" means the slow generic fallback. */
const char *gemm_backend(void);

/* When OpenBLAS fell back to its generic "Prescott" kernels on a CPU that
 * runs better ones (it does not know every CPU model: Debian's 0.3.21 does
 * not know this project's Xeons and runs sgemm about 4 times slower), the
 * kernel set to name in OPENBLAS_CORETYPE: "SkylakeX" with AVX-512
 * (F, CD, BW, DQ, VL), "Haswell" with AVX2 and FMA. NULL otherwise. The
 * variable is read when OpenBLAS loads, so a process that wants it set
 * must start again (io/proc.h). */
const char *gemm_better_core(void);

void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
          const float *a, int lda, const float *b, int ldb, float beta,
          float *c, int ldc);

void gemm_naive(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                const float *a, int lda, const float *b, int ldb, float beta,
                float *c, int ldc);

/* Eigendecomposition of the symmetric n x n matrix a (double; row- and
 * column-major are the same): on return w holds the eigenvalues in ascending
 * order and row j of a the unit eigenvector of w[j]. LAPACK's dsyev.
 * Returns 0, -EINVAL (n < 1), -ENOMEM or -EDOM (no convergence). */
int eigh(double *a, int n, double *w);

#endif
