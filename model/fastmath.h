/*
 * fastmath: float log and exp written so that loops over them vectorise
 * (glibc's logf/expf are calls the compiler cannot vectorise without
 * -ffast-math, which this project does not use). Cephes polynomials; max
 * relative error about 2e-7 over the ranges noted. Pure, header-only by
 * necessity: they must inline into the loops that use them.
 */
#ifndef DERRD_FASTMATH_H
#define DERRD_FASTMATH_H

#include <stdint.h>

/* log(x) for finite x > 0. */
static inline float fast_logf(float x)
{
    union { float f; int32_t i; } u = { x };
    int32_t e = ((u.i >> 23) & 0xff) - 127;
    u.i = (u.i & 0x007fffff) | 0x3f800000; /* mantissa in [1, 2) */
    float m = u.f;
    float big = m > 1.41421356f ? 1.0f : 0.0f;
    m = big > 0.0f ? m * 0.5f : m;
    float f = m - 1.0f;
    float f2 = f * f;
    float p = 7.0376836292e-2f;
    p = p * f - 1.1514610310e-1f;
    p = p * f + 1.1676998740e-1f;
    p = p * f - 1.2420140846e-1f;
    p = p * f + 1.4249322787e-1f;
    p = p * f - 1.6668057665e-1f;
    p = p * f + 2.0000714765e-1f;
    p = p * f - 2.4999993993e-1f;
    p = p * f + 3.3333331174e-1f;
    float r = f + f2 * (f * p - 0.5f);
    return r + ((float)e + big) * 0.693147180559945f;
}

/* exp(x) for x <= 0 (the log-sum-exp case); below -87 it returns 0. */
static inline float fast_expf_neg(float x)
{
    float under = x > -87.0f ? 1.0f : 0.0f;
    x = x > -87.0f ? x : -87.0f;
    float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f); /* x = n ln2 + r */
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * r * r + r + 1.0f;
    union { float f; int32_t i; } u;
    u.i = ((int32_t)n + 127) << 23;
    return y * u.f * under;
}

#endif
