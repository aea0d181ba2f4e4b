/* Relaxed Ranking Distillation loss and sampling; see rrd.h. */
#include "rrd.h"

#include "fastmath.h"
#include "simd.h"

#include <math.h>

/* Widest score spread the shifted float path takes (exponents down to -80). */
#define RRD_SHIFT_SPREAD 80.0f

/* log(e^a + e^b), either may be -inf. */
static double rrd__logaddexp(double a, double b)
{
    double hi = a > b ? a : b, lo = a > b ? b : a;
    if (hi == -INFINITY)
        return -INFINITY;
    return hi + log1p(exp(lo - hi));
}

/* The same loss and gradient wholly in the log domain, for scores spread
 * too widely for one common shift. With lse_k = log(S_k + U), where
 * S_k = sum_{j>=k} e^(s_j) and U = sum e^(u_l):
 *   loss = -sum_k (s_k - lse_k),
 *   d/ds_k = -1 + e^(s_k) P_k,  d/du_l = e^(u_l) P_(K-1),
 *   P_k = sum_{k'<=k} e^(-lse_k'),
 * and every exponent taken is at most log K (s_k <= lse_k' for k' <= k,
 * u_l <= lse_k). lse_k - s_k >= 0 waits in g_int between the passes. */
static double rrd__loss_wide(const float *s_int, int32_t K, const float *s_un, int32_t L,
                             float *g_int, float *g_un)
{
    double um = -INFINITY, U = 0.0;
    for (int32_t l = 0; l < L; l++)
        um = s_un[l] > um ? s_un[l] : um;
    for (int32_t l = 0; l < L; l++)
        U += exp((double)s_un[l] - um);
    double logU = L > 0 ? um + log(U) : -INFINITY;
    double loss = 0.0, logS = -INFINITY;
    for (int32_t k = K - 1; k >= 0; k--) {
        logS = rrd__logaddexp(logS, (double)s_int[k]);
        double lse = rrd__logaddexp(logS, logU);
        loss -= (double)s_int[k] - lse;
        g_int[k] = (float)(lse - (double)s_int[k]);
    }
    double logP = -INFINITY;
    for (int32_t k = 0; k < K; k++) {
        logP = rrd__logaddexp(logP, -((double)s_int[k] + (double)g_int[k]));
        g_int[k] = (float)(-1.0 + exp((double)s_int[k] + logP));
    }
    for (int32_t l = 0; l < L; l++)
        g_un[l] = (float)exp((double)s_un[l] + logP);
    return loss;
}

FAST_CLONES double rrd_loss(const float *s_int, int32_t K, const float *s_un, int32_t L,
                float *g_int, float *g_un)
{
    /* Shift by the largest score; S_k = sum_{j>=k} e^(s_j - mx), U = sum e^(u_l - mx). */
    float mx = -INFINITY, mn = INFINITY;
    for (int32_t k = 0; k < K; k++) {
        mx = s_int[k] > mx ? s_int[k] : mx;
        mn = s_int[k] < mn ? s_int[k] : mn;
    }
    for (int32_t l = 0; l < L; l++) {
        mx = s_un[l] > mx ? s_un[l] : mx;
        mn = s_un[l] < mn ? s_un[l] : mn;
    }
    /* One common shift works while every exponent stays above float's
     * range (fast_expf_neg gives 0 below -87, and 1/(S + U) is stored as a
     * float): scores spread wider than that take the log-domain path. A
     * well-scaled model's spread is about 10, so the usual path and its
     * results are untouched. */
    if (mx - mn > RRD_SHIFT_SPREAD)
        return rrd__loss_wide(s_int, K, s_un, L, g_int, g_un);
    /* exp of the uninteresting scores, kept in g_un until the gradient
     * replaces them: L can be every unobserved item (RRD_NOSAMPLE). */
    for (int32_t l = 0; l < L; l++)
        g_un[l] = fast_expf_neg(s_un[l] - mx);
    double U = 0.0;
    for (int32_t l = 0; l < L; l++)
        U += g_un[l];
    /* Suffix sums, kept in g_int until the gradient overwrites them. */
    double S = 0.0, loss = 0.0;
    double inv_sum_prefix = 0.0; /* sum_{k' <= k} 1 / (S_k' + U) */
    /* Walk from the end to get S_k, storing 1/(S_k + U) in g_int. */
    for (int32_t k = K - 1; k >= 0; k--) {
        S += exp((double)s_int[k] - mx);
        double den = S + U;
        loss -= (double)s_int[k] - (log(den) + mx);
        g_int[k] = (float)(1.0 / den);
    }
    /* d/ds_k = -1 + e^(s_k - mx) * sum_{k' <= k} 1/(S_k' + U)
     * d/du_l = e^(u_l - mx) * sum_{all k'} 1/(S_k' + U) */
    for (int32_t k = 0; k < K; k++) {
        inv_sum_prefix += g_int[k];
        g_int[k] = (float)(-1.0 + exp((double)s_int[k] - mx) * inv_sum_prefix);
    }
    float scale = (float)inv_sum_prefix;
    for (int32_t l = 0; l < L; l++)
        g_un[l] *= scale;
    return loss;
}

