/*
 * vec: small float-vector kernels shared by model/. Header-only so that they
 * inline into the (dispatch-cloned) loops that call them.
 */
#ifndef DERRD_VEC_H
#define DERRD_VEC_H

#include <stddef.h>
#include <stdint.h>

/* <a, b> with eight running sums, so the compiler can vectorise without
 * reassociating (no -ffast-math); the order is fixed, so results are
 * reproducible. */
static inline float vec_dot(const float *a, const float *b, int32_t d)
{
    float acc[8] = { 0.0f };
    int32_t k = 0;
    for (; k + 8 <= d; k += 8)
        for (int l = 0; l < 8; l++)
            acc[l] += a[k + l] * b[k + l];
    for (; k < d; k++)
        acc[k & 7] += a[k] * b[k];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* Asks for the cache lines of bytes at p (a row about to be read at random
 * from a table larger than the caches); vec_prefetch_w for a row about to be
 * written. */
static inline void vec_prefetch(const void *p, size_t bytes)
{
    for (size_t b = 0; b < bytes; b += 64)
        __builtin_prefetch((const char *)p + b);
}

static inline void vec_prefetch_w(void *p, size_t bytes)
{
    for (size_t b = 0; b < bytes; b += 64)
        __builtin_prefetch((char *)p + b, 1);
}

/* <a[j], b> for j < 4, each bit for bit vec_dot(a[j], b, d) (lane l of
 * acc[j] is vec_dot's acc[l]). One dot is a chain of d/8 dependent vector
 * additions, so it runs at the adder's latency; four independent chains
 * keep the adder busy, and b is read once for all four. */
typedef float vec__f8 __attribute__((vector_size(32)));

static inline void vec_dot4(const float *const a[4], const float *b, int32_t d, float out[4])
{
    vec__f8 acc0 = { 0.0f }, acc1 = { 0.0f }, acc2 = { 0.0f }, acc3 = { 0.0f };
    const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3];
    int32_t k = 0;
    for (; k + 8 <= d; k += 8) {
        vec__f8 x0, x1, x2, x3, y;
        __builtin_memcpy(&y, b + k, sizeof(y));
        __builtin_memcpy(&x0, a0 + k, sizeof(y));
        __builtin_memcpy(&x1, a1 + k, sizeof(y));
        __builtin_memcpy(&x2, a2 + k, sizeof(y));
        __builtin_memcpy(&x3, a3 + k, sizeof(y));
        acc0 += x0 * y;
        acc1 += x1 * y;
        acc2 += x2 * y;
        acc3 += x3 * y;
    }
    for (; k < d; k++) {
        acc0[k & 7] += a0[k] * b[k];
        acc1[k & 7] += a1[k] * b[k];
        acc2[k & 7] += a2[k] * b[k];
        acc3[k & 7] += a3[k] * b[k];
    }
    vec__f8 acc[4] = { acc0, acc1, acc2, acc3 };
    for (int j = 0; j < 4; j++)
        out[j] = ((acc[j][0] + acc[j][4]) + (acc[j][1] + acc[j][5])) +
                 ((acc[j][2] + acc[j][6]) + (acc[j][3] + acc[j][7]));
}

#endif
