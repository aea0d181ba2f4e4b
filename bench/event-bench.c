/*
 * event-bench: decode throughput of io/event.c, one core. Decodes N distinct
 * JSON messages and N distinct text messages of about 60 bytes each (laid
 * out back to back, as a Kafka batch would be), then encodes them back, and
 * prints events/s for each. Not part of `make`; build and run by hand:
 *
 *   cc -O3 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wvla -I. \
 *      bench/event-bench.c io/event.c -ljansson -o /tmp/event-bench &&
 *   /tmp/event-bench [N=1000000] [rounds=3]
 *
 * Each figure is the best of `rounds` passes.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "io/event.h"

typedef struct {
    char *bytes;  /* all messages back to back */
    size_t *off;  /* (n + 1) offsets */
    size_t n;
} bench_msgs_t;

static double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t bench_rng(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* N messages of about 60 bytes: {"user":"u00012345678","item":"i0098765","ts":1700000000123}
 * or user-000012345678<TAB>sku-0000098765-XL-blue<TAB>1700000000123\n (longer ids,
 * so both sizes match). */
static int bench_msgs_make(bench_msgs_t *m, size_t n, int json)
{
    m->n = n;
    m->bytes = malloc(n * 96);
    m->off = malloc((n + 1) * sizeof(size_t));
    if (!m->bytes || !m->off)
        return -ENOMEM;
    uint64_t seed = json ? 1 : 2;
    size_t at = 0;
    for (size_t k = 0; k < n; k++) {
        unsigned long long u = bench_rng(&seed) % 1000000000000ull;
        unsigned long long i = bench_rng(&seed) % 10000000000ull;
        long long ts = 1700000000000ll + (long long)(bench_rng(&seed) % 100000000000ull);
        m->off[k] = at;
        at += (size_t)(json
            ? snprintf(m->bytes + at, 96, "{\"user\":\"u%011llu\",\"item\":\"i%07llu\","
                       "\"ts\":%lld}", u % 100000000000ull, i % 10000000ull, ts)
            : snprintf(m->bytes + at, 96, "user-%012llu\tsku-%010llu-XL-blue\t%lld\n", u, i,
                       ts));
    }
    m->off[n] = at;
    return 0;
}

static void bench_msgs_free(bench_msgs_t *m)
{
    free(m->bytes);
    free(m->off);
}

/* Returns the best events/s of rounds decode passes; *sum defeats dead-code elimination. */
typedef int (*bench_decode_fn)(const void *buf, size_t len, event_t *ev, char *err,
                               size_t errlen);

/* jansson alone, without event_decode's fast path: the comparison row. */
static int bench_decode_jansson(const void *buf, size_t len, event_t *ev, char *err,
                                size_t errlen)
{
    return event__decode_json_jansson(buf, len, ev, err, errlen);
}

static double bench_decode(const bench_msgs_t *m, int rounds, uint64_t *sum,
                           bench_decode_fn decode)
{
    double best = 0;
    event_t ev;
    char err[128];
    for (int r = 0; r < rounds; r++) {
        double t0 = bench_now();
        for (size_t k = 0; k < m->n; k++) {
            int rc = decode(m->bytes + m->off[k], m->off[k + 1] - m->off[k], &ev, err,
                            sizeof(err));
            if (rc != 0) {
                fprintf(stderr, "event-bench: message %zu refused: %s\n", k, err);
                exit(1);
            }
            *sum += (uint64_t)ev.user_len + ev.item_len + (uint64_t)ev.ts;
        }
        double rate = (double)m->n / (bench_now() - t0);
        best = rate > best ? rate : best;
    }
    return best;
}

static double bench_encode(const bench_msgs_t *m, int rounds, int json, uint64_t *sum)
{
    event_t *evs = malloc(m->n < 65536 ? m->n * sizeof(event_t) : 65536 * sizeof(event_t));
    size_t ne = m->n < 65536 ? m->n : 65536;
    char err[128], out[EVENT_MAX_BYTES];
    if (!evs)
        exit(1);
    for (size_t k = 0; k < ne; k++)
        if (event_decode(m->bytes + m->off[k], m->off[k + 1] - m->off[k], &evs[k], err,
                         sizeof(err)) != 0)
            exit(1);
    double best = 0;
    for (int r = 0; r < rounds; r++) {
        double t0 = bench_now();
        for (size_t k = 0; k < m->n; k++) {
            const event_t *ev = &evs[k % ne];
            int n = json ? event_encode_json(ev, out, sizeof(out))
                         : event_encode_text(ev, out, sizeof(out));
            *sum += (uint64_t)n + (unsigned char)out[0];
        }
        double rate = (double)m->n / (bench_now() - t0);
        best = rate > best ? rate : best;
    }
    free(evs);
    return best;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    int rounds = argc > 2 ? atoi(argv[2]) : 3;
    if (n == 0 || rounds < 1) {
        fprintf(stderr, "usage: event-bench [N] [rounds]\n");
        return 2;
    }
    bench_msgs_t js, tx;
    if (bench_msgs_make(&js, n, 1) < 0 || bench_msgs_make(&tx, n, 0) < 0) {
        fprintf(stderr, "event-bench: out of memory\n");
        return 1;
    }
    uint64_t sum = 0;
    printf("%zu events, best of %d; mean size json %.1f B, text %.1f B\n", n, rounds,
           (double)js.off[n] / (double)n, (double)tx.off[n] / (double)n);
    double fast = bench_decode(&js, rounds, &sum, event_decode);
    double slow = bench_decode(&js, rounds, &sum, bench_decode_jansson);
    printf("decode json  %8.3f M events/s (event_decode)\n", fast / 1e6);
    printf("decode json  %8.3f M events/s (jansson alone; fast path %.1fx)\n", slow / 1e6,
           fast / slow);
    printf("decode text  %8.3f M events/s\n", bench_decode(&tx, rounds, &sum, event_decode) / 1e6);
    printf("encode json  %8.3f M events/s\n", bench_encode(&js, rounds, 1, &sum) / 1e6);
    printf("encode text  %8.3f M events/s\n", bench_encode(&tx, rounds, 0, &sum) / 1e6);
    printf("(checksum %llu)\n", (unsigned long long)sum);
    bench_msgs_free(&js);
    bench_msgs_free(&tx);
    return 0;
}
