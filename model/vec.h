/*
 * vec: small float-vector kernels shared by model/. Header-only so that they
 * inline into the (dispatch-cloned) loops that call them.
 */
#ifndef DERRD_VEC_H
#define DERRD_VEC_H

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

#endif