double rrd_loss_naive(const float *s_int, int32_t K, const float *s_un, int32_t L)
{
    double loss = 0.0;
    for (int32_t k = 0; k < K; k++) {
        double below = 0.0;
        for (int32_t j = k; j < K; j++)
            below += exp((double)s_int[j]);
        for (int32_t l = 0; l < L; l++)
            below += exp((double)s_un[l]);
        loss -= (double)s_int[k] - log(below);
    }
    return loss;
}

int32_t rrd_sample_interesting(rng_t *rng, const int32_t *top, int32_t n_top,
                               int32_t K, float temp, float *scratch_f,
                               int32_t *scratch_i, int32_t *out)
{
    int32_t n = 0;
    while (n < n_top && top[n] >= 0)
        n++;
    if (K >= n) {
        for (int32_t k = 0; k < n; k++)
            out[k] = top[k];
        return n;
    }
    /* key_r = -r / temp + Gumbel: the K largest keys are a draw without
     * replacement with weights exp(-r / temp). */
    rng_gumbel_fill(rng, scratch_f, n);
    for (int32_t r = 0; r < n; r++)
        scratch_f[r] -= (float)r / temp;
    /* Keep the K best ranks in a small min-structure: scratch_i holds
     * candidate ranks; a linear scan for the weakest is fine for K = 40. */
    int32_t have = 0, weakest = -1;
    for (int32_t r = 0; r < n; r++) {
        if (have < K) {
            scratch_i[have++] = r;
            if (have == K) {
                weakest = 0;
                for (int32_t q = 1; q < K; q++)
                    if (scratch_f[scratch_i[q]] < scratch_f[scratch_i[weakest]])
                        weakest = q;
            }
            continue;
        }
        if (scratch_f[r] > scratch_f[scratch_i[weakest]]) {
            scratch_i[weakest] = r;
            weakest = 0;
            for (int32_t q = 1; q < K; q++)
                if (scratch_f[scratch_i[q]] < scratch_f[scratch_i[weakest]])
                    weakest = q;
        }
    }
    /* Teacher order = ascending rank: insertion sort of K ranks. */
    for (int32_t a = 1; a < K; a++) {
        int32_t v = scratch_i[a], b = a - 1;
        while (b >= 0 && scratch_i[b] > v) {
            scratch_i[b + 1] = scratch_i[b];
            b--;
        }
        scratch_i[b + 1] = v;
    }
    for (int32_t k = 0; k < K; k++)
        out[k] = top[scratch_i[k]];
    return K;
}

int32_t rrd_sample_uninteresting(rng_t *rng, int32_t n_targets, uint64_t *taken,
                                 int64_t n_taken, int32_t L, int32_t *out)
{
    int64_t free_targets = (int64_t)n_targets - n_taken;
    if (free_targets < L)
        L = free_targets > 0 ? (int32_t)free_targets : 0;
    int32_t got = 0;
    int64_t tries = 0;
    while (got < L && tries < 64LL * L + 1024) {
        uint32_t x = rng_below(rng, (uint32_t)n_targets);
        tries++;
        uint64_t bit = 1ULL << (x & 63);
        if (taken[x >> 6] & bit)
            continue;
        taken[x >> 6] |= bit;
        out[got++] = (int32_t)x;
    }
    if (got < L) {
        /* Dense anchor: fall back to a scan from a random start. */
        uint32_t start = rng_below(rng, (uint32_t)n_targets);
        for (int32_t k = 0; k < n_targets && got < L; k++) {
            uint32_t x = (start + (uint32_t)k) % (uint32_t)n_targets;
            uint64_t bit = 1ULL << (x & 63);
            if (!(taken[x >> 6] & bit)) {
                taken[x >> 6] |= bit;
                out[got++] = (int32_t)x;
            }
        }
    }
    return got;
}
