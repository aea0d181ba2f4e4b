/*
 * rng: seeded, splittable pseudo-random numbers (xoshiro256**).
 *
 * Every random draw in model/ comes from a stream derived from (seed, purpose,
 * a, b) with rng_init_stream(), so a result never depends on which worker
 * thread drew it or in which order: runs are reproducible for a fixed seed,
 * whatever the thread count.
 *
 * An rng_t is a plain value; it is not thread-safe, give each task its own.
 */
#ifndef DERRD_RNG_H
#define DERRD_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} rng_t;

/* Stream purposes, so that two uses of the same seed never share draws. */
enum {
    RNG_INIT = 1,      /* parameter initialisation */
    RNG_SHUFFLE,       /* epoch order */
    RNG_NEGATIVE,      /* BPR negative items */
    RNG_GUMBEL,        /* expert selection noise */
    RNG_DE_SAMPLE,     /* which entities get a DE term in a step */
    RNG_RRD,           /* RRD interesting / uninteresting samples */
    RNG_TEST,          /* tests and data generators */
    RNG_RRD_PICK,      /* which anchors get an RRD term in a step */
    RNG_EVAL,          /* held-out candidates of the daemon's rounds */
    RNG_ROUND_SAMPLE   /* the pairs a bounded streaming round trains on */
};

/* Seeds the generator from one 64-bit value (splitmix64 expansion). */
void rng_init(rng_t *rng, uint64_t seed);

/* Seeds an independent stream for (seed, purpose, a, b). */
void rng_init_stream(rng_t *rng, uint64_t seed, uint64_t purpose, uint64_t a,
                     uint64_t b);

uint64_t rng_next(rng_t *rng);

/* Uniform float in [0, 1). */
float rng_float(rng_t *rng);

/* Uniform integer in [0, n); n must be > 0. */
uint32_t rng_below(rng_t *rng, uint32_t n);

/* Standard normal (Box-Muller). */
float rng_normal(rng_t *rng);

/* Fills out[0..n) with standard Gumbel(0, 1) draws. */
void rng_gumbel_fill(rng_t *rng, float *out, int n);

/* Fisher-Yates shuffle of v[0..n). */
void rng_shuffle_i32(rng_t *rng, int32_t *v, int64_t n);

#endif
