/* xoshiro256** with splitmix64 seeding; see rng.h. */
#include "rng.h"

#include "fastmath.h"
#include "simd.h"

#include <math.h>

static uint64_t rng__splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void rng_init(rng_t *rng, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        rng->s[i] = rng__splitmix(&x);
}

void rng_init_stream(rng_t *rng, uint64_t seed, uint64_t purpose, uint64_t a,
                     uint64_t b)
{
    /* Mix each word through splitmix so nearby (a, b) give unrelated streams. */
    uint64_t x = seed;
    uint64_t h = rng__splitmix(&x);
    x = h ^ purpose;
    h = rng__splitmix(&x);
    x = h ^ a;
    h = rng__splitmix(&x);
    x = h ^ b;
    h = rng__splitmix(&x);
    rng_init(rng, h);
}

static inline uint64_t rng__rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t rng_next(rng_t *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = rng__rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rng__rotl(s[3], 45);
    return result;
}

float rng_float(rng_t *rng)
{
    return (float)(rng_next(rng) >> 40) * 0x1.0p-24f;
}

uint32_t rng_below(rng_t *rng, uint32_t n)
{
    /* Lemire's multiply-shift; the bias for n < 2^32 is below 2^-32. */
    return (uint32_t)(((rng_next(rng) >> 32) * (uint64_t)n) >> 32);
}

float rng_normal(rng_t *rng)
{
    double u1 = ((double)(rng_next(rng) >> 11) + 0.5) * 0x1.0p-53;
    double u2 = (double)(rng_next(rng) >> 11) * 0x1.0p-53;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

FAST_CLONES void rng_gumbel_fill(rng_t *rng, float *out, int n)
{
    for (int i = 0; i < n; i++) {
        /* u in (0, 1): never exactly 0 or 1, so both logs stay finite. The
         * top draw, 2^24 - 1 + 0.5, rounds to 2^24 in float: it takes the
         * largest float below 1 instead (before, u = 1 gave g = 88 where
         * the largest true draw is 16.6). */
        float u = ((float)(rng_next(rng) >> 40) + 0.5f) * 0x1.0p-24f;
        out[i] = u < 0x1.fffffep-1f ? u : 0x1.fffffep-1f;
    }
    for (int i = 0; i < n; i++)
        out[i] = -fast_logf(-fast_logf(out[i]));
}

void rng_shuffle_i32(rng_t *rng, int32_t *v, int64_t n)
{
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(((rng_next(rng) >> 11) * 0x1.0p-53) * (double)(i + 1));
        if (j > i)
            j = i;
        int32_t t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}
