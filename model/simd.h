/*
 * simd: CPU dispatch for the hot loops. FAST_CLONES compiles a function twice,
 * for x86-64-v3 (AVX2 + FMA) and for the baseline, and picks one at load time
 * (GCC's target_clones), so the binary stays portable. Elsewhere it is empty,
 * and under the sanitizers: GCC instruments the load-time resolver of a clone
 * too, and under ThreadSanitizer that resolver runs before the runtime is up
 * and crashes the binary at start-up.
 */
#ifndef DERRD_SIMD_H
#define DERRD_SIMD_H

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define FAST_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define FAST_CLONES
#endif

#endif
